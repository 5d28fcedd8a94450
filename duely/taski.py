"""Client for Taski, the external task and judging service (docs/taski.md).

One `TaskiClient` per process (its Runtime's, duely/runtime.py). A 429 pauses *every* call of this process for Retry-After
seconds (the contract's rule), so the pause lives in the client, not in a request.
5xx answers and network errors are transient: retried a few times with backoff, then
raised as `TaskiUnavailable` for the caller to leave the work for its next round.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

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


class Response(Protocol):
    """What a call answers: a `requests.Response`, or the direct transport's `_Answer`."""

    status_code: int
    headers: Any  # case-insensitive: requests' CaseInsensitiveDict or http.client's HTTPMessage

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def _retry_after_secs(response: Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _error_message(response: Response) -> str:
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


class _Answer:
    """A response read whole by the direct transport (the few things the client looks at)."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: http.client.HTTPMessage, content: bytes):
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


# Errors of a reused keep-alive connection that the server had closed meanwhile: the request is
# sent again once on a new connection (every Taski call is idempotent: a GET, or a submission
# keyed by its id).
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
# Idle keep-alive connections kept for reuse (more than the threads that call at once is waste).
IDLE_CONNECTIONS_MAX = 16


class DirectTransport:
    """Keep-alive `http.client` connections to one host, reused by any thread (LIFO).

    The hot path's calls (a dispatch send per submission, a task pick per duel) through requests
    cost ~1.6 ms of CPU each, urllib3 alone ~0.9, http.client ~0.45 (a local keep-alive server,
    thread CPU time): requests' per-call preparation, hooks and adapter layers are most of it.
    Used when no proxy applies to the base URL and no client certificate is set
    (`direct_transport` decides); otherwise the client keeps a requests session."""

    def __init__(self, base_url: str, verify: bool | str = True):
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.context: ssl.SSLContext | None = None
        if self.https:
            if verify is False:
                self.context = ssl._create_unverified_context()
            elif isinstance(verify, str):
                self.context = (ssl.create_default_context(capath=verify) if os.path.isdir(verify)
                                else ssl.create_default_context(cafile=verify))
            else:
                self.context = ssl.create_default_context()
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, timeout: float, params: Mapping[str, Any] | None = None,
                json_body: Any = None) -> _Answer:
        """One call; raises OSError or http.client.HTTPException on a network failure."""
        target = self.prefix + path + ("?" + urlencode(params) if params else "")
        headers = {"Accept": "application/json", "User-Agent": "duely"}
        body = None
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        reused = conn is not None
        for _ in range(2):
            if conn is None:
                conn = self._connect(timeout)
            else:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
            try:
                conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
                content = response.read()
            except _STALE:
                conn.close()
                conn = None
                if reused:
                    reused = False
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                with self._lock:
                    if len(self._idle) < IDLE_CONNECTIONS_MAX:
                        self._idle.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()
            return _Answer(response.status, response.headers, content)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def direct_transport(base_url: str) -> DirectTransport | None:
    """The direct transport for `base_url`, or None when the environment asks for what only
    requests does here: a proxy for this URL (`HTTP(S)_PROXY`, `NO_PROXY`), a client certificate."""
    if urlsplit(base_url).scheme not in ("http", "https"):
        return None
    settings = requests.Session().merge_environment_settings(base_url, {}, None, None, None)
    scheme = urlsplit(base_url).scheme
    proxies = settings["proxies"] or {}
    if proxies.get(scheme) or proxies.get("all") or settings["cert"] is not None:
        return None
    return DirectTransport(base_url, settings["verify"])


class TaskiClient:
    def __init__(self, base_url: str, timeout_secs: float = 5.0, http: requests.Session | None = None,
                 retry_delays_secs: Iterable[float] = RETRY_DELAYS_SECS):
        self.base_url = base_url.rstrip("/")
        self.timeout_secs = timeout_secs
        # Plain http.client connections when nothing in the environment needs requests (see
        # DirectTransport); else a requests session. Either keeps connections alive between calls.
        self.direct = direct_transport(self.base_url) if http is None else None
        self.http = http if http is not None or self.direct is not None else environment_resolved_session(self.base_url)
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

    def _request(self, method: str, path: str, params: Mapping[str, Any] | None, json_body: Any) -> Response:
        if self.direct is not None:
            return self.direct.request(method, path, self.timeout_secs, params=params, json_body=json_body)
        assert self.http is not None
        return self.http.request(method, self.base_url + path, timeout=self.timeout_secs, params=params, json=json_body)

    def _call(self, method: str, path: str, params: Mapping[str, Any] | None = None, json: Any = None) -> Response:
        attempts = len(self.retry_delays_secs) + 1
        for attempt in range(attempts):
            remaining = self.paused_for()
            if remaining > 0:
                raise TaskiRateLimited(remaining)
            try:
                response = self._request(method, path, params, json)
            except (requests.RequestException, OSError, http.client.HTTPException) as exc:
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
