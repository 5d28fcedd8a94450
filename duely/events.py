"""The per-user event log (outbox) and long polling on it. See docs/events.md.

This module owns every write to the `events` table: `append` is the one function that
adds an event, inside the caller's transaction, so an event exists exactly when the change
it reports is committed. Ids are allocated under the user's row lock (`users.last_event_id`),
so for one user commit order equals id order and a reader can never skip an id.

It also owns reading and waiting (`poll`, by bearer token: a long poll that holds no database
connection and is woken by the process's LISTEN connection, duely/listener.py; its reads are
batched across concurrent polls, see `_Reader`) and retention (`prune`, run by the scheduler as
`prune_job`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from duely import errors, outage, presence
from duely.clock import isoformat, utcnow
from duely.config import Config
from duely.db import CONNECT_TIMEOUT_SECS, Database, psycopg_url
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
# One statement per event (every writer pays it, the consumer once per message): the UPDATE
# bumps the user's counter and holds the row lock to commit, the INSERT takes that id, and the
# NOTIFY is queued for commit. clock_timestamp(), not now(): taken under the row lock, so
# created_at grows with the id for one user and pruning by age can never cut a hole in a log.
_APPEND = text(
    """
    WITH next AS (
        UPDATE users SET last_event_id = last_event_id + 1 WHERE id = :uid RETURNING last_event_id
    ), inserted AS (
        INSERT INTO events (user_id, id, type, data, created_at)
        SELECT :uid, last_event_id, :type, CAST(:data AS jsonb), clock_timestamp() FROM next
        RETURNING id
    )
    SELECT id, pg_notify(:ch, :uid_text) FROM inserted
    """
)
# A read is one statement, so one snapshot: the newest id and the events after the cursor agree.
# PostgreSQL renders the events as the API's JSON (keys in the contract's order, created_at as
# duely.clock.isoformat does), so the hot path neither decodes nor re-encodes them. One statement
# reads for a batch of polls, one VALUES row each, and answers one row per poll that matched
# (see _Reader). Scalar parameters in VALUES, not arrays: PostgreSQL spent about 130 us more per
# statement unnesting array parameters. Written in the driver's parameter style, so the same SQL
# also runs on a Session (the tests' `read_since`, tests/fixtures/events.py).
_READ_SQL = """
    SELECT q.i, u.id, u.last_event_id, e.first_id, e.last_id, e.n, e.list
    FROM (VALUES {values}) AS q(key, after_id, lim, i)
    {join_user}
    CROSS JOIN LATERAL (
        SELECT min(id) AS first_id, max(id) AS last_id, count(*) AS n,
               coalesce(json_agg(json_build_object(
                   'id', id, 'type', type,
                   'created_at', to_char(created_at AT TIME ZONE 'UTC',
                                         CASE WHEN extract(microseconds FROM created_at)::bigint %% 1000000 = 0
                                              THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END),
                   'data', data) ORDER BY id)::text, '[]') AS list
        FROM (SELECT id, type, data, created_at FROM events
              WHERE user_id = u.id AND id > q.after_id ORDER BY id LIMIT q.lim) page
    ) e"""
_JOIN_USER = {
    "user": "JOIN users u ON u.id = q.key",
    # The bearer token is checked in the same statement (the rule of duely.auth.authenticate:
    # known hash, not revoked, not expired): a poll costs no round trip for authentication.
    "token": "JOIN auth_tokens t ON t.token_hash = q.key AND t.revoked_at IS NULL AND t.expires_at > now()"
             " JOIN users u ON u.id = t.user_id",
}
_KEY_TYPE = {"user": "bigint", "token": "text"}
# Batches are padded to these sizes so that each connection prepares a handful of statements.
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


@functools.cache
def _read_sql(by: str, size: int) -> str:
    values = ", ".join(f"(CAST(%(k{j})s AS {_KEY_TYPE[by]}), CAST(%(a{j})s AS bigint), CAST(%(l{j})s AS int), {j + 1})"
                       for j in range(size))
    return _READ_SQL.format(values=values, join_user=_JOIN_USER[by])


def _read_params(keys: Sequence[int | str | None], afters: Sequence[int], limits: Sequence[int]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for j, (key, after_id, limit) in enumerate(zip(keys, afters, limits, strict=True)):
        params[f"k{j}"], params[f"a{j}"], params[f"l{j}"] = key, after_id, limit
    return params


# Plain autocommit connections per process for the poll reads (see _Reader).
READ_CONNECTIONS_PER_PROCESS = 2
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
    event_id: int = session.execute(_APPEND, {"uid": user_id, "uid_text": str(user_id), "type": type, "data": _dumps(data),
                                              "ch": NOTIFY_CHANNEL}).scalar_one()
    return event_id


def _updates(row: Sequence[Any], after_id: int) -> Updates:
    """The row of a read (index, user id, newest id, first/last id, count, events JSON) -> Updates:
    at most the read's limit of events with ids above `after_id`, oldest first.

    Raises BadRequest when `after_id` is ahead of the log, and EventsExpired (410, carrying the
    newest id as `last_event_id`) when the event right after `after_id` was pruned.
    """
    _, _, newest, first_id, last_id, count, events_json = row
    if after_id > newest:
        raise errors.BadRequest(f"last_event_id {after_id} is ahead of your newest event ({newest}).")
    if after_id < newest and first_id != after_id + 1:
        raise errors.EventsExpired(
            f"Events after {after_id} are no longer kept; resync from the REST snapshot and continue from {newest}.",
            extra={"last_event_id": newest},
        )
    return Updates(events_json, last_id, count) if count else Updates.empty(after_id)


def poll(db: Database, token_hash: str, after_id: int, timeout_secs: float, limit: int = POLL_LIMIT_DEFAULT, *,
         listener: Listener | None = None) -> tuple[int, Updates]:
    """One long poll for the holder of a bearer token (by its `auth.hash_token` hash): the events
    after `after_id` at once if there are any, else the first ones committed within
    `timeout_secs`, else none. Returns (user id, updates).

    No database connection is held while waiting: each read is one short statement, which
    authenticates too, and the wake-up comes from the process's listener. The first read also
    refreshes the user's presence (throttled, see duely/presence.py). When the server is shutting
    down the poll is answered at once. Raises Unauthorized for a missing, expired or revoked
    token, else what `_updates` raises (400, 410)."""
    user_id, updates = _hold(db, "token", token_hash, _token_users.get(token_hash), after_id, timeout_secs, limit, True, listener)
    if len(_token_users) > _TOKEN_USERS_MAX:
        _token_users.clear()
    _token_users[token_hash] = user_id
    return user_id, updates


# Token hash -> user id, only to subscribe to the right user before the first read (the read
# itself authenticates); a wrong or missing guess costs one more read, never a wrong answer.
_token_users: dict[str, int] = {}
_TOKEN_USERS_MAX = 100_000


def _hold(db: Database, by: str, key: int | str, user_id: int | None, after_id: int, timeout_secs: float, limit: int,
          refresh_presence: bool, listener: Listener | None) -> tuple[int, Updates]:
    listener = listener or process_listener(db)
    reader = _reader(db)
    deadline = time.monotonic() + timeout_secs
    # Subscribed before the read: an event committed between the read and the wait still sets
    # the flag, so it is never slept through.
    waiter = listener.subscribe(user_id) if timeout_secs > 0 and user_id is not None else None
    try:
        first = True
        while True:
            if waiter is not None:
                waiter.clear()  # a wake-up arriving during the read below triggers one more read
            row = reader.read(by, key, after_id, limit, presence=first and refresh_presence)
            if row is None:
                if by == "token":
                    raise errors.Unauthorized("The token is missing, unknown, expired or revoked.")
                raise errors.NotFound("No such user.")
            user_id = row[1]
            first = False
            updates = _updates(row, after_id)
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


class PollReadFailed(Exception):
    """The batched read this poll was part of failed (the database is unreachable)."""


class _Read:
    __slots__ = ("by", "key", "after_id", "limit", "presence", "row", "error", "done")

    def __init__(self, by: str, key: int | str, after_id: int, limit: int, presence: bool):
        self.by, self.key, self.after_id, self.limit, self.presence = by, key, after_id, limit, presence
        self.row: tuple[Any, ...] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class _Reader:
    """Reads for the polls of one process, on a few plain autocommit psycopg connections.

    A read is a single statement, so it needs no transaction: no BEGIN/COMMIT and no pool
    ping. And reads are batched, like a group commit: a poll queues its read and takes a
    connection; whoever gets one runs every read queued so far in one statement, and the
    others find theirs done. When the connections are free a batch is just the one read;
    under load one round trip serves many polls, which is what keeps a busy 2-core box from
    spending its time waking PostgreSQL up once per poll. A held poll holds no connection.
    """

    def __init__(self, url: str, size: int, slot_timeout_secs: float = 3.0):
        self.url = psycopg_url(url)
        self._idle: list[psycopg.Connection] = []
        self._slots = _semaphore(size)
        self._slot_timeout_secs = slot_timeout_secs
        self._queue: list[_Read] = []
        self._queue_lock = threading.Lock()
        self.in_use = 0  # connections checked out right now (tests: a held poll holds none)
        self.statements = 0  # batches run, for the benchmark
        self.reads = 0

    def read(self, by: str, key: int | str, after_id: int, limit: int, presence: bool = False) -> tuple[Any, ...] | None:
        """The read's row (see _updates), or None when the user or token is not found."""
        request = _Read(by, key, after_id, limit, presence)
        with self._queue_lock:
            self._queue.append(request)
        if self._slots.acquire(timeout=self._slot_timeout_secs):
            try:
                if not request.done.is_set():
                    # Let the polls that are ready to run queue their reads too: PostgreSQL often
                    # answers before psycopg would wait (and yield), so batches would not form.
                    time.sleep(0)
                    with self._queue_lock:
                        batch, self._queue = self._queue, []
                    if batch:
                        self._run(batch)
            finally:
                self._slots.release()
        else:
            # Every connection busy for DB_POOL_TIMEOUT: shed this poll (503), as the pool does
            # other requests, unless a running batch has taken its read already.
            with self._queue_lock:
                queued = request in self._queue
                if queued:
                    self._queue.remove(request)
            if queued:
                raise errors.Unavailable(outage.RETRY_AFTER_BUSY_SECS, "The service is busy; retry later.")
        request.done.wait()  # ran by another poll's batch, maybe still running
        if request.error is not None:
            raise PollReadFailed(str(request.error)) from request.error
        return request.row

    def _run(self, batch: list[_Read]) -> None:
        self.in_use += 1
        finished = False
        try:
            for attempt in (1, 2):
                conn = None
                try:
                    conn = self._take()
                    self._execute(conn, batch)
                except Exception as exc:
                    if conn is not None:
                        conn.close()
                    if isinstance(exc, psycopg.OperationalError) and attempt == 1:
                        self.close()  # the database restarted? its idle siblings are dead too: once more, fresh
                        continue
                    for request in batch:
                        request.error = exc
                else:
                    self._give_back(conn)
                break
            finished = True
        finally:
            self.in_use -= 1
            for request in batch:
                if not finished and request.error is None:
                    request.error = RuntimeError("the poll read was interrupted")
                request.done.set()

    def _execute(self, conn: psycopg.Connection, batch: list[_Read]) -> None:
        self.statements += 1
        self.reads += len(batch)
        for by in ("token", "user"):
            group = [r for r in batch if r.by == by]
            for start in range(0, len(group), _BATCH_SIZES[-1]):
                chunk = group[start:start + _BATCH_SIZES[-1]]
                size = next(n for n in _BATCH_SIZES if n >= len(chunk))
                pad = size - len(chunk)  # padding rows have a NULL key: they match nothing
                params = _read_params([r.key for r in chunk] + [None] * pad, [r.after_id for r in chunk] + [0] * pad,
                                      [r.limit for r in chunk] + [1] * pad)
                for row in conn.execute(_read_sql(by, size), params).fetchall():
                    chunk[row[0] - 1].row = row
        # Presence for the whole batch in one upsert (throttled per user, see duely/presence.py).
        due = [uid for uid in {r.row[1] for r in batch if r.presence and r.row is not None} if presence.claim_write(uid)]
        if due:
            conn.execute(presence.UPSERT_SQL, {"ids": sorted(due)})

    def _take(self) -> psycopg.Connection:
        try:
            return self._idle.pop()
        except IndexError:
            # synchronous_commit off: the only writes here are presence upserts, and losing the
            # last second of those in a crash is harmless, while waiting for a WAL flush per
            # poll is not. A generic plan: the batch's arrays make PostgreSQL otherwise re-plan
            # the read on every execution (it costs more than running it); the generic plan is
            # the index nested loop, right for one read and for hundreds.
            return psycopg.connect(self.url, autocommit=True, application_name=READER_APPLICATION_NAME,
                                   connect_timeout=CONNECT_TIMEOUT_SECS,
                                   options="-c synchronous_commit=off -c plan_cache_mode=force_generic_plan")

    def _give_back(self, conn: psycopg.Connection) -> None:
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.close()
        else:
            self._idle.append(conn)

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


_readers: dict[str, _Reader] = {}
# Never share connections across a fork (cheaper than checking os.getpid() on every poll).
os.register_at_fork(after_in_child=_readers.clear)


def _reader(db: Database) -> _Reader:
    reader = _readers.get(db.url)
    if reader is None:
        reader = _readers.setdefault(db.url, _Reader(db.url, READ_CONNECTIONS_PER_PROCESS, db.pool_timeout))
    return reader


def process_listener(db: Database) -> Listener:
    """This process's listener for `db`; its heartbeat keeps the presence of held polls fresh."""
    return get_listener(db.url, heartbeat=lambda user_ids: db.run(lambda s: presence.touch_many(s, user_ids)))


def prune(session: Session, older_than: dt.datetime, batch_size: int = PRUNE_BATCH_SIZE) -> int:
    """Delete up to `batch_size` events created before `older_than`; returns how many.

    A poll from an id whose successor is gone then gets 410 (see `_updates`).
    """
    return session.connection().execute(
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
