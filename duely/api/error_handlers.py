"""One error shape for everything: `{"error": {"code", "message"[, "fields"]}}`.

Covers domain errors, webargs validation, Flask's own 404/405/413, malformed JSON, the database
being unreachable or out of connections (503 `unavailable` with Retry-After, logged once per
burst; see duely/outage.py) and anything else unexpected (logged, answered as 500
`internal_error` without a stack trace).
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from duely import errors, outage

log = logging.getLogger(__name__)
# One WARNING per burst of 503s, not one per request: an outage hits every request at once.
_unavailable_log = outage.BurstLog(log)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "bad_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def error_response(status: int, code: str, message: str, fields: dict | None = None, headers: dict | None = None,
                   extra: dict | None = None):
    response = jsonify(errors.error_body(code, message, fields, extra))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _flatten_webargs_messages(messages: dict) -> dict:
    """webargs nests messages under their location ({"json": {...}}); clients want the fields."""
    fields: dict = {}
    for location, value in messages.items():
        if isinstance(value, dict):
            fields.update(value)
        else:
            fields[location] = value
    return fields


def handle_http_exception(exc: HTTPException):
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages")
    if status in (400, 422) and messages:
        if messages == {"json": ["Invalid JSON body."]}:
            return error_response(400, "bad_request", "The body is not valid JSON.")
        return error_response(400, "validation_error", "The request is not valid.", _flatten_webargs_messages(messages))
    headers = {}
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    message = data.get("message") or exc.description or exc.name
    if status == 404:
        message = f"No such resource: {request.path}"
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.path}."
    elif status == 413:
        message = "The request body is too large."
    return error_response(status, _HTTP_CODES.get(status, "error"), message, headers=headers)


def _render(exc: errors.DuelyError):
    return error_response(exc.status, exc.code, exc.message, exc.fields, exc.headers, exc.extra)


def handle_duely_error(exc: errors.DuelyError):
    if isinstance(exc, errors.Unavailable):
        _unavailable_log.hit("answering 503 unavailable: %s (%s %s)", exc.message, request.method, request.path)
    return _render(exc)


def handle_unexpected(exc: Exception):
    reason = outage.unavailable_reason(exc)
    if reason is not None:
        # The database is down/restarting or out of connections: "come back soon", not our bug.
        message = ("The service is busy; retry later." if reason == "busy"
                   else "The database is unreachable; retry later.")
        problem = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        _unavailable_log.hit("database %s, answering 503 unavailable: %s (%s %s)", reason, problem,
                             request.method, request.path)
        return _render(errors.Unavailable(outage.retry_after_secs(reason), message))
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")


def register(app: Flask) -> None:
    app.register_error_handler(errors.DuelyError, handle_duely_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
