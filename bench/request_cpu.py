"""CPU milliseconds per HTTP request of one web worker, for the hot endpoints, against a bare
gunicorn+gevent+Flask route measured in the same run.

    .venv/bin/python bench/request_cpu.py                  # 3 rounds of 300 requests per endpoint
    .venv/bin/python bench/request_cpu.py --requests 200 --rounds 2

It starts its own embedded PostgreSQL (temporary directory), seeds users with tokens and duels
straight in the database, then runs two gunicorns with ONE gevent worker each (Duely's
gunicorn_conf.py, Duely's worker class): `app:app` and a bare Flask app whose route returns a
small JSON body. One client (this process, one keep-alive connection per server, requests one
after another, so no batching flatters the figures) sends in turn, per round:

  bare      GET /ping                                  (the floor of any request here)
  updates   GET /api/updates?last_event_id=<n-1>&timeout=0 (answered at once with one event)
  woken     a cycle of 4 requests: GET /api/updates answered at once, GET /api/updates held
            (timeout=20, on a second connection) until the same user's POST /api/queue wakes
            it with its queue_joined event, then DELETE /api/queue
  submit    POST /api/duels/<id>/submit                (a new submission each time)
  join      POST /api/queue                            (a user not in a duel, not queued)
  leave     DELETE /api/queue
  resign    POST /api/duels/<id>/resign                (a duel of its own each time)

and reads the worker's CPU time (utime + stime, /proc/<pid>/stat) before and after each batch,
and PostgreSQL's (all its processes: the backends serving the worker and the rest).
The figure is CPU ms per request, best round (this box is shared; the least disturbed round
is the closest to the truth). No scheduler runs, so nobody is paired and nothing is dispatched.

With --statements it also counts the SQL statements (BEGIN and COMMIT included: each is a round
trip) one request of each endpoint sends, from PostgreSQL's own log (log_statement = all).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECRET_KEY = "bench-secret-key"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

BARE_APP = '''
from flask import Flask, jsonify

app = Flask("bare")


@app.get("/ping")
def ping():
    return jsonify({"events": [], "last_event_id": 0})
'''


def cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def logged_statements(log_path: Path, start: int) -> list[str]:
    """The statements PostgreSQL logged (log_statement = 'all') after byte `start` of its log."""
    with open(log_path, "rb") as f:
        f.seek(start)
        return [line for line in f.read().decode(errors="replace").splitlines()
                if "LOG:  statement: " in line or "LOG:  execute " in line]


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, token: str | None = None, body: dict | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="duely-request-cpu-"))
        self.pg_dir = self.tmp / "pg"
        self.procs: list[subprocess.Popen] = []
        self.db = None
        self.url = ""

    def start_database(self) -> None:
        from duely.db import Database
        from duely.infra import start_embedded_postgres
        from duely.migrate import upgrade

        self.url = start_embedded_postgres(self.pg_dir)
        upgrade(self.url)
        self.db = Database(self.url, pool_size=2, max_overflow=2)

    def seed(self, players: int, idle: int) -> tuple[list[dict], list[dict]]:
        """`players` users in duels (pairs), `idle` users in none; tokens made in the database."""
        from sqlalchemy import text

        from duely import auth, duels, eventlog

        n = players + idle
        tokens = [f"bench-{i}-{os.urandom(8).hex()}" for i in range(n)]
        with self.db.transaction() as s:
            ids = list(s.execute(text(
                "INSERT INTO users (nickname, password_hash) SELECT 'cpu' || g, 'x' FROM generate_series(1, :n) g RETURNING id"
            ), {"n": n}).scalars())
            s.execute(text(
                "INSERT INTO auth_tokens (user_id, token_hash, expires_at) "
                "SELECT u, h, now() + interval '1 day' FROM unnest(CAST(:ids AS bigint[]), CAST(:hashes AS text[])) AS t(u, h)"
            ), {"ids": ids, "hashes": [auth.hash_token(SECRET_KEY, t) for t in tokens]})
        users = [{"id": uid, "token": tok} for uid, tok in zip(ids, tokens, strict=True)]
        task = {"id": 1, "title": "Sum", "statement": "Print a+b.", "time_limit_ms": 1000, "difficulty": 800}
        in_duels = users[:players]
        for a, b in zip(in_duels[::2], in_duels[1::2], strict=True):
            def act(session, a=a, b=b):
                eventlog.lock_users(session, (a["id"], b["id"]))
                return duels.create_duel(session, (a["id"], b["id"]), task, 3600)

            a["duel_id"] = b["duel_id"] = self.db.run(act)
        return in_duels, users[players:]

    def start_gunicorn(self, app: str, name: str) -> tuple[subprocess.Popen, int, int]:
        import psutil

        from duely.config import Config, to_environ
        from duely.infra import free_port, wait_for_port

        port = free_port()
        config = Config(database_url=self.url, secret_key=SECRET_KEY, port=port, workers=1, log_level="WARNING",
                        submit_rate_limit=1_000_000)
        env = {**os.environ, **to_environ(config), "PYTHONPATH": f"{ROOT}:{self.tmp}"}
        with open(self.tmp / f"{name}.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "duely" / "gunicorn_conf.py"), app],
                                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        wait_for_port("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 30
        while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        return proc, port, psutil.Process(proc.pid).children()[0].pid

    def postgres_cpu_secs(self) -> float:
        """CPU seconds of the embedded server's processes (the postmaster and its children)."""
        import psutil

        postmaster = int((self.pg_dir / "postmaster.pid").read_text().split()[0])
        total = 0.0
        for pid in [postmaster] + [p.pid for p in psutil.Process(postmaster).children()]:
            try:
                total += cpu_secs(pid)
            except (FileNotFoundError, ProcessLookupError):  # a process that just ended
                pass
        return total

    def cleanup(self) -> None:
        import shutil

        from duely.infra import stop_embedded_postgres

        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.db is not None:
            self.db.dispose()
        stop_embedded_postgres(self.pg_dir)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self) -> None:
        (self.tmp / "bench_bare_app.py").write_text(BARE_APP)
        self.start_database()
        requests_per = self.args.requests
        # Resigners: one duel per resignation (warm-up, rounds, statement count), after the 100 players.
        resigns = 20 + requests_per * self.args.rounds + 10 if self.args.only in (None, "resign") else 0
        everyone, idle = self.seed(players=100 + 2 * resigns, idle=requests_per + 2)
        players, resigners = everyone[:100], everyone[100::2]
        _, bare_port, bare_pid = self.start_gunicorn("bench_bare_app:app", "bare")
        _, port, pid = self.start_gunicorn("app:app", "duely")
        print(f"web worker pid {pid} (bare: {bare_pid})", flush=True)
        bare, duely = Client(bare_port), Client(port)
        watcher_client = Client(port)
        last_ids: dict[int, int] = {}

        pg_cpu: dict[str, list[float]] = {}

        def measure(worker_pid: int, count: int, step) -> float:
            before, pg_before = cpu_secs(worker_pid), self.postgres_cpu_secs()
            for i in range(count):
                step(i)
            pg_cpu.setdefault(step.__name__, []).append((self.postgres_cpu_secs() - pg_before) * 1000 / count)
            return (cpu_secs(worker_pid) - before) * 1000 / count

        def expect(status: int, body: bytes, *ok: int) -> None:
            if status not in ok:
                raise SystemExit(f"unexpected answer {status}: {body[:300]!r}")

        def ping(i: int) -> None:
            expect(*bare.call("GET", "/ping"), 200)

        def submit(i: int) -> None:
            user = players[i % len(players)]
            expect(*duely.call("POST", f"/api/duels/{user['duel_id']}/submit", user["token"],
                               {"solution": "print(1)", "language": "python", "client_temp_id": uuid.uuid4().hex}), 202)

        def updates(i: int) -> None:
            user = players[i % len(players)]
            status, body = duely.call("GET", "/api/updates?last_event_id=0&limit=1&timeout=0", user["token"])
            expect(status, body, 200)
            last_ids[user["id"]] = json.loads(body)["last_event_id"]

        def join(i: int) -> None:
            expect(*duely.call("POST", "/api/queue", idle[i]["token"]), 202)

        def leave(i: int) -> None:
            expect(*duely.call("DELETE", "/api/queue", idle[i]["token"]), 204)

        def resign(i: int) -> None:
            user = resigners.pop()
            expect(*duely.call("POST", f"/api/duels/{user['duel_id']}/resign", user["token"]), 202)

        watcher = idle[-1]

        def woken(i: int) -> None:
            # A poll held by `watcher_client` for idle[-1], woken by idle[-1] joining the queue
            # (its own queue_joined event), then the leave: three requests.
            status, body = duely.call("GET", "/api/updates?last_event_id=0&timeout=0", watcher["token"])
            expect(status, body, 200)
            after = json.loads(body)["last_event_id"]
            answer: list = []
            held = threading.Thread(target=lambda: answer.append(watcher_client.call(
                "GET", f"/api/updates?last_event_id={after}&timeout=20", watcher["token"])))
            held.start()
            time.sleep(0.02)  # the poll is held by now
            expect(*duely.call("POST", "/api/queue", watcher["token"]), 202)
            held.join()
            expect(*answer[0], 200)
            if not json.loads(answer[0][1])["events"]:
                raise SystemExit("the held poll was not woken by an event")
            expect(*duely.call("DELETE", "/api/queue", watcher["token"]), 204)

        # Warm-up: every code path once, prepared statements, pools.
        for step in (ping, submit, updates, resign):
            for i in range(20 if resigns or step is not resign else 0):
                step(i)
        join(0)
        leave(0)
        woken(0)
        results: dict[str, list[float]] = {k: [] for k in ("bare", "updates", "submit", "join", "leave", "resign", "woken")}
        woken_count = max(10, requests_per // 10)
        if self.args.only:  # one endpoint, for a profiler attached to the worker
            for _ in range(self.args.rounds):
                print(f"{self.args.only}: {measure(pid, requests_per, locals()[self.args.only]):.2f} ms", flush=True)
            return
        for _ in range(self.args.rounds):
            results["bare"].append(measure(bare_pid, requests_per, ping))
            results["updates"].append(measure(pid, requests_per, updates))
            results["submit"].append(measure(pid, requests_per, submit))
            results["join"].append(measure(pid, requests_per, join))
            results["leave"].append(measure(pid, requests_per, leave))
            results["resign"].append(measure(pid, requests_per, resign))
            results["woken"].append(measure(pid, woken_count, woken))
        print(f"{requests_per} requests per endpoint per round ({woken_count} for woken), {self.args.rounds} rounds; "
              "CPU ms per request of the one web worker, best round (all rounds):")
        best = {k: min(v) for k, v in results.items()}
        for name, values in results.items():
            note = ""
            if name == "woken":
                note = "   (per cycle of 4 requests: a poll, a held poll, the join that wakes it, a leave)"
            elif name != "bare":
                note = f"   ({best[name] / best['bare']:.1f}x bare)"
            print(f"  {name:8s} {best[name]:6.2f} ms  [{', '.join(f'{v:.2f}' for v in values)}]{note}", flush=True)
        print("CPU ms per request of PostgreSQL (all its processes), best round (all rounds):")
        for name, values in pg_cpu.items():
            if name != "ping":
                print(f"  {name:8s} {min(values):6.2f} ms  [{', '.join(f'{v:.2f}' for v in values)}]", flush=True)
        if self.args.statements:
            self.count_statements({"updates": updates, "submit": submit, "join": join, "leave": leave,
                                   "resign": resign})

    def count_statements(self, steps: dict) -> None:
        """SQL statements per request, from the server's log (BEGIN, COMMIT and the token check included)."""
        from sqlalchemy import text

        with self.db.autocommit() as s:
            s.execute(text("ALTER SYSTEM SET log_statement = 'all'"))
            s.execute(text("SELECT pg_reload_conf()"))
        time.sleep(0.5)
        log_path = self.pg_dir / "log"
        count = 10
        print(f"SQL statements per request (PostgreSQL's log, {count} requests each):")
        for name, step in steps.items():
            start = log_path.stat().st_size
            for i in range(count):
                step(i)
            time.sleep(0.2)
            lines = logged_statements(log_path, start)
            print(f"  {name:8s} {len(lines) / count:5.1f}", flush=True)
            if self.args.verbose:
                for line in lines[: len(lines) // count]:
                    print("     ", line.split("LOG:  ", 1)[1][:160])


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per endpoint per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--statements", action="store_true", help="count SQL statements per request too")
    parser.add_argument("--verbose", action="store_true", help="with --statements: show one request's statements")
    parser.add_argument("--only", choices=["updates", "submit", "join", "leave", "resign", "woken"],
                        help="run this endpoint only (to attach py-spy to the printed worker pid)")
    args = parser.parse_args(argv)
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
