"""Accounts and auth: registration, login, logout, profiles, leaderboard."""

from __future__ import annotations

from flask import request

from duely import auth, errors, passwords, users
from duely.api.common import BEARER, Blueprint, bearer_token, current_user_id, login_required, services
from duely.api.schemas import (
    CredentialsSchema,
    LeaderboardSchema,
    LoginResultSchema,
    LoginSchema,
    PageQuerySchema,
    RatingHistoryQuerySchema,
    RatingHistorySchema,
    RegisteredSchema,
    UserSchema,
)
from duely.rating_history import rating_history

blp = Blueprint("accounts", __name__, url_prefix="/api", description="Accounts and authentication")


@blp.route("/users", methods=["POST"])
@blp.arguments(CredentialsSchema)
@blp.response(201, RegisteredSchema)
def register(body):
    """Create an account; the answer carries a token."""
    svc = services()
    password_hash = passwords.hash_password(body["password"])  # before taking a connection

    def act(session):
        user = users.create_user(session, body["nickname"], password_hash)
        token = auth.issue_token(session, user.id, svc.config.secret_key, svc.config.token_ttl)
        session.refresh(user)
        return {**users.user_json(user), "token": token}

    return svc.db.run(act)


@blp.route("/auth/login", methods=["POST"])
@blp.arguments(LoginSchema)
@blp.response(200, LoginResultSchema)
def login(body):
    """Exchange nickname and password for a token. Throttled against guessing (429)."""
    svc = services()
    cfg = svc.config
    # Three steps, so that no database connection is held while the password is checked: count
    # the attempt (committed even when refused: it may have set a lock), check the password,
    # then on success refund the attempt and issue a token.
    attempt = svc.db.run(lambda s: auth.begin_login(s, body["nickname"], request.remote_addr, svc.login_policy))
    attempt.raise_if_refused()
    if not passwords.verify_password(attempt.password_hash, body["password"]):
        raise errors.Unauthorized("Wrong nickname or password.")

    def finish(session):
        token, user = auth.finish_login(session, attempt, cfg.secret_key, cfg.token_ttl)
        return {"token": token, "user": users.user_json(user)}

    return svc.db.run(finish)


@blp.route("/auth/logout", methods=["POST"])
@login_required
@blp.response(204)
@blp.doc(security=BEARER)
def logout():
    """Revoke the token used for this request, at once."""
    svc = services()
    svc.db.run(lambda s: auth.revoke_token(s, bearer_token() or "", svc.config.secret_key))
    return None


@blp.route("/users/me", methods=["GET"])
@login_required
@blp.response(200, UserSchema)
@blp.doc(security=BEARER)
def me():
    return services().db.read(lambda s: users.user_json(users.get_user(s, current_user_id())))


@blp.route("/users/<id:user_id>", methods=["GET"])
@login_required
@blp.response(200, UserSchema)
@blp.doc(security=BEARER)
def user_profile(user_id: int):
    return services().db.read(lambda s: users.user_json(users.get_user(s, user_id)))


@blp.route("/users/<id:user_id>/rating-history", methods=["GET"])
@login_required
@blp.arguments(RatingHistoryQuerySchema, location="query")
@blp.response(200, RatingHistorySchema)
@blp.doc(security=BEARER)
def user_rating_history(query, user_id: int):
    """Any user's rating after each finished duel, newest first (public to every signed-in user,
    like the leaderboard); pass next_before_id as before_id for the next page."""
    def read(session):
        users.get_user(session, user_id)  # 404 for an unknown user
        points, next_before_id = rating_history(session, user_id, query["limit"], query["before_id"])
        return {"points": points, "next_before_id": next_before_id}

    return services().db.read(read)


@blp.route("/leaderboard", methods=["GET"])
@login_required
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, LeaderboardSchema)
@blp.doc(security=BEARER)
def leaderboard(query):
    """Users by rating, highest first."""
    return services().db.read(
        lambda s: {"users": [users.user_json(u) for u in users.leaderboard(s, query["limit"], query["offset"])]})
