"""marshmallow schemas of the accounts blueprint, and the error body every endpoint shares
(request validation + OpenAPI)."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields, validate

from duely.api.common import ID_MAX, BodySchema
from duely.users import NICKNAME_RE, PASSWORD_MAX_LEN, PASSWORD_MIN_LEN


class ErrorBodySchema(Schema):
    class Meta:
        unknown = INCLUDE  # some errors add fields (last_event_id, retry_after)

    code = fields.String(required=True, metadata={"description": (
        "bad_request, validation_error, cannot_challenge_self, cannot_accept_own, cannot_decline_open, "
        "cannot_block_self (400), unauthorized (401), forbidden, challenges_disabled, blocked (403), not_found (404), "
        "method_not_allowed (405), conflict, nickname_taken, already_in_duel, duel_finished, opponent_busy, "
        "challenge_closed, duel_active (409), "
        "events_expired (410), payload_too_large (413), rate_limited (429), internal_error (500), "
        "unavailable (503: the database is unreachable or busy; retry after Retry-After seconds)")})
    message = fields.String(required=True)
    retry_after = fields.Integer(metadata={"description": "429 and 503: seconds to wait (also in Retry-After)"})
    last_event_id = fields.Integer(metadata={"description": "410 events_expired: continue from here after a resync"})
    # Not an attribute named `fields`: that is the Schema's own table of its fields.
    field_errors = fields.Dict(attribute="fields", data_key="fields", metadata={"description": "validation_error: messages per field"})


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


class CredentialsSchema(BodySchema):
    nickname = fields.String(
        required=True,
        validate=validate.Regexp(NICKNAME_RE, error="3-32 characters: letters, digits, '_' or '-'."),
    )
    password = fields.String(
        required=True,
        validate=validate.Length(min=PASSWORD_MIN_LEN, max=PASSWORD_MAX_LEN),
    )


class LoginSchema(BodySchema):
    # Any nickname/password may be tried at login; the format rules apply at registration.
    nickname = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=PASSWORD_MAX_LEN))


class DuelStatsSchema(Schema):
    played = fields.Integer()
    won = fields.Integer()
    lost = fields.Integer()
    drawn = fields.Integer()


class UserSchema(Schema):
    id = fields.Integer()
    nickname = fields.String()
    rating = fields.Integer()
    rating_deviation = fields.Integer(metadata={"description": "Glicko-2 RD, whole points"})
    provisional = fields.Boolean(metadata={"description": "RD >= 110: the rating is still being found (shown as 1500?)"})
    duels = fields.Nested(DuelStatsSchema)
    created_at = fields.String()


class RegisteredSchema(UserSchema):
    token = fields.String()


class LoginResultSchema(Schema):
    token = fields.String()
    user = fields.Nested(UserSchema)


class PageQuerySchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))


class LeaderboardSchema(Schema):
    users = fields.List(fields.Nested(UserSchema))


class StakesSchema(Schema):
    win = fields.Integer()
    draw = fields.Integer()
    loss = fields.Integer()


class RatingHistoryQuerySchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
    before_id = fields.Integer(load_default=None, validate=validate.Range(min=1, max=ID_MAX))


class RatingPointSchema(Schema):
    duel_id = fields.Integer()
    finished_at = fields.String()
    rating_before = fields.Integer()
    rating = fields.Integer(metadata={"description": "shown rating after the duel"})
    rating_deviation = fields.Integer(allow_none=True, metadata={"description": "RD after the duel; null before Glicko-2"})
    provisional = fields.Boolean()


class RatingHistorySchema(Schema):
    points = fields.List(fields.Nested(RatingPointSchema), metadata={"description": "newest first"})
    next_before_id = fields.Integer(allow_none=True)
