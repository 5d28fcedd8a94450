"""Dispatch: hand stored submissions to Taski, and re-send the ones stuck in testing.

Woken, not polled: the submit transaction sends `NOTIFY duely_dispatch` (delivered at its
commit), and the scheduler's dispatch loop (duely/wakeup.py) runs a round at once; a round
every DISPATCH_SWEEP_SECS stays as the safety net for re-sends, backoffs and missed wake-ups.
A round sends up to SENDS_IN_FLIGHT submissions at once over the process's one keep-alive
Taski session. Safe with several scheduler processes and with the parallel sends: each
submission is sent while its row is held `FOR UPDATE SKIP LOCKED`, so no submission is being
sent twice at once, and nothing is forgotten after a crash (the row simply stays due). Rules of docs/taski.md:
429 pauses every Taski call of the process (the client does that) and ends the round;
5xx/timeouts were already retried by the client, so the submission gets a backoff and waits
for a later round; 400 gives the verdict `Rejected: <message>`. A submission still
`testing` JUDGE_TIMEOUT after its last hand-over or message is sent again: Taski judges
nothing twice and re-publishes a verdict we may have lost.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

from sqlalchemy import text
from sqlalchemy.orm import Session

from duely import verdicts
from duely.config import Config
from duely.db import Database
from duely.logs import kv
from duely.statuses import SubmissionState
from duely.taski import TaskiClient, TaskiRateLimited, TaskiRejected, TaskiUnavailable

log = logging.getLogger(__name__)

BACKOFF_MAX_SECS = 60.0
ROUND_SIZE = 200
# Sends in flight at once per process (each holds its row lock and a database connection
# during its HTTP call; requests' default keep-alive pool of the one Taski session is 10).
SENDS_IN_FLIGHT = 8
DISPATCH_CHANNEL = "duely_dispatch"
DISPATCH_SWEEP_SECS = 1.0

# The wake-up as an SQL expression, for a writer that folds it into a statement it runs anyway.
WAKE_DISPATCHER_SQL = f"pg_notify('{DISPATCH_CHANNEL}', '')"
_NOTIFY = text(f"SELECT {WAKE_DISPATCHER_SQL}")


def wake_dispatcher(session: Session) -> None:
    """Ask the dispatchers for a round once this transaction commits (NOTIFY is sent at commit,
    and identical notifications of one transaction are folded into one)."""
    session.execute(_NOTIFY)

_DUE = f"""
    (s.next_attempt_at IS NULL OR s.next_attempt_at <= clock_timestamp())
    AND (s.status = {SubmissionState.PENDING.sql}
         OR (s.status = {SubmissionState.TESTING.sql}
             AND greatest(s.sent_at, s.last_message_at) < clock_timestamp() - make_interval(secs => :judge_timeout)))
"""


def due_submission_ids(session: Session, judge_timeout_secs: float, limit: int = ROUND_SIZE) -> list[uuid.UUID]:
    """Submissions to send now: pending ones, and testing ones silent for JUDGE_TIMEOUT; oldest first."""
    return list(session.execute(
        text(f"SELECT s.id FROM submissions s WHERE {_DUE} ORDER BY s.submitted_at LIMIT :limit"),
        {"judge_timeout": judge_timeout_secs, "limit": limit},
    ).scalars())


def backoff_secs(attempts: int) -> float:
    return min(BACKOFF_MAX_SECS, 2.0 ** max(0, attempts - 1))


@dataclass(frozen=True)
class SendResult:
    outcome: str  # sent | skipped | unavailable | rejected | paused
    message: str | None = None


def send_one(session: Session, taski: TaskiClient, submission_id: uuid.UUID, judge_timeout_secs: float) -> SendResult:
    """Send one due submission while holding its row; what happened is recorded in `session`."""
    row = session.execute(text(
        f"""
        SELECT s.id, s.status, s.language, s.solution, s.send_attempts, d.task->'id' AS task_id,
               extract(epoch FROM clock_timestamp() - greatest(s.sent_at, s.last_message_at)) AS silent_secs
        FROM submissions s JOIN duels d ON d.id = s.duel_id
        WHERE s.id = :id AND {_DUE}
        FOR UPDATE OF s SKIP LOCKED
        """
    ), {"id": submission_id, "judge_timeout": judge_timeout_secs}).first()
    if row is None:  # another dispatcher has it, or it is no longer due
        return SendResult("skipped")
    fields = kv(submission_id=row.id, attempt=row.send_attempts + 1)
    try:
        taski.send_submission(str(row.id), row.task_id, row.language, row.solution)
    except TaskiRejected as exc:
        log.warning("Taski rejected the submission", extra={"fields": {**fields["fields"], "message": repr(exc.message)}})
        return SendResult("rejected", exc.message)
    except TaskiRateLimited:
        return SendResult("paused")
    except TaskiUnavailable:
        wait = backoff_secs(row.send_attempts + 1)
        session.execute(text(
            "UPDATE submissions SET send_attempts = send_attempts + 1, "
            "next_attempt_at = clock_timestamp() + make_interval(secs => :wait) WHERE id = :id"
        ), {"id": row.id, "wait": wait})
        log.warning("send failed; backing off", extra={"fields": {**fields["fields"], "retry_in_secs": wait}})
        return SendResult("unavailable")
    session.execute(text(
        f"UPDATE submissions SET status = CASE WHEN status = {SubmissionState.PENDING.sql} "
        f"THEN {SubmissionState.TESTING.sql} ELSE status END, "
        "send_attempts = send_attempts + 1, sent_at = clock_timestamp(), next_attempt_at = NULL WHERE id = :id"
    ), {"id": row.id})
    if row.status == SubmissionState.TESTING:
        log.warning("re-sent a stuck submission",
                    extra={"fields": {**fields["fields"], "waited_secs": round(float(row.silent_secs or 0), 1)}})
    else:
        log.info("sent to Taski", extra=fields)
    return SendResult("sent")


def run_round(db: Database, config: Config, taski: TaskiClient, senders: Executor | None = None) -> int:
    """Send what is due, up to SENDS_IN_FLIGHT at once on `senders` (the process's pool, see
    Runtime.dispatch_senders; None sends one by one); returns how many were handed over (or rejected)."""
    if taski.paused_for() > 0:
        return 0
    with db.transaction() as session:
        ids = due_submission_ids(session, config.judge_timeout)
    if not ids:
        return 0
    halted = threading.Event()  # a 429 or an unavailable Taski: the rest waits for a later round

    def send(submission_id: uuid.UUID) -> bool:
        if halted.is_set() or taski.paused_for() > 0:
            return False
        with db.transaction() as session:
            result = send_one(session, taski, submission_id, config.judge_timeout)
        if result.outcome in ("paused", "unavailable"):
            halted.set()
            return False
        if result.outcome == "rejected":
            # Its own transaction, in the usual lock order (duel, users, submission).
            db.run(partial(verdicts.record_verdict, submission_id=submission_id, verdict=f"Rejected: {result.message}"))
        return result.outcome != "skipped"

    if len(ids) == 1 or senders is None:
        return sum(1 for submission_id in ids if send(submission_id))
    return sum(senders.map(send, ids))
