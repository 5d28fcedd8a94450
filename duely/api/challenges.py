"""Challenges, invite links, rematch offers, blocks and the challenges switch (docs/challenges.md).

Thin: validate, call duely/challenges.py, render. Accepting asks Taski for a task outside any
transaction (`challenges.accept`), exactly as matchmaking does.
"""

from __future__ import annotations

from functools import partial

from flask import Response
from marshmallow import Schema, fields, validate

from duely import challenges
from duely.api.common import BEARER, Blueprint, BodySchema, current_user_id, login_required, services
from duely.api.duels import DuelSchema
from duely.fields import StrictBoolean
from duely.statuses import ChallengeKind, ChallengeStatus

blp = Blueprint("challenges", __name__, url_prefix="/api", description="Challenges, invite links and rematch offers")


class ChallengePlayerSchema(Schema):
    user_id = fields.Integer()
    nickname = fields.String()
    rating = fields.Integer()
    provisional = fields.Boolean()


class ChallengeSchema(Schema):
    id = fields.String(metadata={"description": "random and unguessable: an open challenge's link carries it"})
    kind = fields.String(metadata={"enum": [k.value for k in ChallengeKind]})
    challenger = fields.Nested(ChallengePlayerSchema)
    to = fields.Nested(ChallengePlayerSchema, allow_none=True, metadata={"description": "null: an open challenge"})
    rated = fields.Boolean()
    duration_secs = fields.Integer()
    rematch_of = fields.Integer(allow_none=True)
    status = fields.String(metadata={"enum": [s.value for s in ChallengeStatus]})
    decline_reason = fields.String(allow_none=True, metadata={"enum": list(challenges.DECLINE_REASONS)})
    created_at = fields.String()
    expires_at = fields.String()
    closed_at = fields.String(allow_none=True)
    duel_id = fields.Integer(allow_none=True)
    accepted_by = fields.Nested(ChallengePlayerSchema, allow_none=True)
    invite_url = fields.String(allow_none=True, metadata={"description": "open challenges only: /?challenge=<id>"})


class ChallengeListSchema(Schema):
    incoming = fields.List(fields.Nested(ChallengeSchema))
    outgoing = fields.List(fields.Nested(ChallengeSchema))


class NewChallengeSchema(BodySchema):
    to = fields.String(required=True, allow_none=True, validate=validate.Length(min=1, max=64),
                       metadata={"description": "the nickname of the player to challenge; null: an open challenge"})
    rated = StrictBoolean(load_default=True)
    duration = fields.Integer(strict=True, load_default=None,
                              validate=validate.Range(min=challenges.DURATION_MIN_SECS, max=challenges.DURATION_MAX_SECS),
                              metadata={"description": "seconds; default DUEL_DURATION"})


class DeclineSchema(BodySchema):
    reason = fields.String(load_default=challenges.DEFAULT_DECLINE_REASON,
                           validate=validate.OneOf(challenges.DECLINE_REASONS))


class AcceptedSchema(Schema):
    challenge = fields.Nested(ChallengeSchema)
    duel = fields.Nested(DuelSchema)


class SettingsSchema(Schema):
    accept_challenges = fields.Boolean()


class SettingsPatchSchema(BodySchema):
    accept_challenges = StrictBoolean(load_default=None)


class BlockedUserSchema(Schema):
    user_id = fields.Integer()
    nickname = fields.String()


class BlocksSchema(Schema):
    users = fields.List(fields.Nested(BlockedUserSchema))


@blp.route("/challenges", methods=["POST"])
@login_required
@blp.arguments(NewChallengeSchema)
@blp.response(201, ChallengeSchema)
@blp.doc(security=BEARER)
def create_challenge(body):
    """Challenge a player by nickname, or make an open challenge (`to: null`) whose link anyone may accept."""
    svc = services()
    duration = body["duration"] if body["duration"] is not None else round(svc.config.duel_duration)
    return svc.db.run(lambda s: challenges.create(s, svc.config, current_user_id(), body["to"], body["rated"], duration)).json()


@blp.route("/challenges", methods=["GET"])
@login_required
@blp.response(200, ChallengeListSchema)
@blp.doc(security=BEARER)
def list_challenges():
    """Pending challenges and rematch offers to the caller (incoming) and by the caller (outgoing)."""
    pending = services().db.read(partial(challenges.pending_for, user_id=current_user_id()))
    return {side: [c.json() for c in items] for side, items in pending.items()}


@blp.route("/challenges/<challenge_id>", methods=["GET"])
@login_required
@blp.response(200, ChallengeSchema)
@blp.doc(security=BEARER)
def get_challenge(challenge_id: str):
    """A challenge: for its two players; an open one for anyone signed in."""
    return services().db.read(partial(challenges.get, user_id=current_user_id(), challenge_id=challenge_id)).json()


@blp.route("/challenges/<challenge_id>/accept", methods=["POST"])
@login_required
@blp.response(201, AcceptedSchema)
@blp.doc(security=BEARER)
def accept_challenge(challenge_id: str):
    """Accept: the duel starts at once (task from Taski, `duel_started` for both)."""
    svc = services()
    accepted, duel = challenges.accept(svc.db, svc.runtime.taski(), current_user_id(), challenge_id)
    return {"challenge": accepted.json(), "duel": duel}


@blp.route("/challenges/<challenge_id>/decline", methods=["POST"])
@login_required
@blp.arguments(DeclineSchema, required=False)
@blp.response(200, ChallengeSchema)
@blp.doc(security=BEARER)
def decline_challenge(body, challenge_id: str):
    """The addressee declines, with a reason."""
    return services().db.run(lambda s: challenges.decline(s, current_user_id(), challenge_id, body["reason"])).json()


@blp.route("/challenges/<challenge_id>/cancel", methods=["POST"])
@login_required
@blp.response(200, ChallengeSchema)
@blp.doc(security=BEARER)
def cancel_challenge(challenge_id: str):
    """The challenger takes the challenge back."""
    return services().db.run(lambda s: challenges.cancel(s, current_user_id(), challenge_id)).json()


@blp.route("/duels/<id:duel_id>/rematch", methods=["POST"])
@login_required
@blp.response(201, ChallengeSchema)
@blp.alt_response(200, schema=ChallengeSchema, description="the caller's own pending offer, unchanged")
@blp.doc(security=BEARER)
def rematch(duel_id: int):
    """Offer the opponent of a finished duel a rematch; accepts theirs if they offered first."""
    svc = services()
    outcome = challenges.rematch(svc.db, svc.runtime.taski(), svc.config, current_user_id(), duel_id)
    return outcome.challenge.json(), 200 if outcome.action == "existing" else 201


@blp.route("/users/me/settings", methods=["GET"])
@login_required
@blp.response(200, SettingsSchema)
@blp.doc(security=BEARER)
def get_settings():
    return services().db.read(partial(challenges.settings_of, user_id=current_user_id()))


@blp.route("/users/me/settings", methods=["PATCH"])
@login_required
@blp.arguments(SettingsPatchSchema, required=False)
@blp.response(200, SettingsSchema)
@blp.doc(security=BEARER)
def patch_settings(body):
    """Change the caller's settings; fields left out stay as they are."""
    return services().db.run(lambda s: challenges.update_settings(s, current_user_id(), body["accept_challenges"]))


@blp.route("/users/me/blocks", methods=["GET"])
@login_required
@blp.response(200, BlocksSchema)
@blp.doc(security=BEARER)
def list_blocks():
    return {"users": services().db.read(partial(challenges.blocked_users, user_id=current_user_id()))}


@blp.route("/users/me/blocks/<id:user_id>", methods=["PUT"])
@login_required
@blp.response(204)
@blp.doc(security=BEARER)
def block_user(user_id: int):
    """Block a player (idempotent): no challenges either way; pending ones between you are canceled."""
    services().db.run(lambda s: challenges.block(s, current_user_id(), user_id))
    return Response(status=204)


@blp.route("/users/me/blocks/<id:user_id>", methods=["DELETE"])
@login_required
@blp.response(204)
@blp.doc(security=BEARER)
def unblock_user(user_id: int):
    services().db.run(lambda s: challenges.unblock(s, current_user_id(), user_id))
    return Response(status=204)
