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
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from duely import errors, presence
from duely.clock import isoformat, utcnow
from duely.config import Config
from duely.db import Database, psycopg_url
from duely.listener import NOTIFY_CHANNEL, Listener, get_listener

log = logging.getLogger(__name__)
T = TypeVar("T")

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
# A read is one statement, so one snapshot: the newest id and the events after the cursor agree.
# PostgreSQL renders the events as the API's JSON (keys in the contract's order, created_at as
# duely.clock.isoformat does), so the hot path neither decodes nor re-encodes them. Written in
# the driver's parameter style: the same SQL runs on a Session and on the plain connections of
# the poll's fast path.
_EVENTS_AFTER = """
    CROSS JOIN LATERAL (
        SELECT min(id) AS first_id, max(id) AS last_id, count(*) AS n,
               coalesce(json_agg(json_build_object(
                   'id', id, 'type', type,
                   'created_at', to_char(created_at AT TIME ZONE 'UTC',
                                         CASE WHEN extract(microseconds FROM created_at)::bigint %% 1000000 = 0
                                              THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END),
                   'data', data) ORDER BY id)::text, '[]') AS list
        FROM (SELECT id, type, data, created_at FROM events
              WHERE user_id = u.id AND id > %(after)s ORDER BY id LIMIT %(limit)s) page
    ) e"""
_READ_BY_USER_SQL = f"SELECT u.id, u.last_event_id, e.first_id, e.last_id, e.n, e.list FROM users u {_EVENTS_AFTER} WHERE u.id = %(uid)s"
# The bearer token is checked in the same statement (the rule of duely.auth.authenticate: known
# hash, not revoked, not expired), so a poll costs one round trip to the database.
_READ_BY_TOKEN_SQL = (
    f"SELECT u.id, u.last_event_id, e.first_id, e.last_id, e.n, e.list FROM auth_tokens t JOIN users u ON u.id = t.user_id"
    f" {_EVENTS_AFTER} WHERE t.token_hash = %(token_hash)s AND t.revoked_at IS NULL AND t.expires_at > now()"
)
# Plain autocommit connections per process for the poll reads (see _ReadConnections).
READ_CONNECTIONS_PER_PROCESS = 8
READER_APPLICATION_NAME = "duely-reader"


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    created_at: str  # ISO-8601 UTC, as the API renders it
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "created_at": self.created_at, "data": self.data}


@dataclass(frozen=True, slots=True)
class Updates:
    """The answer to a poll: the events in id order, and the id to continue from (the last
    event's, or the one given when there is nothing new).

    The events come as the JSON array the API sends (`events_json`, rendered by the database);
    `events` parses it for code that wants objects.
    """

    events_json: str
    last_event_id: int
    count: int = 0

    @classmethod
    def empty(cls, last_event_id: int) -> Updates:
        return cls("[]", last_event_id, 0)

    @property
    def events(self) -> list[Event]:
        return [Event(e["id"], e["type"], e["created_at"], e["data"]) for e in json.loads(self.events_json)]


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
    rows = session.connection().exec_driver_sql(_READ_BY_USER_SQL, {"uid": user_id, "after": after_id, "limit": limit}).all()
    if not rows:
        raise errors.NotFound("No such user.")
    return _updates(rows, after_id)


def _updates(rows: Sequence[Sequence[Any]], after_id: int) -> Updates:
    """The row of a read (user id, newest id, first/last id, count, events JSON) -> Updates, or 400/410."""
    _, newest, first_id, last_id, count, events_json = rows[0]
    if after_id > newest:
        raise errors.BadRequest(f"last_event_id {after_id} is ahead of your newest event ({newest}).")
    if after_id < newest and first_id != after_id + 1:
        raise errors.EventsExpired(
            f"Events after {after_id} are no longer kept; resync from the REST snapshot and continue from {newest}.",
            extra={"last_event_id": newest},
        )
    return Updates(events_json, last_id, count) if count else Updates.empty(after_id)


def wait_for(db: Database, user_id: int, after_id: int, timeout_secs: float, limit: int = POLL_LIMIT_DEFAULT, *,
             refresh_presence: bool = True, listener: Listener | None = None) -> Updates:
    """One long poll: the events after `after_id` at once if there are any, else the first ones
    committed within `timeout_secs`, else none.

    No database connection is held while waiting: each read is one short statement and the
    wake-up comes from the process's listener. The first read also refreshes the user's
    presence (throttled, see duely/presence.py). When the server is shutting down the poll is
    answered at once. Raises what `read_since` raises.
    """
    params = {"uid": user_id, "after": after_id, "limit": limit}
    return _hold(db, _READ_BY_USER_SQL, params, user_id, after_id, timeout_secs, refresh_presence, listener)[1]


def poll(db: Database, token_hash: str, after_id: int, timeout_secs: float, limit: int = POLL_LIMIT_DEFAULT, *,
         listener: Listener | None = None) -> tuple[int, Updates]:
    """`wait_for` for the holder of a bearer token (by its `auth.hash_token` hash): every read
    authenticates too, in the same statement. Returns (user id, updates); raises Unauthorized
    for a missing, expired or revoked token, else what `read_since` raises."""
    params = {"token_hash": token_hash, "after": after_id, "limit": limit}
    user_id, updates = _hold(db, _READ_BY_TOKEN_SQL, params, _token_users.get(token_hash), after_id, timeout_secs, True, listener)
    if len(_token_users) > _TOKEN_USERS_MAX:
        _token_users.clear()
    _token_users[token_hash] = user_id
    return user_id, updates


# Token hash -> user id, only to subscribe to the right user before the first read (the read
# itself authenticates); a wrong or missing guess costs one more read, never a wrong answer.
_token_users: dict[str, int] = {}
_TOKEN_USERS_MAX = 100_000


def _hold(db: Database, sql: str, params: dict[str, Any], user_id: int | None, after_id: int, timeout_secs: float,
          refresh_presence: bool, listener: Listener | None) -> tuple[int, Updates]:
    listener = listener or process_listener(db)
    reads = _read_connections(db.url)
    deadline = time.monotonic() + timeout_secs
    # Subscribed before the read: an event committed between the read and the wait still sets
    # the flag, so it is never slept through.
    waiter = listener.subscribe(user_id) if timeout_secs > 0 and user_id is not None else None
    try:
        first = True
        while True:
            if waiter is not None:
                waiter.clear()  # a wake-up arriving during the read below triggers one more read
            rows = reads.read(sql, params, presence_of=user_id if first and refresh_presence else None)
            if not rows:
                raise errors.Unauthorized("The token is missing, unknown, expired or revoked.") if "token_hash" in params \
                    else errors.NotFound("No such user.")
            read_user_id = rows[0][0]
            if first and refresh_presence and read_user_id != user_id:
                reads.refresh_presence(read_user_id)
            user_id = read_user_id
            first = False
            updates = _updates(rows, after_id)
            remaining = deadline - time.monotonic()
            if updates.count or timeout_secs <= 0 or remaining <= 0 or listener.shutting_down:
                return user_id, updates
            if waiter is None or waiter.user_id != user_id:
                # Subscribed only now that the user is known: read once more before waiting.
                if waiter is not None:
                    listener.unsubscribe(waiter)
                waiter = listener.subscribe(user_id)
                continue
            # Woken or not, loop and read again: at the end of the timeout that re-read covers a
            # notification lost while the listener was reconnecting.
            waiter.wait(remaining)
            if listener.shutting_down:
                return user_id, Updates.empty(after_id)
    finally:
        if waiter is not None:
            listener.unsubscribe(waiter)


class _ReadConnections:
    """Plain autocommit psycopg connections for the poll reads, a few per process.

    A read is a single statement, so it needs no transaction: no BEGIN/COMMIT and no pool
    ping, one round trip (psycopg prepares the statement after a few uses). A held poll
    gives its connection back while it waits.
    """

    def __init__(self, url: str, size: int):
        self.url = psycopg_url(url)
        self._idle: list[psycopg.Connection] = []
        self._slots = _semaphore(size)
        self.in_use = 0  # connections checked out right now (tests: a held poll holds none)

    def read(self, sql: str, params: dict[str, Any], presence_of: int | None = None) -> list[tuple[Any, ...]]:
        return self._run(lambda conn: self._read(conn, sql, params, presence_of))

    def refresh_presence(self, user_id: int) -> None:
        if presence.claim_write(user_id):
            self._run(lambda conn: conn.execute(presence.UPSERT_SQL, {"ids": [user_id]}))

    @staticmethod
    def _read(conn: psycopg.Connection, sql: str, params: dict[str, Any], presence_of: int | None) -> list[tuple[Any, ...]]:
        if presence_of is not None and presence.claim_write(presence_of):
            conn.execute(presence.UPSERT_SQL, {"ids": [presence_of]})
        return conn.execute(sql, params).fetchall()

    def _run(self, fn: Callable[[psycopg.Connection], T]) -> T:
        for attempt in (1, 2):
            if not self._slots.acquire(timeout=_READ_SLOT_TIMEOUT_SECS):
                raise TimeoutError(f"no database connection for a poll read in {_READ_SLOT_TIMEOUT_SECS} s")
            conn = None
            self.in_use += 1
            try:
                conn = self._take()
                result = fn(conn)
            except psycopg.OperationalError:
                if conn is not None:
                    conn.close()
                    conn = None
                if attempt == 2:
                    raise
                continue  # an idle connection may have died (database restart): once more, fresh
            finally:
                if conn is not None:
                    if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        conn.close()
                    else:
                        self._idle.append(conn)
                self.in_use -= 1
                self._slots.release()
            return result
        raise AssertionError("unreachable")

    def _take(self) -> psycopg.Connection:
        try:
            return self._idle.pop()
        except IndexError:
            # synchronous_commit off: the only writes here are presence upserts, and losing the
            # last second of those in a crash is harmless, while waiting for a WAL flush per
            # poll is not.
            return psycopg.connect(self.url, autocommit=True, application_name=READER_APPLICATION_NAME,
                                   options="-c synchronous_commit=off")

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _semaphore(size: int) -> Any:
    # threading's semaphore is pure Python on a Condition, which gevent's patch turns into many
    # lock switches per acquire (it showed in the worker's profile); gevent's own is C.
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        from gevent.lock import BoundedSemaphore

        return BoundedSemaphore(size)
    return threading.BoundedSemaphore(size)


_READ_SLOT_TIMEOUT_SECS = 30.0
_readers: dict[tuple[int, str], _ReadConnections] = {}


def _read_connections(url: str) -> _ReadConnections:
    key = (os.getpid(), url)  # never share connections across a fork
    reader = _readers.get(key)
    if reader is None:
        reader = _readers.setdefault(key, _ReadConnections(url, READ_CONNECTIONS_PER_PROCESS))
    return reader


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
