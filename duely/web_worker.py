"""Duely's gunicorn worker: gunicorn's gevent worker whose own error answers are the contract's
JSON error body, never gunicorn's HTML page (api.md, "Errors"; docs/http.md).

gunicorn answers a request itself, before Flask sees it, when it cannot parse it: a request line
over `limit_request_line` (414), too many or too large headers (431), a malformed request line,
method, version or header, a bad chunked body, an unknown Transfer-Encoding (501), an
`Expect` it cannot meet (417)... `handle_error` is where every one of those is written, so
this worker overrides it. The table below maps each gunicorn exception to a status and a
code; anything not in it is ours (500 `internal_error`, logged with its traceback).

A malformed chunked body is only found while the application reads it. gunicorn's exception
would then reach Flask as an unexpected error (500); the worker hands the application a body
whose read errors are werkzeug's 400 instead, and closes the connection after that answer.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from datetime import timedelta
from typing import Any

from gunicorn.http import errors as gerrors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.ggevent import GeventWorker
from werkzeug.exceptions import BadRequest

from duely.errors import error_body

# (exception classes, status, reason phrase, error code, message). First match wins, so the
# response-side subclasses come before the InvalidHeader/InvalidHeaderName they derive from.
_CLIENT_ERRORS: list[tuple[tuple[type[BaseException], ...], int, str, str, str]] = [
    ((gerrors.InvalidResponseHeader, gerrors.InvalidResponseHeaderName), 500, "Internal Server Error",
     "internal_error", "Something went wrong on our side; it has been logged."),
    ((gerrors.LimitRequestLine,), 414, "URI Too Long",
     "uri_too_long", "The request line (method, path and query) is too long."),
    ((gerrors.LimitRequestHeaders,), 431, "Request Header Fields Too Large",
     "headers_too_large", "The request has too many headers, or a header is too large."),
    ((gerrors.InvalidRequestLine,), 400, "Bad Request", "bad_request", "The request line is malformed."),
    ((gerrors.InvalidRequestMethod,), 400, "Bad Request", "bad_request", "The request method is not valid."),
    ((gerrors.InvalidHTTPVersion,), 400, "Bad Request", "bad_request", "The HTTP version is not supported."),
    ((gerrors.InvalidHeader, gerrors.InvalidHeaderName, gerrors.ObsoleteFolding), 400, "Bad Request",
     "bad_request", "A request header is malformed."),
    ((gerrors.InvalidChunkSize, gerrors.ChunkMissingTerminator, gerrors.InvalidChunkExtension), 400, "Bad Request",
     "bad_request", "The chunked request body is malformed."),
    ((gerrors.InvalidSchemeHeaders,), 400, "Bad Request",
     "bad_request", "The forwarded scheme headers contradict each other."),
    ((gerrors.InvalidProxyLine, gerrors.InvalidProxyHeader), 400, "Bad Request",
     "bad_request", "The PROXY protocol header is malformed."),
    ((gerrors.InvalidH2CPreface,), 400, "Bad Request", "bad_request", "Expected an HTTP/2 connection preface."),
    ((gerrors.UnsupportedTransferCoding,), 501, "Not Implemented",
     "not_implemented", "The request's Transfer-Encoding is not supported; send chunked or a Content-Length."),
    ((gerrors.ExpectationFailed,), 417, "Expectation Failed",
     "expectation_failed", "The request's Expect header cannot be met; only 100-continue is supported."),
    ((gerrors.ForbiddenProxyRequest,), 403, "Forbidden", "forbidden", "PROXY protocol requests are not allowed from this address."),
    ((ssl.SSLError,), 403, "Forbidden", "forbidden", "The TLS handshake failed."),
    ((gerrors.ConfigurationProblem,), 500, "Internal Server Error",
     "internal_error", "Something went wrong on our side; it has been logged."),
]
# Errors found while reading a request body: the body's framing is broken.
_BODY_ERRORS = (gerrors.InvalidChunkSize, gerrors.ChunkMissingTerminator, gerrors.InvalidChunkExtension)
_INTERNAL = (500, "Internal Server Error", "internal_error", "Something went wrong on our side; it has been logged.")

# After an error answer the rest of the request is unread. Closing a socket with unread input
# makes the kernel send RST, and the client may lose the answer; so the answer is followed by a
# half-close and a short, bounded drain of what the client still sends (nginx's lingering close).
LINGER_SECS = 1.0
LINGER_MAX_BYTES = 256 * 1024


def describe(exc: BaseException) -> tuple[int, str, str, str, bool]:
    """(status, reason, code, message, client's fault) of an error gunicorn answers itself."""
    for classes, status, reason, code, message in _CLIENT_ERRORS:
        if isinstance(exc, classes):
            return status, reason, code, message, code != "internal_error"  # 501 is the client's too
    return (*_INTERNAL, False)


def error_bytes(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps(error_body(code, message), separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "\r\n")
    return head.encode("latin-1") + body


class _BodyErrorsAreTheClients:
    """`wsgi.input` for the application: a malformed chunked body is a 400 from the application's
    own error handling (werkzeug's BadRequest), and the connection closes after that answer."""

    def __init__(self, body, on_error):
        self._body = body
        self._on_error = on_error

    def _call(self, method, *args):
        try:
            return method(*args)
        except gerrors.ParseException as exc:
            self._on_error()
            raise BadRequest("The chunked request body is malformed.") from exc

    def read(self, size=None):
        return self._call(self._body.read, size)

    def readline(self, size=None):
        return self._call(self._body.readline, size)

    def readlines(self, size=None):
        return self._call(self._body.readlines, size)

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def _guard_bodies(wsgi):
    def app(environ, start_response):
        body = environ.get("wsgi.input")
        # Only a chunked body can be malformed: a request without one (most are GETs) skips this.
        if body is not None and "HTTP_TRANSFER_ENCODING" in environ:
            # start_response is bound to gunicorn's Response: force_close makes the answer say
            # "Connection: close", and gunicorn then closes instead of looking for a next request.
            resp = getattr(start_response, "__self__", None)
            environ["wsgi.input"] = _BodyErrorsAreTheClients(body, getattr(resp, "force_close", lambda: None))
        return wsgi(environ, start_response)

    return app


class JsonErrorsGeventWorker(GeventWorker):
    """gunicorn's gevent worker, answering its own errors with the contract's JSON body."""

    def load_wsgi(self) -> None:
        # gevent's patch is in place by now (GeventWorker.init_process): psycopg's waits go
        # straight to the hub from here on (duely/greenwait.py).
        from duely import greenwait

        greenwait.install()
        spare_per_request_work()
        super().load_wsgi()
        # The app's per-process runtime, for the shutdown hooks in duely/gunicorn_conf.py.
        services = getattr(self.wsgi, "extensions", {}).get("duely")
        self.duely_runtime = getattr(services, "runtime", None)
        self.wsgi: Any = _guard_bodies(self.wsgi)

    def handle_error(self, req, client, addr, exc):
        addr = addr or ("", -1)  # unix socket
        if req is None and isinstance(exc, _BODY_ERRORS):
            # Found while discarding the unread body of a request that was answered already
            # (gunicorn drains it before looking for the next request): there is no request
            # left to answer, and where the next one would start is unknown. Just close.
            self.log.warning("Invalid request body from ip=%s: %s", addr[0], exc)
            return
        status, reason, code, message, client_error = describe(exc)
        if client_error:
            self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
        elif hasattr(req, "uri"):
            self.log.exception("Error handling request %s %s", getattr(req, "method", ""), req.uri)
        else:
            self.log.exception("Error handling request (no URI read)")
        if req is None and hasattr(getattr(exc, "req", None), "headers"):
            req = exc.req  # a header error carries its request: for the access log
        payload = error_bytes(status, reason, code, message)
        self._access_log(req, client, addr, status, reason, len(payload))
        try:
            client.settimeout(LINGER_SECS)
            client.sendall(payload)
            _linger(client)
        except Exception:  # the client went away: nothing to answer
            self.log.debug("Failed to send error message.")

    def _access_log(self, req, client, addr, status: int, reason: str, length: int) -> None:
        if req is None or not hasattr(req, "headers"):
            return
        try:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"] = addr[0]
            environ["REMOTE_PORT"] = str(addr[1])
            resp = Response(req, client, self.cfg)
            resp.status = f"{status} {reason}"
            resp.response_length = length
            self.log.access(resp, req, environ, timedelta(0))
        except Exception:
            self.log.debug("Failed to log an error answer.", exc_info=True)


def spare_per_request_work() -> None:
    """Stop gunicorn redoing, for every request, work whose result is the same for a whole
    second or a whole process: the Date header (formatted by the email package), the check of
    the peer's address against forwarded_allow_ips (parsed by ipaddress each time) and the
    `wsgi.errors` stream (found by looking up its logger's handlers). Together they were about a
    tenth of a web worker's CPU per long poll. Each replacement gives what gunicorn's own
    function gives (tests/test_web_worker.py); it is installed in the worker process only."""
    from gunicorn import util
    from gunicorn.http import message
    from gunicorn.http import wsgi as gwsgi

    if getattr(util.http_date, "duely_spared", False):
        return
    format_date = util.http_date
    second, text = -1, ""

    def http_date(timestamp: float | None = None) -> str:
        nonlocal second, text
        if timestamp is not None:
            return format_date(timestamp)
        now = int(time.time())  # the header has whole seconds: the same text all second long
        if now != second:
            text, second = format_date(now), now
        return text

    in_allow_list = message._ip_in_allow_list
    decided: dict[tuple[Any, int], bool] = {}

    def ip_in_allow_list(ip_str: Any, allow_list: Any, networks: Any) -> bool:
        # The lists are the config's, fixed for the worker's life: one decision per peer address.
        key = (ip_str, id(allow_list))
        found = decided.get(key)
        if found is None:
            if len(decided) >= 4096:
                decided.clear()
            found = decided[key] = in_allow_list(ip_str, allow_list, networks)
        return found

    errors_wrappers: dict[int, Any] = {}
    wrapper_class = gwsgi.WSGIErrorsWrapper

    def errors_wrapper(cfg: Any) -> Any:
        # The streams of gunicorn's error log, found once: its handlers are set up at start.
        wrapper = errors_wrappers.get(id(cfg))
        if wrapper is None:
            wrapper = errors_wrappers[id(cfg)] = wrapper_class(cfg)
        return wrapper

    http_date.duely_spared = True  # type: ignore[attr-defined]
    util.http_date = http_date
    message._ip_in_allow_list = ip_in_allow_list
    gwsgi.WSGIErrorsWrapper = errors_wrapper


def _linger(client: socket.socket) -> None:
    """Half-close, then discard what the client still sends, within LINGER_SECS/LINGER_MAX_BYTES."""
    client.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + LINGER_SECS
    drained = 0
    while drained < LINGER_MAX_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        client.settimeout(remaining)
        data = client.recv(65536)
        if not data:
            return
        drained += len(data)
