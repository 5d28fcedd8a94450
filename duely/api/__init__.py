"""The WSGI application factory. Blueprints stay thin: validate, call a domain function, render."""

from __future__ import annotations

import logging

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api

from duely import errors, passwords
from duely.api import compression, error_handlers
from duely.api.common import ID_MAX, IdConverter, Services
from duely.api.fast_poll import FastPoll
from duely.api.fast_writes import FastWrites
from duely.api.proxy import TrustedProxies
from duely.api.schemas import ErrorSchema
from duely.config import Config
from duely.db import Database
from duely.runtime import Runtime

log = logging.getLogger(__name__)

DEV_SECRET_KEY = "duely-development-key-not-for-production"
_BODY_METHODS = {"POST", "PUT", "PATCH"}


class DuelyApi(Api):
    # Documented error responses use the contract's shape: {"error": {"code", "message", "fields"}}.
    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self) -> None:
        error_handlers.register(self._app)


def web_database(config: Config) -> Database:
    """A web worker's pool, sized by the DB_POOL_* settings; its sessions show as `duely-web`."""
    return Database(config.required("database_url"), config.db_pool_size, config.db_max_overflow,
                    config.db_pool_timeout, application_name="duely-web")


def create_app(config: Config, db: Database | None = None, runtime: Runtime | None = None) -> Flask:
    """The API for one web worker; `runtime` is the worker's (built here unless given; app.py builds it,
    tests pass their own). `db` defaults to the runtime's, or a new pool from `config`."""
    config.required("database_url")  # exits with a clear message when unset
    if not config.secret_key:
        log.warning("SECRET_KEY is unset: using the development key; tokens are not safe")
        config = config.replace(secret_key=DEV_SECRET_KEY)
    app = Flask("duely")
    app.config.update(
        # Room for a MAX_SOLUTION_BYTES solution even when JSON escapes every byte.
        MAX_CONTENT_LENGTH=config.max_solution_bytes * 6 + 16384,
        API_TITLE="Duely",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
    )
    assert isinstance(app.json, DefaultJSONProvider)  # Flask's own, told to keep the contract's key order
    app.json.sort_keys = False
    if runtime is None:
        db = db or web_database(config)
        runtime = Runtime(config, db)
    passwords.configure(config.password_hash_threads)
    app.extensions["duely"] = Services.build(config, db or runtime.db, runtime)
    # The plain long poll and the plain hot writes are answered below Flask (duely/api/fast_poll.py,
    # duely/api/fast_writes.py), behind the proxy fix; the poll, the commonest request, is looked at first.
    app.wsgi_app = TrustedProxies(FastPoll(app, FastWrites(app, app.wsgi_app)),  # type: ignore[method-assign]
                                  config.forwarded_allow_ips)
    app.url_map.converters["id"] = IdConverter

    api = DuelyApi(app, spec_kwargs={"servers": [{"url": "/"}]})
    api.register_converter(IdConverter, lambda _: {"type": "integer", "minimum": 1, "maximum": ID_MAX})
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})

    from duely.api import accounts, challenges, duels, health, queue, spectate, stream, updates, web

    updates.register_event_payloads(api.spec)
    for module in (health, accounts, updates, queue, duels, challenges, spectate, stream):
        api.register_blueprint(module.blp)
    app.register_blueprint(web.blp)  # the page is not part of the API document
    compression.init_app(app)  # gzip both ways; its before_request runs first: 415 before anything

    @app.before_request
    def require_json_body():
        if request.method in _BODY_METHODS and request.content_length and not request.is_json:
            raise errors.BadRequest("Send the body as JSON with Content-Type: application/json.")

    return app

