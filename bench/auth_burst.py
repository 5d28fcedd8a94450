"""Benchmark: does a burst of registrations (scrypt, ~130 ms of CPU each) slow everyone else?

    .venv/bin/python bench/auth_burst.py                   # 200 registrations at once (about 1 minute)
    .venv/bin/python bench/auth_burst.py --registrations 50 --rest-secs 3

One server as `make run` starts it (gunicorn, 2 gevent workers, default settings) on its own
embedded PostgreSQL. Throughout, a few clients loop on a cheap authenticated GET (/api/users/me)
and some players hold long polls that the benchmark wakes with events (20 a second). Printed,
for the rest period (the baseline, same run) and for the burst of concurrent registrations:
p50/p99/max of the GET, the wake latency of the held polls (commit to arrival), and the
registrations' own latency. Target: GET p99 <= 150 ms during the burst.

The clients are this same file run as a `client` subprocess under gevent.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "bench-secret-key"
GETTERS = 4
POLLERS = 50
EVENTS_PER_SEC = 20.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


# =============================================================================================
# Client (a subprocess, under gevent)
# =============================================================================================

def client(port: int, users_file: str, rest_secs: float, registrations: int, out_file: str) -> None:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    import requests

    base = f"http://127.0.0.1:{port}"
    users = json.loads(Path(users_file).read_text())
    phase = ["warm-up"]
    gets: dict[str, list[float]] = {"rest": [], "burst": []}
    wakes: dict[str, list[float]] = {"rest": [], "burst": []}
    registered: list[float] = []
    errors: list[str] = []
    running = [True]

    def get_loop(token: str) -> None:
        http = requests.Session()
        while running[0]:
            started = time.monotonic()
            resp = http.get(f"{base}/api/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=60)
            took = time.monotonic() - started
            if resp.status_code != 200:
                errors.append(f"GET {resp.status_code}")
            elif phase[0] in gets:
                gets[phase[0]].append(took)
            gevent.sleep(0.05)

    def poll_loop(user: dict) -> None:
        http = requests.Session()
        after = 0
        while running[0]:
            resp = http.get(f"{base}/api/updates", params={"last_event_id": after, "timeout": 5},
                            headers={"Authorization": f"Bearer {user['token']}"}, timeout=60)
            arrived = time.monotonic()
            if resp.status_code != 200:
                errors.append(f"poll {resp.status_code}")
                gevent.sleep(0.1)
                continue
            body = resp.json()
            for event in body["events"]:
                if phase[0] in wakes:
                    wakes[phase[0]].append(arrived - float(event["data"]["status"].split()[1]))
            after = body["last_event_id"]

    def register(i: int) -> None:
        started = time.monotonic()
        resp = requests.post(f"{base}/api/users", json={"nickname": f"burst{i}-{os.getpid()}", "password": "correct horse"},
                             timeout=300)
        if resp.status_code != 201:
            errors.append(f"register {resp.status_code}")
        registered.append(time.monotonic() - started)

    for token in users["getters"]:
        gevent.spawn(get_loop, token)
    for user in users["pollers"]:
        gevent.spawn(poll_loop, user)
    gevent.sleep(2.0)
    phase[0] = "rest"
    gevent.sleep(rest_secs)
    phase[0] = "burst"
    burst_started = time.monotonic()
    gevent.joinall([gevent.spawn(register, i) for i in range(registrations)])
    burst_secs = time.monotonic() - burst_started
    phase[0] = "done"
    running[0] = False
    Path(out_file).write_text(json.dumps({"gets": gets, "wakes": wakes, "registered": registered,
                                          "burst_secs": burst_secs, "errors": errors}))
    os._exit(0)  # the held polls need not be answered


# =============================================================================================
# Orchestrator
# =============================================================================================

def seed(db, count: int) -> list[dict]:
    """Users with tokens, straight in the database (no hashing: it is what we measure)."""
    from sqlalchemy import text

    from duely import auth

    tokens = [f"bench-{i}-{os.urandom(8).hex()}" for i in range(count)]
    with db.transaction() as s:
        ids = list(s.execute(text(
            "INSERT INTO users (nickname, password_hash) SELECT 'bench' || g, 'x' FROM generate_series(1, :n) g RETURNING id"
        ), {"n": count}).scalars())
        for uid, token in zip(ids, tokens, strict=True):
            s.execute(text("INSERT INTO auth_tokens (user_id, token_hash, expires_at) VALUES (:u, :h, now() + interval '1 day')"),
                      {"u": uid, "h": auth.hash_token(SECRET_KEY, token)})
    return [{"id": uid, "token": token} for uid, token in zip(ids, tokens, strict=True)]


def append_events(db, pollers: list[dict], stop: threading.Event) -> None:
    """Wake a random held poll EVENTS_PER_SEC times a second; each event carries its commit time
    (in its status text: a payload has no room for anything else)."""
    from duely import eventlog
    from duely.eventlog.types import SubmissionUpdate

    rnd = random.Random(1)
    while not stop.is_set():
        with db.transaction() as s:
            eventlog.append(s, rnd.choice(pollers)["id"],
                            SubmissionUpdate(duel_id=0, submission_id="bench", status=f"bench {time.monotonic()!r}"))
        stop.wait(1 / EVENTS_PER_SEC)


def main(argv: list[str]) -> None:
    if argv and argv[0] == "client":
        port, users_file, rest_secs, registrations, out_file = argv[1:6]
        client(int(port), users_file, float(rest_secs), int(registrations), out_file)
        return
    import argparse
    import shutil
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registrations", type=int, default=200, help="concurrent registrations in the burst")
    parser.add_argument("--rest-secs", type=float, default=5.0, help="length of the baseline period")
    args = parser.parse_args(argv)

    from duely.config import Config, to_environ
    from duely.db import Database
    from duely.infra import free_port, start_embedded_postgres, stop_embedded_postgres, wait_for_port
    from duely.migrate import upgrade

    tmp = Path(tempfile.mkdtemp(prefix="duely-bench-auth-"))
    tmp.chmod(0o755)
    url = start_embedded_postgres(tmp / "pg")
    server = client_proc = None
    stop = threading.Event()
    db = None
    try:
        upgrade(url)
        db = Database(url, pool_size=2, max_overflow=2)
        users = seed(db, GETTERS + POLLERS)
        users_file = tmp / "users.json"
        users_file.write_text(json.dumps({"getters": [u["token"] for u in users[:GETTERS]], "pollers": users[GETTERS:]}))
        port = free_port()
        config = Config(database_url=url, secret_key=SECRET_KEY, port=port, log_level="WARNING")
        with open(tmp / "gunicorn.log", "wb") as out:
            server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "duely" / "gunicorn_conf.py"), "app:app"],
                                      cwd=ROOT, env={**os.environ, **to_environ(config)}, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", port, timeout=30)
        print(f"cpus: {os.cpu_count()}; server: {config.workers} gevent workers, PASSWORD_HASH_THREADS={config.password_hash_threads}; "
              f"{GETTERS} clients looping on GET /api/users/me, {POLLERS} held polls woken {EVENTS_PER_SEC:.0f} times/s", flush=True)
        appender = threading.Thread(target=append_events, args=(db, users[GETTERS:], stop), daemon=True)
        appender.start()
        out_file = tmp / "client.json"
        client_proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "client", str(port), str(users_file),
                                        str(args.rest_secs), str(args.registrations), str(out_file)], cwd=ROOT)
        client_proc.wait(900)
        stop.set()
        appender.join(5)
        result = json.loads(out_file.read_text())
    finally:
        stop.set()
        for proc in (client_proc, server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if db is not None:
            db.dispose()
        stop_embedded_postgres(tmp / "pg")
        shutil.rmtree(tmp, ignore_errors=True)

    def ms(values: list[float]) -> str:
        return (f"p50 {pct(values, 0.5) * 1000:.1f} ms, p99 {pct(values, 0.99) * 1000:.1f} ms, "
                f"max {max(values, default=float('nan')) * 1000:.1f} ms ({len(values)} samples)")

    print("\n=== figures ===")
    for name in ("rest", "burst"):
        label = "at rest" if name == "rest" else f"during {args.registrations} concurrent registrations"
        print(f"GET /api/users/me {label}: {ms(result['gets'][name])}")
        print(f"held-poll wake {label}: {ms(result['wakes'][name])}")
    print(f"registrations: {args.registrations} in {result['burst_secs']:.2f} s; each {ms(result['registered'])}")
    if result["errors"]:
        print(f"errors: {len(result['errors'])}, e.g. {result['errors'][:5]}")
    burst_p99 = pct(result["gets"]["burst"], 0.99) * 1000
    print(f"target GET p99 <= 150 ms during the burst: {'met' if burst_p99 <= 150 else 'NOT met'} ({burst_p99:.1f} ms)")


if __name__ == "__main__":
    main(sys.argv[1:])
