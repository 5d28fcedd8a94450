"""Benchmark of GET /api/updates on one server with 2 gunicorn gevent workers.

    .venv/bin/python bench/updates.py            # everything (about 3 minutes)
    .venv/bin/python bench/updates.py --idle 2000 --latency-secs 10 --wrk-secs 5   # quicker
    .venv/bin/python bench/updates.py --parts latency,actions --idle 0   # 200 events/s: in the database, then via the API

Reports, each as a printed figure:
 1. idle long polls held at once (target >= 10,000), server RSS per 1,000 held polls, database
    connections open / active and transactions per second while they are held, and how fast
    they are all answered when the server gets SIGTERM; plus the same RSS figure for a bare
    gunicorn+gevent+Flask app whose route just sleeps (the floor for any long poll);
 2. commit-to-delivery latency p50/p99 with 1,000 held polls and 200 events/s (target p99 < 50 ms);
 3. immediate-answer GET /api/updates requests/s (wrk) against a trivial Flask route run the
    same way, and their ratio (target >= 0.5);
 4. (`--parts actions`) one player's action seen by another through the API: 1,000 held polls,
    and `--events-per-sec` actions/s made over HTTP (POST / DELETE /api/queue in turn by the
    watched users, so the write path is measured too); request start -> event delivered p50/p99
    (target p99 <= 50 ms at 200/s), with the write requests' own latency beside it. The first
    `--warmup-secs` of actions run at the same rate but are reported apart, as the cold start
    (each watched user's first request opens its connection; the workers' database pools grow).

It starts its own embedded PostgreSQL (in a temporary directory), its own gunicorns on free
ports and its own clients, talks to 127.0.0.1 only, and stops everything at the end. The
clients are this same file run as `client-idle` / `client-latency` subprocesses under gevent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "bench-secret-key"
EVENTS_PER_USER = 5  # seeded per user for the immediate-answer run

BARE_APP = '''
import time

from flask import Flask, jsonify, request

app = Flask("bare")


@app.get("/ping")
def ping():
    return jsonify({"events": [], "last_event_id": 0})


@app.get("/hold")
def hold():
    time.sleep(float(request.args.get("timeout", 60)))  # gevent-patched: a cooperative sleep
    return jsonify({"events": [], "last_event_id": 0})
'''

WRK_SCRIPT = '''
local tokens = {}
for line in io.lines("%(tokens)s") do tokens[#tokens + 1] = line end
local counter = 0
request = function()
  counter = counter + 1
  local t = tokens[(counter * 7919) %% #tokens + 1]
  return wrk.format("GET", "%(path)s", {["Authorization"] = "Bearer " .. t})
end
'''


# =============================================================================================
# Clients (run as subprocesses, under gevent)
# =============================================================================================

def _gevent_client_setup():
    from gevent import monkey

    monkey.patch_all()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Conn:
    """A minimal keep-alive HTTP/1.1 client on one socket (enough for gunicorn's answers)."""

    def __init__(self, port: int):
        import socket

        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        return self.request("GET", path, token)

    def request(self, method: str, path: str, token: str | None = None) -> tuple[int, bytes]:
        """One request without a body (Content-Length: 0 for POST/DELETE) and its answer."""
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        length = "" if method == "GET" else "Content-Length: 0\r\n"
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{auth}{length}\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self._recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def client_idle(port: int, tokens_file: str, count: int, path: str, rate: float, max_secs: float) -> None:
    """Hold `count` polls (one per token, one connection each); print status lines every second.
    SIGUSR1 marks a moment; once every poll is answered after it, print the time that took."""
    _gevent_client_setup()
    import gevent

    tokens = Path(tokens_file).read_text().split()[:count]
    stats = {"connected": 0, "answered": 0, "errors": 0, "early": 0}
    mark: list[float] = []

    def hold(token: str) -> None:
        try:
            conn = _Conn(port)
            stats["connected"] += 1
            status, _ = conn.get(path, token)
            stats["answered"] += 1
            if status != 200:
                stats["errors"] += 1
            if not mark:
                stats["early"] += 1  # answered before the mark: should not happen while idle
            conn.close()
        except Exception:
            stats["errors"] += 1

    def on_mark() -> None:
        mark.append(time.monotonic())

    gevent.signal_handler(signal.SIGUSR1, on_mark)
    greenlets = []
    started = time.monotonic()
    for i, token in enumerate(tokens):
        greenlets.append(gevent.spawn(hold, token))
        # Paced so that the listen backlog never overflows (a dropped SYN costs a 1 s retry).
        delay = started + (i + 1) / rate - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
    deadline = started + max_secs
    while time.monotonic() < deadline:
        print(json.dumps({"status": stats}), flush=True)
        if mark and all(g.dead for g in greenlets):
            break
        gevent.sleep(0.02 if mark else 1.0)
    done = {"final": stats, "drain_secs": (time.monotonic() - mark[0]) if mark else None}
    print(json.dumps(done), flush=True)


def client_latency(port: int, users_file: str, secs: float, out_file: str) -> None:
    """Each user keeps one long poll open for `secs`; every event received is logged with the
    moment it arrived (CLOCK_MONOTONIC is one clock for all processes of this machine)."""
    _gevent_client_setup()
    import gevent

    users = json.loads(Path(users_file).read_text())
    received: list[tuple[int, int, float]] = []
    stats = {"polls": 0, "errors": 0}
    stop_at = time.monotonic() + secs

    def follow(user: dict) -> None:
        conn = _Conn(port)
        after = user["last_event_id"]
        while time.monotonic() < stop_at:
            try:
                status, body = conn.get(f"/api/updates?last_event_id={after}&timeout=20", user["token"])
            except Exception:
                stats["errors"] += 1
                gevent.sleep(0.1)
                conn = _Conn(port)
                continue
            now = time.monotonic()
            stats["polls"] += 1
            if status != 200:
                stats["errors"] += 1
                continue
            answer = json.loads(body)
            for event in answer["events"]:
                received.append((user["id"], event["id"], now, event["type"]))
            after = answer["last_event_id"]

    greenlets = [gevent.spawn(follow, u) for u in users]
    print(json.dumps({"ready": len(greenlets)}), flush=True)
    gevent.sleep(max(0.0, stop_at - time.monotonic()) + 0.5)
    Path(out_file).write_text(json.dumps({"received": received, "stats": stats}))
    print(json.dumps({"done": len(received)}), flush=True)
    os._exit(0)  # the held polls need not be answered


def client_actions(port: int, users_file: str, rate: float, secs: float, out_file: str) -> None:
    """Queue joins and leaves at `rate` per second for `secs`, by randomly chosen users, each
    user's actions one after another on its own keep-alive connection (so the k-th queue event
    in its log answers its k-th action). A load generator as lean as the followers' client: with
    requests and threads in the orchestrator it took a good part of a core from the server.
    Writes (user id, start, seconds, status) per action, CLOCK_MONOTONIC like the followers."""
    _gevent_client_setup()
    import random

    import gevent

    users = json.loads(Path(users_file).read_text())
    conns: dict[int, _Conn] = {}
    busy: set[int] = set()
    joined: dict[int, bool] = {}
    done: list[tuple[int, float, float, int]] = []

    def act(user: dict, joining: bool) -> None:
        began = time.monotonic()
        try:
            conn = conns.get(user["id"]) or conns.setdefault(user["id"], _Conn(port))
            status, _ = conn.request("POST" if joining else "DELETE", "/api/queue", user["token"])
        except Exception:
            conns.pop(user["id"], None)
            status = 0
        done.append((user["id"], began, time.monotonic() - began, status))
        busy.discard(user["id"])

    rnd = random.Random(11)
    print(json.dumps({"ready": len(users)}), flush=True)
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < secs:
        user = rnd.choice(users)
        if user["id"] in busy:
            continue
        busy.add(user["id"])
        joining = not joined.get(user["id"], False)
        joined[user["id"]] = joining
        gevent.spawn(act, user, joining)
        n += 1
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
    achieved = n / (time.monotonic() - started)
    deadline = time.monotonic() + 30
    while busy and time.monotonic() < deadline:
        gevent.sleep(0.05)
    Path(out_file).write_text(json.dumps({"actions": done, "achieved_per_sec": achieved}))
    print(json.dumps({"done": len(done)}), flush=True)
    os._exit(0)


# =============================================================================================
# Orchestrator
# =============================================================================================

class _LineReader:
    """Follows a client's JSON status lines in a thread: the latest status, and its final line."""

    def __init__(self, proc: subprocess.Popen):
        import threading

        self._latest: dict = {}
        self._final: dict = {}
        self._done = threading.Event()
        threading.Thread(target=self._run, args=(proc,), daemon=True).start()

    def _run(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            data = json.loads(line)
            if "status" in data:
                self._latest = data["status"]
            if "final" in data:
                self._final = data
                break
        self._done.set()

    def status(self) -> dict:
        return dict(self._latest)

    def final(self, timeout: float) -> dict:
        self._done.wait(timeout)
        return self._final


class Bench:
    def __init__(self, args):
        import tempfile

        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="duely-bench-"))
        self.procs: list[subprocess.Popen] = []
        self.pg_dir = self.tmp / "pg"
        self.db = None
        self.url = ""
        self.figures: list[tuple[str, str]] = []

    # -- infrastructure ------------------------------------------------------------------------
    def figure(self, name: str, value: str) -> None:
        self.figures.append((name, value))
        print(f"FIGURE {name}: {value}", flush=True)

    def start_database(self) -> None:
        from duely.db import Database
        from duely.infra import start_embedded_postgres
        from duely.migrate import upgrade

        self.url = start_embedded_postgres(self.pg_dir)
        upgrade(self.url)
        self.db = Database(self.url + "&application_name=duely-bench", pool_size=4, max_overflow=4)

    def seed(self, users: int) -> list[dict]:
        """`users` users with tokens (straight in the database: password hashing would take
        minutes); the first 1,000 get EVENTS_PER_USER events each through eventlog.append."""
        from sqlalchemy import text

        from duely import auth, eventlog
        from duely.eventlog.types import SubmissionUpdate

        tokens = [f"bench-{i}-{os.urandom(8).hex()}" for i in range(users)]
        with self.db.transaction() as s:
            ids = list(s.execute(text(
                "INSERT INTO users (nickname, password_hash) SELECT 'bench' || g, 'x' FROM generate_series(1, :n) g RETURNING id"
            ), {"n": users}).scalars())
            s.execute(text(
                "INSERT INTO auth_tokens (user_id, token_hash, expires_at) "
                "SELECT u, h, now() + interval '1 day' FROM unnest(CAST(:ids AS bigint[]), CAST(:hashes AS text[])) AS t(u, h)"
            ), {"ids": ids, "hashes": [auth.hash_token(SECRET_KEY, t) for t in tokens]})
        for chunk in range(0, min(1000, users), 100):
            with self.db.transaction() as s:
                for uid in ids[chunk:chunk + 100]:
                    for n in range(EVENTS_PER_USER):
                        eventlog.append(s, uid, SubmissionUpdate(duel_id=0, submission_id="seed", status=f"seed {n}"))
        return [{"id": uid, "token": tok, "last_event_id": EVENTS_PER_USER if i < 1000 else 0}
                for i, (uid, tok) in enumerate(zip(ids, tokens, strict=True))]

    def start_gunicorn(self, app: str, name: str) -> tuple[subprocess.Popen, int]:
        from duely.config import Config, to_environ
        from duely.infra import free_port, wait_for_port

        port = free_port()
        config = Config(database_url=self.url, secret_key=SECRET_KEY, port=port, workers=2, log_level="WARNING")
        env = {**os.environ, **to_environ(config), "PYTHONPATH": f"{ROOT}:{self.tmp}"}
        out = open(self.tmp / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "duely" / "gunicorn_conf.py"), app],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.procs.append(proc)
        wait_for_port("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 30
        while len(self.workers(proc)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        return proc, port

    def stop(self, proc: subprocess.Popen, timeout: float = 20) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @staticmethod
    def workers(proc: subprocess.Popen):
        import psutil

        try:
            return psutil.Process(proc.pid).children()
        except psutil.NoSuchProcess:
            return []

    def rss_mib(self, proc: subprocess.Popen) -> float:
        return sum(w.memory_info().rss for w in self.workers(proc)) / 2**20

    def client(self, *argv: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.procs.append(proc)
        return proc

    def warm_up(self, port: int, users: list[dict], path: str = "/api/updates?timeout=0") -> None:
        import requests

        with requests.Session() as http:
            for u in users[:200]:
                http.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {u['token']}"})

    def db_activity(self) -> dict:
        """Connections of everyone but this script, by state, and committed transactions so far."""
        import psycopg

        from duely.db import psycopg_url

        with psycopg.connect(psycopg_url(self.url), autocommit=True, application_name="duely-bench-probe") as conn:
            rows = conn.execute(
                "SELECT application_name, state FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND application_name NOT LIKE 'duely-bench%'"
            ).fetchall()
            xacts = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
        return {
            "open": len(rows),
            "listeners": sum(1 for name, _ in rows if name.startswith("duely-listener")),
            "active": sum(1 for _, state in rows if state not in ("idle", None)),
            "xacts": xacts,
        }

    def cleanup(self) -> None:
        import shutil

        from duely.infra import stop_embedded_postgres

        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.db is not None:
            self.db.dispose()
        stop_embedded_postgres(self.pg_dir)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- 3. throughput ---------------------------------------------------------------------------
    def wrk(self, port: int, path: str, tokens_file: Path | None, secs: float) -> dict:
        script = self.tmp / "wrk.lua"
        script.write_text(WRK_SCRIPT % {"tokens": tokens_file, "path": path} if tokens_file else "")
        cmd = ["wrk", "-t2", f"-c{self.args.wrk_connections}", "--latency"]
        if tokens_file:
            cmd += ["-s", str(script)]
        url = f"http://127.0.0.1:{port}{path}"
        subprocess.run(cmd + ["-d2s", url], capture_output=True, text=True)  # warm-up
        out = subprocess.run(cmd + [f"-d{int(secs)}s", url], capture_output=True, text=True, check=True).stdout
        rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
        bad = next((int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line), 0)
        errors = next((line.strip() for line in out.splitlines() if "Socket errors" in line), "")
        p99 = next((line.split()[1] for line in out.splitlines() if line.strip().startswith("99%")), "?")
        return {"rps": rps, "non_2xx": bad, "socket_errors": errors, "p99": p99}

    def throughput(self, users: list[dict]) -> None:
        import shutil

        if shutil.which("wrk") is None:
            raise SystemExit("wrk is not installed (apt-get install -y wrk)")
        tokens_file = self.tmp / "tokens-1000.txt"
        tokens_file.write_text("\n".join(u["token"] for u in users[:1000]))
        secs = self.args.wrk_secs

        # Both servers run side by side and are measured in turns, best of `rounds`: this box is
        # shared, and a burst of someone else's work should not decide the ratio.
        bare, bare_port = self.start_gunicorn("bench_bare_app:app", "bare")
        duely, port = self.start_gunicorn("app:app", "duely-wrk")
        self.warm_up(port, users)
        runs: dict[str, list[dict]] = {"bare": [], "one": [], "five": []}
        for _ in range(self.args.wrk_rounds):
            # The same wrk script (rotating Authorization headers) for both: same client cost.
            runs["bare"].append(self.wrk(bare_port, "/ping", tokens_file, secs))
            runs["one"].append(self.wrk(port, f"/api/updates?last_event_id={EVENTS_PER_USER - 1}", tokens_file, secs))
            runs["five"].append(self.wrk(port, "/api/updates?last_event_id=0", tokens_file, secs))
        self.stop(bare)
        self.stop(duely)
        for name, results in runs.items():
            print(f"wrk {name}: " + ", ".join(f"{r['rps']:.0f}" for r in results) + " req/s", flush=True)
        base, one, five = (max(runs[k], key=lambda r: r["rps"]) for k in ("bare", "one", "five"))
        for name, result in (("bare", base), ("updates 1 event", one), ("updates 5 events", five)):
            if result["non_2xx"] or result["socket_errors"]:
                print(f"WARNING {name}: non-2xx={result['non_2xx']} {result['socket_errors']}")
        self.figure(f"3. bare Flask GET /ping req/s (2 gevent workers, wrk -t2 -c{self.args.wrk_connections}, "
                    f"best of {self.args.wrk_rounds} x {secs:.0f} s)",
                    f"{base['rps']:.0f} (p99 {base['p99']})")
        self.figure("3. GET /api/updates immediate answer, 1 event, req/s",
                    f"{one['rps']:.0f} (p99 {one['p99']}, non-2xx {one['non_2xx']})")
        self.figure("3. ratio updates(1 event) / bare", f"{one['rps'] / base['rps']:.2f} (target >= 0.5)")
        self.figure("3. GET /api/updates immediate answer, 5 events, req/s",
                    f"{five['rps']:.0f} (ratio {five['rps'] / base['rps']:.2f}, non-2xx {five['non_2xx']})")

    # -- 2. latency ------------------------------------------------------------------------------
    def latency(self, users: list[dict]) -> None:
        import random

        from duely import eventlog
        from duely.eventlog.types import SubmissionUpdate

        duely, port = self.start_gunicorn("app:app", "duely-latency")
        self.warm_up(port, users)
        followers = users[:1000]
        users_file = self.tmp / "latency-users.json"
        users_file.write_text(json.dumps(followers))
        out_file = self.tmp / "latency-out.json"
        secs = self.args.latency_secs
        client = self.client("client-latency", str(port), str(users_file), str(secs + 3), str(out_file))
        json.loads(client.stdout.readline())
        time.sleep(2.0)  # every follower's first poll is held by now
        rate = self.args.events_per_sec
        rnd = random.Random(7)
        committed: dict[tuple[int, int], tuple[float, float]] = {}
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < secs:
            uid = rnd.choice(followers)["id"]
            with self.db.sessionmaker() as s:
                s.begin()
                eid = eventlog.append(s, uid, SubmissionUpdate(duel_id=0, submission_id="bench", status=f"#{n}"))
                before = time.monotonic()
                s.commit()
                committed[(uid, eid)] = (before, time.monotonic())
            n += 1
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        achieved = n / (time.monotonic() - started)
        client.wait(secs + 30)
        result = json.loads(out_file.read_text())
        after_commit, from_commit_start = [], []
        for uid, eid, t, _ in result["received"]:
            if (uid, eid) in committed:
                before, after = committed[(uid, eid)]
                after_commit.append((t - after) * 1000)
                from_commit_start.append((t - before) * 1000)
        delivered = len(after_commit)
        self.stop(duely)

        def pct(values: list[float], p: float) -> float:
            values = sorted(values)
            return values[min(len(values) - 1, int(p / 100 * len(values)))]

        self.figure("2. events written / delivered", f"{n} at {achieved:.0f}/s to 1000 held polls / {delivered} "
                                                      f"(poll errors {result['stats']['errors']})")
        self.figure("2. commit-to-delivery latency p50 / p99 / max (ms, from COMMIT returning)",
                    f"{pct(after_commit, 50):.1f} / {pct(after_commit, 99):.1f} / {max(after_commit):.1f} (target p99 < 50)")
        self.figure("2. same, from COMMIT sent (upper bound) p50 / p99 (ms)",
                    f"{pct(from_commit_start, 50):.1f} / {pct(from_commit_start, 99):.1f}")

    # -- 4. actions through the API ---------------------------------------------------------------
    def actions(self, users: list[dict]) -> None:
        duely, port = self.start_gunicorn("app:app", "duely-actions")
        self.warm_up(port, users)
        followers = users[:1000]
        users_file = self.tmp / "actions-users.json"
        users_file.write_text(json.dumps(followers))
        out_file = self.tmp / "actions-out.json"
        actions_file = self.tmp / "actions-made.json"
        warmup = self.args.warmup_secs
        secs = warmup + self.args.latency_secs
        client = self.client("client-latency", str(port), str(users_file), str(secs + 10), str(out_file))
        json.loads(client.stdout.readline())
        time.sleep(2.0)  # every follower's first poll is held by now

        def cpu_secs() -> float:
            return sum(sum(w.cpu_times()[:2]) for w in self.workers(duely))

        cpu_before = cpu_secs()
        maker = self.client("client-actions", str(port), str(users_file), str(self.args.events_per_sec), str(secs),
                            str(actions_file))
        json.loads(maker.stdout.readline())
        maker.wait(secs + 60)
        made = json.loads(actions_file.read_text())
        n, achieved = len(made["actions"]), made["achieved_per_sec"]
        cpu_per_action_ms = (cpu_secs() - cpu_before) / max(1, n) * 1000
        started_at: dict[int, list[float]] = {u["id"]: [] for u in followers}
        request_secs: list[float] = []
        statuses: dict[int, int] = {}
        ordered = sorted(made["actions"], key=lambda a: a[1])
        measured_from = ordered[0][1] + warmup if ordered else 0.0
        for uid, began, took, status in ordered:
            if began >= measured_from:
                request_secs.append(took)
            statuses[status] = statuses.get(status, 0) + 1
            if status in (202, 204):
                started_at[uid].append(began)
        client.wait(secs + 30)
        result = json.loads(out_file.read_text())
        delivered: dict[int, list[float]] = {}
        for uid, _, t, kind in sorted(result["received"], key=lambda r: (r[0], r[1])):
            if kind in ("queue_joined", "queue_left"):
                delivered.setdefault(uid, []).append(t)
        latencies, cold, lost = [], [], 0
        for uid, starts in started_at.items():
            got = delivered.get(uid, [])
            for b, t in zip(starts, got, strict=False):
                (latencies if b >= measured_from else cold).append((t - b) * 1000)
            lost += max(0, len(starts) - len(got))
        self.stop(duely)

        def pct(values: list[float], p: float) -> float:
            values = sorted(values)
            return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")

        ms = [v * 1000 for v in request_secs]
        self.figure("4. actions made / delivered (1000 held polls)",
                    f"{n} at {achieved:.0f}/s / {len(latencies) + len(cold)} (not delivered {lost}; answers {statuses}; "
                    f"poll errors {result['stats']['errors']})")
        self.figure(f"4. request start -> event delivered p50 / p99 / max (ms), after {warmup:g} s of warm-up",
                    f"{pct(latencies, 50):.1f} / {pct(latencies, 99):.1f} / {max(latencies, default=float('nan')):.1f} "
                    f"over {len(latencies)} actions (target p99 <= 50)")
        self.figure("4. the write requests themselves p50 / p99 (ms), after the warm-up", f"{pct(ms, 50):.1f} / {pct(ms, 99):.1f}")
        if cold:
            self.figure(f"4. cold start: the first {warmup:g} s, request start -> event delivered p50 / p99 / max (ms)",
                        f"{pct(cold, 50):.1f} / {pct(cold, 99):.1f} / {max(cold):.1f} over {len(cold)} actions")
        self.figure("4. web workers' CPU per action, its wake-up and the poll answering it (ms; load-independent)",
                    f"{cpu_per_action_ms:.2f}")

    # -- 1. idle polls ---------------------------------------------------------------------------
    def idle(self, users: list[dict], app: str, path: str, label: str) -> None:
        count = self.args.idle
        idle_users = users[1000:1000 + count]  # users without events: their polls are held
        tokens_file = self.tmp / f"tokens-{count}.txt"
        tokens_file.write_text("\n".join(u["token"] for u in idle_users))
        server, port = self.start_gunicorn(app, f"{label}-idle")
        self.warm_up(port, users, "/api/updates?timeout=0" if label == "duely" else "/ping")
        time.sleep(1.0)
        rss_before = self.rss_mib(server)
        db_before = self.db_activity()
        client = self.client("client-idle", str(port), str(tokens_file), str(count), path, str(self.args.connect_rate), "240")
        reader = _LineReader(client)
        # Every poll connected and (for Duely) had its first read, which writes presence.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = reader.status()
            if status and status["connected"] + status["errors"] >= count:
                break
            time.sleep(0.2)
        time.sleep(3.0)
        if label == "duely":
            from sqlalchemy import text

            while time.monotonic() < deadline:
                with self.db.transaction() as s:
                    present = s.execute(text("SELECT count(*) FROM presence WHERE last_seen_at > now() - interval '2 minutes' "
                                             "AND user_id = ANY(:ids)"), {"ids": [u["id"] for u in idle_users]}).scalar()
                if present >= count:
                    break
                time.sleep(0.5)
        time.sleep(2.0)
        rss_held = self.rss_mib(server)
        # PostgreSQL publishes an idle backend's counters up to 10 s late: let the first reads'
        # burst land before the window opens. (The polls' 60 s timeout bounds all of this.)
        time.sleep(11.0)
        db_held = self.db_activity()
        window_secs = 25.0
        time.sleep(window_secs)
        db_later = self.db_activity()
        status = reader.status()
        held = status["connected"] - status["answered"]
        per_1000 = (rss_held - rss_before) / max(held, 1) * 1000
        self.figure(f"1. [{label}] polls held at once (2 gevent workers)",
                    f"{held} of {count} (answered early: {status['answered']}, errors: {status['errors']})")
        self.figure(f"1. [{label}] server RSS idle / with polls held (MiB, both workers)", f"{rss_before:.0f} / {rss_held:.0f}")
        self.figure(f"1. [{label}] RSS per 1,000 held polls (MiB)", f"{per_1000:.1f}")
        if label == "duely":
            self.figure("1. [duely] DB connections open while idle (pool + LISTEN)",
                        f"{db_held['open']} ({db_held['listeners']} LISTEN, {db_held['active']} active); "
                        f"before the polls: {db_before['open']}")
            self.figure(f"1. [duely] DB transactions/s while the polls are held ({window_secs:.0f} s window)",
                        f"{(db_later['xacts'] - db_held['xacts']) / window_secs:.1f} (this script's probes and the "
                        f"presence heartbeat included; a poll loop would be >= {held / 60:.0f}/s)")
        os.kill(client.pid, signal.SIGUSR1)
        time.sleep(0.05)
        stopped_at = time.monotonic()
        server.send_signal(signal.SIGTERM)
        final = reader.final(120)
        server.wait(60)
        if label == "duely":
            self.figure("1. [duely] SIGTERM: all held polls answered in (s)",
                        f"{final['drain_secs']:.2f} ({final['final']['answered']} answered, {final['final']['errors']} errors); "
                        f"server exited after {time.monotonic() - stopped_at:.2f}")
        client.wait(30)

    def run(self) -> None:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers and clients
        print(f"open files limit: {hard}; cpus: {os.cpu_count()}", flush=True)
        (self.tmp / "bench_bare_app.py").write_text(BARE_APP)
        self.start_database()
        users = self.seed(1000 + self.args.idle)
        print(f"seeded {len(users)} users", flush=True)
        if "throughput" in self.args.parts:
            self.throughput(users)
        if "latency" in self.args.parts:
            self.latency(users)
        if "actions" in self.args.parts:
            self.actions(users)
        if "idle" in self.args.parts:
            self.idle(users, "app:app", "/api/updates?timeout=60", "duely")
            self.idle(users, "bench_bare_app:app", "/hold?timeout=60", "bare")
        print("\n=== figures ===")
        for name, value in self.figures:
            print(f"{name}: {value}")


def main(argv: list[str]) -> None:
    if argv and argv[0] == "client-idle":
        port, tokens_file, count, path, rate, max_secs = argv[1:7]
        client_idle(int(port), tokens_file, int(count), path, float(rate), float(max_secs))
        return
    if argv and argv[0] == "client-actions":
        port, users_file, rate, secs, out_file = argv[1:6]
        client_actions(int(port), users_file, float(rate), float(secs), out_file)
        return
    if argv and argv[0] == "client-latency":
        port, users_file, secs, out_file = argv[1:5]
        client_latency(int(port), users_file, float(secs), out_file)
        return
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=10_000, help="long polls to hold at once")
    parser.add_argument("--connect-rate", type=float, default=1500.0, help="new connections per second when opening them")
    parser.add_argument("--latency-secs", type=float, default=30.0)
    parser.add_argument("--warmup-secs", type=float, default=5.0,
                        help="actions: seconds at the full rate before the measured --latency-secs, reported apart as the cold start")
    parser.add_argument("--events-per-sec", type=float, default=200.0)
    parser.add_argument("--wrk-secs", type=float, default=10.0)
    parser.add_argument("--wrk-connections", type=int, default=64)
    parser.add_argument("--wrk-rounds", type=int, default=3, help="alternating wrk runs per server (best is reported)")
    parser.add_argument("--parts", default="throughput,latency,idle", help="comma-separated subset of throughput,latency,idle,actions")
    args = parser.parse_args(argv)
    args.parts = set(args.parts.split(","))
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
