"""The development Taski's core, knowing nothing of HTTP: tasks, and the life of a submission.

`do_submit` accepts a submission once (idempotent on submission_id) and queues it for judging;
`handle_event` turns the judge pool's events into the contract's Kafka messages, numbering
them per submission (`seq` from 1) and persisting the final verdict before publishing it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from duely import logs
from duely.clock import isoformat, utcnow
from duely.devtaski.judge import JudgingJob
from duely.devtaski.languages import Language
from duely.devtaski.pool import JudgeEvent
from duely.devtaski.problems import Problem, pick
from duely.devtaski.publisher import Publisher
from duely.devtaski.store import JUDGED, SubmissionStore

log = logging.getLogger(__name__)

MAX_SOLUTION_BYTES = 256 * 1024


class Rejected(ValueError):
    """The submission can never be judged; the message says why (it becomes `Rejected: <message>`)."""


class JobQueue(Protocol):
    def submit(self, job: JudgingJob) -> None: ...

    def queued(self) -> int: ...

    def workers(self) -> list: ...


@dataclass(frozen=True)
class SubmissionRequest:
    submission_id: str
    task_id: int
    language: str
    solution: str


def update_message(submission_id: str, seq: int, test: int) -> dict:
    return {"submission_id": submission_id, "seq": seq, "type": "update", "status": f"Test #{test} passed",
            "at": isoformat(utcnow())}


def verdict_message(submission_id: str, seq: int, verdict: str) -> dict:
    return {"submission_id": submission_id, "seq": seq, "type": "verdict", "verdict": verdict, "at": isoformat(utcnow())}


class DevTaski:
    def __init__(self, problems: dict[int, Problem], languages: dict[str, Language], store: SubmissionStore,
                 publisher: Publisher, jobs: JobQueue, rng: random.Random | None = None):
        self.problems = problems
        self.languages = languages
        self.store = store
        self.publisher = publisher
        self.jobs = jobs
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()

    def pick_task(self, rating: int, exclude: Collection[int]) -> Problem | None:
        with self._rng_lock:
            return pick(list(self.problems.values()), rating, exclude, self._rng)

    def get_task(self, task_id: int) -> Problem | None:
        return self.problems.get(task_id)

    def do_submit(self, request: SubmissionRequest) -> str:
        """Accept a submission; returns its status (`queued`, `judging` or `judged`).

        A known submission_id is never judged twice: if it is judged, its verdict message is
        published again (same seq), else nothing happens. Raises Rejected for what can never
        be judged (nothing is remembered then, so the same answer comes every time).
        """
        sid = request.submission_id
        known = self.store.get(sid)
        if known is None:
            problem, language = self._check(request)
            record, created = self.store.claim(sid)
            if created:
                self.jobs.submit(JudgingJob(sid, language, problem, request.solution))
                log.info("submission queued", extra=logs.kv(submission_id=sid, task_id=problem.id, language=language.id))
                return record.status
            known = record  # a concurrent identical request won the claim
        if known.status == JUDGED and known.verdict_message is not None:
            self.publisher.publish(known.verdict_message)
            log.info("verdict re-sent", extra=logs.kv(submission_id=sid, seq=known.verdict_message["seq"]))
        return known.status

    def _check(self, request: SubmissionRequest) -> tuple[Problem, Language]:
        problem = self.problems.get(request.task_id)
        if problem is None:
            raise Rejected(f"unknown task {request.task_id}")
        language = self.languages.get(request.language)
        if language is None:
            raise Rejected(f"unknown language {request.language!r} (known: {', '.join(sorted(self.languages))})")
        if not request.solution.strip():
            raise Rejected("empty solution")
        if len(request.solution.encode()) > MAX_SOLUTION_BYTES:
            raise Rejected(f"solution larger than {MAX_SOLUTION_BYTES} bytes")
        return problem, language

    def handle_event(self, event: JudgeEvent) -> None:
        """One event from the judge pool (called from the pool's threads)."""
        self.handle_events([event])

    def handle_events(self, events: list[JudgeEvent]) -> None:
        """Events from the judge pool, in order; their messages are published together (the
        instant judge hands over all of a submission's events at once: one produce request)."""
        messages: list[dict] = []
        for event in events:
            sid = event.submission_id
            if event.kind == "started":
                self.store.start_judging(sid)
            elif event.kind == "passed":
                messages.append(update_message(sid, self.store.next_seq(sid), event.test or 0))
            elif event.kind == "verdict":
                message = verdict_message(sid, self.store.next_seq(sid), event.verdict or "")
                self.store.record_verdict(sid, message)  # on disk before anyone can see it
                messages.append(message)
                details = {"detail": event.detail} if event.detail else {}
                log.info("judged", extra=logs.kv(submission_id=sid, verdict=event.verdict, seq=message["seq"], **details))
            elif event.kind == "failed":
                self.store.forget(sid)
                log.error("could not judge; a re-send will judge it again", extra=logs.kv(submission_id=sid, error=event.detail))
        if messages:
            self.publisher.publish_many(messages)
