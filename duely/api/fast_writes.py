"""The hot writes answered below Flask: the queue join and leave and the submit, in their plain form.

A player makes a submit and a queue join per submission, and for them Flask's machinery (request
context, URL matching, before/after_request hooks, flask-smorest's and webargs' decorators, the
Response object) cost more CPU than the one statement each runs (py-spy under the swarm
benchmark: about half of a web worker's CPU for writes went to it). This WSGI middleware, like
duely/api/fast_poll.py for the poll, answers the plain forms itself:

- `POST /api/queue` and `DELETE /api/queue` without a body;
- `POST /api/duels/{id}/submit` with a JSON body (`Content-Type: application/json`, a
  Content-Length within the app's limit) that `SubmitSchema.fast_load` takes;

each with `Authorization: Bearer <token>`, no query string, no Content-Encoding or
Transfer-Encoding. Its answers have the views' bytes and headers (tests/test_fast_writes.py).

Anything else goes to Flask untouched and before anything is done, so every rule stays where it
is (401 before 400, validation errors, 413, 415, 405...). The same domain functions run as in the
views (`queue.join_alone`, `queue.leave_alone`, `submissions.submit_as`, one statement each on
an autocommit connection); when one declines (the unusual cases: in a duel, a rematch offer, a
concurrent change), it has changed nothing, and the request goes to the view, which decides
on its full path. An error a write raises (401, 404, 409, 429, 503...) is rendered by the app's
own error handlers.
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Callable, Iterable

from flask import Flask, Response
from werkzeug.exceptions import ClientDisconnected

from duely import auth, errors, submissions
from duely.api.below_flask import WSGIApp, json_body, plain_bearer, through_flask
from duely.api.common import ID_MAX, IdConverter, Services
from duely.api.compression import COMPRESS_MIN_BYTES
from duely.api.duels import SubmitSchema, idempotency_key, submit_answer
from duely.api.queue import join_answer
from duely.matchmaking import queue

QUEUE_PATH = "/api/queue"
_SUBMIT_PATH = re.compile(rf"/api/duels/({IdConverter.regex})/submit")  # the route's <id:duel_id>
# What Flask answers a 204 with (its Response's default mimetype), kept so both paths agree.
_NO_CONTENT_HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Vary", "Accept-Encoding")]


class FastWrites:
    """WSGI middleware in front of the Flask app's own `wsgi_app` (see the module's docstring)."""

    def __init__(self, flask_app: Flask, wsgi_app: WSGIApp):
        self.flask_app = flask_app
        self.wsgi_app = wsgi_app
        self.services: Services = flask_app.extensions["duely"]
        self.max_body = flask_app.config["MAX_CONTENT_LENGTH"]
        self.answered = 0  # writes answered here, not by Flask (tests)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
        write: Callable[[dict, Callable, str], Iterable[bytes]]
        if path == QUEUE_PATH:
            if method not in ("POST", "DELETE") or environ.get("CONTENT_LENGTH", "0") not in ("", "0"):
                return self.wsgi_app(environ, start_response)
            write = self._join if method == "POST" else self._leave
        elif method == "POST" and path.endswith("/submit") and (match := _SUBMIT_PATH.fullmatch(path)):
            duel_id = int(match.group(1))
            if duel_id > ID_MAX:
                return self.wsgi_app(environ, start_response)
            write = functools.partial(self._submit, duel_id=duel_id)
        else:
            return self.wsgi_app(environ, start_response)
        token = plain_bearer(environ.get("HTTP_AUTHORIZATION"))
        if (token is None or environ.get("QUERY_STRING") or "HTTP_TRANSFER_ENCODING" in environ
                or "HTTP_CONTENT_ENCODING" in environ):
            return self.wsgi_app(environ, start_response)
        return write(environ, start_response, token)

    def _token_hash(self, token: str) -> str:
        return auth.hash_token(self.services.config.secret_key, token)

    def _join(self, environ: dict, start_response: Callable, token: str) -> Iterable[bytes]:
        token_hash = self._token_hash(token)
        try:
            _, since = self.services.db.run_alone(lambda connection: queue.join_alone(connection, token_hash))
        except Exception as exc:  # rendered by the app's error handlers
            return through_flask(self.flask_app, environ, start_response, exc=exc)
        if since is None:  # declined, nothing changed: the view's full path decides
            return self.wsgi_app(environ, start_response)
        return self._json(environ, start_response, "202 ACCEPTED", join_answer(since))

    def _leave(self, environ: dict, start_response: Callable, token: str) -> Iterable[bytes]:
        token_hash = self._token_hash(token)
        try:
            _, left = self.services.db.run_alone(lambda connection: queue.leave_alone(connection, token_hash))
        except Exception as exc:
            return through_flask(self.flask_app, environ, start_response, exc=exc)
        if left is None:
            return self.wsgi_app(environ, start_response)
        self.answered += 1
        start_response("204 NO CONTENT", list(_NO_CONTENT_HEADERS))
        return []

    def _submit(self, environ: dict, start_response: Callable, token: str, duel_id: int) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or "0")
        except ValueError:
            length = 0
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if not 0 < length <= self.max_body or mimetype != "application/json":
            return self.wsgi_app(environ, start_response)
        try:
            body = environ["wsgi.input"].read(length)
        except Exception:  # the client went away mid-body (what werkzeug's stream says too)
            return through_flask(self.flask_app, environ, start_response, exc=ClientDisconnected())
        if len(body) != length:
            return through_flask(self.flask_app, environ, start_response, exc=ClientDisconnected())
        environ["wsgi.input"] = io.BytesIO(body)  # read again by Flask if the view is to answer
        try:
            args = SubmitSchema.fast_load(json.loads(body))
        except ValueError:
            args = None
        try:
            key = None if args is None else idempotency_key(args["client_temp_id"], environ.get("HTTP_IDEMPOTENCY_KEY"))
        except errors.ValidationFailed:
            args = None
        if args is None:
            return self.wsgi_app(environ, start_response)  # the view words the error
        svc = self.services
        token_hash = self._token_hash(token)
        try:
            _, submission_id, _ = svc.db.run_alone(lambda connection: submissions.submit_as(
                connection, token_hash, duel_id, args["language"], args["solution"], key, svc.submit_policy))
        except Exception as exc:
            return through_flask(self.flask_app, environ, start_response, exc=exc)
        return self._json(environ, start_response, "202 ACCEPTED", submit_answer(submission_id))

    def _json(self, environ: dict, start_response: Callable, status: str, obj: dict) -> Iterable[bytes]:
        self.answered += 1
        body = json_body(self.flask_app, obj)
        if len(body) >= COMPRESS_MIN_BYTES:  # never for these small answers; Flask-Compress would weigh it
            answer = Response(body, int(status.split()[0]), mimetype="application/json")
            return through_flask(self.flask_app, environ, start_response, answer=answer)
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                ("Vary", "Accept-Encoding")])
        return [body]
