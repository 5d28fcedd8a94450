"""Duels: creation, access, the finishing rule with ratings, resignation and history.

Lock order everywhere a duel and its players change together: the duel row, then the users
rows in id order (`eventlog.lock_users`), then submission rows. Every result is decided by the
contract's "who wins" rule (`duely.outcome.decide`: `finish_if_certain`, `resign_as`, or the
verdict intake on its batch's state) and written by `finish`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from duely import errors, eventlog, outcome, rating
from duely.auth import TOKEN_OWNER_SQL, bad_token
from duely.clock import isoformat
from duely.db import driver_execute, driver_sql, pipelined
from duely.eventlog.types import (
    DuelFinished,
    DuelLogFinished,
    DuelLogStarted,
    DuelStarted,
    Opponent,
    Player,
    PlayerStakes,
    TaskRef,
)
from duely.logs import kv
from duely.models import Duel, DuelPlayer, User
from duely.statuses import DuelStatus

log = logging.getLogger(__name__)


# The start of a duel in three statements after the caller's lock (it was eight): `_OPEN` reads
# the players, takes them out of the queue and inserts the duel row, and says whether they have
# rematch offers to end; the append of the events carries the player rows (`_PLAYERS`, one
# statement). The duel row must exist before the append: that statement bumps its event counter.
# `_OPEN` runs on the driver (db.driver_execute): a matchmaking round runs it for every pair.
# It runs after the caller's row locks, so what it reads of the queue and the offers is current
# (join, leave, expiry and offers take the same user locks).
# An establishing player's rating history is read from its own duels outwards, whatever the
# statistics say: each LATERAL subquery (OFFSET 0 keeps the planner from merging it) is an index
# lookup per duel of the player. Joined plainly, a plan made while `duels` looked small (a young
# database, or the generic plan kept for this prepared statement: db.PLAN_CACHE_MODE) scanned
# every finished duel for each player, 5 ms at 500 duels and growing with them.
_OPEN = f"""
    WITH queued AS (
        SELECT count(*) AS n FROM queue_entries WHERE user_id = ANY(%(ids)s)
    ), go AS (
        SELECT 1 FROM queued WHERE n >= %(need_queued)s
    ), left_queue AS (
        DELETE FROM queue_entries
        WHERE %(leave_queue)s AND user_id = ANY(%(ids)s) AND EXISTS (SELECT 1 FROM go)
        RETURNING user_id
    ), duel AS (
        INSERT INTO duels (id, task_id, task, started_at, deadline, rated)
        SELECT coalesce(CAST(%(id)s AS bigint), nextval(pg_get_serial_sequence('duels', 'id'))), %(task_id)s,
               CAST(%(task)s AS jsonb), now(), now() + make_interval(secs => %(duration)s), %(rated)s
        FROM go
        RETURNING id, started_at, deadline
    )
    SELECT u.id, u.nickname, u.rating, u.rating_exact, u.rating_deviation, u.rating_volatility, u.rated_at,
           u.establishing, now() AS now, duel.id AS duel_id, duel.deadline,
           u.id IN (SELECT user_id FROM left_queue) AS left_queue,
           EXISTS (SELECT 1 FROM challenges c WHERE {{pending_rematch_offer}}) AS has_offers,
           CASE WHEN u.establishing AND %(rated)s THEN (
               SELECT json_agg(json_build_array(d.outcome, d.winner_id, o.rating_exact, o.rating_deviation,
                                                o.rating_volatility) ORDER BY me.duel_id)
               FROM duel_players me
               CROSS JOIN LATERAL (
                   SELECT outcome, winner_id FROM duels
                   WHERE id = me.duel_id AND status = {DuelStatus.FINISHED.sql} AND rated OFFSET 0
               ) d
               CROSS JOIN LATERAL (
                   SELECT o.rating_exact, o.rating_deviation, o.rating_volatility
                   FROM duel_players them JOIN users o ON o.id = them.user_id
                   WHERE them.duel_id = me.duel_id AND them.user_id <> me.user_id OFFSET 0
               ) o
               WHERE me.user_id = u.id) END AS history
    FROM users u LEFT JOIN duel ON true
    WHERE u.id = ANY(%(ids)s)
    """


@functools.cache
def _open_sql() -> str:
    """`_OPEN` with challenges' definition of a pending rematch offer (read at first use:
    duely.challenges imports this module)."""
    from duely.challenges import pending_rematch_offer

    return _OPEN.replace("{pending_rematch_offer}", pending_rematch_offer("u.id", alias="c"))


# Both player rows, riding along with the events' append (EventBatch.flush's `also`).
_PLAYERS = """
    INSERT INTO duel_players (duel_id, user_id, rating_before, stakes, outcomes)
    SELECT CAST(:dp_duel AS bigint), v.uid, v.rating_before, v.stakes, v.outcomes
    FROM unnest(CAST(:dp_uids AS bigint[]), CAST(:dp_ratings AS integer[]), CAST(:dp_stakes AS jsonb[]),
                CAST(:dp_outcomes AS jsonb[])) AS v(uid, rating_before, stakes, outcomes)
    RETURNING 1
    """


@dataclass(frozen=True, slots=True)
class Opened:
    """What `open_duel` did: the new duel's id (None: the players were not both queued, nothing
    was written), who of them it took out of the queue, whether either has rematch offers to end."""

    duel_id: int | None
    left_queue: frozenset[int]
    has_rematch_offers: bool


def create_duel(session: Session, player_ids: tuple[int, int], task: dict[str, Any], duration_secs: float,
                rated: bool = True, duel_id: int | None = None, events: eventlog.EventBatch | None = None) -> int:
    """Start a duel between two players on `task`, with `duel_started` events for both; returns its id.

    The caller holds both users' row locks (and leaves the queue alone: matchmaking and challenges
    start duels with `open_duel`); the unique index on active duel players rejects a user already playing.
    An unrated duel (`rated=False`) has no stakes and changes no rating when it finishes.
    `duel_id`: an id the caller took from the sequence (`next_duel_id`) to announce it first.
    `events`: the caller's events so far, written before the duel's own in the same statement.
    """
    opened, players = _open(session, player_ids, task, duration_secs, rated, duel_id, leave_queue=False, need_queued=0)
    assert opened.duel_id is not None
    finish_start(session, player_ids, task, rated, opened.duel_id, players, events)
    return opened.duel_id


def open_duel(session: Session, player_ids: tuple[int, int], task: dict[str, Any], duration_secs: float,
              rated: bool = True, duel_id: int | None = None, need_queued: int = 0) -> tuple[Opened, list[Any]]:
    """The first half of a duel's start, in the caller's transaction, one statement: take the
    players out of the queue and insert the duel row, if at least `need_queued` of them are
    queued (else nothing). Returns what it did and the players' rows for `finish_start`.
    The caller holds both users' row locks; between the two halves it may write events of its own
    (ending rematch offers) that must come before the duel's."""
    return _open(session, player_ids, task, duration_secs, rated, duel_id, leave_queue=True, need_queued=need_queued)


def _open(session: Session, player_ids: tuple[int, int], task: dict[str, Any], duration_secs: float, rated: bool,
          duel_id: int | None, leave_queue: bool, need_queued: int) -> tuple[Opened, list[Any]]:
    rows = driver_execute(session, _open_sql(), {
        "ids": list(player_ids), "need_queued": need_queued, "leave_queue": leave_queue, "id": duel_id,
        "task_id": str(task["id"]), "duration": float(duration_secs), "rated": rated,
        "task": json.dumps({k: task.get(k) for k in ("id", "title", "statement", "time_limit_ms", "difficulty")}),
    }, named=True).fetchall()
    if len(rows) != len(player_ids):
        raise ValueError(f"unknown player among {player_ids}")
    return Opened(duel_id=rows[0].duel_id, left_queue=frozenset(r.id for r in rows if r.left_queue),
                  has_rematch_offers=any(r.has_offers for r in rows)), rows


def finish_start(session: Session, player_ids: tuple[int, int], task: dict[str, Any], rated: bool, duel_id: int,
                 players: list[Any], events: eventlog.EventBatch | None = None) -> None:
    """The second half of a duel's start (`open_duel` did the first): the stakes, the player rows
    and the `duel_started` events (after the caller's `events`), in one statement."""
    events = eventlog.EventBatch() if events is None else events
    users = {row.id: row for row in players}
    now, deadline = players[0].now, players[0].deadline
    stakes: dict[int, dict[str, int]] = {}
    outcomes: dict[int, dict[str, rating.Glicko]] = {}
    if rated:
        histories = {uid: [(rating.Glicko(r[2], r[3], r[4]), 0.5 if r[0] == "draw" else (1.0 if r[1] == uid else 0.0))
                           for r in users[uid].history or ()]
                     for uid in player_ids if users[uid].establishing}
        outcomes = {uid: rating.outcomes(glicko_of(users[uid]), glicko_of(users[_other(player_ids, uid)]),
                                         idle_days(users[uid], now), histories.get(uid))
                    for uid in player_ids}
        stakes = {uid: rating.stakes_of(glicko_of(users[uid]), outcomes[uid]) for uid in player_ids}
    for uid in player_ids:
        opponent = users[_other(player_ids, uid)]
        events.user(uid, DuelStarted(
            duel_id=duel_id,
            opponent=Opponent(user_id=opponent.id, nickname=opponent.nickname, rating=opponent.rating,
                              provisional=glicko_of(opponent).provisional),
            task=TaskRef(id=task["id"], title=task.get("title")),
            deadline=deadline,
            stakes={str(p): PlayerStakes(**stakes[p]) for p in player_ids if p in stakes},
            rated=rated,
        ))
    # The public log (spectators); the new duel row is this transaction's own, so its lock is free.
    events.duel(duel_id, DuelLogStarted(
        duel_id=duel_id,
        players=[Player(user_id=u.id, nickname=u.nickname, rating=u.rating, provisional=glicko_of(u).provisional)
                 for u in sorted((users[p] for p in player_ids), key=lambda u: u.id)],
        task=TaskRef(id=task["id"], title=task.get("title")),
        rated=rated,
        started_at=now, deadline=deadline,
    ))
    added = events.flush(session, also=_PLAYERS, also_params={
        "dp_duel": duel_id, "dp_uids": list(player_ids), "dp_ratings": [users[uid].rating for uid in player_ids],
        "dp_stakes": [json.dumps(stakes[uid]) if rated else None for uid in player_ids],
        "dp_outcomes": [json.dumps({k: [g.rating, g.deviation, g.volatility] for k, g in outcomes[uid].items()}) if rated
                        else None for uid in player_ids],
    })
    if added != len(player_ids):
        raise AssertionError(f"duel {duel_id}: {added} player rows written")
    log.info("duel started", extra=kv(duel_id=duel_id, players=f"{player_ids[0]},{player_ids[1]}", task_id=task["id"],
                                      rated=rated))


def next_duel_id(session: Session) -> int:
    """An id for a duel about to be created, so that events written before it can name it."""
    return session.execute(text("SELECT nextval(pg_get_serial_sequence('duels', 'id'))")).scalar_one()


def _other(pair, uid: int) -> int:
    return pair[1] if pair[0] == uid else pair[0]


class RatedUser(Protocol):
    """A user's rating state: a `User`, or a row of plain SQL with the same columns."""

    rating_exact: float
    rating_deviation: float
    rating_volatility: float
    rated_at: dt.datetime | None


def glicko_of(user: RatedUser) -> rating.Glicko:
    return rating.Glicko(user.rating_exact, user.rating_deviation, user.rating_volatility)


def idle_days(user: RatedUser, duel_started_at: dt.datetime) -> float | None:
    """Days from the user's previous rated duel to the start of this one (None before the first).

    Measured to the start, not the finish, so that the stakes shown when the duel starts are
    exactly the change applied when it finishes: the user's rating cannot change meanwhile
    (one active duel per user).
    """
    if user.rated_at is None:
        return None
    return (duel_started_at - user.rated_at).total_seconds() / 86400.0


def get_duel(session: Session, duel_id: int, lock: str | None = None) -> Duel:
    query = select(Duel).where(Duel.id == duel_id)
    if lock == "update":
        query = query.with_for_update()
    elif lock == "share":
        query = query.with_for_update(read=True)
    duel = session.execute(query).scalar_one_or_none()
    if duel is None:
        raise errors.NotFound("No such duel.")
    return duel


_PLAYER_IDS = text("SELECT user_id FROM duel_players WHERE duel_id = :d ORDER BY user_id")


def player_ids(session: Session, duel_id: int) -> list[int]:
    # Plain SQL: run for every submit, verdict and finish, and the ORM statement cost more CPU than the query.
    return list(session.execute(_PLAYER_IDS, {"d": duel_id}).scalars())


def access_duel_as_player(session: Session, user_id: int, duel_id: int, lock: str | None = None) -> tuple[Duel, list[int]]:
    """The duel and its two player ids; NotFound / Forbidden when the caller is not a player."""
    duel = get_duel(session, duel_id, lock)
    players = player_ids(session, duel_id)
    if user_id not in players:
        raise errors.Forbidden("Only the two players of this duel may do that.")
    return duel, players


def active_duel_id(session: Session, user_id: int) -> int | None:
    return session.execute(
        select(DuelPlayer.duel_id).where(DuelPlayer.user_id == user_id, DuelPlayer.is_active)
    ).scalar_one_or_none()


@dataclass(slots=True)
class LockedDuel:
    """What finishing needs of a duel whose row this transaction holds FOR UPDATE (plain SQL:
    the finish runs for every verdict, and loading the ORM object cost more CPU than the query)."""

    id: int
    status: str
    deadline: dt.datetime
    rated: bool
    started_at: dt.datetime


_LOCK_DUEL = "SELECT id, status, deadline, rated, started_at FROM duels WHERE id = :d FOR UPDATE"
_LOCK_DUEL_NOWAIT = text(_LOCK_DUEL + " SKIP LOCKED")
_LOCK_DUEL_WAIT = text(_LOCK_DUEL)


def lock_duel(session: Session, duel_id: int, skip_locked: bool = False) -> LockedDuel | None:
    """Take the duel's row lock; None when there is no such duel (or, `skip_locked`, another
    transaction holds it)."""
    row = session.execute(_LOCK_DUEL_NOWAIT if skip_locked else _LOCK_DUEL_WAIT, {"d": duel_id}).first()
    return None if row is None else LockedDuel(*row)


def try_finish(session: Session, duel_id: int, resigned_by: int | None = None, skip_locked: bool = False) -> bool:
    """Finish the duel if its result is certain now; returns True when it finished here.

    Ratings, the players' records and both `duel_finished` events are written in this same
    transaction. Safe to call from any process at any time: the duel row lock serialises it
    (`skip_locked`: give up at once if another transaction holds the duel).
    """
    duel = lock_duel(session, duel_id, skip_locked)
    if duel is None:
        if skip_locked:
            return False
        raise errors.NotFound("No such duel.")
    return finish_if_certain(session, duel, player_ids(session, duel_id), resigned_by)


def finish_if_certain(session: Session, duel: LockedDuel, players: list[int], resigned_by: int | None = None) -> bool:
    """`try_finish` for a caller that already holds the duel row lock and knows the players."""
    if duel.status != DuelStatus.ACTIVE:
        return False
    now, subs = _now_and_submissions(session, duel.id)
    decision = outcome.decide(
        [outcome.SubmissionView(user_id=s.user_id, submitted_at=s.submitted_at, verdict=s.verdict) for s in subs],
        now=now, deadline=duel.deadline, player_ids=tuple(players), resigned_by=resigned_by,
    )
    if decision is None:
        return False
    finish(session, duel, players, decision, now)
    return True


def _now_and_submissions(session: Session, duel_id: int) -> tuple[dt.datetime, list]:
    """The database clock and the duel's submissions in one round trip (one row even with none)."""
    rows = session.execute(text(
        "SELECT clock_timestamp() AS now, s.user_id, s.submitted_at, s.verdict "
        "FROM (SELECT 1) one LEFT JOIN submissions s ON s.duel_id = :d"
    ), {"d": duel_id}).all()
    return rows[0].now, [r for r in rows if r.user_id is not None]


_OUTCOME_OF_SCORE = {1.0: "win", 0.5: "draw", 0.0: "loss"}

# The players' rating state and stored outcomes, their user rows locked in id order (lock order:
# duel, users; a caller that holds them already takes them again for free).
_FINISH_LOAD = text(
    """
    SELECT u.id, u.rating, u.rating_exact, u.rating_deviation, u.rating_volatility, u.rated_at, dp.outcomes
    FROM users u JOIN duel_players dp ON dp.user_id = u.id AND dp.duel_id = :d
    ORDER BY u.id FOR NO KEY UPDATE OF u
    """
)
# Every row the finish changes, in one statement: the duel, both player rows, and (rated duels)
# both users' ratings and records. `establishing` uses the old `played`: played + 1 is the new count.
_FINISH_WRITE = driver_sql(text(
    f"""
    WITH duel AS (
        UPDATE duels SET status = {DuelStatus.FINISHED.sql}, finished_at = :now, outcome = :outcome,
                         winner_id = :winner_id, reason = :reason
        WHERE id = :d
    ), players AS (
        UPDATE duel_players dp SET is_active = false, rating_after = v.rating, deviation_after = v.deviation_after
        FROM unnest(CAST(:uids AS bigint[]), CAST(:ratings AS integer[]), CAST(:deviations_after AS double precision[]))
             AS v(uid, rating, deviation_after)
        WHERE dp.duel_id = :d AND dp.user_id = v.uid
    )
    UPDATE users u SET rating = v.rating, rating_exact = v.exact, rating_deviation = v.deviation,
                       rating_volatility = v.volatility, rated_at = :now, played = u.played + 1,
                       establishing = u.establishing AND u.played + 1 < :establishing_duels,
                       won = u.won + v.won, lost = u.lost + v.lost, drawn = u.drawn + v.drawn
    FROM unnest(CAST(:uids AS bigint[]), CAST(:ratings AS integer[]), CAST(:exacts AS double precision[]),
                CAST(:deviations AS double precision[]), CAST(:volatilities AS double precision[]),
                CAST(:wons AS integer[]), CAST(:losts AS integer[]), CAST(:drawns AS integer[]))
         AS v(uid, rating, exact, deviation, volatility, won, lost, drawn)
    WHERE CAST(:rated AS boolean) AND u.id = v.uid
    """
))


def finish(session: Session, duel: LockedDuel, players: list[int], decision: outcome.Decision, now: dt.datetime,
           events: eventlog.EventBatch | None = None, users: dict[int, Any] | None = None) -> dict[int, int]:
    """Write a decided result: the duel, ratings and records, and the `duel_finished` events.

    The one implementation of a finish (verdicts, resignation, timeouts). The caller holds the
    duel row lock. With `events`, the events are added to the caller's batch (which appends them
    in its order); without, they are appended here. `users`: the players' rows as `_FINISH_LOAD`
    reads them (columns of its SELECT), by id, when the caller read and locked them itself (in id
    order, after the duel). Marks `duel` finished; returns each player's rating after it (shown).
    """
    if session.identity_map:  # ORM objects of this session: write their changes before the plain SQL
        session.flush()
    if users is None:
        users = {u.id: u for u in session.execute(_FINISH_LOAD, {"d": duel.id})}
    a, b = players
    if decision.outcome == "draw":
        score_a = 0.5
    else:
        score_a = 1.0 if decision.winner_id == a else 0.0
    before = {uid: glicko_of(users[uid]) for uid in players}
    stored = {uid: users[uid].outcomes for uid in players}
    if not duel.rated:  # a casual duel: nobody's rating moves
        after = dict(before)
    elif all(stored.values()):
        # the states computed when the duel started: exactly the announced stakes
        result = {a: _OUTCOME_OF_SCORE[score_a], b: _OUTCOME_OF_SCORE[1.0 - score_a]}
        after = {uid: rating.Glicko(*(stored[uid] or {})[result[uid]]) for uid in players}
    else:  # started before migration 0003: its stakes were the one-duel update
        after_a, after_b = rating.duel_update(before[a], before[b], score_a, idle_days(users[a], duel.started_at),
                                              idle_days(users[b], duel.started_at))
        after = {a: after_a, b: after_b}
    deltas = {uid: rating.shown_change(before[uid], after[uid]) for uid in players}
    # an unrated duel changes no rating and no record (`duels` in the user object counts rated
    # duels), and is no point of the rating history (rating_history reads rated duels only)
    shown = {uid: after[uid].shown if duel.rated else users[uid].rating for uid in players}
    driver_execute(session, _FINISH_WRITE, {
        "d": duel.id, "now": now, "outcome": decision.outcome, "winner_id": decision.winner_id, "reason": decision.reason,
        "uids": players, "ratings": [shown[uid] for uid in players],
        "deviations_after": [after[uid].deviation if duel.rated else None for uid in players],
        "exacts": [after[uid].rating for uid in players], "deviations": [after[uid].deviation for uid in players],
        "volatilities": [after[uid].volatility for uid in players],
        "wons": [int(decision.outcome == "win" and decision.winner_id == uid) for uid in players],
        "losts": [int(decision.outcome == "win" and decision.winner_id != uid) for uid in players],
        "drawns": [int(decision.outcome == "draw") for uid in players],
        "rated": duel.rated, "establishing_duels": rating.ESTABLISHING_DUELS,
    })
    if session.identity_map:  # ORM objects loaded before (a resign's duel, users) would be stale
        session.expire_all()
    duel.status = DuelStatus.FINISHED
    changes = {str(uid): deltas[uid] for uid in players}
    batch = eventlog.EventBatch() if events is None else events
    for uid in players:
        batch.user(uid, DuelFinished(
            duel_id=duel.id, outcome=decision.outcome, winner_id=decision.winner_id,
            reason=decision.reason, rating_changes=changes,
        ))
    batch.duel(duel.id, DuelLogFinished(
        duel_id=duel.id, outcome=decision.outcome, winner_id=decision.winner_id,
        reason=decision.reason, rating_changes=changes,
    ))
    if events is None:
        batch.flush(session)
    log.info("duel finished", extra=kv(duel_id=duel.id, outcome=decision.outcome, winner_id=decision.winner_id,
                                       reason=decision.reason, rating_changes=changes))
    return shown


# A resignation in four statements between BEGIN and COMMIT (it was eleven: the duel and its
# players were read twice, by the access check and by the finish, and the answer read them again),
# sent in two round trips instead of six (db.pipelined: BEGIN and the first two go together, then
# the last two with COMMIT, which the API's `Database.run(..., pipeline=True)` queues behind them:
# nothing waits for their answers, the events' append checking itself, `EventBatch.flush`):
# 1. `_RESIGN_LOCK`: the caller (a token checked by the statement, or a user id), the duel row FOR
#    UPDATE (only for a known caller), its players and what the answer shows of it;
# 2. `_RESIGN_LOAD`: the players' user rows FOR NO KEY UPDATE in id order (lock order: duel, users) with
#    what `finish` needs of them, their submissions and the database clock. Its own statement, so
#    its snapshot is younger than the duel lock the first one may have waited for: every
#    submission and verdict committed before the lock was ours is seen (they change only under it).
#    It is sent before the first one's answer is known, so it checks the caller again itself and
#    locks nothing unless the caller is a player of the duel and the duel is still active;
# 3. and 4. `finish`'s write and its events. The answer is built from those rows, not read again.
_RESIGN_LOCK = """
    WITH {who}, duel AS MATERIALIZED (
        SELECT id, status, deadline, rated, started_at, task FROM duels
        WHERE id = %(d)s AND EXISTS (SELECT 1 FROM who) FOR UPDATE
    )
    SELECT (SELECT user_id FROM who) AS caller, duel.id, duel.status, duel.deadline, duel.rated, duel.started_at,
           duel.task, ARRAY(SELECT user_id FROM duel_players WHERE duel_id = duel.id ORDER BY user_id) AS players
    FROM (SELECT 1) one LEFT JOIN duel ON true
    """
_RESIGN_LOAD = f"""
    WITH {{who}}
    SELECT clock_timestamp() AS now, u.id, u.nickname, u.rating, u.rating_exact, u.rating_deviation,
           u.rating_volatility, u.rated_at, dp.outcomes, dp.rating_before, dp.stakes,
           ARRAY(SELECT s.submitted_at FROM submissions s WHERE s.duel_id = dp.duel_id AND s.user_id = u.id
                 ORDER BY s.submitted_at, s.id) AS submitted_at,
           ARRAY(SELECT s.verdict FROM submissions s WHERE s.duel_id = dp.duel_id AND s.user_id = u.id
                 ORDER BY s.submitted_at, s.id) AS verdicts
    FROM users u JOIN duel_players dp ON dp.user_id = u.id AND dp.duel_id = %(d)s
    WHERE EXISTS (SELECT 1 FROM duels d JOIN duel_players me ON me.duel_id = d.id
                  WHERE d.id = %(d)s AND d.status = {DuelStatus.ACTIVE.sql} AND me.user_id = (SELECT user_id FROM who))
    ORDER BY u.id FOR NO KEY UPDATE OF u
    """
_WHO_BY_USER = "who AS (SELECT CAST(%(user)s AS bigint) AS user_id)"
_WHO_BY_TOKEN = f"who AS ({TOKEN_OWNER_SQL})"
_RESIGN_BY_USER = (_RESIGN_LOCK.format(who=_WHO_BY_USER), _RESIGN_LOAD.format(who=_WHO_BY_USER))
_RESIGN_BY_TOKEN = (_RESIGN_LOCK.format(who=_WHO_BY_TOKEN), _RESIGN_LOAD.format(who=_WHO_BY_TOKEN))


def resign(session: Session, user_id: int, duel_id: int) -> dict:
    """The caller gives up; the opponent wins at once (unless the result was already certain).
    Returns the finished duel as `duel_json` shows it. Errors, in this order: 404 no such duel,
    403 not a player, 409 duel_finished when already over."""
    return _resign(session, _RESIGN_BY_USER, {"user": user_id, "d": duel_id})[1]


def resign_as(session: Session, token_hash: str, duel_id: int) -> tuple[int, dict]:
    """`resign` for the holder of a bearer token (its hash, `auth.hash_token`), checked by the
    resignation's first statement: (user id, the finished duel). 401 for a bad token first."""
    return _resign(session, _RESIGN_BY_TOKEN, {"h": token_hash, "d": duel_id})


def _resign(session: Session, statements: tuple[str, str], params: dict[str, Any]) -> tuple[int, dict]:
    lock_sql, load_sql = statements
    with pipelined(session):
        locked = driver_execute(session, lock_sql, params, named=True)
        loaded = driver_execute(session, load_sql, params, named=True)
        return _resign_locked(session, locked.fetchone(), loaded)


def _resign_locked(session: Session, row: Any, loaded: Any) -> tuple[int, dict]:
    if row.caller is None:
        raise bad_token()
    if row.id is None:
        raise errors.NotFound("No such duel.")
    user_id, players = row.caller, list(row.players)
    if user_id not in players:
        raise errors.Forbidden("Only the two players of this duel may do that.")
    if row.status != DuelStatus.ACTIVE:
        raise errors.DuelFinished()
    duel = LockedDuel(row.id, row.status, row.deadline, row.rated, row.started_at)
    users = loaded.fetchall()
    if len(users) != len(players):  # cannot be: the caller is a player, and we hold the active duel
        raise AssertionError(f"duel {duel.id}: the resignation loaded {len(users)} players")
    now = users[0].now
    subs = [outcome.SubmissionView(user_id=u.id, submitted_at=at, verdict=verdict)
            for u in users for at, verdict in zip(u.submitted_at, u.verdicts, strict=True)]
    decision = outcome.decide(subs, now=now, deadline=duel.deadline, player_ids=tuple(players), resigned_by=user_id)
    if decision is None:  # cannot be: a resignation always decides an active duel
        raise AssertionError(f"duel {duel.id}: a resignation decided nothing")
    shown = finish(session, duel, players, decision, now, users={u.id: u for u in users})
    return user_id, duel_object(
        duel_id=duel.id, status=DuelStatus.FINISHED, rated=duel.rated, task=row.task,
        players=[{"user_id": u.id, "nickname": u.nickname, "rating_before": u.rating_before,
                  "rating_after": shown[u.id], "stakes": u.stakes} for u in users],
        started_at=duel.started_at, deadline=duel.deadline, finished_at=now,
        result={"outcome": decision.outcome, "winner_id": decision.winner_id, "reason": decision.reason})


def duels_due(session: Session, limit: int = 200) -> list[int]:
    """Active duels whose result may be certain: past the deadline or with an Accepted submission."""
    return list(session.execute(_DUE, {"limit": limit}).scalars())


# Each active duel (the partial index ix_duels_active_deadline) probes its own submissions
# (ix_submissions_duel_submitted), the LATERAL with LIMIT keeping that a probe: written as an
# EXISTS under the OR, the generic plan hashed every Accepted submission ever judged, a scan of
# the whole growing table every second (EXPLAIN ANALYZE at ~25,000 submissions: 10.3 ms; as a
# probe per active duel, 312 of them: 2.7 ms).
_DUE = text(
    f"""
    SELECT d.id FROM duels d
    LEFT JOIN LATERAL (
        SELECT 1 AS accepted FROM submissions s
        WHERE s.duel_id = d.id AND s.verdict = '{outcome.ACCEPTED_VERDICT}' LIMIT 1
    ) a ON true
    WHERE d.status = {DuelStatus.ACTIVE.sql} AND (d.deadline <= clock_timestamp() OR a.accepted IS NOT NULL)
    ORDER BY d.deadline
    LIMIT :limit
    """
)


def duel_json(session: Session, duel: Duel) -> dict:
    rows = session.execute(
        select(DuelPlayer, User.nickname).join(User, User.id == DuelPlayer.user_id)
        .where(DuelPlayer.duel_id == duel.id).order_by(DuelPlayer.user_id)
    ).all()
    finished = duel.status == DuelStatus.FINISHED
    return duel_object(
        duel_id=duel.id, status=duel.status, rated=duel.rated, task=duel.task,
        players=[{"user_id": p.user_id, "nickname": nick, "rating_before": p.rating_before,
                  "rating_after": p.rating_after, "stakes": p.stakes} for p, nick in rows],
        started_at=duel.started_at, deadline=duel.deadline, finished_at=duel.finished_at,
        result={"outcome": duel.outcome, "winner_id": duel.winner_id, "reason": duel.reason} if finished else None)


def duel_object(*, duel_id: int, status: str, rated: bool, task: dict[str, Any], players: list[dict[str, Any]],
                started_at: dt.datetime, deadline: dt.datetime, finished_at: dt.datetime | None,
                result: dict[str, Any] | None) -> dict:
    """The contract's duel object from plain values (`players`: user_id, nickname, rating_before,
    rating_after, stakes each, in user id order; `result`: outcome, winner_id, reason, None while
    the duel is active)."""
    shown: list[dict[str, Any]] = [
        {"user_id": p["user_id"], "nickname": p["nickname"], "rating_before": p["rating_before"],
         "rating_after": p["rating_after"]}
        for p in players
    ]
    return {
        "id": duel_id,
        "status": status,
        "rated": rated,
        "task": {"id": task.get("id"), "title": task.get("title"), "statement": task.get("statement"),
                 "time_limit_ms": task.get("time_limit_ms")},
        "players": shown,
        "started_at": isoformat(started_at),
        "deadline": isoformat(deadline),
        "finished_at": isoformat(finished_at),
        "result": result,
        "rating_changes": {
            str(p["user_id"]): p["rating_after"] - p["rating_before"] for p in shown if p["rating_after"] is not None
        },
        # What each player wins or loses, fixed at the start ({} for unrated duels and for duels
        # rated before Glicko-2).
        "stakes": {str(p["user_id"]): p["stakes"] for p in players if p["stakes"] is not None},
    }


def by_status(session: Session, status: DuelStatus, limit: int, before_id: int | None) -> tuple[list[Duel], int | None]:
    """Duels with this status, newest first (the "watch" page); returns the page and the
    `before_id` of the next page (or None). Served by ix_duels_status_id."""
    query = select(Duel).where(Duel.status == status.value).order_by(Duel.id.desc()).limit(limit + 1)
    if before_id is not None:
        query = query.where(Duel.id < before_id)
    duels = list(session.execute(query).scalars())
    next_before_id = duels[limit - 1].id if len(duels) > limit else None
    return duels[:limit], next_before_id


def history(session: Session, user_id: int, limit: int, before_id: int | None) -> tuple[list[Duel], int | None]:
    """A user's duels, newest first; returns the page and the `before_id` of the next page (or None)."""
    query = (
        select(Duel).join(DuelPlayer, DuelPlayer.duel_id == Duel.id)
        .where(DuelPlayer.user_id == user_id).order_by(Duel.id.desc()).limit(limit + 1)
    )
    if before_id is not None:
        query = query.where(Duel.id < before_id)
    duels = list(session.execute(query).scalars())
    next_before_id = duels[limit - 1].id if len(duels) > limit else None
    return duels[:limit], next_before_id
