"""Client for Taski, the external task and judging service (docs/taski.md).

One `TaskiClient` per process (its Runtime's, duely/runtime.py). A 429 pauses *every* call of this process for Retry-After
seconds (the contract's rule), so the pause lives in the client, not in a request.
5xx answers and network errors are transient: retried a few times with backoff, then
raised as `TaskiUnavailable` for the caller to leave the work for its next round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import requests

from duely.backoff import TASKI_CALL, TASKI_CALL_RETRIES
from duely.logs import kv

log = logging.getLogger(__name__)

RETRY_DELAYS_SECS = TASKI_CALL.delays(TASKI_CALL_RETRIES)  # between attempts of one call; then the caller's next round


class TaskiError(Exception):
    pass


class TaskiRateLimited(TaskiError):
    def __init__(self, retry_after_secs: float):
        super().__init__(f"Taski asked to pause for {retry_after_secs:.1f}s")
        self.retry_after_secs = retry_after_secs


class TaskiUnavailable(TaskiError):
    """5xx, timeout or connection failure: try again later."""


class TaskiRejected(TaskiError):
    """400: this submission can never be judged; `message` says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class TaskiNotFound(TaskiError):
    pass


def _retry_after_secs(response: requests.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        if isinstance(body.get("message"), str):
            return body["message"]
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
    return f"HTTP {response.status_code}"


def environment_resolved_session(base_url: str) -> requests.Session:
    """A session that keeps connections alive and reads the environment's proxy and CA settings
    (`HTTPS_PROXY`, `NO_PROXY`, `REQUESTS_CA_BUNDLE`, ...) once, here, instead of at every request:
    requests re-reads them per call by default, which profiled as ~6% of the scheduler's CPU.
    (The client library has its own copy: it must import without the server's packages.)"""
    session = requests.Session()
    settings = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    if settings["cert"] is not None:
        session.cert = settings["cert"]
    session.trust_env = False
    return session


class TaskiClient:
    def __init__(self, base_url: str, timeout_secs: float = 5.0, http: requests.Session | None = None,
                 retry_delays_secs: Iterable[float] = RETRY_DELAYS_SECS):
        self.base_url = base_url.rstrip("/")
        self.timeout_secs = timeout_secs
        self.http = http or environment_resolved_session(self.base_url)  # keeps connections alive between calls
        self.retry_delays_secs = tuple(retry_delays_secs)
        self._paused_until = 0.0
        self._lock = threading.Lock()

    # -- the pause shared by every call of this process --
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - time.monotonic())

    def pause(self, secs: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + secs)
        log.warning("Taski rate limit: pausing all calls", extra=kv(pause_secs=round(secs, 1)))

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        attempts = len(self.retry_delays_secs) + 1
        for attempt in range(attempts):
            remaining = self.paused_for()
            if remaining > 0:
                raise TaskiRateLimited(remaining)
            try:
                response = self.http.request(method, self.base_url + path, timeout=self.timeout_secs, **kwargs)
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 429:
                    secs = _retry_after_secs(response)
                    self.pause(secs)
                    raise TaskiRateLimited(secs)
                if response.status_code < 500:
                    return response
                problem = f"HTTP {response.status_code}"
            if attempt < attempts - 1:
                time.sleep(self.retry_delays_secs[attempt])
        log.warning("Taski unavailable", extra=kv(path=path, problem=problem))
        raise TaskiUnavailable(problem)

    # -- the contract's calls --
    def pick_task(self, rating: int, exclude: Iterable[Any] = ()) -> dict:
        params: dict[str, int | str] = {"rating": int(rating)}
        exclude = [str(e) for e in exclude]
        if exclude:
            params["exclude"] = ",".join(exclude)
        response = self._call("GET", "/api/tasks/pick", params=params)
        if response.status_code == 404:
            raise TaskiNotFound("Taski has no task for that rating")
        if response.status_code != 200:
            raise TaskiUnavailable(f"pick answered HTTP {response.status_code}")
        return response.json()

    def send_submission(self, submission_id: str, task_id: Any, language: str, solution: str) -> None:
        """Hand a submission to Taski (idempotent on submission_id). Raises TaskiRejected on 400."""
        response = self._call("POST", "/api/submissions", json={
            "submission_id": submission_id, "task_id": task_id, "language": language, "solution": solution,
        })
        if response.status_code == 400:
            raise TaskiRejected(_error_message(response))
        if response.status_code not in (200, 201, 202):
            raise TaskiUnavailable(f"submission answered HTTP {response.status_code}")
