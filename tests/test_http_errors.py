"""Requests gunicorn rejects itself, before Flask sees them, get the contract's JSON error body
(never gunicorn's HTML page), over a raw socket against the real server (duely/web_worker.py)."""

from __future__ import annotations

import json
import socket

import pytest
from gunicorn.http import errors as gerrors

from duely import web_worker
from tests.conftest import TEST_SECRET_KEY
from tests.web_server import gunicorn


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    with gunicorn(database_url, TEST_SECRET_KEY, tmp_path_factory.mktemp("web")) as web:
        yield web


class Answer:
    def __init__(self, received: bytes):
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.raw = received
        self.status = int(status_line.split(" ")[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
        length = int(self.headers["content-length"])
        self.body = rest[:length]
        self.after = rest[length:]  # anything the server sent after this answer


def exchange(port: int, request: bytes) -> Answer:
    """Send `request`, read until the server closes. A reset instead of a clean close raises."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return Answer(received)


def assert_json_error(answer: Answer, status: int, code: str) -> None:
    assert b"<html" not in answer.raw.lower()
    assert answer.status == status, answer.raw[:300]
    assert answer.headers["content-type"] == "application/json"
    body = json.loads(answer.body)
    assert list(body) == ["error"] and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert answer.headers["connection"] == "close"
    assert answer.after == b""  # one answer, then a clean close


def _headers(*lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("latin-1")


CASES = {
    "request line over limit_request_line": (
        b"GET /api/leaderboard?q=" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    "more headers than limit_request_fields": (
        b"GET / HTTP/1.1\r\n" + _headers(*(f"X-H{i}: 1" for i in range(150))) + b"\r\n", 431, "headers_too_large"),
    "a header over limit_request_field_size": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 10_000 + b"\r\n\r\n", 431, "headers_too_large"),
    "headers far over the limit (the answer still arrives, no reset)": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n", 431, "headers_too_large"),
    "malformed request line": (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    "invalid method": (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    "invalid HTTP version": (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400, "bad_request"),
    "invalid header name": (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400, "bad_request"),
    "obsolete line folding": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400, "bad_request"),
    "conflicting Content-Length": (
        b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}", 400, "bad_request"),
    "Transfer-Encoding not ending in chunked": (
        b"POST /api/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "bad_request"),
    "unknown Transfer-Encoding": (
        b"POST /api/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", 501, "not_implemented"),
    "Expect other than 100-continue": (
        b"POST /api/users HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 2\r\n\r\n{}", 417, "expectation_failed"),
    "contradictory scheme headers from a trusted proxy": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n", 400, "bad_request"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gunicorn_rejections_are_json(server, name):
    request, status, code = CASES[name]
    assert_json_error(exchange(server.port, request), status, code)


def test_a_malformed_chunked_body_is_400_json_and_the_connection_closes(server):
    request = (b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
    answer = exchange(server.port, request)
    # Found by the application while reading the body: its own 400, not a 500 internal_error.
    assert_json_error(answer, 400, "bad_request")


def test_a_malformed_chunked_body_left_unread_gets_no_second_answer(server):
    # The 404 goes out without the body being read; gunicorn then finds the broken chunk while
    # discarding it, and must not write a second (error) answer on the same connection.
    request = (b"POST /api/nothing-here HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
    answer = exchange(server.port, request)
    assert answer.status == 404 and json.loads(answer.body)["error"]["code"] == "not_found"
    assert answer.after == b""


def test_the_worker_keeps_serving_and_logs_no_internal_error(server):
    for request, _, _ in CASES.values():
        exchange(server.port, request)
    answer = exchange(server.port, b"GET /api/nothing-here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.status == 404 and answer.headers["content-type"] == "application/json"
    log = server.log()
    assert "Invalid request from ip=127.0.0.1" in log
    assert "Traceback" not in log and "Error handling request" not in log


def test_every_error_gunicorn_answers_itself_has_a_mapping():
    # A gunicorn upgrade that adds a parse error must not fall back to 500 unnoticed.
    mapped = [cls for classes, *_ in web_worker._CLIENT_ERRORS for cls in classes]
    parse_errors = [obj for obj in vars(gerrors).values()
                    if isinstance(obj, type) and issubclass(obj, gerrors.ParseException) and obj is not gerrors.ParseException]
    assert len(parse_errors) > 15
    assert [cls.__name__ for cls in parse_errors if not any(issubclass(cls, m) for m in mapped)] == []


def test_anything_else_is_internal_error_and_the_application_s_header_faults_too():
    assert web_worker.describe(RuntimeError("boom"))[:3] == (500, "Internal Server Error", "internal_error")
    bad_header = gerrors.InvalidResponseHeader("X-Bad")
    assert web_worker.describe(bad_header)[2:3] == ("internal_error",)  # not the client's InvalidHeader 400
    raw = web_worker.error_bytes(414, "URI Too Long", "uri_too_long", "Too long.")
    answer = Answer(raw)
    assert answer.status == 414 and json.loads(answer.body) == {"error": {"code": "uri_too_long", "message": "Too long."}}
