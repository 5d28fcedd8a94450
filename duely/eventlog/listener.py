"""One PostgreSQL LISTEN connection per process that wakes the requests waiting for events.
See docs/events.md ("Wake-up").

`eventlog.append` queues `pg_notify('duely_events', '<user id>')` in the writer's transaction
(`'o:<user id>'` for an event that only echoes the user's own request, see `own_key`),
`eventlog.append_duel` `pg_notify('duely_events', 'd:<duel id>')` for a duel's public log;
it is sent right after the commit (duely/notify.py), and PostgreSQL delivers it to every
listening connection. The listener turns each
notification into a wake-up of exactly the waiters of that log (a user id, or the key
`duel_key(duel id)`), who then read their events with a short read of their own. A waiting
request holds no database connection. One channel and one connection for both kinds of log:
spectators cost the process nothing beyond their own waiters.

The listener is written with `threading` only. Under gunicorn's gevent worker, `monkey.patch_all()`
turns its thread into a greenlet and its locks/events into cooperative ones, and psycopg (imported
after the patch) waits for notifications cooperatively, so one greenlet serves thousands of waiters.
Outside gevent (tests, scripts) it is an ordinary daemon thread.

Missed notifications cannot lose events: every (re)connection wakes all waiters so that they
re-read, and a waiter always re-reads once more when its timeout ends.

A lost connection wakes every waiter too: when the database went away, their re-read fails and
they are answered 503 `unavailable` at once instead of at the end of their timeout (and when only
this connection was lost, the re-read finds the database well and they wait again). The loss is
logged once; reconnecting goes on quietly with a capped backoff until the database answers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from duely import outage
from duely.backoff import LISTEN_RECONNECT
from duely.db import CONNECT_TIMEOUT_SECS, psycopg_url

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "duely_events"
# How often the listener loop looks up from `notifies()` to notice a stop request.
LISTEN_WAKE_SECS = 1.0
# A connection that delivered nothing for this long is pinged, so a dead one is noticed.
LISTEN_PING_SECS = 30.0
# Presence of users with a held poll is refreshed this often (QUEUE_TTL is 30 s by default).
HEARTBEAT_SECS = 10.0
# How the LISTEN connections show up in pg_stat_activity (followed by "-<pid>").
LISTENER_APPLICATION_NAME = "duely-listener"
# Over TCP, a peer that vanished without closing (host down, network cut) is noticed within
# about idle + interval x count seconds by the kernel's keepalives, and a send that gets no
# acknowledgement fails after tcp_user_timeout; both are ignored on a Unix socket, where a
# stopped server closes the socket at once.
_TCP_LIVENESS: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                 "tcp_user_timeout": 10_000}


# What a waiter waits on: a user id (their personal log) or `duel_key(duel id)` (a duel's public log).
WakeKey = int | str
_DUEL_PREFIX = "d:"
_OWN_PREFIX = "o:"


def duel_key(duel_id: int) -> str:
    """The wake-up key (and NOTIFY payload) of a duel's public log."""
    return f"{_DUEL_PREFIX}{duel_id}"


def own_key(user_id: int) -> str:
    """The NOTIFY payload of an event in `user_id`'s log that only echoes that user's own request
    (`submission_created` of their submit, `queue_joined` of their join...): it wakes the user's
    waiters except those that asked not to be woken for their own actions (`wake_on_own=false`)."""
    return f"{_OWN_PREFIX}{user_id}"


def parse_wake_key(payload: str) -> tuple[WakeKey, bool]:
    """A NOTIFY payload -> the key of the waiters to wake, and whether it is an own-action echo
    (`own_key`). ValueError when it is none of the kinds."""
    if payload.startswith(_DUEL_PREFIX):
        return duel_key(int(payload[len(_DUEL_PREFIX):])), False
    if payload.startswith(_OWN_PREFIX):
        return int(payload[len(_OWN_PREFIX):]), True
    return int(payload), False


class Waiter:
    """One held request's wake-up flag. `wait` returns True when woken, False on timeout.
    `user_id` is its key: a user id, or a duel log's `duel_key`. A waiter with `wake_on_own`
    False sleeps through the echoes of its user's own requests (`own_key`)."""

    __slots__ = ("user_id", "wake_on_own", "_event")

    def __init__(self, user_id: WakeKey, wake_on_own: bool = True):
        self.user_id = user_id
        self.wake_on_own = wake_on_own
        self._event = threading.Event()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(max(0.0, timeout))

    def clear(self) -> None:
        self._event.clear()

    def set(self) -> None:
        self._event.set()


class Listener:
    """LISTENs on one channel and wakes the waiters of the user ids it is notified about."""

    def __init__(self, database_url: str, channel: str = NOTIFY_CHANNEL,
                 heartbeat: Callable[[list[int]], object] | None = None, heartbeat_secs: float = HEARTBEAT_SECS):
        self.url = psycopg_url(database_url)
        self.channel = channel
        self._heartbeat = heartbeat
        self._heartbeat_secs = heartbeat_secs
        self._lock = threading.Lock()
        self._waiters: dict[WakeKey, set[Waiter]] = {}
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self.backend_pid: int | None = None  # of the LISTEN connection (tests terminate it)
        self.connected = threading.Event()
        # Set when the server stops: held requests answer at once and new ones do not wait.
        self.shutting_down = False
        # Counters for tests, logs and the benchmark.
        self.connections = 0
        self.notifications = 0

    # -- waiters ---------------------------------------------------------------------------
    def subscribe(self, user_id: WakeKey, wake_on_own: bool = True) -> Waiter:
        """Register a waiter for `user_id` (or a duel log's key). Register *before* reading the log, so that an event
        committed between the read and the wait still wakes it. `wake_on_own`: see `Waiter`."""
        waiter = Waiter(user_id, wake_on_own)
        if self.shutting_down:
            waiter.set()
        with self._lock:
            self._waiters.setdefault(user_id, set()).add(waiter)
        return waiter

    def unsubscribe(self, waiter: Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(waiter.user_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[waiter.user_id]

    def wake(self, user_id: WakeKey, own: bool = False) -> int:
        """Wake every waiter of `user_id` (for an own-action echo, those with `wake_on_own`); returns how many."""
        with self._lock:
            waiters = [w for w in self._waiters.get(user_id, ()) if w.wake_on_own or not own]
        for waiter in waiters:
            waiter.set()
        return len(waiters)

    def wake_all(self) -> int:
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
        for waiter in waiters:
            waiter.set()
        return len(waiters)

    def waiting_user_ids(self) -> list[int]:
        """The users with a held poll or stream on their own log (spectators' keys excluded)."""
        with self._lock:
            return [key for key in self._waiters if isinstance(key, int)]

    def waiter_count(self) -> int:
        with self._lock:
            return sum(len(ws) for ws in self._waiters.values())

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Listener:
        if not self._threads:
            self._threads.append(threading.Thread(target=self._run, name="duely-listener", daemon=True))
            if self._heartbeat is not None:
                self._threads.append(threading.Thread(target=self._run_heartbeat, name="duely-presence", daemon=True))
            for thread in self._threads:
                thread.start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def shutdown(self) -> int:
        """The server is stopping: answer every held request now. Returns how many were woken."""
        self.shutting_down = True
        return self.wake_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Shut down and end the listener threads (tests; a server process just exits)."""
        self.shutdown()
        self._closed.set()
        for thread in self._threads:
            thread.join(timeout)

    # -- the loops -------------------------------------------------------------------------
    def _run(self) -> None:
        retry = LISTEN_RECONNECT.start()
        failing = False  # the previous attempt failed too: keep quiet until one succeeds
        while not self._closed.is_set():
            was_connected = False
            try:
                with self._connect() as conn:
                    self.backend_pid = conn.info.backend_pid
                    conn.execute(f'LISTEN "{self.channel}"')
                    self.connections += 1
                    self.connected.set()
                    was_connected, failing = True, False
                    # Anything committed while we were not listening was not announced to us:
                    # let every waiter re-read.
                    woken = self.wake_all()
                    log.info("listening on %s (connection %d, woke %d waiters)", self.channel, self.connections, woken)
                    retry.reset()
                    self._listen(conn)
            except Exception as exc:
                if self._closed.is_set():
                    break
                if was_connected:
                    # Held polls re-read now: if the database is gone they get 503 at once.
                    woken = self.wake_all()
                    log.warning("listener connection lost: %s; woke %d waiters; reconnecting (backoff up to %.0fs)",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                                woken, LISTEN_RECONNECT.cap)
                elif not failing:
                    log.warning("listener cannot connect: %s; retrying quietly (backoff up to %.0fs)",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                                LISTEN_RECONNECT.cap)
                else:
                    log.debug("listener reconnect failed: %s", exc)
                failing = True
            finally:
                self.connected.clear()
                self.backend_pid = None
            if self._closed.wait(retry.next()):
                break

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECS,
                               application_name=f"{LISTENER_APPLICATION_NAME}-{os.getpid()}", **_TCP_LIVENESS)

    def _listen(self, conn: psycopg.Connection) -> None:
        last_heard = time.monotonic()
        while not self._closed.is_set():
            for notify in conn.notifies(timeout=LISTEN_WAKE_SECS):
                last_heard = time.monotonic()
                self.notifications += 1
                try:
                    key, own = parse_wake_key(notify.payload)
                except ValueError:
                    log.warning("ignoring notification with payload %r", notify.payload)
                    continue
                self.wake(key, own)
            if time.monotonic() - last_heard > LISTEN_PING_SECS:
                conn.execute("SELECT 1")  # raises if the connection died silently
                last_heard = time.monotonic()

    def _run_heartbeat(self) -> None:
        while not self._closed.wait(self._heartbeat_secs):
            user_ids = self.waiting_user_ids()
            if not user_ids or self.shutting_down:
                continue
            try:
                self._heartbeat(user_ids)  # type: ignore[misc]
            except Exception as exc:
                if outage.is_unavailable(exc):  # the listener has logged the outage already
                    log.debug("presence heartbeat skipped: database unavailable")
                    continue
                log.warning("presence heartbeat failed for %d users", len(user_ids), exc_info=True)
