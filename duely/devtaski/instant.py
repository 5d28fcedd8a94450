"""Instant judging (`DEVTASKI_JUDGE=instant`): the judge pool's stand-in that runs no code.

Benchmarks must measure Duely, not the sandbox, so this "judge" decides at once from a marker
in the solution and emits the same events a real worker would (started, one `passed` per test
passed, the verdict), so the Kafka messages keep the contract: updates then the verdict, with
increasing `seq`. The marker is a comment line `# verdict: <verdict>` (or `// verdict: ...`);
without one the verdict is `Accepted`. See docs/devtaski.md.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable

from duely import logs
from duely.devtaski.judge import ACCEPTED, JudgingJob
from duely.devtaski.pool import JudgeEvent, WorkerReady

log = logging.getLogger(__name__)

MARKER = re.compile(r"^\s*(?:#|//)\s*verdict:\s*(\S.*?)\s*$", re.MULTILINE | re.IGNORECASE)
_ON_TEST = re.compile(r" on test #(\d+)$")


def verdict_for(source: str) -> str:
    """The verdict a solution asks for: its first `verdict:` marker, else Accepted."""
    match = MARKER.search(source)
    return match.group(1)[:200] if match else ACCEPTED


def passed_count(verdict: str, test_count: int) -> int:
    """How many `Test #k passed` updates precede `verdict`, as a real judge would send them."""
    if verdict == ACCEPTED:
        return test_count
    failed_on = _ON_TEST.search(verdict)
    return min(test_count, int(failed_on.group(1)) - 1) if failed_on else 0


class InstantJudge:
    """Same interface as `pool.JudgePool` (`start(on_event)`, `submit(job)`, `queued()`,
    `workers()`, `stop()`), except that `start` may also be given `on_events`, which then gets
    each submission's events as one list (its messages are published together). One thread
    turns jobs into events in order, so one submission's events (and so its seqs) are always in order."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[JudgingJob | None] = queue.Queue()
        self._on_events: Callable[[list[JudgeEvent]], None] = lambda events: None
        self._thread: threading.Thread | None = None

    def start(self, on_event: Callable[[JudgeEvent], None],
              on_events: Callable[[list[JudgeEvent]], None] | None = None) -> list[WorkerReady]:
        def one_by_one(events: list[JudgeEvent]) -> None:
            for event in events:
                on_event(event)

        self._on_events = on_events or one_by_one
        self._thread = threading.Thread(target=self._serve, name="instant-judge", daemon=True)
        self._thread.start()
        return self.workers()

    def submit(self, job: JudgingJob) -> None:
        self._jobs.put(job)

    def queued(self) -> int:
        return self._jobs.qsize()

    def workers(self) -> list[WorkerReady]:
        return [WorkerReady(uid=-1, sandbox_mode="instant")]

    def stop(self) -> None:
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(5)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            sid = job.submission_id
            try:
                verdict = verdict_for(job.source)
                events = [JudgeEvent("started", sid)]
                events += [JudgeEvent("passed", sid, test=number)
                           for number in range(1, passed_count(verdict, len(job.problem.tests)) + 1)]
                events.append(JudgeEvent("verdict", sid, verdict=verdict, detail="instant"))
                self._on_events(events)
            except Exception:  # a bad job must not stop the judge; a re-send judges it again
                log.exception("instant judging failed", extra=logs.kv(submission_id=sid))
                self._on_events([JudgeEvent("failed", sid, detail="instant judge error")])
