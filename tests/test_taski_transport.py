"""duely/taski.py's transport: plain keep-alive http.client connections, a connection the server
closed while idle replaced without a failed call, and requests kept when a proxy applies."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from duely.taski import TaskiClient


class _KeepAliveTaski(BaseHTTPRequestHandler):
    """A Taski that keeps connections alive and closes one idle for 0.2 s, as servers do
    (the dev Taski answers `Connection: close`, so it never leaves an idle connection behind)."""

    protocol_version = "HTTP/1.1"
    timeout = 0.2
    connections = 0

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def do_GET(self) -> None:
        body = json.dumps({"id": 7, "title": "Seven", "statement": "", "time_limit_ms": 1000, "difficulty": 800}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def keep_alive_taski():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveTaski)
    server.daemon_threads = True
    _KeepAliveTaski.connections = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_calls_share_a_kept_connection_and_a_closed_one_is_replaced_without_a_failed_call(keep_alive_taski):
    client = TaskiClient(keep_alive_taski, timeout_secs=5, retry_delays_secs=())  # no retries: a failure would surface
    assert client.direct is not None  # plain http, no proxy: http.client connections
    assert client.pick_task(1500)["id"] == 7
    assert client.pick_task(1500)["id"] == 7
    assert _KeepAliveTaski.connections == 1  # the second call reused the first's connection
    time.sleep(0.6)  # the server closes it meanwhile
    assert client.pick_task(1500)["id"] == 7
    assert _KeepAliveTaski.connections == 2


def test_a_proxy_in_the_environment_keeps_requests(monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    proxied = TaskiClient("http://taski.example:8080")
    assert proxied.direct is None and proxied.http is not None and proxied.http.proxies.get("http") == "http://127.0.0.1:9"
    monkeypatch.setenv("NO_PROXY", "taski.example")
    assert TaskiClient("http://taski.example:8080").direct is not None
