"""Starting a duel between two players: one way for matchmaking and for challenges.

Two steps, because an HTTP call must not hold locks: `pick_task` asks Taski *outside* any
transaction for a task neither player has had; then one transaction locks the players and
their rematch partners (`lock_pair` for matchmaking, `challenges.lock_with_rematch_partners`
for a challenge: users in id order, the one lock order), re-checks what its caller needs (both
still queued, both free), and `begin_duel` takes both out of the queue, ends their rematch
offers and creates the duel with its events (returning its id).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from duely import challenges, duels, eventlog
from duely.db import Database, driver_execute
from duely.eventlog.types import QueueLeft, QueueLeftReason
from duely.taski import TaskiClient, TaskiNotFound


def tasks_seen(session: Session, user_ids: Iterable[int]) -> list[str]:
    """Every task either player has had in a duel (rated or not)."""
    return sorted({task for tasks in tasks_seen_by(session, user_ids).values() for task in tasks})


def tasks_seen_by(session: Session, user_ids: Iterable[int]) -> dict[int, set[str]]:
    """Every task each of these players has had in a duel (rated or not), in one query: a
    matchmaking round reads it once for all its pairs."""
    ids = list(user_ids)
    seen: dict[int, set[str]] = {uid: set() for uid in ids}
    for user_id, task_id in driver_execute(
        session, "SELECT DISTINCT p.user_id, d.task_id FROM duels d JOIN duel_players p ON p.duel_id = d.id"
                 " WHERE p.user_id = ANY(%(ids)s)", {"ids": ids}):
        seen[user_id].add(task_id)
    return seen


def pick_task(db: Database, taski: TaskiClient, pair: tuple[int, int], rating: int,
              must_differ_from: Iterable[str] = (), fallback: bool = False) -> dict[str, Any]:
    """A task from Taski for this pair at `rating`, avoiding every task either has had and
    `must_differ_from`. With `fallback`, when Taski has none left it avoids only `must_differ_from`
    (a challenge between two players who have seen everything still gets a duel). Call it outside
    any transaction; raises the TaskiClient's errors (TaskiNotFound when there is none)."""
    return choose_task(taski, rating, db.read(partial(tasks_seen, user_ids=pair)), must_differ_from, fallback)


def choose_task(taski: TaskiClient, rating: int, seen: Iterable[str], must_differ_from: Iterable[str] = (),
                fallback: bool = False) -> dict[str, Any]:
    """`pick_task` for a caller that has read the players' `seen` tasks already (no database work)."""
    must_differ_from = [str(t) for t in must_differ_from]
    exclude = sorted(set(seen) | set(must_differ_from))
    try:
        return taski.pick_task(rating, exclude)
    except TaskiNotFound:
        if not fallback or exclude == sorted(set(must_differ_from)):
            raise
    return taski.pick_task(rating, must_differ_from)


def begin_duel(session: Session, pair: tuple[int, int], task: dict[str, Any], duration_secs: float,
               rated: bool = True, duel_id: int | None = None, need_queued: int = 0) -> int | None:
    """Start the duel in the caller's transaction: end both players' rematch offers
    (`challenge_expired`), take whoever is queued out of the queue (`queue_left` matched, right
    before `duel_started`), create the duel; returns its id. With `need_queued`, only if at
    least that many of them are queued (else nothing is written and it returns None). The caller
    holds the players' locks (and their rematch partners', `lock_pair`) and has checked that both
    are free.

    Three statements when neither has a rematch offer (the usual case): `duels.open_duel`, then
    the events with the player rows (`duels.finish_start`); the offers are ended between the
    two, by challenges, only when the first said there are some."""
    opened, players = duels.open_duel(session, pair, task, duration_secs, rated=rated, duel_id=duel_id,
                                      need_queued=need_queued)
    if opened.duel_id is None:
        return None
    if opened.has_rematch_offers:
        challenges.end_rematch_offers(session, pair)
    events = eventlog.EventBatch()  # written with the duel's own events, in one statement
    for uid in pair:
        if uid in opened.left_queue:
            events.user(uid, QueueLeft(reason=QueueLeftReason.MATCHED))
    duels.finish_start(session, pair, task, rated, opened.duel_id, players, events)
    return opened.duel_id


def lock_pair(session: Session, pair: tuple[int, int]) -> None:
    """Lock both players and the other players of their pending rematch offers, in id order (the
    one lock order), in one statement: starting a duel ends those offers with events in both
    players' logs. (An offer made between that statement's snapshot and its locks is caught by
    `begin_duel`, whose check runs after them.)"""
    challenges.lock_with_rematch_partners(session, pair)
