"""Server-Sent Events (GET /api/stream, GET /api/duels/{id}/stream) and stream tickets: errors as
JSON before the stream (in process), and the streams themselves under the real server (gunicorn
with its gevent worker in a subprocess): framing, wake-ups, heartbeat, resume from Last-Event-ID
across a restart, shutdown, tickets."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests
from sqlalchemy import text

from duely import auth, stream_tickets, submissions, verdicts
from duely.clock import utcnow
from duely.config import Config, to_environ
from duely.infra import free_port, wait_for_port
from tests.fixtures.events import progress
from tests.fixtures.stack import start_duel

ROOT = Path(__file__).resolve().parent.parent
SECRET_CODE = "print('never shown to spectators 777')"


# -- errors before the stream, in process -------------------------------------------------------

def test_stream_errors_are_json_before_any_stream(client, db, make_poller, append_event):
    alice, bob = make_poller(), make_poller()
    append_event(alice.id)

    def check(resp, status: int, code: str) -> dict:
        assert resp.status_code == status and resp.mimetype == "application/json", (resp.status_code, resp.data[:200])
        body = resp.get_json()
        assert body["error"]["code"] == code
        return body

    check(client.get("/api/stream"), 401, "unauthorized")
    check(client.get("/api/stream", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
    check(client.get("/api/stream?ticket=garbage"), 401, "unauthorized")
    check(client.get("/api/stream", headers={**alice.headers, "Last-Event-ID": "5"}), 400, "bad_request")
    # The header wins over the query (browsers send it when they reconnect).
    check(client.get("/api/stream?last_event_id=0", headers={**alice.headers, "Last-Event-ID": "9"}), 400, "bad_request")
    check(client.get("/api/stream", headers={**alice.headers, "Last-Event-ID": "x1"}), 400, "validation_error")
    check(client.get("/api/stream?last_event_id=-1", headers=alice.headers), 400, "validation_error")
    duel_id = start_duel(db, alice.id, bob.id)
    check(client.get(f"/api/duels/{duel_id + 1000}/stream", headers=alice.headers), 404, "not_found")
    check(client.get(f"/api/duels/{duel_id}/stream", headers={**alice.headers, "Last-Event-ID": "2"}), 400, "bad_request")
    check(client.get(f"/api/duels/{duel_id}/stream"), 401, "unauthorized")
    with db.transaction() as s:  # pruned under the cursor: 410 with the id to continue from
        s.execute(text("DELETE FROM events WHERE user_id = :u"), {"u": alice.id})
    gone = check(client.get("/api/stream", headers=alice.headers), 410, "events_expired")
    assert gone["error"]["last_event_id"] >= 1


def test_an_in_process_stream_starts_with_the_retry_hint_and_resumes_after_the_header(client, make_poller, append_event):
    alice = make_poller()
    for i in range(3):
        append_event(alice.id, progress(f"step {i}"))
    resp = client.get("/api/stream?last_event_id=0", headers={**alice.headers, "Last-Event-ID": "1"}, buffered=False)
    try:
        assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
        assert resp.headers["X-Accel-Buffering"] == "no" and resp.headers["Cache-Control"] == "no-store"
        chunks = iter(resp.response)
        assert next(chunks) in (b"retry: 2000\n\n", "retry: 2000\n\n")
        body = next(chunks)
        body = body.decode() if isinstance(body, bytes) else body
        assert [json.loads(line[6:])["id"] for line in body.splitlines() if line.startswith("data: ")] == [2, 3]
    finally:
        resp.close()


def test_a_ticket_is_only_as_good_as_its_token_and_expires(client, config, make_user):
    carol = make_user("carol")
    created = carol.post("/api/stream-tickets")
    assert created.status_code == 201
    ticket = created.get_json()["ticket"]
    assert carol.token not in ticket
    token_hash = auth.hash_token(config.secret_key, carol.token)
    assert stream_tickets.token_hash_of(ticket, config.secret_key) == token_hash
    past = int(utcnow().timestamp()) - 1
    expired = f"{past}.{token_hash}.{stream_tickets._sign(config.secret_key, past, token_hash)}"
    resp = client.get(f"/api/stream?ticket={expired}")
    assert resp.status_code == 401 and "expired" in resp.get_json()["error"]["message"]
    forged = ticket[:-1] + ("0" if ticket[-1] != "0" else "1")
    assert client.get(f"/api/stream?ticket={forged}").status_code == 401
    assert client.post("/api/stream-tickets").status_code == 401
    assert carol.post("/api/auth/logout").status_code == 204
    revoked = client.get(f"/api/stream?ticket={ticket}")
    assert revoked.status_code == 401 and revoked.get_json()["error"]["code"] == "unauthorized"
    assert client.get(f"/api/duels/1/stream?ticket={ticket}").status_code == 401


# -- the real server ------------------------------------------------------------------------------

class Server:
    """gunicorn with Duely's config and worker class, restartable on the same port."""

    def __init__(self, database_url: str, secret_key: str, log_path: Path, gunicorn_args: str = "", **settings):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **to_environ(Config(database_url=database_url, secret_key=secret_key, port=self.port,
                                                      workers=1, log_level="WARNING", **settings))}
        if gunicorn_args:
            self.env["GUNICORN_CMD_ARGS"] = gunicorn_args  # gunicorn's own settings, over gunicorn_conf.py
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "duely" / "gunicorn_conf.py"),
                                          "app:app"], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.port, timeout=30)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def make_server(database_url, config, db, tmp_path):
    servers: list[Server] = []

    def factory(gunicorn_args: str = "", **settings) -> Server:
        server = Server(database_url, config.secret_key, tmp_path / f"gunicorn-{len(servers)}.log", gunicorn_args, **settings)
        servers.append(server)
        server.start()
        return server

    yield factory
    for server in servers:
        server.stop()


class EventStream:
    """A minimal EventSource: reads the stream in a thread and splits it into frames."""

    def __init__(self, url: str, headers: dict | None = None):
        self.response = requests.get(url, headers=headers or {}, stream=True, timeout=(5, 120))
        self.frames: queue.Queue[str | None] = queue.Queue()
        self.ended = threading.Event()
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = ""
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                buffer += chunk.decode()
                while "\n\n" in buffer:
                    frame, buffer = buffer.split("\n\n", 1)
                    self.frames.put(frame)
        except (requests.RequestException, OSError, AttributeError):  # AttributeError: closed by `close` meanwhile
            pass
        finally:
            self.ended.set()
            self.frames.put(None)

    def next_frame(self, timeout: float = 20) -> str | None:
        return self.frames.get(timeout=timeout)

    def next_events(self, count: int, timeout: float = 20) -> list[dict]:
        """The next `count` events (comments and the retry hint skipped), each {"id", "event", "data"}."""
        events = []
        while len(events) < count:
            frame = self.next_frame(timeout)
            assert frame is not None, f"the stream ended after {events}"
            if frame.startswith(":") or frame.startswith("retry:"):
                continue
            fields = dict(line.split(": ", 1) for line in frame.split("\n"))
            assert list(fields) == ["id", "event", "data"], frame
            data = json.loads(fields["data"])
            assert data["id"] == int(fields["id"]) and data["type"] == fields["event"]
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": data})
        return events

    def close(self) -> None:
        # Shut the socket down first: closing it under the reading thread's blocked recv would
        # wait for the server's next write (a heartbeat, up to SSE_HEARTBEAT away).
        connection = getattr(self.response.raw, "_connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.response.close()


def test_stream_framing_wakeup_shutdown_and_resume_across_a_restart(make_server, make_poller, append_event):
    server = make_server()
    alice = make_poller()
    for i in range(3):
        append_event(alice.id, progress(f"step {i}"))
    stream = EventStream(f"{server.base}/api/stream", alice.headers)
    assert stream.response.status_code == 200
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    assert stream.response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in stream.response.headers  # requests asked for gzip: a stream is never compressed
    assert stream.next_frame() == "retry: 2000"
    first = stream.next_frame()
    lines = first.split("\n")
    assert lines[:2] == ["id: 1", "event: submission_update"] and lines[2].startswith("data: ") and len(lines) == 3
    assert json.loads(lines[2][6:])["data"]["status"] == "step 0"
    assert [e["id"] for e in stream.next_events(2)] == [2, 3]
    # A new event is pushed as it is committed.
    append_event(alice.id, progress("step 3"))
    assert [(e["id"], e["data"]["data"]["status"]) for e in stream.next_events(1)] == [(4, "step 3")]

    # Shutdown ends the stream at once (the stream would otherwise run for ever).
    started = time.monotonic()
    assert server.stop() == 0
    assert stream.ended.wait(10)
    assert time.monotonic() - started < 8  # below graceful_timeout (10 s): the stream was closed, not cut
    stream.close()

    # Written while no server runs; the client reconnects with the last id it saw.
    append_event(alice.id, progress("step 4"))
    append_event(alice.id, progress("step 5"))
    server.start()
    again = EventStream(f"{server.base}/api/stream", {**alice.headers, "Last-Event-ID": "4"})
    assert again.response.status_code == 200
    assert [e["id"] for e in again.next_events(2)] == [5, 6]
    append_event(alice.id, progress("step 6"))
    assert [e["id"] for e in again.next_events(1)] == [7]  # nothing lost, nothing repeated in between
    again.close()


def test_an_idle_stream_sends_heartbeats(make_server, make_poller):
    server = make_server(sse_heartbeat=0.3)
    alice = make_poller()
    stream = EventStream(f"{server.base}/api/stream", alice.headers)
    assert stream.next_frame() == "retry: 2000"
    assert [stream.next_frame(), stream.next_frame()] == [": heartbeat", ": heartbeat"]
    stream.close()


def test_a_stream_outlives_gunicorns_worker_timeout(make_server, make_poller, append_event):
    """gunicorn's `timeout` (90 s in gunicorn_conf.py; 2 s here) is the gevent worker's heartbeat to
    the arbiter, not a limit per request: a stream held three times as long is not cut, and its
    worker is not restarted."""
    server = make_server(gunicorn_args="--timeout 2", sse_heartbeat=0.5)
    alice = make_poller()
    stream = EventStream(f"{server.base}/api/stream", alice.headers)
    workers = {c.pid for c in psutil.Process(server.proc.pid).children()}
    until = time.monotonic() + 6
    heartbeats = 0
    while time.monotonic() < until:
        frame = stream.next_frame()
        assert frame is not None, "the stream was cut"
        heartbeats += frame == ": heartbeat"
    append_event(alice.id)
    assert [e["id"] for e in stream.next_events(1)] == [1]
    assert heartbeats >= 3
    assert {c.pid for c in psutil.Process(server.proc.pid).children()} == workers
    stream.close()


def test_a_spectator_streams_a_duel_with_a_ticket_and_never_sees_code(make_server, make_poller, db, config):
    server = make_server()
    alice, bob, carol = make_poller(), make_poller(), make_poller()
    duel_id = start_duel(db, alice.id, bob.id)
    issued = requests.post(f"{server.base}/api/stream-tickets", headers=carol.headers, timeout=10)
    assert issued.status_code == 201
    ticket = issued.json()["ticket"]
    # EventSource sends no Authorization header: the ticket alone.
    stream = EventStream(f"{server.base}/api/duels/{duel_id}/stream?ticket={ticket}")
    assert stream.response.status_code == 200, stream.response.text
    started = stream.next_events(1)[0]
    assert started["event"] == "duel_started" and started["data"]["data"]["duel_id"] == duel_id

    submission_id, _ = db.run(lambda s: submissions.do_submit(
        s, alice.id, duel_id, "python", SECRET_CODE, None, policy=submissions.SubmitPolicy(65536, 100, 60)))
    db.run(lambda s: verdicts.apply_message(s, verdicts.TaskiMessage(submission_id, 1, "verdict", "Wrong Answer on test #3")))
    events = stream.next_events(2)
    assert [(e["event"], e["data"]["data"]["state"], e["data"]["data"]["verdict"]) for e in events] == [
        ("submission", "pending", None), ("submission", "judged", "Wrong Answer on test #3")]
    assert all(SECRET_CODE not in json.dumps(e) for e in events)
    stream.close()

    # Resuming the duel stream with Last-Event-ID skips what was seen.
    resumed = EventStream(f"{server.base}/api/duels/{duel_id}/stream?ticket={ticket}", {"Last-Event-ID": "2"})
    assert [e["id"] for e in resumed.next_events(1)] == [3]
    resumed.close()
    # Errors are JSON before the stream, under gunicorn too.
    unknown = requests.get(f"{server.base}/api/duels/{duel_id + 99}/stream?ticket={ticket}", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    # Logging out revokes the token, and with it the ticket.
    assert requests.post(f"{server.base}/api/auth/logout", headers=carol.headers, timeout=10).status_code == 204
    revoked = requests.get(f"{server.base}/api/duels/{duel_id}/stream?ticket={ticket}", timeout=10)
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "unauthorized"


def test_a_stream_that_does_not_wake_on_own_echoes_writes_them_with_the_next_news(make_server, make_poller, append_event):
    server = make_server()
    quiet, eager = make_poller(), make_poller()
    streams = {"quiet": EventStream(f"{server.base}/api/stream?wake_on_own=false", quiet.headers),
               "eager": EventStream(f"{server.base}/api/stream", eager.headers)}
    for stream in streams.values():
        assert stream.response.status_code == 200 and stream.next_frame() == "retry: 2000"
    for user in (quiet, eager):
        assert requests.post(f"{server.base}/api/queue", headers=user.headers, timeout=10).status_code == 202
    assert [e["event"] for e in streams["eager"].next_events(1)] == ["queue_joined"]  # the default: as it commits
    with pytest.raises(queue.Empty):
        streams["quiet"].next_frame(timeout=1.5)  # its own join's echo waits...
    append_event(quiet.id)  # ...for the next news, and comes first
    assert [(e["id"], e["event"]) for e in streams["quiet"].next_events(2)] == [(1, "queue_joined"), (2, "submission_update")]
    assert requests.get(f"{server.base}/api/stream?wake_on_own=maybe", headers=quiet.headers, timeout=10).status_code == 400
    for stream in streams.values():
        stream.close()
