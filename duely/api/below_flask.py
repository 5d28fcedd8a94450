"""What the requests answered below Flask share (duely/api/fast_poll.py, duely/api/fast_writes.py):
reading the bearer token as the views do, rendering JSON as Flask does, and handing an error or
an unusual answer back to the app so its own handlers and after_request hooks decide."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def plain_bearer(header: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>` (common.bearer_token's reading), else None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def json_body(app: Flask, obj: Any) -> bytes:
    """`obj` as the app's `jsonify` renders it (DefaultJSONProvider.response): the same bytes."""
    provider = app.json
    assert isinstance(provider, DefaultJSONProvider)
    if (provider.compact is None and app.debug) or provider.compact is False:
        return f"{provider.dumps(obj, indent=2)}\n".encode()
    return f"{provider.dumps(obj, separators=(',', ':'))}\n".encode()


def through_flask(app: Flask, environ: dict, start_response: Callable, *, exc: Exception | None = None,
                  answer: Response | None = None) -> Iterable[bytes]:
    """The answer as the app makes it: its error handlers' for `exc`, else `answer` after the
    app's after_request hooks (compression), in a request context of its own."""
    with app.request_context(environ):
        if exc is not None:
            answer = app.make_response(app.handle_user_exception(exc))
        assert answer is not None
        return app.finalize_request(answer)(environ, start_response)
