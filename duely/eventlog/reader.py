"""The batched reader: the long poll's reads, on a few plain connections per process.

A read is a single statement (duely/eventlog/store.py), so it needs no transaction: no
BEGIN/COMMIT and no pool ping. And reads are batched, like a group commit: see `BatchedReader`.
This module changes when the way polls reach the database changes (connections, batching,
gevent), never when the log's rules do.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
import time
from typing import Any

import psycopg

from duely import errors, outage
from duely.db import CONNECT_TIMEOUT_SECS, PLAN_CACHE_MODE, psycopg_url
from duely.eventlog import presence
from duely.eventlog.presence import PresenceThrottle
from duely.eventlog.store import KeyKind, PollKey, read_params, read_sql

# Plain autocommit connections per process for the poll reads.
READ_CONNECTIONS_PER_PROCESS = 2
READER_APPLICATION_NAME = "duely-reader"
_Conn = tuple[psycopg.Connection, psycopg.RawCursor]  # a read connection and its one cursor
# Batches are padded to these sizes so that each connection prepares a handful of statements.
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


class PollReadFailed(Exception):
    """The batched read this poll was part of failed (the database is unreachable)."""


class _Read:
    __slots__ = ("key", "after_id", "limit", "presence", "row", "error", "done")

    def __init__(self, key: PollKey, after_id: int, limit: int, presence: bool):
        self.key, self.after_id, self.limit, self.presence = key, after_id, limit, presence
        self.row: tuple[Any, ...] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class BatchedReader:
    """Reads for the polls of one process, on a few plain autocommit psycopg connections.

    A read is a single statement, so it needs no transaction: no BEGIN/COMMIT and no pool
    ping. And reads are batched, like a group commit: a poll queues its read and takes a
    connection; whoever gets one runs every read queued so far in one statement, and the
    others find theirs done. When the connections are free a batch is just the one read;
    under load one round trip serves many polls, which is what keeps a busy 2-core box from
    spending its time waking PostgreSQL up once per poll. A held poll holds no connection.
    """

    def __init__(self, url: str, size: int, throttle: PresenceThrottle | None = None, slot_timeout_secs: float = 3.0):
        self.url = psycopg_url(url)
        self._throttle = throttle or PresenceThrottle()
        self._idle: list[_Conn] = []
        self._slots = _semaphore(size)
        self._slot_timeout_secs = slot_timeout_secs
        self._queue: list[_Read] = []
        self._queue_lock = threading.Lock()
        self.in_use = 0  # connections checked out right now (tests: a held poll holds none)
        self.statements = 0  # batches run, for the benchmark
        self.reads = 0

    def read(self, key: PollKey, after_id: int, limit: int, presence: bool = False) -> tuple[Any, ...] | None:
        """The read's row (see store.updates_from_row), or None when the user or token is not found."""
        request = _Read(key, after_id, limit, presence)
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
                conn: _Conn | None = None
                try:
                    conn = self._take()
                    self._execute(conn, batch)
                except Exception as exc:
                    if conn is not None:
                        conn[0].close()
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

    def _execute(self, taken: _Conn, batch: list[_Read]) -> None:
        conn, cursor = taken
        self.statements += 1
        self.reads += len(batch)
        for kind in KeyKind:
            group = [r for r in batch if r.key.kind is kind]
            for start in range(0, len(group), _BATCH_SIZES[-1]):
                chunk = group[start:start + _BATCH_SIZES[-1]]
                size = next(n for n in _BATCH_SIZES if n >= len(chunk))
                pad = size - len(chunk)  # padding rows have a NULL key: they match nothing
                keys: list[Any] = [r.key.value for r in chunk]
                tokens: list[str | None] | None = None
                if kind is KeyKind.DUEL_AS:  # (duel id, token hash)
                    keys, tokens = [k[0] for k in keys], [k[1] for k in keys] + [None] * pad
                params = read_params(keys + [None] * pad, [r.after_id for r in chunk] + [0] * pad,
                                     [r.limit for r in chunk] + [1] * pad, tokens)
                query, names = _positional_read_sql(kind, size)
                cursor.execute(query, [params[name] for name in names])
                for row in cursor.fetchall():
                    chunk[row[0] - 1].row = row
        # Presence for the whole batch in one upsert (throttled per user, see duely/eventlog/presence.py).
        due = [uid for uid in {r.row[1] for r in batch if r.presence and r.row is not None and not r.key.is_duel}
               if self._throttle.claim_write(uid)]
        if due:
            conn.execute(presence.UPSERT_SQL, {"ids": sorted(due)})

    def _take(self) -> _Conn:
        try:
            return self._idle.pop()
        except IndexError:
            conn = self._connect()
            return conn, psycopg.RawCursor(conn)  # one cursor per connection, used over and over

    def _connect(self) -> psycopg.Connection:
            # synchronous_commit off: the only writes here are presence upserts, and losing the
            # last second of those in a crash is harmless, while waiting for a WAL flush per
            # poll is not. A generic plan: the batch's arrays make PostgreSQL otherwise re-plan
            # the read on every execution (it costs more than running it); the generic plan is
            # the index nested loop, right for one read and for hundreds.
            return psycopg.connect(self.url, autocommit=True, application_name=READER_APPLICATION_NAME,
                                   connect_timeout=CONNECT_TIMEOUT_SECS,
                                   options=f"-c synchronous_commit=off -c plan_cache_mode={PLAN_CACHE_MODE}")

    def _give_back(self, taken: _Conn) -> None:
        conn = taken[0]
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.close()
        else:
            self._idle.append(taken)

    def close(self) -> None:
        while self._idle:
            self._idle.pop()[0].close()


@functools.cache
def _positional_read_sql(kind: KeyKind, size: int) -> tuple[bytes, tuple[str, ...]]:
    """`store.read_sql` with PostgreSQL's own numbered parameters (`$1`, `$2`...), as bytes, and the names of
    `read_params` in their order. psycopg converts `%(name)s` queries on every execution, and past
    50 parameters (batches of 32 and 64) it parses the whole statement again each time."""
    names: list[str] = []

    def numbered(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return "%"  # `%%`, the driver's escape of a literal %
        names.append(match.group(1))
        return f"${len(names)}"

    query = re.sub(r"%\((\w+)\)s|%%", numbered, read_sql(kind, size))
    return query.encode(), tuple(names)


def _semaphore(size: int) -> Any:
    # threading's semaphore is pure Python on a Condition, which gevent's patch turns into many
    # lock switches per acquire (it showed in the worker's profile); gevent's own is C.
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        from gevent.lock import BoundedSemaphore

        return BoundedSemaphore(size)
    return threading.BoundedSemaphore(size)

