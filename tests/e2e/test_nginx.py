"""Duely behind the documented nginx front (docs/nginx.conf itself, only its ports and paths
changed), in front of a real gunicorn: the config loads, a long poll of 58 s passes through, and
the client address nginx forwards keeps strangers' failed logins from locking anyone else out.

Different clients are told apart by their source address: Linux routes all of 127.0.0.0/8 to
the loopback interface, so a client socket bound to 127.0.0.7 reaches nginx as 127.0.0.7.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from duely.config import Config, to_environ
from duely.infra import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def templated_conf(listen_port: int, upstream_port: int, work_dir: Path) -> str:
    """docs/nginx.conf with its two marked ports replaced and paths for logs and temporary files
    added (nginx's compiled-in ones are system directories)."""
    conf = (ROOT / "docs" / "nginx.conf").read_text()
    paths = f"    access_log {work_dir / 'access.log'};\n" + "".join(
        f"    {name}_temp_path {work_dir / name};\n" for name in TEMP_PATHS)
    for pattern, replacement in (
        (r"listen 80;", f"listen 127.0.0.1:{listen_port};"),
        (r"server 127\.0\.0\.1:5001;", f"server 127.0.0.1:{upstream_port};"),
        (r"http \{\n", "http {\n" + paths),
    ):
        conf, count = re.subn(pattern, replacement, conf)
        assert count == 1, f"docs/nginx.conf no longer has exactly one `{pattern}` for the test to change"
    return conf


@dataclass
class Front:
    """nginx on `port` in front of gunicorn on `upstream_port`."""

    port: int
    upstream_port: int

    def call(self, method: str, path: str, body: dict | None = None, source: str = "127.0.0.1",
             headers: dict | None = None, direct: bool = False, timeout: float = 30) -> tuple[int, dict, dict]:
        """One request from a client at `source`, through nginx (or straight to gunicorn)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port if direct else self.port,
                                          timeout=timeout, source_address=(source, 0))
        try:
            data = json.dumps(body).encode() if body is not None else None
            all_headers = {"Content-Type": "application/json", **(headers or {})} if data else dict(headers or {})
            conn.request(method, path, body=data, headers=all_headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else {}
        finally:
            conn.close()

    def register(self, nickname: str, source: str) -> str:
        status, _, body = self.call("POST", "/api/users", {"nickname": nickname, "password": PASSWORD}, source)
        assert status == 201, body
        return body["token"]

    def login(self, nickname: str, password: str, source: str, **kw) -> int:
        status, headers, body = self.call("POST", "/api/auth/login", {"nickname": nickname, "password": password}, source, **kw)
        if status == 429:
            assert body["error"]["code"] == "rate_limited" and int(headers["Retry-After"]) > 0
        return status


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def nginx_work_dir() -> Iterator[Path]:
    # Not under pytest's tmp root: that is 0700, and nginx started as root runs its workers as
    # `nobody`, which must reach the temporary-file directories.
    path = Path(tempfile.mkdtemp(prefix="duely-nginx-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def front(database_url, config, db, nginx_work_dir, tmp_path) -> Iterator[Front]:
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (Debian's nginx-light; `make test` installs it when run as root)")
    gunicorn_port, nginx_port = free_port(), free_port()
    env = {**os.environ, **to_environ(Config(database_url=database_url, secret_key=config.secret_key,
                                             port=gunicorn_port, workers=2, log_level="WARNING"))}
    env.pop("FORWARDED_ALLOW_IPS", None)  # the default: trust the proxy on this host only
    with open(tmp_path / "gunicorn.log", "wb") as out:
        gunicorn = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "duely" / "gunicorn_conf.py"), "app:app"],
                                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    conf = nginx_work_dir / "nginx.conf"
    conf.write_text(templated_conf(nginx_port, gunicorn_port, nginx_work_dir))
    args = [nginx, "-p", str(nginx_work_dir), "-c", str(conf), "-e", str(nginx_work_dir / "error.log")]
    pid_file = f"pid {nginx_work_dir / 'nginx.pid'};"
    checked = subprocess.run([*args, "-t", "-g", pid_file], capture_output=True, text=True)
    assert checked.returncode == 0, f"nginx -t refused docs/nginx.conf:\n{checked.stderr}"
    with open(nginx_work_dir / "nginx.out", "wb") as out:
        proxy = subprocess.Popen([*args, "-g", f"daemon off; {pid_file}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", gunicorn_port, timeout=30)
        wait_for_port("127.0.0.1", nginx_port, timeout=30)
        yield Front(nginx_port, gunicorn_port)
    finally:
        stop(proxy, signal.SIGQUIT)  # nginx's graceful stop, to the master we started, by pid
        stop(gunicorn)


def test_docs_nginx_conf_loads_and_proxies(front):
    token = front.register("alice", "127.0.0.5")
    status, _, body = front.call("GET", "/api/users/me", headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and body["nickname"] == "alice"


def test_a_58_second_poll_passes_through_nginx(front, make_poller):
    alice = make_poller()
    started = time.monotonic()
    status, _, body = front.call("GET", "/api/updates?last_event_id=0&timeout=58", headers=alice.headers, timeout=120)
    assert status == 200, body  # not nginx's 504
    assert body == {"events": [], "last_event_id": 0}
    assert time.monotonic() - started >= 57  # held for its whole timeout, not cut short


def test_strangers_failures_never_lock_out_another_players_correct_login(front):
    front.register("alice", "127.0.0.40")
    front.register("bob", "127.0.0.41")
    # 29 strangers at once, 5 failures each: on alice (3, two of them lying about their address),
    # on bob and on a nickname nobody has. Seen as one address (nginx's), that would lock every login in the
    # world; per nickname, alice and bob many times over.
    strangers = [f"127.0.0.{i}" for i in range(2, 31)]

    def stranger(source: str) -> list[int]:
        forged = {"X-Forwarded-For": "127.0.0.42"}  # alice's address, below
        return [front.login(nickname, "guess guess", source) for nickname in ("alice", "bob", "nobody-" + source[-2:])] + [
            front.login("alice", "guess guess", source, headers=forged) for _ in range(2)]

    with ThreadPoolExecutor(8) as pool:
        for statuses in pool.map(stranger, strangers):
            assert set(statuses) <= {401, 429}, statuses
    # A stranger who failed on alice is refused even with her password...
    assert front.login("alice", PASSWORD, strangers[0]) == 429
    # ...while the players themselves, from their own addresses, get in.
    assert front.login("alice", PASSWORD, "127.0.0.42") == 200
    assert front.login("bob", PASSWORD, "127.0.0.43") == 200
    assert front.login("alice", PASSWORD, "127.0.0.40") == 200


def test_a_forged_x_forwarded_for_straight_to_gunicorn_is_not_believed(front):
    front.register("bob", "127.0.0.41")
    # A client that reaches gunicorn itself (not a trusted proxy) writes bob's address.
    for _ in range(6):
        assert front.login("bob", "guess guess", "127.0.0.2", headers={"X-Forwarded-For": "127.0.0.44"}, direct=True) in (401, 429)
    # Its failures were counted against its own address, not the one it wrote.
    assert front.login("bob", PASSWORD, "127.0.0.44") == 200
    assert front.login("bob", PASSWORD, "127.0.0.2", direct=True) == 429


def test_an_event_stream_passes_through_nginx_unbuffered(front, make_poller, append_event):
    """An event committed while the stream is open arrives through nginx as it is written: a
    buffering proxy would hold the small frame back (the stream never ends and the heartbeat is
    15 s away, beyond the read timeout)."""
    alice = make_poller()
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    try:
        conn.request("GET", "/api/stream", headers={**alice.headers, "Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
        assert resp.getheader("Content-Encoding") is None
        assert resp.readline() == b"retry: 2000\n" and resp.readline() == b"\n"
        append_event(alice.id)
        assert resp.readline() == b"id: 1\n"
        assert resp.readline() == b"event: submission_update\n"
        assert json.loads(resp.readline()[len(b"data: "):])["id"] == 1
    finally:
        conn.close()
