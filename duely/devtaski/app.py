"""HTTP face of the development Taski: the contract's endpoints plus admin ones for tests.

Views only validate and convert; DevTaski (service.py) decides. Every error is JSON
`{"error": {"code", "message"}, "message"}` (the top-level message is what Duely shows in
`Rejected: <message>`). Fault switches (faults.py) are applied to `/api/*` before routing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from duely.devtaski.faults import Faults, FaultSpecError
from duely.devtaski.service import DevTaski, Rejected, SubmissionRequest
from duely.errors import error_body

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
MAX_SUBMISSION_ID_CHARS = 200
_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 429: "rate_limited"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.code = code or _CODES.get(status, "internal_error" if status == 500 else "unavailable")


def taski_error_response(status: int, message: str, code: str | None = None, headers: dict | None = None) -> Response:
    """Duely's error body plus Taski's top-level `message` (docs/taski.md)."""
    code = code or ApiError(status, message).code
    response = jsonify({**error_body(code, message), "message": message})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _query_int(name: str) -> int:
    raw = request.args.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None


def _exclude() -> set[int]:
    raw = request.args.get("exclude", "")
    try:
        return {int(part) for part in raw.split(",") if part.strip()}
    except ValueError:
        raise ApiError(400, "exclude must be a comma-separated list of task ids") from None


def parse_submission(body: object) -> SubmissionRequest:
    """The body's shape; whether it can be judged is the service's call."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    sid = body.get("submission_id")
    if not isinstance(sid, str) or not sid.strip() or len(sid) > MAX_SUBMISSION_ID_CHARS:
        raise ApiError(400, f"submission_id must be a non-empty string of at most {MAX_SUBMISSION_ID_CHARS} characters")
    task_id = body.get("task_id")
    if isinstance(task_id, str) and task_id.strip().isdigit():
        task_id = int(task_id)
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise ApiError(400, "task_id must be an integer")
    language, solution = body.get("language"), body.get("solution")
    if not isinstance(language, str):
        raise ApiError(400, "language must be a string")
    if not isinstance(solution, str):
        raise ApiError(400, "solution must be a string")
    return SubmissionRequest(sid, task_id, language, solution)


def create_devtaski_app(service: DevTaski, faults: Faults, sleep: Callable[[float], None] = time.sleep) -> Flask:
    """The Flask app; `sleep` is how a `slow` fault waits (gevent's under gevent's server)."""
    app = Flask("duely.devtaski")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.before_request
    def apply_fault_switches():
        if not request.path.startswith("/api/"):
            return None
        delay_secs, fault = faults.take_http()
        if delay_secs:
            sleep(delay_secs)
        if fault is None:
            return None
        headers = {"Retry-After": str(fault.retry_after_secs)} if fault.retry_after_secs is not None else None
        return taski_error_response(fault.status, fault.message, headers=headers)

    @app.get("/api/tasks/pick")
    def pick_task():
        problem = service.pick_task(_query_int("rating"), _exclude())
        if problem is None:
            raise ApiError(404, "no tasks")
        return jsonify(problem.public())

    @app.get("/api/tasks/<int:task_id>")
    def get_task(task_id: int):
        problem = service.get_task(task_id)
        if problem is None:
            raise ApiError(404, f"no task {task_id}")
        return jsonify(problem.public())

    @app.post("/api/submissions")
    def submit():
        submission = parse_submission(request.get_json(silent=True))
        try:
            status = service.do_submit(submission)
        except Rejected as exc:
            raise ApiError(400, str(exc), code="rejected") from None
        return jsonify({"submission_id": submission.submission_id, "status": status}), 202

    @app.get("/api/languages")
    def languages():
        return jsonify({"languages": [language.public() for language in service.languages.values()]})

    @app.get("/healthz")
    def health():
        return jsonify({"status": "ok", "tasks": len(service.problems), "submissions": service.store.counts(),
                        "judge_queue": service.jobs.queued(), "kafka_backlog": service.publisher.backlog(),
                        "workers": [{"uid": w.uid, "sandbox": w.sandbox_mode} for w in service.jobs.workers()]})

    @app.get("/admin/faults")
    def get_faults():
        return jsonify(faults.snapshot())

    @app.post("/admin/faults")
    def set_faults():
        try:
            faults.configure(request.get_json(silent=True))
        except FaultSpecError as exc:
            raise ApiError(400, str(exc)) from None
        log.info("fault switches set: %s", faults.snapshot())
        return jsonify(faults.snapshot())

    @app.delete("/admin/faults")
    def reset_faults():
        faults.reset()
        return jsonify(faults.snapshot())

    @app.get("/admin/submissions/<submission_id>")
    def submission_state(submission_id: str):
        record = service.store.get(submission_id)
        if record is None:
            raise ApiError(404, f"no submission {submission_id}")
        return jsonify(record.public())

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return taski_error_response(exc.status, exc.message, exc.code)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return taski_error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return taski_error_response(500, "internal error")

    return app
