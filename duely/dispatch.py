"""Dispatch: hand stored submissions to Taski, and re-send the ones stuck in testing.

Woken, not polled: the submit transaction queues `NOTIFY duely_dispatch` (sent right after its
commit: duely/notify.py), and the scheduler's dispatch loop (duely/wakeup.py) runs a round at once (woken
rounds at least WOKEN_MIN_GAP_SECS apart); a round every DISPATCH_SWEEP_SECS stays as the
safety net for re-sends, backoffs and missed wake-ups. A round claims the due rows in batches
(one transaction each: claim, send up to SENDS_IN_FLIGHT at once, a batch of one inline, over
the process's one Taski client, record the outcomes set-based, commit). Safe with several
scheduler processes and with the parallel sends: each submission is sent while its row is
held `FOR UPDATE SKIP LOCKED`, so no submission is being sent twice at once, and nothing is
forgotten after a crash (the row simply stays due). Rules of docs/taski.md: 429 pauses every
Taski call of the process (the client does that) and ends the round; 5xx/timeouts were
already retried by the client, so the submission gets a backoff and waits for a later round;
400 gives the verdict `Rejected: <message>`. A submission still `testing` JUDGE_TIMEOUT after
its last hand-over or message is sent again: Taski judges nothing twice and re-publishes a
verdict we may have lost.
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

from duely import notify, verdicts
from duely.backoff import SUBMISSION_SEND
from duely.config import Config
from duely.db import Database, driver_execute
from duely.statuses import SubmissionState
from duely.taski import TaskiClient, TaskiRateLimited, TaskiRejected, TaskiUnavailable

log = logging.getLogger(__name__)

ROUND_SIZE = 200
# Sends in flight at once per process (each holds its row lock and a database connection
# during its HTTP call; requests' default keep-alive pool of the one Taski session is 10).
SENDS_IN_FLIGHT = 8
# Due rows claimed, sent and recorded per transaction of a round: one wave of parallel sends.
# Fewer transactions than one per submission, and a verdict that arrives while its row is
# still claimed (an instant judge answers before the send's transaction commits) waits for
# one HTTP call, not for a queue of them (with 32 per batch it could wait for four waves).
CLAIM_SIZE = SENDS_IN_FLIGHT
DISPATCH_CHANNEL = "duely_dispatch"
DISPATCH_SWEEP_SECS = 1.0
# Woken rounds start at least this far apart: at a hundred submits a second a round per NOTIFY
# claimed one row each (a transaction, and its fixed costs, per submission); with the gap a
# round takes what arrived meanwhile. A lone submission after a quiet spell is sent at once;
# under load none waits longer than this for its round to start.
WOKEN_MIN_GAP_SECS = 0.015

# The wake-up as an SQL expression, for a writer that folds it into a statement it runs anyway.
WAKE_DISPATCHER_SQL = notify.queue_sql(f"'{DISPATCH_CHANNEL}'", "''")
_NOTIFY = text(f"SELECT {WAKE_DISPATCHER_SQL}")


def wake_dispatcher(session: Session) -> None:
    """Ask the dispatchers for a round once this transaction commits (the NOTIFY is sent right
    after the commit, duely/notify.py; identical ones of one transaction are sent once)."""
    session.execute(_NOTIFY)

_DUE = f"""
    (s.next_attempt_at IS NULL OR s.next_attempt_at <= clock_timestamp())
    AND (s.status = {SubmissionState.PENDING.sql}
         OR (s.status = {SubmissionState.TESTING.sql}
             AND greatest(s.sent_at, s.last_message_at) < clock_timestamp() - make_interval(secs => :judge_timeout)))
"""


def due_submission_ids(session: Session, judge_timeout_secs: float, limit: int = ROUND_SIZE) -> list[uuid.UUID]:
    """Submissions to send now: pending ones, and testing ones silent for JUDGE_TIMEOUT; oldest first.
    (What a round claims, read without claiming: for inspection and tests.)"""
    return list(session.execute(
        text(f"SELECT s.id FROM submissions s WHERE {_DUE} ORDER BY s.submitted_at LIMIT :limit"),
        {"judge_timeout": judge_timeout_secs, "limit": limit},
    ).scalars())


def backoff_secs(attempts: int) -> float:
    """How long a submission waits after its `attempts`-th failed send."""
    return SUBMISSION_SEND.delay(attempts)


@dataclass(frozen=True)
class SendResult:
    outcome: str  # sent | unavailable | rejected | paused | halted (not tried: the round stopped)
    message: str | None = None


# The due rows, oldest first, that no other dispatcher holds, locked until this transaction
# commits: claiming them is how a round finds them (no separate read of what is due). This
# statement and the outcomes' run on the driver (db.driver_execute, psycopg's parameter style):
# at one claimed row per woken round, SQLAlchemy's execution machinery cost more CPU than the
# database work.
_DUE_DRIVER = _DUE.replace(":judge_timeout", "%(judge_timeout)s")
_CLAIM = f"""
    SELECT s.id, s.status, s.language, s.solution, s.send_attempts, d.task->'id' AS task_id,
           extract(epoch FROM clock_timestamp() - greatest(s.sent_at, s.last_message_at)) AS silent_secs
    FROM submissions s JOIN duels d ON d.id = s.duel_id
    WHERE {_DUE_DRIVER}
    ORDER BY s.submitted_at
    LIMIT %(limit)s
    FOR UPDATE OF s SKIP LOCKED
    """
_SENT = (
    f"UPDATE submissions SET status = CASE WHEN status = {SubmissionState.PENDING.sql} "
    f"THEN {SubmissionState.TESTING.sql} ELSE status END, "
    "send_attempts = send_attempts + 1, sent_at = clock_timestamp(), next_attempt_at = NULL WHERE id = ANY(%(ids)s)"
)
# backoff_secs(send_attempts + 1), computed from the stored count in the same statement.
_BACK_OFF = (
    "UPDATE submissions SET send_attempts = send_attempts + 1, "
    # SUBMISSION_SEND's delay after the (send_attempts + 1)-th failure, in SQL (the old value on the right)
    "next_attempt_at = clock_timestamp() + make_interval(secs => least(%(cap)s, %(initial)s * power(%(factor)s, send_attempts))) "
    "WHERE id = ANY(%(ids)s)"
)


def claim(session: Session, judge_timeout_secs: float, limit: int = CLAIM_SIZE) -> list:
    """Lock up to `limit` due rows that no other dispatcher holds (SKIP LOCKED): this
    transaction's rows to send. Held until it commits, so no submission is sent twice at once."""
    return driver_execute(session, _CLAIM, {"judge_timeout": float(judge_timeout_secs), "limit": limit}, named=True).fetchall()


def send(taski: TaskiClient, row, halted: threading.Event) -> SendResult:
    """Hand one claimed row to Taski (no database work: several run at once)."""
    if halted.is_set() or taski.paused_for() > 0:
        return SendResult("halted")
    try:
        taski.send_submission(str(row.id), row.task_id, row.language, row.solution)
    except TaskiRejected as exc:
        return SendResult("rejected", exc.message)
    except TaskiRateLimited:
        halted.set()
        return SendResult("paused")
    except TaskiUnavailable:
        halted.set()
        return SendResult("unavailable")
    return SendResult("sent")


def record_sends(session: Session, rows: list, results: list[SendResult]) -> None:
    """What the sends did, set-based (one statement per outcome), in the claiming transaction."""
    by_outcome: dict[str, list] = {}
    for row, result in zip(rows, results, strict=True):
        by_outcome.setdefault(result.outcome, []).append(row)
        fields = {"submission_id": row.id, "attempt": row.send_attempts + 1}
        if result.outcome == "sent" and row.status == SubmissionState.TESTING:
            log.warning("re-sent a stuck submission",
                        extra={"fields": {**fields, "waited_secs": round(float(row.silent_secs or 0), 1)}})
        elif result.outcome == "sent":
            log.info("sent to Taski", extra={"fields": fields})
        elif result.outcome == "unavailable":
            log.warning("send failed; backing off",
                        extra={"fields": {**fields, "retry_in_secs": backoff_secs(row.send_attempts + 1)}})
        elif result.outcome == "rejected":
            log.warning("Taski rejected the submission", extra={"fields": {**fields, "message": repr(result.message)}})
    if by_outcome.get("sent"):
        driver_execute(session, _SENT, {"ids": [r.id for r in by_outcome["sent"]]})
    if by_outcome.get("unavailable"):
        driver_execute(session, _BACK_OFF, {"ids": [r.id for r in by_outcome["unavailable"]], "cap": float(SUBMISSION_SEND.cap),
                                            "initial": float(SUBMISSION_SEND.initial), "factor": float(SUBMISSION_SEND.factor)})


def run_round(db: Database, config: Config, taski: TaskiClient, senders: Executor | None = None) -> int:
    """Send what is due; returns how many were handed over (or rejected).

    The due rows are claimed CLAIM_SIZE at a time (up to ROUND_SIZE), each batch in one
    transaction: claimed (FOR UPDATE SKIP LOCKED), sent up to SENDS_IN_FLIGHT at once on `senders` (the process's
    pool, see Runtime.dispatch_senders; None sends one by one), the outcomes recorded, committed.
    A 429 or an unavailable Taski stops the round; the rest waits for a later one."""
    if taski.paused_for() > 0:
        return 0
    handed = claimed = 0
    halted = threading.Event()
    while claimed < ROUND_SIZE and not halted.is_set():
        with db.transaction() as session:
            rows = claim(session, config.judge_timeout, min(CLAIM_SIZE, ROUND_SIZE - claimed))
            if not rows:
                break
            go = partial(send, taski, halted=halted)
            results = list(senders.map(go, rows)) if senders is not None and len(rows) > 1 else [go(r) for r in rows]
            record_sends(session, rows, results)
        claimed += len(rows)
        for row, result in zip(rows, results, strict=True):
            if result.outcome == "rejected":
                # After the claim's commit, in its own transaction and the usual lock order (duel, users, submission).
                db.run(partial(verdicts.record_verdict, submission_id=row.id, verdict=f"Rejected: {result.message}"))
        handed += sum(1 for result in results if result.outcome in ("sent", "rejected"))
        if len(rows) < CLAIM_SIZE:
            break
    return handed
