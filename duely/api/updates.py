"""GET /api/updates: long polling on the caller's event log (docs/api.md, "Event log").

The view validates the query and renders `eventlog.poll.poll`'s result; the waiting itself,
the 400/410 rules and presence live in duely/eventlog/ (see docs/events.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from flask import Response, g
from marshmallow import Schema, fields, validate

from duely import auth
from duely.api.common import BEARER, Blueprint, bearer_token, services, token_checked_in_view
from duely.eventlog import poll as polling
from duely.eventlog.store import POLL_LIMIT_DEFAULT, Updates
from duely.eventlog.types import DUEL_PAYLOADS, PAYLOADS, payload_schema

blp = Blueprint("updates", __name__, url_prefix="/api", description="Event log (long polling)")
PATH = "/api/updates"  # the plain poll is answered below Flask (duely/api/fast_poll.py), the rest here
_BIGINT_MAX = 2**63 - 1


class LogQuerySchema(Schema):
    """The query of a long poll on any log (a user's, a duel's)."""

    last_event_id = fields.Integer(load_default=0, validate=validate.Range(min=0, max=_BIGINT_MAX),
                                   metadata={"description": "The last event id the client has seen."})
    timeout = fields.Float(load_default=polling.POLL_TIMEOUT_DEFAULT_SECS, allow_nan=False,
                           validate=validate.Range(min=0, max=polling.POLL_TIMEOUT_MAX_SECS),
                           metadata={"description": "Seconds to hold the request when there is nothing new."})
    limit = fields.Integer(load_default=POLL_LIMIT_DEFAULT, validate=validate.Range(min=1, max=polling.POLL_LIMIT_MAX),
                           metadata={"description": "Most events in one answer."})

    @staticmethod
    def fast_load(args) -> dict | None:
        """The query as `load` gives it when every value is a plain decimal in range (what
        clients send), else None (common.Parser)."""
        loaded: dict = {"last_event_id": 0, "timeout": polling.POLL_TIMEOUT_DEFAULT_SECS, "limit": POLL_LIMIT_DEFAULT}
        for name, pattern, low, high in _FAST_QUERY:
            values = args.getlist(name)
            if not values:
                continue
            if len(values) > 1 or pattern.fullmatch(values[0]) is None:
                return None
            value = float(values[0]) if name == "timeout" else int(values[0])
            if not low <= value <= high:
                return None
            loaded[name] = value
        return loaded


_FAST_QUERY = (
    ("last_event_id", re.compile(r"[0-9]{1,19}"), 0, _BIGINT_MAX),
    ("timeout", re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,6})?"), 0, polling.POLL_TIMEOUT_MAX_SECS),
    ("limit", re.compile(r"[0-9]{1,3}"), 1, polling.POLL_LIMIT_MAX),
)
_FAST_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def wake_on_own_field(description: str) -> fields.Boolean:
    """The `wake_on_own` query argument of a user's own log (poll or stream): `true` (the
    default) or `false`, also `1` or `0` (the values `_FAST_BOOLEANS` takes)."""
    return fields.Boolean(load_default=True, truthy={"true", "1"}, falsy={"false", "0"},
                          metadata={"description": description})


class UpdatesQuerySchema(LogQuerySchema):
    """The query of `GET /api/updates`: a user's own log, whose own echoes a poll may sleep through."""

    wake_on_own = wake_on_own_field(
        "`false`: a held poll is not answered early for events that only echo your own requests "
        "(`submission_created`, `queue_joined`, `queue_left` of your leave, `challenge_created`); "
        "they come with the next other event or when the wait ends.")

    @staticmethod
    def fast_load(args) -> dict | None:
        """As `LogQuerySchema.fast_load`, with `wake_on_own` given as `true`, `false`, `1` or `0`."""
        loaded = LogQuerySchema.fast_load(args)
        if loaded is None:
            return None
        flags = args.getlist("wake_on_own")
        if len(flags) > 1 or (flags and flags[0] not in _FAST_BOOLEANS):
            return None
        loaded["wake_on_own"] = _FAST_BOOLEANS[flags[0]] if flags else True
        return loaded


_Type = TypeVar("_Type", bound=StrEnum)  # EventType or DuelEventType


def event_schema(name: str, payloads: Mapping[_Type, type]) -> type[Schema]:
    """The schema of one log's events (id, type, created_at, data) over its payload registry
    (PAYLOADS or DUEL_PAYLOADS), named `name` (the OpenAPI document drops the "Schema" suffix).
    Each type's data is documented by the schema named after its payload class
    (duely/eventlog/types.py, put in the document by `register_event_payloads`):
    `queue_joined` -> QueueJoined, `duel_finished` -> DuelFinished."""
    return Schema.from_dict({
        "id": fields.Integer(),
        "type": fields.String(metadata={"enum": sorted(t.value for t in payloads)}),
        "created_at": fields.String(),
        "data": fields.Raw(metadata={
            "description": "The event's payload; its schema depends on `type`: "
                           + ", ".join(f"`{t}` → {cls.__name__}" for t, cls in payloads.items()) + ".",
            "oneOf": [{"$ref": f"#/components/schemas/{cls.__name__}"} for cls in payloads.values()],
        }),
    }, name=name)


EventSchema = event_schema("EventSchema", PAYLOADS)


def register_event_payloads(spec) -> None:
    """Put each event type's payload schema, of both logs, in the OpenAPI document (referenced by
    Event.data and DuelEvent.data)."""
    for cls in [*PAYLOADS.values(), *DUEL_PAYLOADS.values()]:
        spec.components.schema(cls.__name__, schema=payload_schema(cls))


class UpdatesSchema(Schema):
    events = fields.List(fields.Nested(EventSchema))
    last_event_id = fields.Integer()


@blp.route("/updates", methods=["GET"])
@token_checked_in_view  # the token is checked by the poll's own read (eventlog.poll.poll)
@blp.arguments(UpdatesQuerySchema(), location="query", as_kwargs=True)  # an instance: no schema build per request
@blp.response(200, UpdatesSchema)
@blp.doc(security=BEARER)
def get_updates(last_event_id: int, timeout: float, limit: int, wake_on_own: bool):
    """Events after `last_event_id`, at once or as soon as one is committed (long poll).

    400 when `last_event_id` is ahead of the log; 410 `events_expired` (with the `last_event_id`
    to continue from) when events after it were pruned.
    """
    svc = services()
    token_hash = auth.hash_token(svc.config.secret_key, bearer_token() or "")
    g.user_id, updates = polling.poll(svc.runtime, token_hash, last_event_id, timeout, limit, wake_on_own)
    return ok_response(render_updates(updates))


def ok_response(body: str | bytes) -> Response:
    """The 200 answer to a poll, before the app's after_request hooks (compression)."""
    return Response(body, 200, {"Cache-Control": "no-store"}, mimetype="application/json")


def render_updates(updates: Updates) -> str:
    """The 200 body (UpdatesSchema), not dumped by the schema: the events arrive as JSON already
    (rendered by the database, duely/eventlog/store.py)."""
    return f'{{"events":{updates.events_json},"last_event_id":{updates.last_event_id}}}'
