"""GET /api/updates answered below Flask, for the plain request every client sends.

The long poll is most of a web worker's requests (a player makes about five per submission),
and for it Flask's machinery (request context, URL matching, before/after_request hooks,
flask-smorest's decorators, the Response object) cost about as much CPU as the poll itself.
This WSGI middleware answers the plain form itself: GET on exactly /api/updates, a query whose
every value is plainly valid (the names of UpdatesQuerySchema, each once, values that
`UpdatesQuerySchema.fast_load` takes), `Authorization: Bearer <token>`, no body, no
Content-Encoding. Its answer has the view's bytes and headers (tests/test_fast_poll.py).

Anything else goes to Flask untouched and before anything is done, so every rule stays where it
is: validation errors, 401 before 400, HEAD, 405, 415... An error the poll raises (400 ahead
of the log, 401, 410, 503) and an answer big enough to be gzipped are rendered by the app
itself, in a request context of their own: the app's error handlers and Flask-Compress decide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from duely import auth
from duely.api.below_flask import WSGIApp, plain_bearer, through_flask
from duely.api.common import Services
from duely.api.compression import COMPRESS_MIN_BYTES
from duely.api.updates import PATH, UpdatesQuerySchema, ok_response, render_updates
from duely.eventlog import poll as polling

_NAMES = frozenset(("last_event_id", "timeout", "limit", "wake_on_own"))
# Only characters a plain query needs: anything percent-encoded, `+`, `;`... goes to Flask.
_PLAIN_QUERY = re.compile(r"[a-z_]+=(?:[0-9.]*|true|false)(?:&[a-z_]+=(?:[0-9.]*|true|false))*")


class _Args(dict):
    """The query's values by name, as `fast_load` reads them (`getlist`)."""

    def getlist(self, name: str) -> list[str]:
        value = self.get(name)
        return [] if value is None else [value]


def plain_query(query: str) -> dict[str, Any] | None:
    """The loaded arguments of a plain poll query (as UpdatesQuerySchema loads it), else None."""
    if not query:
        return UpdatesQuerySchema.fast_load(_Args())
    if _PLAIN_QUERY.fullmatch(query) is None:
        return None
    args = _Args()
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name not in _NAMES or name in args:
            return None
        args[name] = value
    return UpdatesQuerySchema.fast_load(args)


class FastPoll:
    """WSGI middleware in front of the Flask app's own `wsgi_app` (see the module's docstring)."""

    def __init__(self, flask_app: Flask, wsgi_app: WSGIApp):
        self.flask_app = flask_app
        self.wsgi_app = wsgi_app
        self.services: Services = flask_app.extensions["duely"]
        self.answered = 0  # polls answered here, not by Flask (tests)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "GET"
                or environ.get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ
                or "HTTP_CONTENT_ENCODING" in environ):
            return self.wsgi_app(environ, start_response)
        token = plain_bearer(environ.get("HTTP_AUTHORIZATION"))
        args = plain_query(environ.get("QUERY_STRING", "")) if token is not None else None
        if token is None or args is None:
            return self.wsgi_app(environ, start_response)
        svc = self.services
        try:
            _, updates = polling.poll(svc.runtime, auth.hash_token(svc.config.secret_key, token),
                                      args["last_event_id"], args["timeout"], args["limit"], args["wake_on_own"])
        except Exception as exc:  # rendered by the app's error handlers
            return self._through_flask(environ, start_response, exc=exc)
        self.answered += 1
        body = render_updates(updates).encode()
        if len(body) >= COMPRESS_MIN_BYTES and "HTTP_ACCEPT_ENCODING" in environ:
            return self._through_flask(environ, start_response, body=body)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store"), ("Vary", "Accept-Encoding")])
        return [body]

    def _through_flask(self, environ: dict, start_response: Callable, *, exc: Exception | None = None,
                       body: bytes = b"") -> Iterable[bytes]:
        """The answer as the app makes it: the error handlers' for `exc`, else `body` after the
        app's after_request hooks (compression)."""
        answer = None if exc is not None else ok_response(body)
        return through_flask(self.flask_app, environ, start_response, exc=exc, answer=answer)
