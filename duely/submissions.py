"""Submissions: the idempotent submit, and how a submission is shown to whom.

A submission is stored, with its `submission_created` event, before the 202 answer; the
dispatch job hands it to Taski later. The status goes pending -> testing -> judged.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from duely import dispatch, duels, errors
from duely.auth import TOKEN_OWNER_SQL, bad_token
from duely.clock import isoformat
from duely.config import Config
from duely.db import execute_alone
from duely.eventlog.store import DUEL_LOG, USER_LOG, append_ctes, isoformat_sql, notify_sql, payload_json
from duely.eventlog.types import DuelEventType, DuelLogSubmission, EventType, SubmissionCreated
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


# A submit is ONE statement on the driver (db.execute_alone), the hottest write's: the checks,
# and when they all pass, the insert, both events (`store.append_ctes`) and the NOTIFYs (the
# polls of both logs; the dispatchers, dispatch.WAKE_DISPATCHER_SQL), sent after its commit.
# The caller (`who`) is a user id, or a token hash checked by the statement itself (`submit_as`).
#
# The duel row is taken FOR UPDATE first (a MATERIALIZED CTE, so every check runs once it is
# held): the finishing rule takes it FOR UPDATE too, so it sees every submission that passed the
# deadline check; the duel log's append bumps this row (two submits holding it FOR SHARE would
# deadlock upgrading it); and it comes before the user's row (the personal log's append), the
# lock order of docs/lifecycle.md. The checks are those of the contract, raised by `_raise_refusal`
# in its order; `ok_input` is the body's own checks (language, size), made before the statement.
_WHO_USER = "who AS (SELECT CAST(%(user)s AS bigint) AS user_id)"
_WHO_TOKEN = f"who AS ({TOKEN_OWNER_SQL})"
_SUBMIT = """
    WITH {who}, d AS MATERIALIZED (
        SELECT id, status, deadline FROM duels WHERE id = %(duel)s AND EXISTS (SELECT 1 FROM who) FOR UPDATE
    ), chk AS MATERIALIZED (
        SELECT d.id AS duel_id, d.status,
               clock_timestamp() >= d.deadline AS past_deadline,
               EXISTS (SELECT 1 FROM duel_players p WHERE p.duel_id = d.id AND p.user_id = w.user_id) AS is_player,
               (SELECT s.id FROM submissions s
                 WHERE s.duel_id = d.id AND s.user_id = w.user_id AND s.client_temp_id = %(ctid)s) AS existing,
               r.n AS recent,
               extract(epoch FROM (r.oldest + make_interval(secs => %(w)s)) - clock_timestamp())::float AS retry_after
        FROM d CROSS JOIN who w CROSS JOIN LATERAL (
            SELECT min(submitted_at) AS oldest, count(*) AS n FROM (
                SELECT submitted_at FROM submissions
                WHERE user_id = w.user_id AND submitted_at > clock_timestamp() - make_interval(secs => %(w)s)
                ORDER BY submitted_at DESC LIMIT %(n)s) recent
        ) r
    ), ins AS (
        INSERT INTO submissions (id, duel_id, user_id, language, solution, client_temp_id, submitted_at)
        SELECT %(id)s, chk.duel_id, w.user_id, %(lang)s, %(solution)s, %(ctid)s, clock_timestamp()
        FROM chk CROSS JOIN who w
        WHERE %(ok_input)s AND chk.is_player AND chk.existing IS NULL AND chk.status = {active}
          AND NOT chk.past_deadline AND chk.recent < %(n)s
        ON CONFLICT (duel_id, user_id, client_temp_id) WHERE client_temp_id IS NOT NULL DO NOTHING
        RETURNING user_id AS owner, duel_id, submitted_at
    ), by_duel AS (
        SELECT duel_id AS owner, owner AS user_id, submitted_at FROM ins
    ), {user_event}, {duel_event}
    SELECT w.user_id, chk.*, i.submitted_at,
           (SELECT count({notify_user}) FROM uev) + (SELECT count({notify_duel}) FROM dev)
           + (SELECT count({wake_dispatcher}) FROM ins) AS notified
    FROM who w LEFT JOIN chk ON true LEFT JOIN ins i ON true
    """


@functools.cache
def _submit_sql(by_token: bool) -> str:
    submitted_at = "'submitted_at', " + isoformat_sql("s.submitted_at")
    return _SUBMIT.format(
        who=_WHO_TOKEN if by_token else _WHO_USER, active=DuelStatus.ACTIVE.sql,
        user_event=append_ctes("uev", "ins", USER_LOG, EventType.SUBMISSION_CREATED.value,
                               f"CAST(%(user_data)s AS jsonb) || jsonb_build_object({submitted_at})"),
        duel_event=append_ctes("dev", "by_duel", DUEL_LOG, DuelEventType.SUBMISSION.value,
                               f"CAST(%(duel_data)s AS jsonb) || jsonb_build_object({submitted_at}, 'user_id', s.user_id)"),
        notify_user=notify_sql(USER_LOG, "uev.owner", own=True), notify_duel=notify_sql(DUEL_LOG, "dev.owner"),
        wake_dispatcher=dispatch.WAKE_DISPATCHER_SQL)


# The events' data as the statement completes it (it adds `submitted_at`, known once inserted,
# and in the duel log's the user id, known once the token is checked).
_PLACEHOLDER_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def do_submit(session: Session, user_id: int, duel_id: int, language: str, solution: str,
              client_temp_id: str | None, policy: SubmitPolicy) -> tuple[uuid.UUID, bool]:
    """Store a submission; returns (submission_id, created). A repeat with the same
    client_temp_id by the same user in the same duel returns the first id and creates nothing.
    """
    _, submission_id, created = _submit(session, False, {"user": user_id}, duel_id, language, solution,
                                        client_temp_id, policy)
    return submission_id, created


def submit_as(session: Session | Connection, token_hash: str, duel_id: int, language: str, solution: str,
              client_temp_id: str | None, policy: SubmitPolicy) -> tuple[int, uuid.UUID, bool]:
    """`do_submit` for the holder of a bearer token (its hash), checked by the same statement:
    the whole submit is one statement, so it may run alone (Database.run_alone). Returns
    (user id, submission id, created); Unauthorized for a bad token, which changes nothing."""
    return _submit(session, True, {"h": token_hash}, duel_id, language, solution, client_temp_id, policy)


def _submit(session: Session | Connection, by_token: bool, who: dict[str, Any], duel_id: int, language: str, solution: str,
            client_temp_id: str | None, policy: SubmitPolicy) -> tuple[int, uuid.UUID, bool]:
    ok_input = (language in LANGUAGES and bool(solution.strip())
                and len(solution.encode("utf-8")) <= policy.max_solution_bytes)
    submission_id = uuid.uuid4()
    params = {**who, "duel": duel_id, "ctid": client_temp_id, "w": policy.rate_window_secs, "n": policy.rate_limit,
              "ok_input": ok_input, "id": submission_id, "lang": language,
              "solution": solution if ok_input else None}
    if ok_input:  # the events' data, but for the time the statement fills in
        params["user_data"] = payload_json(SubmissionCreated(
            duel_id=duel_id, submission_id=str(submission_id), client_temp_id=client_temp_id,
            language=language, submitted_at=_PLACEHOLDER_TIME))
        params["duel_data"] = payload_json(DuelLogSubmission(
            submission_id=str(submission_id), user_id=0, language=language, submitted_at=_PLACEHOLDER_TIME,
            state=SubmissionState.PENDING, status=SubmissionState.PENDING, verdict=None))
    else:
        params["user_data"] = params["duel_data"] = None
    row = execute_alone(session, _submit_sql(by_token), params, named=True).fetchone()
    if row is None:  # only a token can match nothing
        raise bad_token()
    user_id: int = row.user_id
    if row.submitted_at is not None:
        log.info("submission stored", extra=kv(submission_id=submission_id, duel_id=duel_id, user_id=user_id,
                                                language=language))
        return user_id, submission_id, True
    repeat = _refusal_or_repeat(row, language, solution, policy)
    if repeat is not None:
        return user_id, repeat, False
    # Every check passed but the insert met a concurrent duplicate that committed first (only a
    # client_temp_id can conflict): it committed before the insert gave up, so a new statement sees it.
    assert client_temp_id is not None
    existing = _by_client_temp_id(session, duel_id, user_id, client_temp_id)
    assert existing is not None
    return user_id, existing, False


def _refusal_or_repeat(check: Any, language: str, solution: str, policy: SubmitPolicy) -> uuid.UUID | None:
    """Raise what the contract answers a submit refused by `check` (the statement's row), in
    the contract's order; or return the id of the earlier submission it repeats (None: neither)."""
    if check.duel_id is None:
        raise errors.NotFound("No such duel.")
    if not check.is_player:
        raise errors.Forbidden("Only the two players of this duel may do that.")
    if check.existing is not None:
        existing: uuid.UUID = check.existing
        return existing
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
    return None


def _by_client_temp_id(session: Session | Connection, duel_id: int, user_id: int, client_temp_id: str) -> uuid.UUID | None:
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
