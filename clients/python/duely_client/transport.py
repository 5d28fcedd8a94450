"""How the client's requests travel: a few keep-alive HTTP/1.1 connections per client, plain
sockets with nothing in between.

`requests.Session.request` spent ~1 ms of CPU per call on work a JSON API client does not need
(merging settings, hooks, the cookie jar, preparing and re-parsing the URL, urllib3's retry and
response objects): ~3x the request itself, on the same box as the server (bench/client_cpu.py).
So the client writes each request in one piece (its fixed headers encoded once) and reads the
answer with a short header loop (`Connection`); even `http.client` spends a fifth of a call
parsing headers with the email package. `requests` is used only where it brings something: the
environment's proxy, CA bundle and client-certificate settings (read once, with its rules), and
a caller's own `requests.Session` (`Client(session=...)`) or a proxy, which go through
`RequestsTransport`.

A stale keep-alive connection. A server closes a connection that stayed idle past its keep-alive
time (gunicorn's `keepalive`); when that happens just as the client sends its next request on it,
the request fails before any byte of the answer came back. The server never read that request,
so, as browsers do, an idempotent one is sent again AT ONCE on a new connection (no backoff); a
failure on a new connection, a timeout, or one after the answer began is raised as it is (the
caller's backoff decides). The caller says which requests are idempotent (`Client` marks
GET/PUT/DELETE and the POSTs the API makes idempotent: submit by its client_temp_id, queue join,
rematch, settings). Before a pooled connection is reused its socket is checked (a zero-timeout
select): one the server already closed is dropped without a failed request.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import requests

MAX_IDLE_CONNECTIONS = 10  # per client, as requests' pools
# A pooled connection idle longer than this is closed instead of reused: Duely's server keeps
# idle connections 75 s (duely/gunicorn_conf.py), so reusing one at ~75 s races its close.
MAX_IDLE_SECS = 60.0
USER_AGENT = "duely-client"
_MAX_LINE = 65537
_MAX_HEADERS = 100
_MAX_STREAM_LINE = 16 * 1024 * 1024  # an event's data line; far above any event Duely writes

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


class Connection:
    """One keep-alive HTTP/1.1 connection: the request written in one piece, the answer read with
    a plain header loop (http.client parses headers with the email package: a fifth of a call's
    CPU). Enough HTTP for a JSON API: Content-Length and chunked bodies, 1xx skipped, keep-alive
    per HTTP/1.0 and 1.1 rules."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext | None):
        sock = socket.create_connection((host, port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock: socket.socket | None = sock
        self.file = sock.makefile("rb")

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            self.file.close()
            sock.close()

    def exchange(self, request: bytes, head_only: bool) -> tuple[int, dict[bytes, bytes], bytes, bool]:
        """Send a request, read its answer: (status, headers by lower-case name, body, keep open)."""
        line = self._send(request)
        try:
            return self._answer(line, head_only)
        except ConnectionError as exc:  # the answer began: not a stale connection, never sent again at once
            raise http.client.IncompleteRead(b"") from exc

    def _send(self, request: bytes) -> bytes:
        """Send a request; returns the first line of its answer."""
        assert self.sock is not None
        self.sock.sendall(request)
        line = self.file.readline(_MAX_LINE)
        if not line:
            # Closed without a byte of an answer: the request was not read (see the module docstring).
            raise http.client.RemoteDisconnected("the server closed the connection without an answer")
        return line

    def _answer(self, line: bytes, head_only: bool) -> tuple[int, dict[bytes, bytes], bytes, bool]:
        version, status, headers = self._head(line)
        return (status, headers, *self._body(version, status, headers, head_only))

    def open_stream(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes | None]:
        """Send a request and read the head of its answer: (status, headers, body). A 200 answer's
        body is left on the connection for `lines()`; any other is read whole (an error's JSON)."""
        version, status, headers = self._head(self._send(request))
        if status == 200:
            return status, headers, None
        return status, headers, self._body(version, status, headers, False)[0]

    def lines(self, headers: dict[bytes, bytes]) -> Iterator[bytes]:
        """A streamed body's lines as they arrive (without their line ends), chunked or not, until it ends."""
        readline = self.file.readline
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            while line := readline(_MAX_LINE):
                if not line.endswith(b"\n"):
                    raise http.client.IncompleteRead(line)
                yield line.rstrip(b"\r\n")
            return
        pending = b""
        while True:
            try:
                size = int(readline(_MAX_LINE).split(b";", 1)[0], 16)
            except ValueError:
                raise http.client.IncompleteRead(pending) from None
            if size == 0:
                return
            chunk = self.file.read(size + 2)  # the chunk and its CRLF
            if len(chunk) < size + 2:
                raise http.client.IncompleteRead(chunk)
            # A line may span chunks (a proxy may cut the stream anywhere): keep the unfinished end.
            *complete, pending = (pending + chunk[:size]).split(b"\n")
            if len(pending) > _MAX_STREAM_LINE:
                raise http.client.IncompleteRead(pending[:100])
            for line in complete:
                yield line.removesuffix(b"\r")

    def _head(self, line: bytes) -> tuple[bytes, int, dict[bytes, bytes]]:
        readline = self.file.readline
        while True:
            version, _, rest = line.partition(b" ")
            if not version.startswith(b"HTTP/1.") or len(rest) < 3 or not rest[:3].isdigit():
                raise http.client.BadStatusLine(line.decode("latin-1").strip())
            status = int(rest[:3])
            headers: dict[bytes, bytes] = {}
            while True:
                header = readline(_MAX_LINE)
                if header in (b"\r\n", b"\n"):
                    break
                if not header or len(headers) > _MAX_HEADERS:
                    raise http.client.IncompleteRead(header)
                name, _, value = header.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
                line = readline(_MAX_LINE)
                continue
            return version, status, headers

    def _body(self, version: bytes, status: int, headers: dict[bytes, bytes], head_only: bool) -> tuple[bytes, bool]:
        """The answer's body and whether the connection stays open for another request."""
        connection = headers.get(b"connection", b"").lower()
        keep = connection != b"close" if version == b"HTTP/1.1" else connection == b"keep-alive"
        if head_only or status in (204, 304):
            body = b""
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = self._read_chunked()
        elif (length := headers.get(b"content-length")) is not None:
            size = int(length)
            body = self.file.read(size)
            if len(body) < size:
                raise http.client.IncompleteRead(body, size - len(body))
        else:  # the body runs to the end of the connection
            body, keep = self.file.read(), False
        return body, keep

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = self.file.readline(_MAX_LINE)
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise http.client.IncompleteRead(b"".join(parts)) from None
            if size == 0:
                while self.file.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            chunk = self.file.read(size + 2)  # the chunk and its CRLF
            if len(chunk) < size + 2:
                raise http.client.IncompleteRead(b"".join(parts))
            parts.append(chunk[:size])


class StreamAnswer:
    """An answer read as it arrives (an event stream): `status`, and `lines()` of a 200 answer's
    body; any other answer's `body` is read whole. It holds its own connection until `close()`."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, lines: Iterator[bytes] | None,
                 close: Callable[[], None]):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body
        self.retry_after = headers.get("retry-after")
        self._lines = lines
        self._close = close

    def lines(self) -> Iterator[bytes]:
        """The body's lines without their line ends. Raises TransportError when the connection
        fails or stays silent past the stream's timeout; ends when the server ends the answer."""
        if self._lines is None:
            return
        try:
            yield from self._lines
        except (OSError, http.client.HTTPException, ValueError, requests.RequestException) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Close the connection (from any thread: a read blocked on it then fails)."""
        self._close()


class HttpTransport:
    """Keep-alive connections to one origin (http or https, no proxy)."""

    def __init__(self, base_url: str, *, verify: bool | str = True, cert: str | tuple[str, str] | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.context = _ssl_context(verify, cert)
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        self.headers: dict[str, str] = {"Host": host if default_port else f"{host}:{self.port}",
                                        "User-Agent": USER_AGENT, "Accept": "application/json"}
        self._head = b""
        self._render_headers()
        self._idle: list[tuple[Connection, float]] = []  # (connection, idle since), newest last
        self.stale_retries = 0  # requests sent again at once after a reused connection was found closed

    def set_header(self, name: str, value: str | None) -> None:
        if value is not None and ("\r" in value or "\n" in value or not value.isprintable()):
            raise ValueError(f"a {name} header cannot hold {value!r}")
        if value is None:
            self.headers.pop(name, None)
        else:
            self.headers[name] = value
        self._render_headers()

    def _render_headers(self) -> None:
        # The headers every request carries, encoded once (they change only with the token).
        self._head = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items()).encode("latin-1")

    def _pooled(self) -> Connection | None:
        """The most recently used idle connection still open, or None."""
        now = time.monotonic()
        while True:
            try:
                conn, since = self._idle.pop()
            except IndexError:
                return None
            sock = conn.sock
            if sock is None or now - since > MAX_IDLE_SECS or _readable(sock):
                conn.close()
                continue
            return conn

    def close(self) -> None:
        while self._idle:
            self._idle.pop()[0].close()

    def send(self, method: str, path: str, body: bytes | None, timeout: float, idempotent: bool) -> Answer:
        target = self.prefix + path
        if " " in target or "\r" in target or "\n" in target:
            raise ValueError(f"not a request target: {target!r}")
        if body is None:
            length = b"Content-Length: 0\r\n" if method in ("POST", "PUT", "PATCH") else b""
            request = b"%s %s HTTP/1.1\r\n%s%s\r\n" % (method.encode(), target.encode(), self._head, length)
        else:
            request = b"%s %s HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                method.encode(), target.encode(), self._head, len(body), body)
        conn = self._pooled()
        reused = conn is not None
        while True:
            try:
                if conn is None:
                    conn = Connection(self.host, self.port, timeout, self.context)
                elif conn.sock is not None:
                    conn.sock.settimeout(timeout)
                status, headers, data, keep = conn.exchange(request, method == "HEAD")
            except _CLOSED_BEFORE_ANSWER as exc:
                if conn is not None:
                    conn.close()
                if reused and idempotent:
                    # A stale keep-alive connection (see the module's docstring): once more, at once.
                    self.stale_retries += 1
                    conn, reused = None, False
                    continue
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if conn is not None:
                    conn.close()
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            break
        if keep and len(self._idle) < MAX_IDLE_CONNECTIONS:
            self._idle.append((conn, time.monotonic()))
        else:
            conn.close()
        retry_after = headers.get(b"retry-after")
        return Answer(status, data, None if retry_after is None else retry_after.decode("latin-1"))

    def open_stream(self, path: str, headers: dict[str, str], timeout: float) -> StreamAnswer:
        """GET `path` on a connection of its own (never pooled) with these extra `headers`; the
        socket's `timeout` also bounds the silence between two reads of the stream."""
        target = self.prefix + path
        if " " in target or "\r" in target or "\n" in target:
            raise ValueError(f"not a request target: {target!r}")
        merged = {**self.headers, **headers}
        head = "".join(f"{name}: {value}\r\n" for name, value in merged.items()).encode("latin-1")
        conn: Connection | None = None
        try:
            conn = Connection(self.host, self.port, timeout, self.context)
            status, raw, body = conn.open_stream(b"GET %s HTTP/1.1\r\n%s\r\n" % (target.encode(), head))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if conn is not None:
                conn.close()
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        decoded = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw.items()}
        if body is not None:
            conn.close()
            return StreamAnswer(status, decoded, body, None, conn.close)
        return StreamAnswer(status, decoded, b"", conn.lines(raw), conn.close)


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

    def open_stream(self, path: str, headers: dict[str, str], timeout: float) -> StreamAnswer:
        try:
            response = self.session.get(self.base_url + path, headers=headers, stream=True, timeout=timeout)
        except requests.RequestException as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        decoded = {name.lower(): value for name, value in response.headers.items()}
        if response.status_code != 200:
            try:
                body = response.content
            except requests.RequestException as exc:
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            finally:
                response.close()
            return StreamAnswer(response.status_code, decoded, body, None, response.close)

        def lines() -> Iterator[bytes]:
            pending = b""
            # chunk_size None: each piece as it arrives (iter_lines would wait for 512 bytes)
            for piece in response.iter_content(chunk_size=None):
                *complete, pending = (pending + piece).split(b"\n")
                if len(pending) > _MAX_STREAM_LINE:
                    raise ValueError("an event stream line too long")
                for line in complete:
                    yield line.removesuffix(b"\r")

        return StreamAnswer(200, decoded, b"", lines(), response.close)


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


def _readable(sock: socket.socket) -> bool:
    """Readable while idle: the server closed the connection (EOF) or sent something unasked;
    either way it cannot carry a request.

    A plain socket is asked with one non-blocking peek: a single system call, where a poll object
    made per check cost a gevent process (gevent patches select) a watcher on its hub each time,
    ~30% of the swarm's players' CPU. A TLS socket cannot peek, so it is polled (poll, not select:
    select() refuses descriptors above 1023, which a process with many clients has)."""
    if not hasattr(sock, "pending"):  # not TLS (stdlib's SSLSocket and gevent's have `pending`)
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            sock.recv(1, socket.MSG_PEEK)  # b"" at EOF: readable too
            return True
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # reset, or otherwise broken: not reusable either
            return True
        finally:
            sock.settimeout(timeout)
    if not hasattr(select, "poll"):  # Windows: its select limits the number of sockets, not their values
        return bool(select.select([sock], [], [], 0)[0])
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


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
