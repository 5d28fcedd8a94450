"""Spectating: the list of live (or finished) duels and long polling on a duel's public log
(docs/api.md, "Spectating"). The waiting, 400/410 and the log's rules live in duely/eventlog/."""

from __future__ import annotations

from flask import Response
from marshmallow import Schema, fields, validate

from duely import auth, duels
from duely.api.common import BEARER, ID_MAX, Blueprint, bearer_token, login_required, services, token_checked_in_view
from duely.api.duels import HistorySchema, duel_page
from duely.api.updates import LogQuerySchema, event_schema
from duely.eventlog import poll as polling
from duely.eventlog.types import DUEL_PAYLOADS
from duely.statuses import DuelStatus

blp = Blueprint("spectate", __name__, url_prefix="/api", description="Spectating: live duels and their public logs")


class DuelListQuerySchema(Schema):
    status = fields.String(load_default=DuelStatus.ACTIVE.value, validate=validate.OneOf([s.value for s in DuelStatus]),
                           metadata={"description": "active (live duels, the default) or finished"})
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    before_id = fields.Integer(load_default=None, validate=validate.Range(min=1, max=ID_MAX))


@blp.route("/duels", methods=["GET"])
@login_required
@blp.arguments(DuelListQuerySchema, location="query")
@blp.response(200, HistorySchema)
@blp.doc(security=BEARER)
def list_duels(query):
    """Duels by status, newest first; pass next_before_id as before_id for the next page."""
    def read(session):
        return duel_page(session, *duels.by_status(session, DuelStatus(query["status"]), query["limit"], query["before_id"]))

    return services().db.read(read)


DuelEventSchema = event_schema("DuelEventSchema", DUEL_PAYLOADS)


class DuelUpdatesSchema(Schema):
    events = fields.List(fields.Nested(DuelEventSchema))
    last_event_id = fields.Integer()


_QUERY = LogQuerySchema()


@blp.route("/duels/<id:duel_id>/updates", methods=["GET"])
@token_checked_in_view
@blp.arguments(_QUERY, location="query", as_kwargs=True)
@blp.response(200, DuelUpdatesSchema)
@blp.doc(security=BEARER)
def get_duel_updates(duel_id: int, last_event_id: int, timeout: float, limit: int):
    """Events of a duel's public log after `last_event_id`, at once or as soon as one is
    committed (long poll; anyone signed in). The duel-log event types: duel_started,
    submission, duel_finished. 404 for an unknown duel; 400/410 as GET /api/updates."""
    svc = services()
    # The token is checked by the poll's own read (no round trip for authentication), as for GET /api/updates.
    token_hash = auth.hash_token(svc.config.secret_key, bearer_token() or "")
    updates = polling.poll_duel(svc.runtime, duel_id, token_hash, last_event_id, timeout, limit)
    body = f'{{"events":{updates.events_json},"last_event_id":{updates.last_event_id}}}'
    return Response(body, 200, {"Cache-Control": "no-store"}, mimetype="application/json")
