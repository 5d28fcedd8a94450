"""Jobs woken by PostgreSQL NOTIFY, with a periodic sweep as the safety net.

`WokenLoop` LISTENs on one channel on its own connection and runs its job as soon as a
notification arrives (writers queue them in their transactions; they leave after the commit),
and at least every `sweep_secs` anyway: a missed notification (connection lost, listener
restarting) only delays work until the next sweep, it never loses it, because the job reads
what to do from the rows. Notifications that arrive while the job runs are folded into one
more run; a loop given `min_gap_secs` also lets that long pass between the starts of woken
runs, so a burst of wake-ups (say, a hundred queue joins a second) makes a few larger runs
instead of a hundred small ones, each of which would read all its rows again. Several loops
on several hosts are safe because every job is (row locks / SKIP LOCKED).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from duely.backoff import LISTEN_RECONNECT
from duely.db import psycopg_url
from duely.logs import kv

log = logging.getLogger(__name__)

# A job that did a full batch probably has more to do: run again at once, up to this many times.
MAX_BACK_TO_BACK_RUNS = 20


class WokenLoop:
    def __init__(self, database_url: str, channel: str, job: Callable[[], object], sweep_secs: float,
                 name: str, more: Callable[[object], bool] = lambda result: False, min_gap_secs: float = 0.0):
        self.url = psycopg_url(database_url)
        self.channel, self.job, self.sweep_secs, self.name, self.more = channel, job, sweep_secs, name, more
        self.min_gap_secs = min_gap_secs
        self._last_run_started = float("-inf")
        self.stop_event = threading.Event()
        self.listening = threading.Event()
        self.runs = 0
        self.woken_runs = 0  # runs started by a notification rather than by the sweep
        self.gap_waits = 0  # woken runs that waited for min_gap_secs (at most that long) before starting
        self._thread: threading.Thread | None = None

    def start(self) -> WokenLoop:
        self._thread = threading.Thread(target=self._loop, name=f"woken-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run_job(self) -> None:
        for _ in range(MAX_BACK_TO_BACK_RUNS):
            if self.stop_event.is_set():
                return
            self.runs += 1
            self._last_run_started = time.monotonic()
            try:
                result = self.job()
            except Exception:  # the job's rows stay as they are; the next run tries again
                log.exception("job failed", extra=kv(job=self.name))
                return
            if not self.more(result):
                return

    def _loop(self) -> None:
        retry = LISTEN_RECONNECT.start()
        lost = False  # logged once per outage, not at every reconnect attempt
        while not self.stop_event.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10,
                                     application_name=f"duely-{self.name}") as conn:
                    conn.execute(f'LISTEN "{self.channel}"')
                    self.listening.set()
                    retry.reset()
                    if lost:
                        log.info("listen connection back", extra=kv(job=self.name))
                        lost = False
                    self._run_job()  # whatever was announced while we were not listening
                    while not self.stop_event.is_set():
                        woken = any(True for _ in conn.notifies(timeout=self.sweep_secs, stop_after=1))
                        if woken:  # fold what else is already waiting (or comes within the gap) into this run
                            gap_left = self.min_gap_secs - (time.monotonic() - self._last_run_started)
                            if gap_left > 0:
                                self.gap_waits += 1
                                if self.stop_event.wait(gap_left):
                                    break
                            for _ in conn.notifies(timeout=0.001):
                                pass
                            self.woken_runs += 1
                        self._run_job()
            except Exception as exc:
                if not lost:
                    log.warning("listen connection lost; reconnecting", extra=kv(job=self.name, problem=repr(exc)))
                    lost = True
            finally:
                self.listening.clear()
            self.stop_event.wait(retry.next())
