"""The event types and, once per type, its payload (docs/api.md, "Event types").

Each payload is a frozen dataclass; `eventlog.append` takes one and stores `payload.data()`,
so an event can only be written through its definition. The same definitions give the
marshmallow schemas (`payload_schema`) that document each type's `data` in the OpenAPI
document and that tests check emitted events against: one definition, three uses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate

from duely.clock import isoformat
from duely.fields import StrictBoolean, StrictInteger


class EventType(StrEnum):
    QUEUE_JOINED = "queue_joined"
    QUEUE_LEFT = "queue_left"
    DUEL_STARTED = "duel_started"
    SUBMISSION_CREATED = "submission_created"
    SUBMISSION_UPDATE = "submission_update"
    SUBMISSION_VERDICT = "submission_verdict"
    OPPONENT_VERDICT = "opponent_verdict"
    DUEL_FINISHED = "duel_finished"
    CHALLENGE_CREATED = "challenge_created"
    CHALLENGE_RECEIVED = "challenge_received"
    REMATCH_OFFERED = "rematch_offered"
    CHALLENGE_ACCEPTED = "challenge_accepted"
    CHALLENGE_DECLINED = "challenge_declined"
    CHALLENGE_CANCELED = "challenge_canceled"
    CHALLENGE_EXPIRED = "challenge_expired"


EVENT_TYPES = frozenset(t.value for t in EventType)


class QueueLeftReason(StrEnum):
    LEFT = "left"  # DELETE /api/queue
    EXPIRED = "expired"  # no poll for QUEUE_TTL
    MATCHED = "matched"  # followed by duel_started


# A task id is whatever Taski uses: a string or an integer (docs/api.md).
TaskId = int | str


@dataclass(frozen=True, slots=True)
class Payload:
    """Base of every payload: `type` names its event type, `data()` is what the log stores."""

    type: ClassVar[EventType]

    def data(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class QueueJoined(Payload):
    type: ClassVar[EventType] = EventType.QUEUE_JOINED
    since: dt.datetime


@dataclass(frozen=True, slots=True)
class QueueLeft(Payload):
    type: ClassVar[EventType] = EventType.QUEUE_LEFT
    reason: QueueLeftReason


@dataclass(frozen=True, slots=True)
class Opponent:
    user_id: int
    nickname: str
    rating: int
    provisional: bool  # rating deviation still high: the page shows `1500?` (docs/ratings.md)


@dataclass(frozen=True, slots=True)
class PlayerStakes:
    """What a player's rating changes by if they win, draw or lose (fixed when the duel starts)."""

    win: int
    draw: int
    loss: int


@dataclass(frozen=True, slots=True)
class TaskRef:
    id: TaskId
    title: str | None


@dataclass(frozen=True, slots=True)
class DuelStarted(Payload):
    type: ClassVar[EventType] = EventType.DUEL_STARTED
    duel_id: int
    opponent: Opponent
    task: TaskRef
    deadline: dt.datetime
    stakes: dict[str, PlayerStakes]  # user id (as a string: a JSON key) -> that player's stakes; {} when unrated
    rated: bool  # false: a casual duel from a challenge, no rating changes (docs/challenges.md)


@dataclass(frozen=True, slots=True)
class SubmissionCreated(Payload):
    type: ClassVar[EventType] = EventType.SUBMISSION_CREATED
    duel_id: int
    submission_id: str
    client_temp_id: str | None
    language: str
    submitted_at: dt.datetime


@dataclass(frozen=True, slots=True)
class SubmissionUpdate(Payload):
    type: ClassVar[EventType] = EventType.SUBMISSION_UPDATE
    duel_id: int
    submission_id: str
    status: str  # Taski's text, e.g. "Test #2 passed"


@dataclass(frozen=True, slots=True)
class SubmissionVerdict(Payload):
    type: ClassVar[EventType] = EventType.SUBMISSION_VERDICT
    duel_id: int
    submission_id: str
    verdict: str


@dataclass(frozen=True, slots=True)
class OpponentVerdict(Payload):
    """The opponent's result and when they submitted: never their code or submission id."""

    type: ClassVar[EventType] = EventType.OPPONENT_VERDICT
    duel_id: int
    verdict: str
    submitted_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DuelFinished(Payload):
    type: ClassVar[EventType] = EventType.DUEL_FINISHED
    duel_id: int
    outcome: typing.Literal["win", "draw"]
    winner_id: int | None
    reason: typing.Literal["accepted", "timeout", "resign"]
    rating_changes: dict[str, int]  # user id (as a string: a JSON key) -> rating change


@dataclass(frozen=True, slots=True)
class ChallengeView:
    """A challenge or rematch offer as the API shows it (docs/api.md, "Challenges"): the same
    object in `GET /api/challenges/{id}` and in every challenge event."""

    id: str
    kind: typing.Literal["challenge", "rematch"]
    challenger: Opponent
    to: Opponent | None  # None: an open challenge, for whoever has the link
    rated: bool
    duration_secs: int
    rematch_of: int | None  # the finished duel a rematch offer is for
    status: typing.Literal["pending", "accepted", "declined", "canceled", "expired"]
    decline_reason: str | None
    created_at: dt.datetime
    expires_at: dt.datetime
    closed_at: dt.datetime | None
    duel_id: int | None  # the duel it started, once accepted
    accepted_by: Opponent | None  # who accepted it (for an open challenge: whoever came first)
    invite_url: str | None  # open challenges only

    def json(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class ChallengeCreated(Payload):
    """The challenger's own log: other tabs and clients of the challenger learn of it."""

    type: ClassVar[EventType] = EventType.CHALLENGE_CREATED
    challenge: ChallengeView


@dataclass(frozen=True, slots=True)
class ChallengeReceived(Payload):
    type: ClassVar[EventType] = EventType.CHALLENGE_RECEIVED
    challenge: ChallengeView


@dataclass(frozen=True, slots=True)
class RematchOffered(Payload):
    type: ClassVar[EventType] = EventType.REMATCH_OFFERED
    challenge: ChallengeView


@dataclass(frozen=True, slots=True)
class ChallengeAccepted(Payload):
    """Followed in the same transaction (and with the next ids) by `duel_started`."""

    type: ClassVar[EventType] = EventType.CHALLENGE_ACCEPTED
    challenge: ChallengeView
    duel_id: int


@dataclass(frozen=True, slots=True)
class ChallengeDeclined(Payload):
    type: ClassVar[EventType] = EventType.CHALLENGE_DECLINED
    challenge: ChallengeView


@dataclass(frozen=True, slots=True)
class ChallengeCanceled(Payload):
    type: ClassVar[EventType] = EventType.CHALLENGE_CANCELED
    challenge: ChallengeView


@dataclass(frozen=True, slots=True)
class ChallengeExpired(Payload):
    type: ClassVar[EventType] = EventType.CHALLENGE_EXPIRED
    challenge: ChallengeView


PAYLOADS: dict[EventType, type[Payload]] = {cls.type: cls for cls in Payload.__subclasses__()}
assert set(PAYLOADS) == set(EventType), "every event type has exactly one payload class"


# -- the duel log: a duel's public log, read by spectators (docs/api.md, "Duel log event types") --
# Its own types and registry: a duel-log payload can never be appended to a personal log, nor
# the other way round. Nothing here carries code: a spectator (or the opponent) must not see
# a solution while the duel is active.

class DuelEventType(StrEnum):
    DUEL_STARTED = "duel_started"
    SUBMISSION = "submission"
    DUEL_FINISHED = "duel_finished"


DUEL_EVENT_TYPES = frozenset(t.value for t in DuelEventType)


@dataclass(frozen=True, slots=True)
class DuelPayload:
    """Base of every duel-log payload: `type` names its event type, `data()` is what the log stores."""

    type: ClassVar[DuelEventType]

    def data(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class Player:
    user_id: int
    nickname: str
    rating: int
    provisional: bool


@dataclass(frozen=True, slots=True)
class DuelLogStarted(DuelPayload):
    type: ClassVar[DuelEventType] = DuelEventType.DUEL_STARTED
    duel_id: int
    players: list[Player]
    task: TaskRef
    rated: bool
    started_at: dt.datetime
    deadline: dt.datetime


@dataclass(frozen=True, slots=True)
class DuelLogSubmission(DuelPayload):
    """One public change of a submission: created, a progress update, the verdict. Never code."""

    type: ClassVar[DuelEventType] = DuelEventType.SUBMISSION
    submission_id: str
    user_id: int
    language: str
    submitted_at: dt.datetime
    state: str  # pending | testing | judged (duely.statuses.SubmissionState)
    status: str  # as GET .../submissions shows it: Taski's progress text while testing, else the state
    verdict: str | None


@dataclass(frozen=True, slots=True)
class DuelLogFinished(DuelPayload):
    type: ClassVar[DuelEventType] = DuelEventType.DUEL_FINISHED
    duel_id: int
    outcome: typing.Literal["win", "draw"]
    winner_id: int | None
    reason: typing.Literal["accepted", "timeout", "resign"]
    rating_changes: dict[str, int]


DUEL_PAYLOADS: dict[DuelEventType, type[DuelPayload]] = {cls.type: cls for cls in DuelPayload.__subclasses__()}
assert set(DUEL_PAYLOADS) == set(DuelEventType), "every duel-log event type has exactly one payload class"


def _plain(value: Any) -> Any:
    """A payload value as JSON-ready data (times as the API renders them)."""
    if isinstance(value, dt.datetime):
        return isoformat(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value


# -- schemas, generated from the dataclasses ------------------------------------------------

class _IntOrString(fields.Field[Any]):
    """A task id: an integer or a string (not a bool, not a float)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValidationError("Not an integer or a string.")
        return value


def _field(hint: Any) -> fields.Field[Any]:
    """The marshmallow field of one dataclass field's type: every field is required."""
    allow_none = False
    if isinstance(hint, types.UnionType) and type(None) in hint.__args__:
        allow_none = True
        (hint,) = [a for a in hint.__args__ if a is not type(None)] or [Any]
    kw: dict[str, Any] = {"required": True, "allow_none": allow_none}
    if hint is TaskId or hint == TaskId:
        return _IntOrString(**kw, metadata={"oneOf": [{"type": "integer"}, {"type": "string"}]})
    if hint is bool:
        return StrictBoolean(**kw)
    if hint is int:
        return StrictInteger(strict=True, **kw)
    if hint is str:
        return fields.String(**kw)
    if hint is dt.datetime:
        return fields.DateTime(**kw)
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        choices = [m.value for m in hint]
        return fields.String(validate=validate.OneOf(choices), **kw)
    if typing.get_origin(hint) is typing.Literal:
        return fields.String(validate=validate.OneOf(list(typing.get_args(hint))), **kw)
    if typing.get_origin(hint) is dict:
        key, value = typing.get_args(hint)
        return fields.Dict(keys=_field(key), values=_field(value), **kw)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return fields.List(_field(item), **kw)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return fields.Nested(payload_schema(hint), **kw)
    raise TypeError(f"no schema field for {hint!r}")


_schemas: dict[type[Any], type[Schema]] = {}


def payload_schema(cls: type[Any]) -> type[Schema]:
    """The marshmallow schema of a payload (or nested) dataclass, named after it: every field
    required, nulls only where the type allows them, unknown fields refused. Made once per class
    (the OpenAPI document refers to each by its class)."""
    schema = _schemas.get(cls)
    if schema is None:
        hints = typing.get_type_hints(cls)
        generated = {f.name: _field(hints[f.name]) for f in dataclasses.fields(cls)}
        schema = _schemas[cls] = Schema.from_dict(generated, name=f"{cls.__name__}Schema")
    return schema
