"""What every blueprint shares: the process's services, the bearer-token check, schemas' base."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from flask import current_app, g, request
from flask_smorest import Blueprint as _Blueprint
from marshmallow import EXCLUDE, Schema, pre_load
from marshmallow import ValidationError as SchemaValidationError
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from webargs.flaskparser import FlaskParser
from werkzeug.routing import BaseConverter, ValidationError

from duely import auth, errors, submissions
from duely.config import Config
from duely.db import Database
from duely.runtime import Runtime

T = TypeVar("T")


# Ids are PostgreSQL bigints: a larger number can name nothing, so it is a 404 like any unknown id
# (and never reaches the database, where it would be an out-of-range error).
ID_MAX = 2**63 - 1


class IdConverter(BaseConverter):
    """`<id:name>` in a route: a positive integer that fits a bigint, else the route does not match."""

    regex = r"[1-9][0-9]{0,18}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > ID_MAX:
            raise ValidationError()
        return number

    def to_url(self, value: int) -> str:
        return str(value)


# OpenAPI security requirement of every endpoint that needs `Authorization: Bearer <token>`.
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]


class Parser(FlaskParser):
    # The contract answers 400 validation_error, not webargs' default 422.
    DEFAULT_VALIDATION_STATUS = 400

    def parse(self, argmap, req=None, *, location=None, **kwargs):
        # A hot endpoint's schema may have a `fast_load(data)`: the arguments as the schema would
        # load them when they are plainly valid, else None (then the schema decides, and words
        # any error). marshmallow's load was a few percent of a web worker's CPU under load.
        fast_load = getattr(argmap, "fast_load", None)
        if fast_load is not None:
            data = (request.args if location == "query"
                    else request.get_json(silent=True) if location == "json" and request.is_json else None)
            loaded = fast_load(data) if data is not None else None
            if loaded is not None:
                return loaded
        return super().parse(argmap, req, location=location, **kwargs)


class Blueprint(_Blueprint):
    ARGUMENTS_PARSER = Parser()


class BodySchema(Schema):
    """Base of every request-body schema: unknown fields are ignored, NUL characters refused
    (PostgreSQL text cannot hold them, and no nickname, password or source file needs one)."""

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def refuse_nul_characters(self, data, **kwargs):
        if isinstance(data, dict):
            bad = {key: ["Must not contain NUL characters."] for key, value in data.items()
                   if isinstance(value, str) and "\x00" in value}
            if bad:
                raise SchemaValidationError(bad)
        return data


@dataclass
class Services:
    config: Config
    db: Database
    runtime: Runtime  # this worker's per-process state (duely/runtime.py)
    # The domain's policies, built from `config` once when the app is created, not per request.
    login_policy: auth.LoginPolicy
    submit_policy: submissions.SubmitPolicy

    @classmethod
    def build(cls, config: Config, db: Database, runtime: Runtime) -> Services:
        return cls(config=config, db=db, runtime=runtime, login_policy=auth.LoginPolicy.from_config(config),
                   submit_policy=submissions.SubmitPolicy.from_config(config))


def services() -> Services:
    return current_app.extensions["duely"]


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def caller_token_hash() -> str:
    """The hash of the request's bearer token (auth.hash_token), for a write that checks it in its
    own statement (the hot writes run alone: Database.run_alone); Unauthorized without a token."""
    token = bearer_token()
    if token is None:
        raise errors.Unauthorized("Send Authorization: Bearer <token>.")
    return auth.hash_token(services().config.secret_key, token)


def current_user_id() -> int:
    """The authenticated caller's id (checked once per request); Unauthorized otherwise."""
    if "user_id" not in g:
        token = bearer_token()
        if token is None:
            raise errors.Unauthorized("Send Authorization: Bearer <token>.")
        svc = services()
        with svc.db.autocommit() as session:  # one statement: no transaction needed
            g.user_id = auth.authenticate(session, token, svc.config.secret_key)
    return g.user_id


def run_as_caller(fn: Callable[[Session, int], T]) -> T:
    """A change on behalf of the authenticated caller: `fn(session, user_id)` in one transaction
    (Database.run) whose first statement is the token check (auth.authenticate_hash). The hot
    writes use it instead of `login_required`, which checks the token in a session and on a
    connection of its own before the write takes another. A bad token is 401 and changes nothing
    (the transaction is rolled back). Views using it are decorated with `token_checked_in_view`."""
    token = bearer_token()
    if token is None:
        raise errors.Unauthorized("Send Authorization: Bearer <token>.")
    svc = services()
    token_hash = auth.hash_token(svc.config.secret_key, token)

    def act(session: Session) -> T:
        user_id = g.user_id = auth.authenticate_hash(session, token_hash)
        return fn(session, user_id)

    return svc.db.run(act)


def alone_or_full(alone: Callable[[Connection, str], tuple[int, T | None]], full: Callable[[Session, int], T]) -> T:
    """A hot write that has a one-statement path: `alone(connection, token_hash)` checks the
    caller's token and does the common case in ONE statement (Database.run_alone, no BEGIN or
    COMMIT), answering (user id, result), or (user id, None) when it changed nothing and declines;
    then `full(session, user_id)` decides in a transaction of its own (`run_as_caller`). A bad
    token is 401 from the statement and changes nothing. Views using it are decorated with
    `token_checked_in_view`."""
    token_hash = caller_token_hash()
    g.user_id, result = services().db.run_alone(lambda connection: alone(connection, token_hash))
    if result is None:
        result = run_as_caller(full)
    return result


def token_checked_in_view(view: Callable[..., T]) -> Callable[..., T]:
    """For a view that checks the token itself, in its own statement or transaction (`run_as_caller`,
    the long poll's read), after its arguments are validated; this keeps the order of errors of
    `login_required` anyway: no token, or a bad token with bad arguments, is 401 rather than 400."""
    import functools

    from werkzeug.exceptions import HTTPException

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if bearer_token() is None:
            raise errors.Unauthorized("Send Authorization: Bearer <token>.")
        try:
            return view(*args, **kwargs)
        except HTTPException as exc:
            if exc.code == 400 and (getattr(exc, "data", None) or {}).get("messages"):
                current_user_id()  # raises Unauthorized for a bad token
            raise

    return wrapper


def login_required(view: Callable[..., T]) -> Callable[..., T]:
    """Resolve the caller before the view runs (so a bad token is 401 before validation)."""
    import functools

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        current_user_id()
        return view(*args, **kwargs)

    return wrapper
