"""GET /api/updates under the real server: gunicorn with two gevent workers in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from sqlalchemy import text

from duely.config import Config, to_environ
from duely.eventlog.listener import LISTENER_APPLICATION_NAME
from duely.infra import free_port, wait_for_port
from tests.fixtures.events import progress

ROOT = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path):
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def worker_pids(self) -> set[int]:
        return {c.pid for c in psutil.Process(self.proc.pid).children()}

    def poll(self, token: str, timeout: float, last_event_id: int = 0, session: requests.Session | None = None) -> requests.Response:
        return (session or requests).get(f"{self.base}/api/updates", params={"timeout": timeout, "last_event_id": last_event_id},
                            headers={"Authorization": f"Bearer {token}"}, timeout=timeout + 30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def gunicorn_server(database_url, config, db, tmp_path):
    port = free_port()
    env = {**os.environ, **to_environ(Config(database_url=database_url, secret_key=config.secret_key, port=port,
                                             workers=2, log_level=os.environ.get("DBG_LOG", "WARNING")))}
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "duely" / "gunicorn_conf.py"), "app:app"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, port, log_path)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 30
        while len(server.worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def listener_pids(db) -> set[int]:
    """Client pids of the LISTEN connections (their application_name ends with the pid)."""
    with db.transaction() as s:
        names = s.execute(text("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE :p"),
                          {"p": LISTENER_APPLICATION_NAME + "-%"}).scalars()
        return {int(n.rsplit("-", 1)[1]) for n in names}


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_both_workers_hold_polls_and_deliver_each_users_events(gunicorn_server, make_poller, append_event, db):
    pool = ThreadPoolExecutor(200)
    users, futures = [], {}
    # The kernel decides which worker accepts a connection: open held polls in batches until both
    # workers hold some (each worker that served a poll has its own LISTEN connection).
    for _ in range(5):
        batch = [make_poller() for _ in range(40)]
        users += batch
        futures.update({u.id: pool.submit(gunicorn_server.poll, u.token, 30) for u in batch})
        if wait_until(lambda: gunicorn_server.worker_pids() <= listener_pids(db), 3):
            break
    assert gunicorn_server.worker_pids() <= listener_pids(db), (gunicorn_server.worker_pids(), listener_pids(db))
    # All polls have had their first read (which writes presence) before the events are written.
    assert wait_until(lambda: db.run(lambda s: s.execute(text("SELECT count(*) FROM presence")).scalar()) == len(users), 20)
    time.sleep(0.3)
    started = time.monotonic()
    for u in users:
        append_event(u.id, progress(f"user {u.id}"))
    for u in users:
        body = futures[u.id].result(30).json()
        assert [e["data"]["status"] for e in body["events"]] == [f"user {u.id}"]
    assert time.monotonic() - started < 15  # the polls' timeout is 30 s: they were woken
    pool.shutdown()


def test_a_poll_is_answered_soon_after_the_commit(gunicorn_server, make_poller, append_event):
    alice = make_poller()
    gunicorn_server.poll(alice.token, 0)  # warm the worker up (its listener starts on first use)
    committed_at: list[float] = []

    def write():
        append_event(alice.id)
        committed_at.append(time.monotonic())

    threading.Timer(0.5, write).start()
    resp = gunicorn_server.poll(alice.token, 30)
    answered_at = time.monotonic()
    assert [e["id"] for e in resp.json()["events"]] == [1]
    assert answered_at - committed_at[0] < 1.0  # the contract says 100 ms; generous against a busy box


def test_sigterm_answers_held_polls_at_once(gunicorn_server, make_poller, db):
    users = [make_poller() for _ in range(10)]
    pool = ThreadPoolExecutor(len(users))
    session = requests.Session()  # keep-alive connections, as browsers have
    futures = [pool.submit(gunicorn_server.poll, u.token, 60, 0, session) for u in users]
    assert wait_until(lambda: db.run(lambda s: s.execute(text("SELECT count(*) FROM presence")).scalar()) == len(users), 20)
    time.sleep(0.5)
    started = time.monotonic()
    gunicorn_server.proc.send_signal(signal.SIGTERM)
    for f in futures:
        resp = f.result(30)
        assert resp.status_code == 200 and resp.json() == {"events": [], "last_event_id": 0}
    assert time.monotonic() - started < 8  # well below the 60 s the polls asked for
    # ...and the workers do not sit out graceful_timeout (10 s) on the clients' keep-alive connections.
    assert gunicorn_server.proc.wait(30) == 0
    assert time.monotonic() - started < 8
    pool.shutdown()
