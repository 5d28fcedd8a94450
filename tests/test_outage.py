"""A database outage or overload is "come back soon" (503 `unavailable` + Retry-After), never 500.

These tests stop and restart PostgreSQL for real (`pg_ctl stop -m immediate`, then start with the
same socket directory), so they run their own embedded server: the session's database, which
every other test shares, is never touched.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from sqlalchemy import text

from duely import errors, outage, submissions
from duely.config import Config
from duely.db import Database, psycopg_url
from duely.eventlog.listener import LISTENER_APPLICATION_NAME, Listener
from duely.eventlog.reader import BatchedReader
from duely.eventlog.store import PollKey
from duely.infra import start_embedded_postgres, stop_embedded_postgres
from duely.migrate import upgrade
from duely.runtime import Runtime
from tests.fixtures.events import wait_for
from tests.fixtures.stack import ROOT, Process, dev_task_ids, reference_solution, stack_env, start_duel

UNREACHABLE = "127.0.0.1:1"  # web-only tests: no broker, no Taski


class OwnPostgres:
    """An embedded PostgreSQL of this module only, which tests may stop and start."""

    def __init__(self, root: Path):
        self.dir = root / "pg"
        self.url = start_embedded_postgres(self.dir, cleanup_mode=None)
        upgrade(self.url)

    def _pg_ctl(self, *args: str) -> None:
        import pgserver

        cmd = [str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"), "-D", str(self.dir), *args]
        if os.geteuid() == 0:  # pgserver runs the server as its own unprivileged user
            cmd = ["su", "-s", "/bin/sh", "pgserver", "-c", shlex.join(cmd)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60, cwd="/")

    def stop(self) -> None:
        """As a crash would: every backend killed, no shutdown checkpoint."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start(self) -> None:
        self._pg_ctl("-o", f"-k {self.dir} -h ''", "-l", str(self.dir / "log"), "-w", "start")


@pytest.fixture(scope="module")
def own_pg():
    root = Path(tempfile.mkdtemp(prefix="duely-outage-pg-"))
    root.chmod(0o755)  # the server's own user must reach its data directory
    pg = OwnPostgres(root)
    yield pg
    stop_embedded_postgres(pg.dir)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg(own_pg):
    """The module's server, running (started again if a failed test left it stopped)."""
    if not (own_pg.dir / "postmaster.pid").exists():
        own_pg.start()
    yield own_pg
    if not (own_pg.dir / "postmaster.pid").exists():
        own_pg.start()


@pytest.fixture
def own_db(pg):
    database = Database(pg.url, pool_size=4, max_overflow=4)
    yield database
    database.dispose()


@pytest.fixture
def start_process(tmp_path):
    started: list[Process] = []

    def factory(name: str, argv: list[str], env: dict, port: int | None = None) -> Process:
        proc = Process(name, argv, env, tmp_path, port=port)
        started.append(proc)
        proc.start()
        return proc

    yield factory
    for proc in started:
        proc.stop()


def start_web(start_process, url: str, **settings) -> tuple[Process, str]:
    from duely.infra import free_port

    port = free_port()
    env = stack_env(url, UNREACHABLE, f"http://{UNREACHABLE}", port=port, **settings)
    web = start_process("web", [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "duely" / "gunicorn_conf.py"), "app:app"],
                        env, port=port)
    return web, f"http://127.0.0.1:{port}"


def register(base: str, nickname: str) -> requests.Response:
    return requests.post(f"{base}/api/users", json={"nickname": nickname, "password": "correct horse"}, timeout=30)


def assert_unavailable(resp: requests.Response) -> None:
    assert resp.status_code == 503, (resp.request.method, resp.request.url, resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["error"]["code"] == "unavailable", resp.text
    assert int(resp.headers["Retry-After"]) >= 1


def wait_until(predicate, within_secs: float) -> bool:
    deadline = time.monotonic() + within_secs
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def count_rows(url: str, sql: str, params: dict | None = None) -> int:
    with psycopg.connect(psycopg_url(url)) as conn:
        return conn.execute(sql, params or {}).fetchone()[0]


def test_outage_answers_503_everywhere_and_everything_resumes(pg, start_process):
    web, base = start_web(start_process, pg.url, workers=2)
    nick = "al" + uuid.uuid4().hex[:8]
    alice = register(base, nick).json()
    auth = {"Authorization": f"Bearer {alice['token']}"}
    http = requests.Session()
    http.headers.update(auth)

    # A long poll held by a worker whose LISTEN connection is up.
    held: dict = {}

    def hold():
        started = time.monotonic()
        held["resp"] = http.get(f"{base}/api/updates", params={"last_event_id": 0, "timeout": 60}, timeout=90)
        held["answered_at"] = time.monotonic()
        held["started_at"] = started

    poller = threading.Thread(target=hold)
    poller.start()
    assert wait_until(lambda: count_rows(pg.url, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                                         (LISTENER_APPLICATION_NAME + "-%",)) >= 1, 30)
    time.sleep(1)  # the poll has read its (empty) log and waits
    assert "resp" not in held

    pg.stop()
    stopped_at = time.monotonic()
    poller.join(60)
    # Answered 503 as soon as its worker's LISTEN connection dropped, not at the end of its 60 s.
    assert_unavailable(held["resp"])
    assert held["answered_at"] - stopped_at < 30

    # Every endpoint, while the database is down.
    calls = [
        ("GET", "/api/users/me", {}),
        ("GET", "/api/users/1", {}),
        ("GET", "/api/leaderboard", {}),
        ("POST", "/api/users", {"json": {"nickname": "bo" + nick, "password": "correct horse"}}),
        ("POST", "/api/auth/login", {"json": {"nickname": nick, "password": "correct horse"}}),
        ("POST", "/api/auth/logout", {}),
        ("POST", "/api/queue", {}),
        ("GET", "/api/queue", {}),
        ("DELETE", "/api/queue", {}),
        ("GET", "/api/updates", {"params": {"last_event_id": 0, "timeout": 0}}),
        ("GET", "/api/updates", {"params": {"last_event_id": 0, "timeout": 2}}),
        ("GET", "/api/duels/1", {}),
        ("GET", "/api/duels/1/submissions", {}),
        ("POST", "/api/duels/1/submit", {"json": {"solution": "print(1)", "language": "python"}}),
        ("POST", "/api/duels/1/resign", {}),
        ("GET", "/api/users/1/duels", {}),
        ("GET", "/api/languages", {}),
    ]
    for method, path, kw in calls:
        assert_unavailable(http.request(method, base + path, timeout=30, **kw))
    health = requests.get(f"{base}/healthz", timeout=30)
    assert health.status_code == 503 and health.json()["status"] == "unavailable" and "Retry-After" in health.headers

    pg.start()
    assert wait_until(lambda: requests.get(f"{base}/healthz", timeout=30).status_code == 200, 30)
    # Everything works again, by itself; nothing was half written during the outage.
    assert http.get(f"{base}/api/users/me", timeout=30).status_code == 200
    assert register(base, "bo" + nick).status_code == 201
    login = requests.post(f"{base}/api/auth/login", json={"nickname": nick, "password": "correct horse"}, timeout=30)
    assert login.status_code == 200
    assert http.post(f"{base}/api/queue", timeout=30).status_code == 202
    first = http.get(f"{base}/api/updates", params={"last_event_id": 0, "timeout": 5}, timeout=30).json()
    assert [e["type"] for e in first["events"]] == ["queue_joined"]
    # A held poll is woken by a commit again (the LISTEN connections are back).
    assert wait_until(lambda: count_rows(pg.url, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                                         (LISTENER_APPLICATION_NAME + "-%",)) >= 1, 30)
    threading.Timer(1.0, lambda: requests.delete(f"{base}/api/queue", headers=auth, timeout=30)).start()
    woken = http.get(f"{base}/api/updates", params={"last_event_id": first["last_event_id"], "timeout": 30}, timeout=60)
    assert [e["type"] for e in woken.json()["events"]] == ["queue_left"]

    log = web.log()
    assert "unhandled error" not in log and "internal_error" not in log
    # Logged once per burst (one burst per worker), not once per request.
    assert 1 <= log.count("answering 503 unavailable") <= 2, log


def test_poll_whose_timeout_passes_during_an_outage_is_unavailable(pg, own_db):
    """Even when no wake-up comes (a listener that never connects), the poll's final re-read
    fails as an outage, which the API answers 503 - not an internal error."""
    with own_db.transaction() as s:
        uid = s.execute(text("INSERT INTO users (nickname, password_hash) VALUES (:n, 'x') RETURNING id"),
                        {"n": "p" + uuid.uuid4().hex[:8]}).scalar_one()
    deaf = Listener(pg.url)  # never started: nothing wakes the poll before its timeout
    runtime = Runtime(Config(database_url=pg.url), own_db)
    result: dict = {}

    def poll():
        try:
            result["updates"] = wait_for(runtime, uid, 0, 4, listener=deaf)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            result["error"] = exc

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(1)
    pg.stop()
    thread.join(30)
    assert "error" in result, result
    assert outage.unavailable_reason(result["error"]) == "unreachable", repr(result["error"])
    runtime.close()
    pg.start()


def test_scheduler_and_consumer_wait_out_an_outage_and_lose_nothing(pg, own_db, start_process, kafka_bootstrap, devtaski):
    from kafka import KafkaProducer

    task_id = dev_task_ids()[0]
    with own_db.transaction() as s:
        a, b = (s.execute(text("INSERT INTO users (nickname, password_hash) VALUES (:n, 'x') RETURNING id"),
                          {"n": f"{p}{uuid.uuid4().hex[:8]}"}).scalar_one() for p in ("sa", "sb"))
    duel_id = start_duel(own_db, a, b, task={"id": task_id, "title": "t", "statement": "s", "time_limit_ms": 1000})

    def store(user: int, solution: str, hold_back: bool = False) -> uuid.UUID:
        def act(s):
            sid, _ = submissions.do_submit(s, user, duel_id, "python", solution, None, submissions.SubmitPolicy(
                max_solution_bytes=65536, rate_limit=100, rate_window_secs=60))
            if hold_back:  # never sent to Taski: it is judged only through the messages this test sends
                s.execute(text("UPDATE submissions SET next_attempt_at = now() + interval '1 hour' WHERE id = :i"), {"i": sid})
            return sid

        return own_db.run(act)

    env = stack_env(pg.url, kafka_bootstrap, devtaski.url, duely_consumer_group=f"outage-{uuid.uuid4().hex[:8]}")
    scheduler = start_process("scheduler", [sys.executable, str(ROOT / "scheduler.py")], env)
    consumer = start_process("consumer", [sys.executable, str(ROOT / "consumer.py")], env)
    held = store(b, "print(0)", hold_back=True)
    own_db.dispose()

    pg.stop()
    # While the database is down, Taski reports on a submission: the consumer must keep it.
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for seq, body in ((1, {"type": "update", "status": "Test #1 passed"}), (2, {"type": "verdict", "verdict": "Wrong answer"})):
        producer.send(devtaski.topic, key=str(held).encode(),
                      value=json.dumps({"submission_id": str(held), "seq": seq, **body}).encode())
    producer.flush()
    producer.close()
    assert wait_until(lambda: "database unreachable" in consumer.log(), 30), consumer.log()
    assert wait_until(lambda: "database unreachable" in scheduler.log(), 30), scheduler.log()
    time.sleep(6)  # a few quiet retries
    pg.start()

    def verdict(sid) -> str | None:
        with own_db.transaction() as s:
            return s.execute(text("SELECT verdict FROM submissions WHERE id = :i"), {"i": sid}).scalar()

    # The consumer applied what arrived during the outage...
    assert wait_until(lambda: verdict(held) == "Wrong answer", 60), consumer.log()
    with own_db.transaction() as s:
        kinds = list(s.execute(text("SELECT type FROM events WHERE user_id = :u ORDER BY id"), {"u": b}).scalars())
    assert kinds[-2:] == ["submission_update", "submission_verdict"], kinds
    # ...and the scheduler resumed: a new submission goes to Taski, is judged, and wins the duel.
    accepted = store(a, reference_solution(task_id))
    assert wait_until(lambda: verdict(accepted) == "Accepted", 90), scheduler.log() + consumer.log()
    with own_db.transaction() as s:
        assert s.execute(text("SELECT status FROM duels WHERE id = :d"), {"d": duel_id}).scalar() == "finished"

    for proc in (scheduler, consumer):
        log = proc.log()
        assert log.count("database unreachable") == 1, log  # one WARNING when it started
        assert log.count("database reachable again") == 1, log  # one INFO when it ended
        assert "Traceback" not in log and "raised an exception" not in log, log


def test_overload_sheds_load_with_503_and_writes_nothing(pg, start_process):
    """One connection per worker, held busy: other requests wait DB_POOL_TIMEOUT, then 503."""
    web, base = start_web(start_process, pg.url, workers=1, db_pool_size=1, db_max_overflow=0, db_pool_timeout=1)
    alice = register(base, "ov" + uuid.uuid4().hex[:8]).json()
    auth = {"Authorization": f"Bearer {alice['token']}"}

    # Lock alice's row: her queue join takes the worker's only connection and waits on the lock.
    blocker = psycopg.connect(psycopg_url(pg.url))
    blocker.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (alice["id"],))
    joined: dict = {}
    joiner = threading.Thread(target=lambda: joined.setdefault(
        "resp", requests.post(f"{base}/api/queue", headers=auth, timeout=60)))
    joiner.start()
    assert wait_until(lambda: count_rows(pg.url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") >= 1, 30)

    nicknames = ["ov" + uuid.uuid4().hex[:8] for _ in range(6)]
    answers: list[requests.Response] = []

    def call(nickname):
        answers.append(register(base, nickname))

    threads = [threading.Thread(target=call, args=(n,)) for n in nicknames]
    threads.append(threading.Thread(target=lambda: answers.append(requests.get(f"{base}/api/users/me", headers=auth, timeout=30))))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    blocker.rollback()
    blocker.close()
    joiner.join(60)

    assert len(answers) == 7
    for resp in answers:
        assert_unavailable(resp)
    assert joined["resp"].status_code == 202  # the request holding the connection finished normally
    # Shed requests wrote nothing.
    assert count_rows(pg.url, "SELECT count(*) FROM users WHERE nickname = ANY(%s)", (nicknames,)) == 0
    # The burst is one log line, and the service is fine once the load is gone.
    log = web.log()
    assert log.count("answering 503 unavailable") == 1, log
    assert "unhandled error" not in log
    assert register(base, nicknames[0]).status_code == 201


def test_poll_reads_shed_load_when_their_connections_are_busy(pg, own_db):
    with own_db.transaction() as s:
        uid = s.execute(text("INSERT INTO users (nickname, password_hash) VALUES (:n, 'x') RETURNING id"),
                        {"n": "r" + uuid.uuid4().hex[:8]}).scalar_one()
    reader = BatchedReader(pg.url, 1, slot_timeout_secs=0.5)
    locker = psycopg.connect(psycopg_url(pg.url))
    locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # the one read connection will wait on it
    first: dict = {}
    thread = threading.Thread(target=lambda: first.setdefault("row", reader.read(PollKey.user(uid), 0, 10)))
    thread.start()
    assert wait_until(lambda: reader.in_use == 1, 10)
    with pytest.raises(errors.Unavailable) as shed:
        reader.read(PollKey.user(uid), 0, 10)
    locker.rollback()
    locker.close()
    thread.join(30)
    assert shed.value.status == 503 and shed.value.retry_after >= 1
    assert first["row"][1] == uid  # the read that had the connection completed
    assert reader.read(PollKey.user(uid), 0, 10)[1] == uid  # and the reader serves again
    reader.close()
