"""Server-Sent Events: GET /api/stream (the caller's log), GET /api/duels/{id}/stream (a duel's
public log) and POST /api/stream-tickets (docs/api.md, "Server-Sent Events").

Every error (401, 400, 404, 410, 503) is answered as JSON before the stream starts: the view
does the stream's first read itself, with the poll's own machinery, and only then answers
200 text/event-stream; the rest is duely/eventlog/sse.py. The stream is never compressed
(Flask-Compress leaves streamed answers alone, and text/event-stream is not in its types) and
tells nginx not to buffer it (X-Accel-Buffering: no).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from flask import Response, g, request
from marshmallow import Schema, fields, validate

from duely import auth, errors, stream_tickets
from duely.api.common import BEARER, Blueprint, bearer_token, services
from duely.api.updates import wake_on_own_field
from duely.clock import isoformat
from duely.eventlog import sse
from duely.eventlog.poll import PollRequest, hold
from duely.eventlog.store import POLL_LIMIT_DEFAULT, PollKey

blp = Blueprint("stream", __name__, url_prefix="/api", description="Server-Sent Events on the event logs")
_BIGINT_MAX = 2**63 - 1
T = TypeVar("T")


class StreamQuerySchema(Schema):
    last_event_id = fields.Integer(load_default=0, validate=validate.Range(min=0, max=_BIGINT_MAX),
                                   metadata={"description": "Resume after this id (the Last-Event-ID header wins)."})
    ticket = fields.String(load_default=None, metadata={"description": "A stream ticket (POST /api/stream-tickets), "
                                                                       "for clients that cannot send Authorization."})


class UserStreamQuerySchema(StreamQuerySchema):
    wake_on_own = wake_on_own_field("`false`: the events that only echo your own requests are written with the "
                                    "next other event, not as they commit (as GET /api/updates?wake_on_own=false).")


class TicketSchema(Schema):
    ticket = fields.String()
    expires_at = fields.String()


class StreamHeadersSchema(Schema):
    # A string here: `_after_id` decides (a blank value is no value), so that its error stays the one answer.
    last_event_id_header = fields.String(data_key="Last-Event-ID", load_default=None, metadata={
        "description": "The id of the last event received, a non-negative integer (browsers send it when they "
                       "reconnect); it wins over `last_event_id`."})


# The header is documented by StreamHeadersSchema (as arguments), not here: a "parameters" list
# given to blp.doc replaces the one the arguments' schemas make, and the query's went missing.
_STREAM_DOC = {
    "security": BEARER,
    "responses": {"200": {"description": "text/event-stream: `retry:`, then per event `id:`, `event:` (its type), "
                                         "`data:` (the event JSON); `: heartbeat` comments when idle.",
                          "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
}


def _token_hash() -> str:
    """The hash of the caller's token: from Authorization, else from ?ticket=; Unauthorized otherwise."""
    secret = services().config.secret_key
    token = bearer_token()
    if token is not None:
        return auth.hash_token(secret, token)
    ticket = request.args.get("ticket")
    if ticket:
        return stream_tickets.token_hash_of(ticket, secret)
    raise errors.Unauthorized("Send Authorization: Bearer <token>, or ?ticket= from POST /api/stream-tickets.")


def _authenticated(view: Callable[..., T]) -> Callable[..., T]:
    """Resolve the credentials (not yet the token's validity) before the query is validated: 401 first."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        g.stream_token_hash = _token_hash()
        return view(*args, **kwargs)

    return wrapper


def _after_id(last_event_id: int, header: str | None) -> int:
    """Where to resume: the Last-Event-ID header (what a browser sends on reconnect) wins over the query."""
    if header is None or header.strip() == "":
        return last_event_id
    value = header.strip()
    if not value.isdigit() or int(value) > _BIGINT_MAX:
        raise errors.ValidationFailed(fields={"Last-Event-ID": ["Must be a non-negative integer event id."]})
    return int(value)


def _event_stream(req: PollRequest, owner_id: int, first) -> Response:
    runtime = services().runtime
    body = sse.stream(runtime.reader(), runtime.listener(), req, owner_id, first, services().config.sse_heartbeat)
    return Response(body, 200, {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}, mimetype="text/event-stream")


@blp.route("/stream-tickets", methods=["POST"])
@blp.response(201, TicketSchema)
@blp.doc(security=BEARER)
def create_ticket():
    """A ticket for ?ticket= on the event streams: valid STREAM_TICKET_TTL, and only while the
    token it was made from is (logout revokes it too); reusable until then."""
    token = bearer_token()
    if token is None:
        raise errors.Unauthorized("Send Authorization: Bearer <token>.")
    svc = services()
    ticket, expires_at = svc.db.read(partial(stream_tickets.issue, token_hash=auth.hash_token(svc.config.secret_key, token),
                                             secret_key=svc.config.secret_key, ttl_secs=svc.config.stream_ticket_ttl))
    return {"ticket": ticket, "expires_at": isoformat(expires_at)}


@blp.route("/stream", methods=["GET"])
@_authenticated
@blp.arguments(UserStreamQuerySchema(), location="query", as_kwargs=True)
@blp.arguments(StreamHeadersSchema(), location="headers", as_kwargs=True)
@blp.doc(**_STREAM_DOC)
def get_stream(last_event_id: int, ticket: str | None, wake_on_own: bool, last_event_id_header: str | None):
    """The caller's event log as Server-Sent Events (the same events as GET /api/updates)."""
    runtime = services().runtime
    token_hash = g.stream_token_hash
    req = PollRequest(PollKey.token(token_hash), _after_id(last_event_id, last_event_id_header), 0, POLL_LIMIT_DEFAULT,
                      wake_on_own=wake_on_own)
    g.user_id, first = hold(runtime.reader(), runtime.listener(), req, runtime.token_users.get(token_hash))
    runtime.remember_token(token_hash, g.user_id)
    return _event_stream(req, g.user_id, first)


@blp.route("/duels/<id:duel_id>/stream", methods=["GET"])
@_authenticated
@blp.arguments(StreamQuerySchema(), location="query", as_kwargs=True)
@blp.arguments(StreamHeadersSchema(), location="headers", as_kwargs=True)
@blp.doc(**_STREAM_DOC)
def get_duel_stream(duel_id: int, last_event_id: int, ticket: str | None, last_event_id_header: str | None):
    """A duel's public log as Server-Sent Events (the same events as GET /api/duels/{id}/updates)."""
    runtime = services().runtime
    # Read as the token's holder: every read re-checks the token (revoked: the stream ends).
    req = PollRequest(PollKey.duel(duel_id, g.stream_token_hash), _after_id(last_event_id, last_event_id_header), 0,
                      POLL_LIMIT_DEFAULT,
                      refresh_presence=False)
    _, first = hold(runtime.reader(), runtime.listener(), req, duel_id)
    return _event_stream(req, duel_id, first)
