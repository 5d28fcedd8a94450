"""The development Taski's two hot requests answered below Flask: `POST /api/submissions` and
`GET /api/tasks/pick`, what Duely sends for every submission and every duel start.

In a benchmark the dev Taski shares the machine with the stack it serves (the instant judge:
docs/devtaski.md), and Flask's machinery per request (request context, URL matching, hooks,
the Response object) was about a third of its CPU. This WSGI middleware answers the plain,
successful form of those two requests itself, with the view's status, JSON and content type
(tests/devtaski/test_fast_routes.py). Anything else goes to Flask untouched: other paths and
methods, any fault switch armed, a body or query that does not pass, a rejected submission.
Flask then decides everything again; nothing was changed before a request is handed over
(the body's checks and the service's `Rejected` come before the submission is claimed).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable

from duely.devtaski.app import MAX_BODY_BYTES, ApiError, parse_submission
from duely.devtaski.faults import Faults
from duely.devtaski.service import DevTaski, Rejected
from duely.errors import error_body

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def _json_answer(start_response: Callable, status: str, obj: object) -> list[bytes]:
    """What Flask's jsonify writes: sorted keys, compact, ASCII, a trailing newline."""
    body = (json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n").encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def plain_pick_query(query: str) -> tuple[int, set[int]] | None:
    """`rating=<int>[&exclude=<int>,<int>...]` (either order) -> (rating, exclude), else None."""
    rating: int | None = None
    exclude: set[int] = set()
    seen: set[str] = set()
    for pair in query.split("&") if query else ():
        name, sep, value = pair.partition("=")
        if not sep or name in seen:
            return None
        seen.add(name)
        if name == "rating":
            if not value.isascii() or not value.isdigit() or len(value) > 9:
                return None
            rating = int(value)
        elif name == "exclude":
            parts = value.split(",") if value else []
            if not all(p.isascii() and p.isdigit() and len(p) <= 18 for p in parts):
                return None
            exclude = {int(p) for p in parts}
        else:
            return None
    return None if rating is None else (rating, exclude)


class FastRoutes:
    """WSGI middleware in front of the dev Taski's Flask app (see the module's docstring)."""

    def __init__(self, app: WSGIApp, service: DevTaski, faults: Faults):
        self.app, self.service, self.faults = app, service, faults
        self.answered = 0  # requests answered here, not by Flask (tests)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        if path == "/api/submissions" and method == "POST":
            return self._submit(environ, start_response)
        if path == "/api/tasks/pick" and method == "GET":
            return self._pick(environ, start_response)
        return self.app(environ, start_response)

    def _pick(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        query = plain_pick_query(environ.get("QUERY_STRING", ""))
        if query is None or self.faults.http_armed():
            return self.app(environ, start_response)
        problem = self.service.pick_task(*query)
        if problem is None:
            return self.app(environ, start_response)  # the 404 as the view words it
        self.answered += 1
        return _json_answer(start_response, "200 OK", problem.public())

    def _submit(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        length_text = environ.get("CONTENT_LENGTH") or ""
        if (not length_text.isdigit() or int(length_text) > MAX_BODY_BYTES or "HTTP_TRANSFER_ENCODING" in environ
                or not (environ.get("CONTENT_TYPE") or "").startswith("application/json") or self.faults.http_armed()):
            return self.app(environ, start_response)
        raw = environ["wsgi.input"].read(int(length_text))
        environ["wsgi.input"] = io.BytesIO(raw)  # for Flask, should it have to answer after all
        try:
            submission = parse_submission(json.loads(raw))
            status = self.service.do_submit(submission)
        except (ValueError, ApiError, Rejected):  # JSON, shape or judgeability: Flask words the 400
            return self.app(environ, start_response)
        except Exception:  # as the app's own handler answers it (the submission may be claimed: no second try)
            log.exception("unhandled error")
            return _json_answer(start_response, "500 INTERNAL SERVER ERROR",
                                {**error_body("internal_error", "internal error"), "message": "internal error"})
        self.answered += 1
        return _json_answer(start_response, "202 ACCEPTED", {"submission_id": submission.submission_id, "status": status})
