"""The state one process keeps beside the database: built once where the process starts
(`create_app` for a web worker, `run_scheduler`, `run_consumer`), passed explicitly, and
forgotten in a forked child in one place (`os.register_at_fork` below).

What it holds, each made on first use:

- `reader()`: the long poll's batched reader and its connections (duely/eventlog/reader.py);
- `listener()`: the LISTEN connection that wakes held polls (duely/eventlog/listener.py), whose
  heartbeat refreshes the presence of held polls;
- `presence`: the per-process presence write throttle (duely/eventlog/presence.py);
- `token_users`: token hash -> user id, so a poll subscribes to the right user before its first read;
- `dispatch_senders()`: the scheduler's threads for parallel sends to Taski (duely/dispatch.py);
- `duel_starters()`: the scheduler's threads for starting a matchmaking round's duels at once (duely/matchmaking/rounds.py);
- `taski()`: the one Taski client, whose 429 pause must cover every call the process makes;
- logging, set up once when the runtime is built for a named process.

Tests build their own `Runtime` and `close()` it; nothing is reset by hand.
"""

from __future__ import annotations

import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

from duely import logs
from duely.config import Config
from duely.db import Database
from duely.eventlog.listener import Listener
from duely.eventlog.presence import PresenceThrottle
from duely.eventlog.reader import READ_CONNECTIONS_PER_PROCESS, BatchedReader
from duely.taski import TaskiClient

# Token hash -> user id entries kept before the map is cleared (a wrong guess costs one read).
TOKEN_USERS_MAX = 100_000


class Runtime:
    def __init__(self, config: Config, db: Database, process: str | None = None):
        self.config = config
        self.db = db
        if process is not None:
            logs.setup(config.log_level, process)
        self.logging_process = process
        self._lock = threading.Lock()
        self._forget()
        _live.add(self)

    def _forget(self) -> None:
        """Drop everything tied to this process's threads and connections (a new runtime, or a forked child)."""
        self._lock = threading.Lock()
        self._reader: BatchedReader | None = None
        self._listener: Listener | None = None
        self._taski: TaskiClient | None = None
        self._senders: ThreadPoolExecutor | None = None
        self._starters: ThreadPoolExecutor | None = None
        self.presence = PresenceThrottle()
        self.token_users: dict[str, int] = {}

    # -- the long poll ---------------------------------------------------------------------
    def reader(self) -> BatchedReader:
        reader = self._reader
        if reader is None:
            with self._lock:
                if self._reader is None:
                    self._reader = BatchedReader(self.db.url, READ_CONNECTIONS_PER_PROCESS, self.presence,
                                                 self.db.pool_timeout)
                reader = self._reader
        return reader

    def listener(self) -> Listener:
        """The LISTEN connection of this process, started on first use; its heartbeat keeps the
        presence of held polls fresh."""
        listener = self._listener
        if listener is None:
            with self._lock:
                if self._listener is None:
                    self._listener = Listener(self.db.url, heartbeat=self._heartbeat).start()
                listener = self._listener
        return listener

    def _heartbeat(self, user_ids: list[int]) -> None:
        self.db.run(lambda s: self.presence.touch_many(s, user_ids))

    def remember_token(self, token_hash: str, user_id: int) -> None:
        if len(self.token_users) > TOKEN_USERS_MAX:
            self.token_users.clear()
        self.token_users[token_hash] = user_id

    def shutdown(self) -> int:
        """The server is stopping: answer every held poll now. Returns how many were woken."""
        listener = self._listener
        return listener.shutdown() if listener is not None else 0

    # -- Taski -----------------------------------------------------------------------------
    def taski(self) -> TaskiClient:
        if self._taski is None:
            if not self.config.taski_url:
                raise RuntimeError("TASKI_URL is not set")
            self._taski = TaskiClient(self.config.taski_url, self.config.taski_timeout)
        return self._taski

    def dispatch_senders(self) -> ThreadPoolExecutor:
        """The scheduler's threads for parallel sends to Taski (dispatch.SENDS_IN_FLIGHT)."""
        if self._senders is None:
            from duely.dispatch import SENDS_IN_FLIGHT

            self._senders = ThreadPoolExecutor(max_workers=SENDS_IN_FLIGHT, thread_name_prefix="dispatch-send")
        return self._senders

    def duel_starters(self) -> ThreadPoolExecutor:
        """The scheduler's threads for starting a matchmaking round's duels at once (rounds.STARTS_IN_FLIGHT)."""
        if self._starters is None:
            from duely.matchmaking.rounds import STARTS_IN_FLIGHT

            self._starters = ThreadPoolExecutor(max_workers=STARTS_IN_FLIGHT, thread_name_prefix="duel-start")
        return self._starters

    # -- tests and scripts -----------------------------------------------------------------
    def close(self, wait: bool = False) -> None:
        """Stop the listener and close the reader's connections (a server process just exits)."""
        listener, reader, senders, starters = self._listener, self._reader, self._senders, self._starters
        self._listener = self._reader = self._senders = self._starters = None
        for pool in (senders, starters):
            if pool is not None:
                pool.shutdown(wait=wait)
        if listener is not None:
            listener.stop(timeout=5.0 if wait else 0.0)
        if reader is not None:
            reader.close()


_live: weakref.WeakSet[Runtime] = weakref.WeakSet()


def _forget_after_fork() -> None:
    # A forked child must never share its parent's connections, threads or caches: each
    # runtime starts over, making its own on first use. (Cheaper than checking the pid per poll.)
    for runtime in list(_live):
        runtime._forget()


os.register_at_fork(after_in_child=_forget_after_fork)
