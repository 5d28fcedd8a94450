"""The per-user event log (outbox) and long polling on it. See docs/events.md.

This module owns every write to the `events` table: `append` is the one function that
adds an event, inside the caller's transaction, so an event exists exactly when the change
it reports is committed. Ids are allocated under the user's row lock (`users.last_event_id`),
so for one user commit order equals id order and a reader can never skip an id.

It also owns reading (`read_since`), waiting (`wait_for`: a long poll that holds no database
connection and is woken by the process's LISTEN connection, duely/listener.py) and retention
(`prune`, run by the scheduler as `prune_job`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from duely import errors, presence
from duely.clock import isoformat, utcnow
from duely.config import Config
from duely.db import Database
from duely.listener import NOTIFY_CHANNEL, Listener, get_listener

log = logging.getLogger(__name__)

POLL_TIMEOUT_DEFAULT_SECS = 25.0
POLL_TIMEOUT_MAX_SECS = 60.0
POLL_LIMIT_DEFAULT = 100
POLL_LIMIT_MAX = 100
# The scheduler prunes this often; deletes go in batches so no transaction runs long.
PRUNE_INTERVAL_SECS = 600.0
PRUNE_BATCH_SIZE = 5000

EVENT_TYPES = frozenset(
    {
        "queue_joined",
        "queue_left",
        "duel_started",
        "submission_created",
        "submission_update",
        "submission_verdict",
        "opponent_verdict",
        "duel_finished",
    }
)


_LOCK_USERS = text("SELECT id FROM users WHERE id = ANY(:ids) ORDER BY id FOR UPDATE")
_NEXT_ID = text("UPDATE users SET last_event_id = last_event_id + 1 WHERE id = :uid RETURNING last_event_id")
# clock_timestamp(), not now(): taken under the row lock, so created_at grows with the id for
# one user and pruning by age can never cut a hole in the middle of a log.
_INSERT = text(
    "INSERT INTO events (user_id, id, type, data, created_at) VALUES (:uid, :id, :type, CAST(:data AS jsonb), clock_timestamp())"
)
_NOTIFY = text("SELECT pg_notify(:ch, :uid)")
# One statement, one snapshot: the newest id and the events after the cursor agree.
_READ = text(
    """
    SELECT u.last_event_id, e.id, e.type, e.data, e.created_at
    FROM users u
    LEFT JOIN LATERAL (
        SELECT id, type, data, created_at FROM events
        WHERE user_id = u.id AND id > :after ORDER BY id LIMIT :limit
    ) e ON true
    WHERE u.id = :uid
    ORDER BY e.id
    """
)


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    data: dict[str, Any]
    created_at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "created_at": isoformat(self.created_at), "data": self.data}


@dataclass(frozen=True, slots=True)
class Updates:
    """The answer to a poll: `events` in id order, and the id to continue from (the last
    event's, or the one given when there is nothing new)."""

    events: list[Event]
    last_event_id: int


def lock_users(session: Session, user_ids: Iterable[int]) -> None:
    """Take the row locks of several users in id order (one order everywhere: no deadlocks)."""
    ids = sorted(set(user_ids))
    if ids:
        session.execute(_LOCK_USERS, {"ids": ids})


def append(session: Session, user_id: int, type: str, data: dict[str, Any]) -> int:
    """Append one event to `user_id`'s log in the caller's transaction; returns its id.

    The id comes from bumping `users.last_event_id`, which row-locks the user until the caller
    commits: a concurrent writer for the same user waits, so ids commit in order and without
    gaps (a rolled-back id is given out again). The NOTIFY is transactional too: PostgreSQL
    delivers it only if and when the caller commits.
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    event_id = session.execute(_NEXT_ID, {"uid": user_id}).scalar_one()
    session.execute(_INSERT, {"uid": user_id, "id": event_id, "type": type, "data": _dumps(data)})
    session.execute(_NOTIFY, {"ch": NOTIFY_CHANNEL, "uid": str(user_id)})
    return event_id


def read_since(session: Session, user_id: int, after_id: int, limit: int = POLL_LIMIT_DEFAULT) -> Updates:
    """At most `limit` events of `user_id` with ids above `after_id`, oldest first.

    Raises BadRequest when `after_id` is ahead of the log, and EventsExpired (410, carrying the
    newest id as `last_event_id`) when the event right after `after_id` was pruned.
    """
    rows = session.execute(_READ, {"uid": user_id, "after": after_id, "limit": limit}).all()
    if not rows:
        raise errors.NotFound("No such user.")
    newest = rows[0][0]
    if after_id > newest:
        raise errors.BadRequest(f"last_event_id {after_id} is ahead of your newest event ({newest}).")
    found = [Event(r[1], r[2], r[3], r[4]) for r in rows if r[1] is not None]
    if after_id < newest and (not found or found[0].id != after_id + 1):
        raise errors.EventsExpired(
            f"Events after {after_id} are no longer kept; resync from the REST snapshot and continue from {newest}.",
            extra={"last_event_id": newest},
        )
    return Updates(found, found[-1].id if found else after_id)


def wait_for(db: Database, user_id: int, after_id: int, timeout_secs: float, limit: int = POLL_LIMIT_DEFAULT, *,
             refresh_presence: bool = True, listener: Listener | None = None) -> Updates:
    """One long poll: the events after `after_id` at once if there are any, else the first ones
    committed within `timeout_secs`, else none.

    No database connection is held while waiting: each read is its own short transaction and
    the wake-up comes from the process's listener. The first read also refreshes the user's
    presence (throttled, see duely/presence.py). When the server is shutting down the poll is
    answered at once. Raises what `read_since` raises.
    """
    listener = listener or process_listener(db)
    deadline = time.monotonic() + timeout_secs
    # Subscribed before the first read: an event committed between that read and the wait
    # still sets the flag, so it is never slept through.
    waiter = listener.subscribe(user_id) if timeout_secs > 0 else None
    try:
        first = True
        while True:
            if waiter is not None:
                waiter.clear()  # a wake-up arriving during the read below triggers one more read
            with db.transaction() as session:
                if first and refresh_presence:
                    presence.refresh(session, user_id)
                updates = read_since(session, user_id, after_id, limit)
            first = False
            remaining = deadline - time.monotonic()
            if updates.events or waiter is None or remaining <= 0 or listener.shutting_down:
                return updates
            # Woken or not, loop and read again: at the end of the timeout that re-read covers a
            # notification lost while the listener was reconnecting.
            waiter.wait(remaining)
            if listener.shutting_down:
                return Updates([], after_id)
    finally:
        if waiter is not None:
            listener.unsubscribe(waiter)


def process_listener(db: Database) -> Listener:
    """This process's listener for `db`; its heartbeat keeps the presence of held polls fresh."""
    return get_listener(db.url, heartbeat=lambda user_ids: db.run(lambda s: presence.touch_many(s, user_ids)))


def prune(session: Session, older_than: dt.datetime, batch_size: int = PRUNE_BATCH_SIZE) -> int:
    """Delete up to `batch_size` events created before `older_than`; returns how many.

    A poll from an id whose successor is gone then gets 410 (see `read_since`).
    """
    return session.execute(
        text(
            "DELETE FROM events WHERE ctid IN (SELECT ctid FROM events WHERE created_at < :cutoff LIMIT :batch)"
        ),
        {"cutoff": older_than, "batch": batch_size},
    ).rowcount


def prune_job(db: Database, config: Config) -> int:
    """Scheduler job: delete events older than EVENT_RETENTION, batch by batch."""
    cutoff = utcnow() - dt.timedelta(seconds=config.event_retention)
    total = 0
    while True:
        deleted = db.run(lambda s: prune(s, cutoff))
        total += deleted
        if deleted < PRUNE_BATCH_SIZE:
            break
    if total:
        log.info("pruned %d events older than %s", total, isoformat(cutoff))
    return total


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return isoformat(value)
    return str(value)
