"""The judging pool: `devtaski_workers` worker processes fed from one queue of jobs.

Each slot is a thread of the service that owns one worker process and a pipe to it: it hands
the worker one job at a time and relays the worker's events (started, passed, verdict, failed)
to the service. A worker that dies is replaced and its job tried again (MAX_ATTEMPTS in all).
Workers are spawned (not forked: the service has threads by then), die with the service
(PR_SET_PDEATHSIG), and each claims its own uid for its sandbox.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection

from duely import logs
from duely.devtaski import sandbox as sandboxes
from duely.devtaski.judge import JudgingJob, judge
from duely.devtaski.languages import runtime_paths

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2
WORKER_START_TIMEOUT_SECS = 60
LIVENESS_POLL_SECS = 1.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class JudgeEvent:
    kind: str  # started | passed | verdict | failed
    submission_id: str
    test: int | None = None  # passed
    verdict: str | None = None  # verdict
    detail: str = ""  # verdict, failed: for logs


@dataclass(frozen=True)
class WorkerSettings:
    uid_base: int
    sandbox_mode: str
    log_level: str


@dataclass(frozen=True)
class WorkerReady:
    uid: int
    sandbox_mode: str


class WorkerDied(RuntimeError):
    pass


class _Worker:
    def __init__(self, slot: int, settings: WorkerSettings):
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=worker_main, args=(slot, child_conn, settings, os.getpid()),
                                       name=f"devtaski-judge-{slot}", daemon=True)
        self.process.start()
        child_conn.close()
        if not self.conn.poll(WORKER_START_TIMEOUT_SECS):
            self.kill()
            raise WorkerDied(f"judge worker {slot} did not start")
        try:
            ready = self.conn.recv()
        except EOFError:
            self.kill()
            raise WorkerDied(f"judge worker {slot} exited at start (code {self.process.exitcode})") from None
        self.ready: WorkerReady = ready

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class JudgePool:
    """`submit(job)` queues a job; events arrive through the `on_event` given to `start`
    (called from the pool's threads, one submission's events always in order)."""

    def __init__(self, size: int, settings: WorkerSettings):
        self.size = max(1, size)
        self.settings = settings
        self._jobs: queue.Queue[JudgingJob | None] = queue.Queue()
        self._on_event: Callable[[JudgeEvent], None] = lambda event: None
        self._threads: list[threading.Thread] = []
        self._workers: dict[int, _Worker] = {}
        self._stopping = threading.Event()

    def start(self, on_event: Callable[[JudgeEvent], None]) -> list[WorkerReady]:
        """Start every worker (waiting until each is ready) and the slot threads."""
        self._on_event = on_event
        for slot in range(self.size):
            self._workers[slot] = _Worker(slot, self.settings)
        for slot in range(self.size):
            thread = threading.Thread(target=self._serve_slot, args=(slot,), name=f"judge-slot-{slot}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return [worker.ready for worker in self._workers.values()]

    def submit(self, job: JudgingJob) -> None:
        self._jobs.put(job)

    def queued(self) -> int:
        return self._jobs.qsize()

    def workers(self) -> list[WorkerReady]:
        """The live workers' uids and sandbox modes."""
        return [worker.ready for worker in list(self._workers.values())]

    def stop(self) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._jobs.put(None)
        for worker in list(self._workers.values()):
            worker.kill()
        for thread in self._threads:
            thread.join(5)

    def _serve_slot(self, slot: int) -> None:
        while not self._stopping.is_set():
            job = self._jobs.get()
            if job is None:
                return
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    worker = self._workers.get(slot) or self._respawn(slot)
                    worker.conn.send(job)
                    self._relay(worker)
                    break
                except (WorkerDied, EOFError, OSError) as exc:
                    if self._stopping.is_set():
                        return
                    log.error("judge worker died; replacing it",
                              extra=logs.kv(slot=slot, submission_id=job.submission_id, attempt=attempt, error=exc))
                    self._drop(slot)
            else:
                self._on_event(JudgeEvent("failed", job.submission_id, detail="judge worker died"))

    def _relay(self, worker: _Worker) -> None:
        """Pass the worker's events on until the job's last one."""
        while True:
            if not worker.conn.poll(LIVENESS_POLL_SECS):
                if not worker.process.is_alive():
                    raise WorkerDied(f"exit code {worker.process.exitcode}")
                continue
            event: JudgeEvent = worker.conn.recv()
            self._on_event(event)
            if event.kind in ("verdict", "failed"):
                return

    def _respawn(self, slot: int) -> _Worker:
        worker = _Worker(slot, self.settings)
        self._workers[slot] = worker
        log.info("judge worker started", extra=logs.kv(slot=slot, uid=worker.ready.uid, sandbox=worker.ready.sandbox_mode))
        return worker

    def _drop(self, slot: int) -> None:
        worker = self._workers.pop(slot, None)
        if worker is not None:
            worker.kill()


def _send_passed(conn: Connection, submission_id: str, test: int) -> None:
    conn.send(JudgeEvent("passed", submission_id, test=test))


def worker_main(slot: int, conn: Connection, settings: WorkerSettings, parent_pid: int) -> None:
    """A judge worker: claim a uid, then judge the jobs sent through `conn` one by one."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the service died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the service decides
    logs.setup(settings.log_level, f"devtaski-judge-{slot}")
    sandboxes.become_subreaper()
    uid, _lock_fd = sandboxes.claim_uid(settings.uid_base)  # held until this process exits
    box = sandboxes.Sandbox.create(uid, settings.sandbox_mode, runtime_paths())
    box.kill_leftovers()  # of an earlier holder of this uid that was killed -9
    conn.send(WorkerReady(uid, box.mode))
    while True:
        try:
            job: JudgingJob = conn.recv()
        except (EOFError, OSError):
            return
        sid = job.submission_id
        conn.send(JudgeEvent("started", sid))
        try:
            outcome = judge(job, box, partial(_send_passed, conn, sid))
        except Exception as exc:  # a sandbox failure says nothing about the submission
            log.exception("judging failed", extra=logs.kv(submission_id=sid))
            conn.send(JudgeEvent("failed", sid, detail=repr(exc)))
            continue
        conn.send(JudgeEvent("verdict", sid, verdict=outcome.verdict, detail=outcome.detail))
