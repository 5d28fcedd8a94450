"""Duels, submissions, resignation, history and languages."""

from __future__ import annotations

import uuid

from flask import g, request
from marshmallow import Schema, fields, validate
from sqlalchemy.orm import Session

from duely import duels, errors, submissions, users
from duely.api.common import (
    BEARER,
    ID_MAX,
    Blueprint,
    BodySchema,
    caller_token_hash,
    current_user_id,
    login_required,
    services,
    token_checked_in_view,
)
from duely.api.schemas import StakesSchema
from duely.languages import languages_json
from duely.models import Duel
from duely.statuses import DuelStatus, SubmissionState
from duely.submissions import CLIENT_TEMP_ID_MAX_LEN

blp = Blueprint("duels", __name__, url_prefix="/api", description="Duels and submissions")


class TaskSchema(Schema):
    id = fields.Raw()
    title = fields.String()
    statement = fields.String()
    time_limit_ms = fields.Integer(allow_none=True)


class DuelPlayerSchema(Schema):
    user_id = fields.Integer()
    nickname = fields.String()
    rating_before = fields.Integer()
    rating_after = fields.Integer(allow_none=True)


class ResultSchema(Schema):
    outcome = fields.String(metadata={"enum": ["win", "draw"]})
    winner_id = fields.Integer(allow_none=True)
    reason = fields.String(metadata={"enum": ["accepted", "timeout", "resign"]})


class DuelSchema(Schema):
    id = fields.Integer()
    status = fields.String(metadata={"enum": [s.value for s in DuelStatus]})
    rated = fields.Boolean(metadata={"description": "false: a casual duel from a challenge; no rating changes, stakes {}"})
    task = fields.Nested(TaskSchema)
    players = fields.List(fields.Nested(DuelPlayerSchema))
    started_at = fields.String()
    deadline = fields.String()
    finished_at = fields.String(allow_none=True)
    result = fields.Nested(ResultSchema, allow_none=True)
    rating_changes = fields.Dict(keys=fields.String(), values=fields.Integer())
    stakes = fields.Dict(keys=fields.String(), values=fields.Nested(StakesSchema),
                         metadata={"description": "per player id: shown rating change for a win, draw or loss"})


class SubmissionSchema(Schema):
    id = fields.String()
    duel_id = fields.Integer()
    user_id = fields.Integer()
    language = fields.String()
    solution = fields.String(allow_none=True)
    client_temp_id = fields.String(allow_none=True)
    submitted_at = fields.String()
    status = fields.String()
    state = fields.String(metadata={"enum": [s.value for s in SubmissionState]})
    verdict = fields.String(allow_none=True)


class SubmissionListSchema(Schema):
    submissions = fields.List(fields.Nested(SubmissionSchema))


class SubmitSchema(BodySchema):
    solution = fields.String(required=True)
    language = fields.String(required=True)
    client_temp_id = fields.String(load_default=None, allow_none=True,
                                   validate=validate.Length(min=1, max=CLIENT_TEMP_ID_MAX_LEN))

    @staticmethod
    def fast_load(data) -> dict | None:
        """The body as `load` gives it when it is plainly valid (common.Parser), else None."""
        if not isinstance(data, dict):
            return None
        solution, language, ctid = data.get("solution"), data.get("language"), data.get("client_temp_id")
        if not (isinstance(solution, str) and isinstance(language, str)) or "\x00" in solution or "\x00" in language:
            return None
        if ctid is not None and not (isinstance(ctid, str) and 1 <= len(ctid) <= CLIENT_TEMP_ID_MAX_LEN
                                     and "\x00" not in ctid):
            return None
        # Other string fields are ignored, as the schema does, but a NUL in one is refused there.
        if any(isinstance(v, str) and "\x00" in v for k, v in data.items() if k not in _SUBMIT_FIELDS):
            return None
        return {"solution": solution, "language": language, "client_temp_id": ctid}


_SUBMIT_FIELDS = ("solution", "language", "client_temp_id")


class SubmitResultSchema(Schema):
    submission_id = fields.String()
    status = fields.String()


class HistoryQuerySchema(Schema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    before_id = fields.Integer(load_default=None, validate=validate.Range(min=1, max=ID_MAX))


class HistorySchema(Schema):
    duels = fields.List(fields.Nested(DuelSchema))
    next_before_id = fields.Integer(allow_none=True)


def duel_page(session: Session, page: list[Duel], next_before_id: int | None) -> dict:
    """A page of duels as HistorySchema renders it (a user's history, the spectators' list)."""
    return {"duels": [duels.duel_json(session, d) for d in page], "next_before_id": next_before_id}


class LanguageSchema(Schema):
    id = fields.String()
    name = fields.String()


class LanguagesSchema(Schema):
    languages = fields.List(fields.Nested(LanguageSchema))


@blp.route("/duels/<id:duel_id>", methods=["GET"])
@login_required
@blp.response(200, DuelSchema)
@blp.doc(security=BEARER)
def get_duel(duel_id: int):
    return services().db.read(lambda s: duels.duel_json(s, duels.get_duel(s, duel_id)))


@blp.route("/duels/<id:duel_id>/submissions", methods=["GET"])
@login_required
@blp.response(200, SubmissionListSchema)
@blp.doc(security=BEARER)
def list_submissions(duel_id: int):
    """The caller's own submissions, oldest first; the opponent's too once the duel is finished."""
    return services().db.read(lambda s: {"submissions": submissions.list_for(s, current_user_id(), duel_id)})


@blp.route("/duels/<id:duel_id>/submit", methods=["POST"])
@token_checked_in_view  # by the submit's own statement (submissions.submit_as)
@blp.arguments(SubmitSchema)
@blp.response(202, SubmitResultSchema)
@blp.doc(security=BEARER, parameters=[{"in": "header", "name": "Idempotency-Key", "schema": {"type": "string"}}])
def submit(body, duel_id: int):
    """Store a solution for judging (idempotent by client_temp_id or Idempotency-Key)."""
    svc = services()
    key = idempotency_key(body["client_temp_id"], request.headers.get("Idempotency-Key"))
    token_hash = caller_token_hash()
    # One statement, token check included (submissions.submit_as): run alone, no BEGIN/COMMIT.
    g.user_id, submission_id, _ = svc.db.run_alone(lambda s: submissions.submit_as(
        s, token_hash, duel_id, body["language"], body["solution"], key, svc.submit_policy))
    return submit_answer(submission_id)


def idempotency_key(client_temp_id: str | None, header: str | None) -> str | None:
    """A submit's idempotency key: the body's client_temp_id, else the Idempotency-Key header;
    ValidationFailed for a header longer than a client_temp_id may be."""
    key = client_temp_id or header or None
    if key is not None and len(key) > CLIENT_TEMP_ID_MAX_LEN:
        raise errors.ValidationFailed(fields={"Idempotency-Key": [f"At most {CLIENT_TEMP_ID_MAX_LEN} characters."]})
    return key


def submit_answer(submission_id: uuid.UUID) -> dict:
    """The 202 body of a submit (SubmitResultSchema), also rendered below Flask (duely/api/fast_writes.py)."""
    return {"submission_id": str(submission_id), "status": SubmissionState.PENDING}


@blp.route("/duels/<id:duel_id>/resign", methods=["POST"])
@token_checked_in_view  # by the resignation's own first statement (duels.resign_as)
@blp.response(202, DuelSchema)
@blp.doc(security=BEARER)
def resign(duel_id: int):
    """Give up: the opponent wins at once."""
    # The token is checked by the resignation's first statement (duels.resign_as): no statement of its own.
    token_hash = caller_token_hash()
    g.user_id, duel = services().db.run(lambda s: duels.resign_as(s, token_hash, duel_id), pipeline=True)
    return duel


@blp.route("/users/<id:user_id>/duels", methods=["GET"])
@login_required
@blp.arguments(HistoryQuerySchema, location="query")
@blp.response(200, HistorySchema)
@blp.doc(security=BEARER)
def history(query, user_id: int):
    """A user's duels, newest first; pass next_before_id as before_id for the next page."""
    def read(session):
        users.get_user(session, user_id)  # 404 for an unknown user
        return duel_page(session, *duels.history(session, user_id, query["limit"], query["before_id"]))

    return services().db.read(read)


@blp.route("/languages", methods=["GET"])
@login_required
@blp.response(200, LanguagesSchema)
@blp.doc(security=BEARER)
def languages():
    return {"languages": languages_json()}
