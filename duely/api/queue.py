"""The matchmaking queue: POST / DELETE / GET /api/queue."""

from __future__ import annotations

import datetime as dt

from flask import Response
from marshmallow import Schema, fields

from duely.api.common import (
    BEARER,
    Blueprint,
    alone_or_full,
    current_user_id,
    login_required,
    services,
    token_checked_in_view,
)
from duely.clock import isoformat
from duely.eventlog.types import QueueLeftReason
from duely.matchmaking import queue
from duely.statuses import QueueStatus

blp = Blueprint("queue", __name__, url_prefix="/api", description="Matchmaking queue")


class QueueStatusSchema(Schema):
    status = fields.String(metadata={"enum": [s.value for s in QueueStatus]})
    since = fields.String(allow_none=True)
    duel_id = fields.Integer(allow_none=True)


@blp.route("/queue", methods=["POST"])
@token_checked_in_view  # by the join's own statement (alone_or_full)
@blp.response(202, QueueStatusSchema)
@blp.doc(security=BEARER)
def join_queue():
    """Wait for an opponent (idempotent). Keep polling /api/updates to stay in the queue."""
    # The common join (and an idempotent repeat) is one statement, token check included; anything
    # else (in a duel, a pending rematch offer, a concurrent change) takes the full path.
    return join_answer(alone_or_full(queue.join_alone, queue.join))


def join_answer(since: dt.datetime) -> dict:
    """The 202 body of a join (QueueStatusSchema), also rendered below Flask (duely/api/fast_writes.py)."""
    return {"status": QueueStatus.WAITING, "since": isoformat(since), "duel_id": None}


@blp.route("/queue", methods=["DELETE"])
@token_checked_in_view  # by the leave's own statement (alone_or_full)
@blp.response(204)
@blp.doc(security=BEARER)
def leave_queue():
    # None from the statement: not waiting as of its snapshot, but changed since: decide afresh.
    alone_or_full(queue.leave_alone, lambda s, user_id: queue.leave(s, user_id, reason=QueueLeftReason.LEFT))
    return Response(status=204)


@blp.route("/queue", methods=["GET"])
@login_required
@blp.response(200, QueueStatusSchema)
@blp.doc(security=BEARER)
def queue_status():
    return services().db.read(lambda s: queue.status(s, current_user_id()))
