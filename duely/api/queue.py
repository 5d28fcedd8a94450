"""The matchmaking queue: POST / DELETE / GET /api/queue."""

from __future__ import annotations

from flask import Response, g
from marshmallow import Schema, fields

from duely.api.common import (
    BEARER,
    Blueprint,
    caller_token_hash,
    current_user_id,
    login_required,
    run_as_caller,
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
@token_checked_in_view  # by the join's own transaction (run_as_caller)
@blp.response(202, QueueStatusSchema)
@blp.doc(security=BEARER)
def join_queue():
    """Wait for an opponent (idempotent). Keep polling /api/updates to stay in the queue."""
    # The common join (and an idempotent repeat) is one statement, token check included; anything
    # else (in a duel, a pending rematch offer, a concurrent change) takes the full path.
    svc = services()
    token_hash = caller_token_hash()
    g.user_id, since = svc.db.run_alone(lambda s: queue.join_alone(s, token_hash))
    if since is None:
        since = run_as_caller(queue.join)
    return {"status": QueueStatus.WAITING, "since": isoformat(since), "duel_id": None}


@blp.route("/queue", methods=["DELETE"])
@token_checked_in_view  # by the leave's own transaction (run_as_caller)
@blp.response(204)
@blp.doc(security=BEARER)
def leave_queue():
    svc = services()
    token_hash = caller_token_hash()
    g.user_id, left = svc.db.run_alone(lambda s: queue.leave_alone(s, token_hash))
    if left is None:  # not waiting as of the statement's snapshot, but changed since: decide afresh
        run_as_caller(lambda s, user_id: queue.leave(s, user_id, reason=QueueLeftReason.LEFT))
    return Response(status=204)


@blp.route("/queue", methods=["GET"])
@login_required
@blp.response(200, QueueStatusSchema)
@blp.doc(security=BEARER)
def queue_status():
    return services().db.read(lambda s: queue.status(s, current_user_id()))
