"""marshmallow schemas of the accounts blueprint, and the error body every endpoint shares
(request validation + OpenAPI)."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields, validate

from duely.api.common import BodySchema
from duely.users import NICKNAME_RE, PASSWORD_MAX_LEN, PASSWORD_MIN_LEN


class ErrorBodySchema(Schema):
    class Meta:
        unknown = INCLUDE  # some errors add fields (last_event_id, retry_after)

    code = fields.String(required=True)
    message = fields.String(required=True)
    retry_after = fields.Integer(metadata={"description": "429: seconds to wait (also in Retry-After)"})
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
