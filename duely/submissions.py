"""Submissions: the idempotent submit, and how a submission is shown to whom.

A submission is stored, with its `submission_created` event, before the 202 answer; the
dispatch job hands it to Taski later. The status goes pending -> testing -> judged.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from duely import dispatch, duels, errors, eventlog
from duely.clock import isoformat
from duely.eventlog.types import DuelLogSubmission, SubmissionCreated
from duely.languages import LANGUAGES
from duely.logs import kv
from duely.models import Submission
from duely.statuses import DuelStatus, SubmissionState

log = logging.getLogger(__name__)
CLIENT_TEMP_ID_MAX_LEN = 128


def do_submit(session: Session, user_id: int, duel_id: int, language: str, solution: str,
              client_temp_id: str | None, *, max_solution_bytes: int, rate_limit: int,
              rate_window_secs: float) -> tuple[uuid.UUID, bool]:
    """Store a submission; returns (submission_id, created). A repeat with the same
    client_temp_id by the same user in the same duel returns the first id and creates nothing.
    """
    # FOR UPDATE: the finishing rule takes this row FOR UPDATE too, so it sees every submission
    # that passed the deadline check below; and the duel log's append bumps this row (two
    # submits holding it FOR SHARE would deadlock upgrading it).
    duel, players = duels.access_duel_as_player(session, user_id, duel_id, lock="update")
    if client_temp_id is not None:
        existing = _by_client_temp_id(session, duel_id, user_id, client_temp_id)
        if existing is not None:
            return existing, False
    if duel.status != DuelStatus.ACTIVE:
        raise errors.DuelFinished()
    if session.execute(text("SELECT clock_timestamp() >= :d"), {"d": duel.deadline}).scalar_one():
        raise errors.DuelFinished("The duel's deadline has passed.")
    if language not in LANGUAGES:
        raise errors.ValidationFailed(fields={"language": [f"One of: {', '.join(LANGUAGES)} (see GET /api/languages)."]})
    if not solution.strip():
        raise errors.ValidationFailed(fields={"solution": ["The solution is empty."]})
    if len(solution.encode("utf-8")) > max_solution_bytes:
        raise errors.PayloadTooLarge(f"The solution is larger than {max_solution_bytes} bytes.")
    _check_rate(session, user_id, rate_limit, rate_window_secs)

    submission_id = uuid.uuid4()
    inserted = session.execute(text(
        """
        INSERT INTO submissions (id, duel_id, user_id, language, solution, client_temp_id, submitted_at)
        VALUES (:id, :duel, :user, :lang, :solution, :ctid, clock_timestamp())
        ON CONFLICT (duel_id, user_id, client_temp_id) WHERE client_temp_id IS NOT NULL DO NOTHING
        RETURNING submitted_at
        """
    ), {"id": submission_id, "duel": duel_id, "user": user_id, "lang": language, "solution": solution,
        "ctid": client_temp_id}).first()
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
    dispatch.wake_dispatcher(session)  # the dispatcher sends it as soon as this commits
    log.info("submission stored", extra=kv(submission_id=submission_id, duel_id=duel_id, user_id=user_id, language=language))
    return submission_id, True


def _by_client_temp_id(session: Session, duel_id: int, user_id: int, client_temp_id: str) -> uuid.UUID | None:
    return session.execute(
        select(Submission.id).where(Submission.duel_id == duel_id, Submission.user_id == user_id,
                                    Submission.client_temp_id == client_temp_id)
    ).scalar_one_or_none()


def _check_rate(session: Session, user_id: int, limit: int, window_secs: float) -> None:
    oldest_in_window = session.execute(text(
        """
        SELECT min(submitted_at), count(*) FROM (
          SELECT submitted_at FROM submissions
          WHERE user_id = :u AND submitted_at > clock_timestamp() - make_interval(secs => :w)
          ORDER BY submitted_at DESC LIMIT :n) recent
        """
    ), {"u": user_id, "w": window_secs, "n": limit}).one()
    if oldest_in_window[1] >= limit:
        retry_after = session.execute(
            text("SELECT extract(epoch FROM (:t + make_interval(secs => :w)) - clock_timestamp())"),
            {"t": oldest_in_window[0], "w": window_secs},
        ).scalar_one()
        raise errors.RateLimited(float(retry_after), f"At most {limit} submissions per {int(window_secs)} s.")


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
