"""Submissions: the idempotent submit, and how a submission is shown to whom.

A submission is stored, with its `submission_created` event, before the 202 answer; the
dispatch job hands it to Taski later. The status goes pending -> testing -> judged.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from duely import dispatch, duels, errors, eventlog
from duely.clock import isoformat
from duely.config import Config
from duely.db import driver_execute
from duely.eventlog.types import DuelLogSubmission, SubmissionCreated
from duely.languages import LANGUAGES
from duely.logs import kv
from duely.models import Submission
from duely.statuses import DuelStatus, SubmissionState

log = logging.getLogger(__name__)
CLIENT_TEMP_ID_MAX_LEN = 128


@dataclass(frozen=True)
class SubmitPolicy:
    """What one submission may be: MAX_SOLUTION_BYTES, and SUBMIT_RATE_LIMIT per SUBMIT_RATE_WINDOW
    per user; built once per process (`from_config`)."""

    max_solution_bytes: int
    rate_limit: int
    rate_window_secs: float

    @classmethod
    def from_config(cls, config: Config) -> SubmitPolicy:
        return cls(max_solution_bytes=config.max_solution_bytes, rate_limit=config.submit_rate_limit,
                   rate_window_secs=config.submit_rate_window)


# Both statements run on the driver (db.driver_execute): they are the hottest write's.
_CHECK = (
    """
    WITH d AS MATERIALIZED (SELECT id, status, deadline FROM duels WHERE id = %(duel)s FOR UPDATE)
    SELECT d.status,
           clock_timestamp() >= d.deadline AS past_deadline,
           EXISTS (SELECT 1 FROM duel_players p WHERE p.duel_id = d.id AND p.user_id = %(user)s) AS is_player,
           (SELECT s.id FROM submissions s
             WHERE s.duel_id = d.id AND s.user_id = %(user)s AND s.client_temp_id = %(ctid)s) AS existing,
           r.n AS recent,
           extract(epoch FROM (r.oldest + make_interval(secs => %(w)s)) - clock_timestamp())::float AS retry_after
    FROM d CROSS JOIN LATERAL (
        SELECT min(submitted_at) AS oldest, count(*) AS n FROM (
            SELECT submitted_at FROM submissions
            WHERE user_id = %(user)s AND submitted_at > clock_timestamp() - make_interval(secs => %(w)s)
            ORDER BY submitted_at DESC LIMIT %(n)s) recent
    ) r
    """
)
# The RETURNING clause also wakes the dispatchers at commit (dispatch.wake_dispatcher, in the
# same round trip); a conflict returns no row and so wakes nobody.
_INSERT = (
    f"""
    INSERT INTO submissions (id, duel_id, user_id, language, solution, client_temp_id, submitted_at)
    VALUES (%(id)s, %(duel)s, %(user)s, %(lang)s, %(solution)s, %(ctid)s, clock_timestamp())
    ON CONFLICT (duel_id, user_id, client_temp_id) WHERE client_temp_id IS NOT NULL DO NOTHING
    RETURNING submitted_at, {dispatch.WAKE_DISPATCHER_SQL}
    """
)


def do_submit(session: Session, user_id: int, duel_id: int, language: str, solution: str,
              client_temp_id: str | None, policy: SubmitPolicy) -> tuple[uuid.UUID, bool]:
    """Store a submission; returns (submission_id, created). A repeat with the same
    client_temp_id by the same user in the same duel returns the first id and creates nothing.
    """
    # One round trip for every check (a submit is the hottest write): the duel row FOR UPDATE
    # (the finishing rule takes it FOR UPDATE too, so it sees every submission that passed the
    # deadline check; and the duel log's append bumps this row, so two submits holding it FOR
    # SHARE would deadlock upgrading it: the CTE takes the lock first, the outer SELECT and so
    # clock_timestamp() run once it is held), whether the caller plays it, an earlier submission with this
    # client_temp_id, and the caller's recent submissions for the rate limit. The checks are
    # raised in the order the contract gives them.
    check = driver_execute(session, _CHECK, {"duel": duel_id, "user": user_id, "ctid": client_temp_id,
                                             "w": policy.rate_window_secs, "n": policy.rate_limit}, named=True).fetchone()
    if check is None:
        raise errors.NotFound("No such duel.")
    if not check.is_player:
        raise errors.Forbidden("Only the two players of this duel may do that.")
    if check.existing is not None:
        return check.existing, False
    if check.status != DuelStatus.ACTIVE:
        raise errors.DuelFinished()
    if check.past_deadline:
        raise errors.DuelFinished("The duel's deadline has passed.")
    if language not in LANGUAGES:
        raise errors.ValidationFailed(fields={"language": [f"One of: {', '.join(LANGUAGES)} (see GET /api/languages)."]})
    if not solution.strip():
        raise errors.ValidationFailed(fields={"solution": ["The solution is empty."]})
    if len(solution.encode("utf-8")) > policy.max_solution_bytes:
        raise errors.PayloadTooLarge(f"The solution is larger than {policy.max_solution_bytes} bytes.")
    if check.recent >= policy.rate_limit:
        raise errors.RateLimited(float(check.retry_after),
                                 f"At most {policy.rate_limit} submissions per {int(policy.rate_window_secs)} s.")

    submission_id = uuid.uuid4()
    inserted = driver_execute(session, _INSERT, {"id": submission_id, "duel": duel_id, "user": user_id, "lang": language,
                                                 "solution": solution, "ctid": client_temp_id}, named=True).fetchone()
    if inserted is None:  # a concurrent duplicate committed first (only a client_temp_id can conflict)
        assert client_temp_id is not None
        existing = _by_client_temp_id(session, duel_id, user_id, client_temp_id)
        assert existing is not None  # committed before our INSERT gave up, so this statement sees it
        return existing, False
    eventlog.append(session, user_id, SubmissionCreated(
        duel_id=duel_id, submission_id=str(submission_id), client_temp_id=client_temp_id,
        language=language, submitted_at=inserted.submitted_at,
    ))
    eventlog.append_duel(session, duel_id, DuelLogSubmission(
        submission_id=str(submission_id), user_id=user_id, language=language, submitted_at=inserted.submitted_at,
        state=SubmissionState.PENDING, status=SubmissionState.PENDING, verdict=None,
    ))
    log.info("submission stored", extra=kv(submission_id=submission_id, duel_id=duel_id, user_id=user_id, language=language))
    return submission_id, True


def _by_client_temp_id(session: Session, duel_id: int, user_id: int, client_temp_id: str) -> uuid.UUID | None:
    return session.execute(
        select(Submission.id).where(Submission.duel_id == duel_id, Submission.user_id == user_id,
                                    Submission.client_temp_id == client_temp_id)
    ).scalar_one_or_none()


def list_for(session: Session, viewer_id: int, duel_id: int) -> list[dict]:
    """What `viewer_id` may see of a duel's submissions, oldest first: their own, plus the
    opponent's once the duel is finished. Code is shown to its owner, or after the duel."""
    duel = duels.get_duel(session, duel_id)
    finished = duel.status == DuelStatus.FINISHED
    query = select(Submission).where(Submission.duel_id == duel_id).order_by(Submission.submitted_at, Submission.id)
    if not finished:
        query = query.where(Submission.user_id == viewer_id)
    return [submission_json(s, show_code=finished or s.user_id == viewer_id) for s in session.execute(query).scalars()]


def submission_json(sub: Submission, show_code: bool) -> dict:
    # The contract's `status` carries Taski's latest progress text while testing.
    status = sub.progress if sub.status == SubmissionState.TESTING and sub.progress else sub.status
    return {
        "id": str(sub.id),
        "duel_id": sub.duel_id,
        "user_id": sub.user_id,
        "language": sub.language,
        "solution": sub.solution if show_code else None,
        "client_temp_id": sub.client_temp_id,
        "submitted_at": isoformat(sub.submitted_at),
        "status": status,
        "state": sub.status,
        "verdict": sub.verdict,
    }
