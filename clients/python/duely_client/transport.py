"""How the client's requests travel: keep-alive HTTP/1.1 connections of the standard library's
`http.client`, a few per client, with nothing in between.

`requests.Session.request` spent ~1 ms of CPU per call on work a JSON API client does not need
(merging settings, hooks, the cookie jar, preparing and re-parsing the URL, urllib3's retry and
response objects): ~3x the request itself, on the same box as the server. So the client speaks
HTTP straight through `http.client`, and uses `requests` only where it brings something: the
environment's proxy, CA bundle and client certificate settings (read once), and a caller's own
`requests.Session` (`Client(session=...)`) or a proxy, which go through `RequestsTransport`.

A stale keep-alive connection. A server closes a connection that stayed idle past its keep-alive
time (gunicorn's `keepalive`); when that happens just as the client sends its next request on it,
the request fails before any byte of the answer came back. The server never read that request,
so, as browsers do, an idempotent one is sent again AT ONCE on a fresh connection (no backoff);
a failure on a fresh connection, a timeout, or one after the answer began is raised as it is
(the caller's backoff decides). The caller says which requests are idempotent (`Client` marks
GET/PUT/DELETE and the POSTs the API makes idempotent: submit by its client_temp_id, queue join,
rematch, settings). Before reusing a pooled connection its socket is checked (a zero-timeout
select): one the server already closed is dropped without a failed request.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import select
import ssl
import time
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import requests

MAX_IDLE_CONNECTIONS = 10  # per client, as requests' pools
# A pooled connection idle longer than this is closed instead of reused: Duely's server keeps
# idle connections 75 s (duely/gunicorn_conf.py), so reusing one at ~75 s races its close.
MAX_IDLE_SECS = 60.0
USER_AGENT = "duely-client"

# Raised when the peer closed or reset the connection: before any byte of the answer, these mean
# the request was not read (http.client.RemoteDisconnected is a ConnectionResetError).
_CLOSED_BEFORE_ANSWER = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class TransportError(Exception):
    """No answer: the connection could not be made, failed, or timed out."""


class Answer(NamedTuple):
    status: int
    body: bytes
    retry_after: str | None


def build_path(path: str, params: dict[str, Any] | None) -> str:
    return f"{path}?{urlencode(params)}" if params else path


def encode_json(value: Any) -> bytes:
    return jsonlib.dumps(value, separators=(",", ":")).encode()


class HttpTransport:
    """Keep-alive connections to one origin (http or https, no proxy)."""

    def __init__(self, base_url: str, *, verify: bool | str = True, cert: str | tuple[str, str] | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.context = _ssl_context(verify, cert)
        self.headers: dict[str, str] = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []  # (connection, idle since), newest last
        self.stale_retries = 0  # requests sent again at once after a reused connection was found closed

    def set_header(self, name: str, value: str | None) -> None:
        if value is None:
            self.headers.pop(name, None)
        else:
            self.headers[name] = value

    def _new(self, timeout: float) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _pooled(self) -> http.client.HTTPConnection | None:
        """The most recently used idle connection still open, or None."""
        now = time.monotonic()
        while True:
            try:
                conn, since = self._idle.pop()
            except IndexError:
                return None
            sock = conn.sock
            # Readable while idle: the server closed it (EOF) or sent something unasked; either way
            # it cannot carry a request. (A zero-timeout select is also gevent-friendly.)
            if sock is None or now - since > MAX_IDLE_SECS or select.select([sock], [], [], 0)[0]:
                conn.close()
                continue
            return conn

    def close(self) -> None:
        while self._idle:
            self._idle.pop()[0].close()

    def send(self, method: str, path: str, body: bytes | None, timeout: float, idempotent: bool) -> Answer:
        headers = self.headers
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        conn = self._pooled()
        reused = conn is not None
        if conn is None:
            conn = self._new(timeout)
        while True:
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                else:
                    conn.timeout = timeout
                conn.request(method, self.prefix + path, body, headers)
                response = conn.getresponse()
            except _CLOSED_BEFORE_ANSWER as exc:
                conn.close()
                if reused and idempotent:
                    # A stale keep-alive connection (see the module's docstring): once more, at once.
                    self.stale_retries += 1
                    conn, reused = self._new(timeout), False
                    continue
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            break
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        if response.will_close:
            conn.close()
        elif len(self._idle) < MAX_IDLE_CONNECTIONS:
            self._idle.append((conn, time.monotonic()))
        else:
            conn.close()
        return Answer(response.status, data, response.getheader("Retry-After"))


class RequestsTransport:
    """Through a `requests.Session`: a caller's own (adapters, auth, mounts) or when a proxy applies."""

    def __init__(self, base_url: str, session: requests.Session):
        self.base_url = base_url
        self.session = session
        self.stale_retries = 0

    def set_header(self, name: str, value: str | None) -> None:
        if value is None:
            self.session.headers.pop(name, None)
        else:
            self.session.headers[name] = value

    def close(self) -> None:
        self.session.close()

    def send(self, method: str, path: str, body: bytes | None, timeout: float, idempotent: bool) -> Answer:
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            response = self.session.request(method, self.base_url + path, data=body, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return Answer(response.status_code, response.content, response.headers.get("Retry-After"))


def transport_for(base_url: str, session: requests.Session | None = None) -> HttpTransport | RequestsTransport:
    """The direct transport, unless the caller brought a session or the environment sets a proxy
    for this URL. The environment (`HTTPS_PROXY`, `NO_PROXY`, `REQUESTS_CA_BUNDLE`, ...) is read
    once, here, with requests' own rules."""
    if session is not None:
        return RequestsTransport(base_url, session)
    probe = requests.Session()
    settings = probe.merge_environment_settings(base_url, {}, None, None, None)
    if requests.utils.select_proxy(base_url, settings["proxies"]):
        probe.proxies.update(settings["proxies"])
        probe.verify = settings["verify"]
        if settings["cert"] is not None:
            probe.cert = settings["cert"]
        probe.trust_env = False
        return RequestsTransport(base_url, probe)
    probe.close()
    return HttpTransport(base_url, verify=settings["verify"], cert=settings["cert"])


def _ssl_context(verify: bool | str, cert: str | tuple[str, str] | None) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        from requests.utils import DEFAULT_CA_BUNDLE_PATH  # certifi's bundle, as requests verifies by default

        where = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
        context = ssl.create_default_context(capath=where) if _is_dir(where) else ssl.create_default_context(cafile=where)
    if cert is not None:
        certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
        context.load_cert_chain(certfile, keyfile)
    return context


def _is_dir(path: str) -> bool:
    import os

    return os.path.isdir(path)
