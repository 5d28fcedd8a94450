"""Challenges, invite links and rematch offers; blocks and the challenges switch. See docs/challenges.md.

A challenge is addressed to a named player or, with no addressee, *open*: whoever has its link
(its random id) may accept it, first come. A rematch offer is a challenge too (kind `rematch`),
to the opponent of a finished duel. Accepting starts the duel exactly as matchmaking does
(duely/matchmaking/start.py): task from Taski outside any transaction, then one transaction
that locks both players, closes the challenge, takes both out of the queue and creates the duel.

Every change is one transaction with its events (`eventlog.append`), to both players' logs
unless the challenge is open (then only the challenger's, until someone accepts it).

Lock order: users rows in id order (`eventlog.lock_users`), then challenge rows. A rematch offer
involves a third player's log when one of its players starts a duel or joins the queue, so
those transactions lock the players' rematch partners too (`lock_with_rematch_partners`).

The rules that decide whether a challenge may be made or accepted are pure functions of the facts
(`creation_refusal`, `acceptance_refusal`): the database code gathers the facts under the locks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import literal_column, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnClause

from duely import duels, errors, eventlog, users
from duely.config import Config
from duely.db import Database, driver_execute, driver_sql
from duely.eventlog.types import (
    ChallengeAccepted,
    ChallengeCanceled,
    ChallengeCreated,
    ChallengeDeclined,
    ChallengeExpired,
    ChallengeReceived,
    ChallengeView,
    Opponent,
    Payload,
    RematchOffered,
)
from duely.logs import kv
from duely.models import Challenge, User
from duely.statuses import ChallengeKind, ChallengeStatus, DuelStatus
from duely.taski import TaskiClient, TaskiError, TaskiNotFound, TaskiRateLimited

log = logging.getLogger(__name__)

# 12 random bytes: 16 URL-safe characters, 96 bits, so a link cannot be guessed.
ID_BYTES = 12
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
DURATION_MIN_SECS = 60
DURATION_MAX_SECS = 7200
# Why a challenge was declined (lichess's reasons, in our words); the client shows a sentence per reason.
DECLINE_REASONS = ("generic", "later", "too_strong", "too_weak", "duration", "casual", "rated", "no_bot", "only_bot")
DEFAULT_DECLINE_REASON = "generic"
RATE_WINDOW_SECS = 3600.0  # CHALLENGE_MAX_PER_HOUR counts challenges created in this window
EXPIRY_BATCH = 500  # challenges expired per transaction by the job
TASKI_RETRY_AFTER_SECS = 5.0
NO_TASK_RETRY_AFTER_SECS = 30.0

_PENDING = ChallengeStatus.PENDING.sql
# ...and as the ORM's columns: literals, not bound parameters (statuses.py), so that a prepared
# statement's generic plan (db.PLAN_CACHE_MODE) can use the partial indexes on pending challenges.
_PENDING_COLUMN: ColumnClause[str] = literal_column(_PENDING)
_REMATCH_COLUMN: ColumnClause[str] = literal_column(ChallengeKind.REMATCH.sql)


# -- the rules, as pure functions ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CreationFacts:
    """What decides whether `challenger_id` may challenge `to_user_id` (None: open) now."""

    challenger_id: int
    to_user_id: int | None
    challenger_in_duel: bool
    opponent_in_duel: bool
    opponent_accepts_challenges: bool
    blocked: bool  # either blocked the other
    pending_out: int  # the challenger's pending challenges (rematch offers not counted: one per duel)
    secs_until_a_pending_expires: float  # when one of them frees a slot
    created_in_window: int  # challenges and rematch offers created in the last RATE_WINDOW_SECS
    secs_until_window_frees: float  # when the oldest of them leaves the window


@dataclass(frozen=True, slots=True)
class Limits:
    max_pending: int
    max_per_hour: int


def creation_refusal(facts: CreationFacts, limits: Limits) -> errors.DuelyError | None:
    """Why this challenge may not be made (the error to answer), or None. Checked in this order:
    yourself (400), the rate limits (429), you in a duel (409), a block either way (403: the same
    answer both ways), challenges turned off (403), the opponent in a duel (409)."""
    if facts.to_user_id == facts.challenger_id:
        return errors.CannotChallengeSelf()
    if facts.pending_out >= limits.max_pending:
        return errors.RateLimited(facts.secs_until_a_pending_expires,
                                  f"You have {facts.pending_out} pending challenges; at most {limits.max_pending}.")
    if facts.created_in_window >= limits.max_per_hour:
        return errors.RateLimited(facts.secs_until_window_frees,
                                  f"At most {limits.max_per_hour} challenges per hour.")
    if facts.challenger_in_duel:
        return errors.AlreadyInDuel()
    if facts.to_user_id is None:
        return None
    if facts.blocked:
        return errors.Blocked()
    if not facts.opponent_accepts_challenges:
        return errors.ChallengesDisabled()
    if facts.opponent_in_duel:
        return errors.OpponentBusy()
    return None


@dataclass(frozen=True, slots=True)
class AcceptanceFacts:
    challenger_id: int
    accepter_id: int
    pending: bool  # pending and not past its expiry
    blocked: bool
    accepter_in_duel: bool
    challenger_in_duel: bool


def acceptance_refusal(facts: AcceptanceFacts) -> errors.DuelyError | None:
    """Why `accepter_id` may not accept (the caller already knows it may see the challenge)."""
    if facts.accepter_id == facts.challenger_id:
        return errors.CannotAcceptOwn()
    if not facts.pending:
        return errors.ChallengeClosed()
    if facts.blocked:
        return errors.Blocked()
    if facts.accepter_in_duel:
        return errors.AlreadyInDuel()
    if facts.challenger_in_duel:
        return errors.OpponentBusy()
    return None


def can_see(challenge: Challenge, user_id: int) -> bool:
    """Its two players see a challenge; anyone signed in sees an open one (they have the link)."""
    return challenge.to_user_id is None or user_id in (challenge.challenger_id, challenge.to_user_id)


# -- reading ---------------------------------------------------------------------------------

def new_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def _load(session: Session, challenge_id: str, lock: bool = False) -> Challenge | None:
    if not ID_RE.fullmatch(challenge_id):
        return None
    query = select(Challenge).where(Challenge.id == challenge_id).execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


def access(session: Session, user_id: int, challenge_id: str, lock: bool = False) -> Challenge:
    """The challenge if the caller may see it; NotFound otherwise (a named challenge of others
    is not theirs to know about)."""
    challenge = _load(session, challenge_id, lock)
    if challenge is None or not can_see(challenge, user_id):
        raise errors.NotFound("No such challenge.")
    return challenge


def _player(user: User | None) -> Opponent | None:
    if user is None:
        return None
    return Opponent(user_id=user.id, nickname=user.nickname, rating=user.rating,
                    provisional=duels.glicko_of(user).provisional)


def view(session: Session, challenge: Challenge) -> ChallengeView:
    """The API's challenge object (and every challenge event's `challenge`), players as they are now."""
    ids = {challenge.challenger_id, challenge.to_user_id, challenge.accepted_by} - {None}
    people = {u.id: u for u in session.execute(select(User).where(User.id.in_(ids))).scalars()}
    challenger = _player(people.get(challenge.challenger_id))
    assert challenger is not None  # a challenge is deleted with its challenger
    is_open = challenge.to_user_id is None
    return ChallengeView(
        id=challenge.id,
        kind=ChallengeKind(challenge.kind).value,
        challenger=challenger,
        to=_player(people.get(challenge.to_user_id)) if challenge.to_user_id else None,
        rated=challenge.rated,
        duration_secs=challenge.duration_secs,
        rematch_of=challenge.rematch_of,
        status=ChallengeStatus(challenge.status).value,
        decline_reason=challenge.decline_reason,
        created_at=challenge.created_at,
        expires_at=challenge.expires_at,
        closed_at=challenge.closed_at,
        duel_id=challenge.duel_id,
        accepted_by=_player(people.get(challenge.accepted_by)) if challenge.accepted_by else None,
        invite_url=f"/?challenge={challenge.id}" if is_open else None,
    )


def get(session: Session, user_id: int, challenge_id: str) -> ChallengeView:
    return view(session, access(session, user_id, challenge_id))


def pending_for(session: Session, user_id: int) -> dict[str, list[ChallengeView]]:
    """The snapshot: pending challenges and rematch offers addressed to the user, and the user's own."""
    rows = session.execute(
        select(Challenge)
        .where(Challenge.status == _PENDING_COLUMN, Challenge.expires_at > text("now()"),
               (Challenge.to_user_id == user_id) | (Challenge.challenger_id == user_id))
        .order_by(Challenge.created_at, Challenge.id)
    ).scalars().all()
    return {"incoming": [view(session, c) for c in rows if c.to_user_id == user_id],
            "outgoing": [view(session, c) for c in rows if c.challenger_id == user_id]}


def _blocked(session: Session, a: int, b: int) -> bool:
    return bool(session.execute(text(
        "SELECT EXISTS (SELECT 1 FROM blocks WHERE (blocker_id = :a AND blocked_id = :b)"
        " OR (blocker_id = :b AND blocked_id = :a))"
    ), {"a": a, "b": b}).scalar_one())


def _in_duel(session: Session, user_id: int) -> bool:
    return duels.active_duel_id(session, user_id) is not None


def _notify(session: Session, challenge: Challenge, to_challenger: Payload | None, to_other: Payload | None) -> None:
    """Append the events of one change: the challenger's, and the other player's (the addressee,
    or whoever accepted an open challenge). The caller holds both players' locks."""
    other = challenge.to_user_id or challenge.accepted_by
    if to_challenger is not None:
        # `challenge_created` only echoes the challenger's own request to them
        eventlog.append(session, challenge.challenger_id, to_challenger, own=isinstance(to_challenger, ChallengeCreated))
    if to_other is not None and other is not None:
        eventlog.append(session, other, to_other)


# -- creating --------------------------------------------------------------------------------

def limits_of(config: Config) -> Limits:
    return Limits(max_pending=config.challenge_max_pending, max_per_hour=config.challenge_max_per_hour)


def _creation_facts(session: Session, challenger_id: int, to_user: User | None) -> CreationFacts:
    pending_challenge = f"kind = {ChallengeKind.CHALLENGE.sql} AND status = {_PENDING} AND expires_at > now()"
    in_window = "created_at > now() - make_interval(secs => :window)"
    counts = session.execute(text(
        f"""
        SELECT count(*) FILTER (WHERE {pending_challenge}) AS pending_out,
               extract(epoch FROM min(expires_at) FILTER (WHERE {pending_challenge}) - now()) AS pending_frees,
               count(*) FILTER (WHERE {in_window}) AS in_window,
               extract(epoch FROM min(created_at) FILTER (WHERE {in_window})
                                  + make_interval(secs => :window) - now()) AS window_frees
        FROM challenges
        WHERE challenger_id = :u AND (({pending_challenge}) OR {in_window})
        """
    ), {"u": challenger_id, "window": RATE_WINDOW_SECS}).one()
    return CreationFacts(
        challenger_id=challenger_id,
        to_user_id=None if to_user is None else to_user.id,
        challenger_in_duel=_in_duel(session, challenger_id),
        opponent_in_duel=to_user is not None and _in_duel(session, to_user.id),
        opponent_accepts_challenges=to_user is None or to_user.accept_challenges,
        blocked=to_user is not None and _blocked(session, challenger_id, to_user.id),
        pending_out=counts.pending_out,
        secs_until_a_pending_expires=float(counts.pending_frees or 0),
        created_in_window=counts.in_window,
        secs_until_window_frees=float(counts.window_frees or 0),
    )


def create(session: Session, config: Config, challenger_id: int, to_nickname: str | None, rated: bool,
           duration_secs: int) -> ChallengeView:
    """A challenge to the player called `to_nickname`, or an open one (None). `challenge_created`
    for the challenger and `challenge_received` for the addressee, in this transaction."""
    to_user = None
    if to_nickname is not None:
        to_user = users.find_by_nickname(session, to_nickname)
        if to_user is None:
            raise errors.NotFound("No player with that nickname.")
    # Both locks first: the counts and checks below hold still until commit, and both logs get events.
    eventlog.lock_users(session, [challenger_id] + ([to_user.id] if to_user else []))
    if to_user is not None:
        session.refresh(to_user)  # accept_challenges as of the lock
    refusal = creation_refusal(_creation_facts(session, challenger_id, to_user), limits_of(config))
    if refusal is not None:
        raise refusal
    ttl = config.challenge_ttl if to_user is not None else config.open_challenge_ttl
    challenge = _insert(session, ChallengeKind.CHALLENGE, challenger_id, to_user.id if to_user else None, rated,
                        duration_secs, ttl, rematch_of=None)
    shown = view(session, challenge)
    _notify(session, challenge, ChallengeCreated(challenge=shown), ChallengeReceived(challenge=shown))
    log.info("challenge created", extra=kv(challenge_id=challenge.id, challenger_id=challenger_id,
                                           to_user_id=challenge.to_user_id, rated=rated))
    return shown


def _insert(session: Session, kind: ChallengeKind, challenger_id: int, to_user_id: int | None, rated: bool,
            duration_secs: int, ttl_secs: float, rematch_of: int | None) -> Challenge:
    now = session.execute(text("SELECT now()")).scalar_one()
    challenge = Challenge(id=new_id(), kind=kind.value, challenger_id=challenger_id, to_user_id=to_user_id, rated=rated,
                          duration_secs=duration_secs, rematch_of=rematch_of, status=ChallengeStatus.PENDING.value,
                          created_at=now, expires_at=now + dt.timedelta(seconds=ttl_secs))
    session.add(challenge)
    session.flush()
    return challenge


# -- accepting -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AcceptPlan:
    """What the accepting transaction needs, read before Taski is asked for a task."""

    challenge_id: str
    pair: tuple[int, int]  # challenger, accepter
    rating: int  # the pair's mean rating, for Taski's pick
    must_differ_from: tuple[str, ...]  # a rematch's previous task


def _acceptance_facts(session: Session, challenge: Challenge, accepter_id: int) -> AcceptanceFacts:
    now = session.execute(text("SELECT now()")).scalar_one()
    return AcceptanceFacts(
        challenger_id=challenge.challenger_id,
        accepter_id=accepter_id,
        pending=challenge.status == ChallengeStatus.PENDING and challenge.expires_at > now,
        blocked=_blocked(session, challenge.challenger_id, accepter_id),
        accepter_in_duel=_in_duel(session, accepter_id),
        challenger_in_duel=_in_duel(session, challenge.challenger_id),
    )


def plan_accept(session: Session, user_id: int, challenge_id: str) -> AcceptPlan:
    """Check, without locks, that the caller may accept (so that a refusal costs no Taski call);
    the accepting transaction checks again under the locks."""
    challenge = access(session, user_id, challenge_id)
    refusal = acceptance_refusal(_acceptance_facts(session, challenge, user_id))
    if refusal is not None:
        raise refusal
    pair = (challenge.challenger_id, user_id)
    ratings = session.execute(select(User.rating).where(User.id.in_(pair))).scalars().all()
    previous: tuple[str, ...] = ()
    if challenge.rematch_of is not None:
        previous = (duels.get_duel(session, challenge.rematch_of).task_id,)
    return AcceptPlan(challenge_id=challenge.id, pair=pair, rating=round(sum(ratings) / len(ratings)),
                      must_differ_from=previous)


def accept_with_task(session: Session, user_id: int, plan: AcceptPlan, task: dict[str, Any]) -> tuple[ChallengeView, dict]:
    """The accepting transaction: lock both players (and their rematch partners), close the
    challenge if it is still pending (exactly one of two racing accepters gets here), re-check
    that both are free, then `challenge_accepted` and the duel's start, as matchmaking does it."""
    from duely.matchmaking import start  # start ends rematch offers through this module

    lock_with_rematch_partners(session, plan.pair)
    challenge = access(session, user_id, plan.challenge_id, lock=True)
    refusal = acceptance_refusal(_acceptance_facts(session, challenge, user_id))
    if refusal is not None:
        raise refusal  # nothing was written: the transaction rolls back
    duel_id = duels.next_duel_id(session)  # announced by challenge_accepted, before duel_started
    challenge.status = ChallengeStatus.ACCEPTED.value
    challenge.accepted_by = user_id
    challenge.closed_at = session.execute(text("SELECT now()")).scalar_one()
    session.flush()
    # challenges.duel_id is set once the duel row exists (a foreign key); the events name it already
    shown = dataclasses.replace(view(session, challenge), duel_id=duel_id)
    accepted = ChallengeAccepted(challenge=shown, duel_id=duel_id)
    _notify(session, challenge, accepted, accepted)
    start.begin_duel(session, plan.pair, task, challenge.duration_secs, rated=challenge.rated, duel_id=duel_id)
    challenge.duel_id = duel_id
    session.flush()
    log.info("challenge accepted", extra=kv(challenge_id=challenge.id, accepted_by=user_id, duel_id=duel_id))
    return shown, duels.duel_json(session, duels.get_duel(session, duel_id))


def accept(db: Database, taski: TaskiClient, user_id: int, challenge_id: str) -> tuple[ChallengeView, dict]:
    """Accept a challenge or rematch offer: the duel starts at once. Returns the accepted
    challenge and the duel object. Taski trouble is 503 `unavailable`: nothing changed."""
    from duely.matchmaking import start

    plan = db.read(partial(plan_accept, user_id=user_id, challenge_id=challenge_id))
    try:
        task = start.pick_task(db, taski, plan.pair, plan.rating, plan.must_differ_from, fallback=True)
    except TaskiRateLimited as exc:
        raise errors.Unavailable(exc.retry_after_secs, "The judge asked us to slow down; try again shortly.") from None
    except TaskiNotFound:
        raise errors.Unavailable(NO_TASK_RETRY_AFTER_SECS, "No task is available for this duel right now.") from None
    except TaskiError:
        raise errors.Unavailable(TASKI_RETRY_AFTER_SECS, "The judge is unreachable; try again shortly.") from None
    return db.run(partial(accept_with_task, user_id=user_id, plan=plan, task=task))


# -- declining, canceling, expiring ------------------------------------------------------------

def _close(session: Session, challenge: Challenge, status: ChallengeStatus, reason: str | None = None) -> None:
    challenge.status = status.value
    challenge.decline_reason = reason
    challenge.closed_at = session.execute(text("SELECT now()")).scalar_one()
    session.flush()


def _still_pending(session: Session, challenge: Challenge) -> bool:
    return challenge.status == ChallengeStatus.PENDING and bool(
        session.execute(text("SELECT :e > now()"), {"e": challenge.expires_at}).scalar_one())


def decline(session: Session, user_id: int, challenge_id: str, reason: str = DEFAULT_DECLINE_REASON) -> ChallengeView:
    """The addressee says no (with a reason): `challenge_declined` for both."""
    challenge = access(session, user_id, challenge_id)
    if challenge.to_user_id is None:
        raise errors.CannotDeclineOpen()
    if challenge.to_user_id != user_id:
        raise errors.Forbidden("Only the player it is addressed to may decline a challenge.")
    eventlog.lock_users(session, [challenge.challenger_id, challenge.to_user_id])
    challenge = access(session, user_id, challenge_id, lock=True)
    if not _still_pending(session, challenge):
        raise errors.ChallengeClosed()
    _close(session, challenge, ChallengeStatus.DECLINED, reason)
    shown = view(session, challenge)
    _notify(session, challenge, ChallengeDeclined(challenge=shown), ChallengeDeclined(challenge=shown))
    log.info("challenge declined", extra=kv(challenge_id=challenge.id, reason=reason))
    return shown


def cancel(session: Session, user_id: int, challenge_id: str) -> ChallengeView:
    """The challenger takes it back: `challenge_canceled` for both (an open one: the challenger)."""
    challenge = access(session, user_id, challenge_id)
    if challenge.challenger_id != user_id:
        raise errors.Forbidden("Only the challenger may cancel a challenge.")
    eventlog.lock_users(session, [challenge.challenger_id] + ([challenge.to_user_id] if challenge.to_user_id else []))
    challenge = access(session, user_id, challenge_id, lock=True)
    if not _still_pending(session, challenge):
        raise errors.ChallengeClosed()
    _close(session, challenge, ChallengeStatus.CANCELED)
    shown = view(session, challenge)
    _notify(session, challenge, ChallengeCanceled(challenge=shown), ChallengeCanceled(challenge=shown))
    log.info("challenge canceled", extra=kv(challenge_id=challenge.id))
    return shown


def _close_many(session: Session, where_sql: str, params: dict[str, Any], status: ChallengeStatus,
                limit: int | None = None) -> list[ChallengeView]:
    """Close every pending challenge matching `where_sql`, set-based: lock their players, then
    one conditional UPDATE (a row another transaction closed meanwhile is skipped), then the
    events, `challenge_expired` or `challenge_canceled`, for both players of each."""
    candidates = session.execute(text(
        f"SELECT id, challenger_id, to_user_id FROM challenges WHERE status = {_PENDING} AND ({where_sql})"
        " ORDER BY expires_at LIMIT :limit"
    ), {**params, "limit": limit}).all()
    if not candidates:
        return []
    eventlog.lock_users(session, {uid for c in candidates for uid in (c.challenger_id, c.to_user_id) if uid})
    closed_ids = list(session.execute(text(
        f"UPDATE challenges SET status = :status, closed_at = now()"
        f" WHERE id = ANY(:ids) AND status = {_PENDING} AND ({where_sql}) RETURNING id"
    ), {**params, "status": status.value, "ids": [c.id for c in candidates]}).scalars())
    closed = session.execute(select(Challenge).where(Challenge.id.in_(closed_ids)).order_by(Challenge.expires_at)
                             .execution_options(populate_existing=True)).scalars().all()
    payload = ChallengeExpired if status == ChallengeStatus.EXPIRED else ChallengeCanceled
    shown = []
    for challenge in closed:
        one = view(session, challenge)
        _notify(session, challenge, payload(challenge=one), payload(challenge=one))
        shown.append(one)
    return shown


def expire_due(session: Session, limit: int = EXPIRY_BATCH) -> int:
    """Expire up to `limit` pending challenges past their time (the scheduler's job); returns how many."""
    expired = _close_many(session, "expires_at <= now()", {}, ChallengeStatus.EXPIRED, limit)
    for one in expired:
        log.info("challenge expired", extra=kv(challenge_id=one.id, kind=one.kind))
    return len(expired)


def expiry_job(db: Database) -> int:
    """Expire everything due, a batch per transaction."""
    total = 0
    while True:
        done = db.run(expire_due)
        total += done
        if done < EXPIRY_BATCH:
            return total


# -- rematch offers ----------------------------------------------------------------------------

def pending_rematch_offer(user_sql: str, alias: str | None = None) -> str:
    """The one definition of "a pending rematch offer made by or to a user", as an SQL condition
    on a challenges row (`alias`: the row's name in the statement, if it has one): status pending,
    kind rematch, the user its challenger or its addressee. `user_sql` is an expression of the
    user's id, or `ANY(<array>)` for any of several users. Its expiry is no part of it: an offer
    past `expires_at` stays pending until the expiry job closes it, and a queue join or a duel
    start still ends it, with its events. Used by the queue join (duely/matchmaking/queue.py) and
    the duel start (`duels.open_duel`) too."""
    c = f"{alias}." if alias else ""
    return (f"{c}status = {_PENDING} AND {c}kind = {ChallengeKind.REMATCH.sql}"
            f" AND ({c}challenger_id = {user_sql} OR {c}to_user_id = {user_sql})")


_OFFERS_OF = pending_rematch_offer("ANY(:uids)")


def lock_with_rematch_partners(session: Session, user_ids: Iterable[int]) -> None:
    """Lock the users and the other players of their pending rematch offers, all in id order:
    starting a duel or joining the queue ends those offers with events in both players' logs.
    One statement reads the partners and takes the locks. (An offer committed while it waited for
    a lock is not in its snapshot: `end_rematch_offers` catches it and then locks its partner out
    of order; a deadlock that this may rarely cause is retried by Database.run.)"""
    uids = sorted(set(user_ids))
    if uids:  # the partners' read and the locks in one statement (every duel start runs it, on the driver)
        driver_execute(session, _LOCK_WITH_PARTNERS, {"uids": uids})


# eventlog.lock_users' statement, with the other players of the users' pending rematch offers (an
# IN over a UNION, so users is reached by its primary key, not scanned).
_LOCK_WITH_PARTNERS = driver_sql(text(
    f"""
    SELECT id FROM users
    WHERE id IN (SELECT unnest(CAST(:uids AS bigint[]))
                 UNION SELECT challenger_id FROM challenges WHERE {_OFFERS_OF}
                 UNION SELECT to_user_id FROM challenges WHERE {_OFFERS_OF})
    ORDER BY id FOR NO KEY UPDATE OF users
    """
))


def end_rematch_offers(session: Session, user_ids: Iterable[int]) -> int:
    """Expire the users' pending rematch offers (either side): they joined the queue or start another duel."""
    ended = _close_many(session, _OFFERS_OF, {"uids": list(user_ids)}, ChallengeStatus.EXPIRED)
    for one in ended:
        log.info("rematch offer ended", extra=kv(challenge_id=one.id, rematch_of=one.rematch_of))
    return len(ended)


@dataclass(frozen=True, slots=True)
class RematchOutcome:
    """`offered`: a new offer; `existing`: the caller's own pending one; `accept`: the opponent
    already offered one, which the caller is to accept (`accept`, outside this transaction)."""

    action: str
    challenge: ChallengeView


def offer_rematch(session: Session, config: Config, user_id: int, duel_id: int) -> RematchOutcome:
    """A rematch offer to the opponent of a finished duel: same rated-ness, same length."""
    duel, players = duels.access_duel_as_player(session, user_id, duel_id)
    if duel.status != DuelStatus.FINISHED:
        raise errors.DuelActive()
    opponent_id = players[0] if players[1] == user_id else players[1]
    eventlog.lock_users(session, players)  # both offering at once: the second finds the first's offer
    pending = session.execute(
        select(Challenge).where(Challenge.rematch_of == duel_id, Challenge.kind == _REMATCH_COLUMN,
                                Challenge.status == _PENDING_COLUMN, Challenge.expires_at > text("now()"))
        .execution_options(populate_existing=True)
    ).scalars().all()
    theirs = [c for c in pending if c.challenger_id != user_id]
    if theirs:
        return RematchOutcome("accept", view(session, theirs[0]))
    if pending:  # at most one per duel and player (ux_challenges_one_rematch_offer)
        return RematchOutcome("existing", view(session, pending[0]))
    opponent = users.get_user(session, opponent_id)
    # The rules of a challenge, but neither the pending limit (one offer per duel and player) nor
    # the switch (they just played): the hourly budget, both free, no block.
    facts = dataclasses.replace(_creation_facts(session, user_id, opponent), pending_out=0,
                                opponent_accepts_challenges=True)
    refusal = creation_refusal(facts, limits_of(config))
    if refusal is not None:
        raise refusal
    length = round((duel.deadline - duel.started_at).total_seconds())
    challenge = _insert(session, ChallengeKind.REMATCH, user_id, opponent_id, duel.rated, length, config.rematch_ttl,
                        rematch_of=duel_id)
    shown = view(session, challenge)
    _notify(session, challenge, ChallengeCreated(challenge=shown), RematchOffered(challenge=shown))
    log.info("rematch offered", extra=kv(challenge_id=challenge.id, rematch_of=duel_id, challenger_id=user_id))
    return RematchOutcome("offered", shown)


def rematch(db: Database, taski: TaskiClient, config: Config, user_id: int, duel_id: int) -> RematchOutcome:
    """POST /api/duels/{id}/rematch: offer one, or return the caller's pending one, or accept the
    opponent's (then the outcome is `accepted` and the challenge names the new duel)."""
    outcome = db.run(partial(offer_rematch, config=config, user_id=user_id, duel_id=duel_id))
    if outcome.action != "accept":
        return outcome
    accepted, _ = accept(db, taski, user_id, outcome.challenge.id)
    return RematchOutcome("accepted", accepted)


# -- settings and blocks -----------------------------------------------------------------------

def settings_of(session: Session, user_id: int) -> dict[str, Any]:
    return {"accept_challenges": users.get_user(session, user_id).accept_challenges}


def update_settings(session: Session, user_id: int, accept_challenges: bool | None) -> dict[str, Any]:
    eventlog.lock_users(session, [user_id])  # a challenge being made to this user sees the old or the new value
    user = users.get_user(session, user_id)
    session.refresh(user)
    if accept_challenges is not None:
        user.accept_challenges = accept_challenges
        session.flush()
    return {"accept_challenges": user.accept_challenges}


def blocked_users(session: Session, user_id: int) -> list[dict[str, Any]]:
    rows = session.execute(text(
        "SELECT u.id, u.nickname FROM blocks b JOIN users u ON u.id = b.blocked_id"
        " WHERE b.blocker_id = :u ORDER BY lower(u.nickname), u.id"
    ), {"u": user_id}).all()
    return [{"user_id": r.id, "nickname": r.nickname} for r in rows]


def block(session: Session, user_id: int, other_id: int) -> None:
    """Block a player (idempotent): no challenges or rematch offers between the two, either way;
    the pending ones are canceled (`challenge_canceled` for both)."""
    if other_id == user_id:
        raise errors.CannotBlockSelf()
    users.get_user(session, other_id)  # 404 for an unknown user
    eventlog.lock_users(session, [user_id, other_id])
    session.execute(text("INSERT INTO blocks (blocker_id, blocked_id) VALUES (:a, :b) ON CONFLICT DO NOTHING"),
                    {"a": user_id, "b": other_id})
    between = ("(challenger_id = :a AND to_user_id = :b) OR (challenger_id = :b AND to_user_id = :a)")
    canceled = _close_many(session, between, {"a": user_id, "b": other_id}, ChallengeStatus.CANCELED)
    log.info("player blocked", extra=kv(user_id=user_id, blocked_id=other_id, canceled=len(canceled)))


def unblock(session: Session, user_id: int, other_id: int) -> None:
    session.execute(text("DELETE FROM blocks WHERE blocker_id = :a AND blocked_id = :b"), {"a": user_id, "b": other_id})
