"""The scheduler's dispatch: CPU ms, statements and transactions per submission, against the
same figures of a baseline (older) version of the code measured in the same run.

    .venv/bin/python bench/dispatch.py                           # 600 submissions at 25/s and at 100/s
    .venv/bin/python bench/dispatch.py --rates 25,100 --submissions 600 --rounds 2 --baseline b6bb06a
    .venv/bin/python bench/dispatch.py --rates '' --duels 300            # the duel start only

It starts its own embedded PostgreSQL (temporary directory), a tansu broker and the dev Taski in
instant mode (DEVTASKI_JUDGE=instant: it answers at once and publishes the verdict; nobody reads
it, the submissions stay `testing`), seeds duels on a dev Taski task, then for each code version
(`--baseline REF`, exported with `git archive`, and the working tree) and each rate starts a
dispatcher process: the scheduler's own dispatch WokenLoop (duely.jobs.woken_loops) and Runtime,
nothing else. This process then inserts submissions as the submit does (one transaction each,
NOTIFY duely_dispatch at its commit) at the given rate, waits until every one was handed to
Taski, and reads the dispatcher's CPU time (utime + stime, /proc/<pid>/stat) before and after.
The dispatcher counts its own statements (psycopg Cursor.execute, BEGIN/COMMIT not included) and
transactions (commits and rollbacks). The figure is per submission, best round of `--rounds`
(the box is shared: the least disturbed round is the closest to the truth), with the
submit -> handed over latency (sent_at - submitted_at) p50/p99 of that round.

Then (`--duels N`, first) the duel start: a process of each code version seeds N queued pairs and
runs matchmaking's transaction for each pair one after another (`rounds.start_duel_for_pair`
in `Database.run`, as a round does after its Taski call), and prints CPU ms (its thread's CPU
time), statements and transactions per duel start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_BASELINE = "b6bb06a"  # the scheduler before the per-submission work of issue 13 (h-sched)


def cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


# -- the dispatcher process -------------------------------------------------------------------

def count_statements() -> dict:
    """Count this process's statements (psycopg Cursor.execute) and transactions from now on."""
    import psycopg

    counts = {"statements": 0, "transactions": 0}
    execute, commit, rollback = psycopg.Cursor.execute, psycopg.Connection.commit, psycopg.Connection.rollback

    def counted_execute(self, *args, **kwargs):
        counts["statements"] += 1
        return execute(self, *args, **kwargs)

    def counted_commit(self):
        counts["transactions"] += 1
        return commit(self)

    def counted_rollback(self):
        if self.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:  # the pool's reset of an idle one is free
            counts["transactions"] += 1
        return rollback(self)

    psycopg.Cursor.execute, psycopg.Connection.commit, psycopg.Connection.rollback = (
        counted_execute, counted_commit, counted_rollback)
    return counts


def worker(code_dir: str, database_url: str, taski_url: str) -> None:
    """Run the scheduler's dispatch loop of the code in `code_dir`; answer `count` on stdin with
    the statements and transactions so far; exit on `stop`."""
    sys.path.insert(0, code_dir)
    counts = count_statements()

    from duely import jobs, outage
    from duely.config import Config
    from duely.db import SCHEDULER_POOL, Database
    from duely.runtime import Runtime

    config = Config(database_url=database_url, taski_url=taski_url, log_level="WARNING", judge_timeout=3600.0)
    runtime = Runtime(config, Database(database_url, *SCHEDULER_POOL), process="scheduler")
    loops = [loop for loop in jobs.woken_loops(runtime, outage.OutageLog(jobs.log)) if loop.name == "dispatch"]
    loop = loops[0].start()
    loop.listening.wait(30)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(json.dumps({**counts, "runs": loop.runs}), flush=True)
        elif line.strip() == "stop":
            break
    loop.stop()
    runtime.close()


def starts_worker(code_dir: str, database_url: str, pairs: str) -> None:
    """Start `pairs` matchmaking duels (queued pairs, the round's transaction: rounds.start_duel_for_pair)
    with the code in `code_dir`, one after another; print CPU ms (this thread), statements and
    transactions per duel start."""
    sys.path.insert(0, code_dir)
    counts = count_statements()
    from functools import partial

    from sqlalchemy import text

    from duely.db import Database
    from duely.matchmaking import rounds

    n = int(pairs)
    db = Database(database_url, pool_size=1, max_overflow=0)
    with db.transaction() as s:
        ids = list(s.execute(text(
            "INSERT INTO users (nickname, password_hash) SELECT 'st' || g || '-' || md5(random()::text), 'x'"
            " FROM generate_series(1, :n) g RETURNING id"), {"n": 2 * n}).scalars())
        s.execute(text("INSERT INTO queue_entries (user_id) SELECT unnest(CAST(:ids AS bigint[]))"), {"ids": ids})
    task = {"id": 1, "title": "Sum", "statement": "Print a+b.", "time_limit_ms": 1000, "difficulty": 800}
    db.read(lambda s: s.execute(text("SELECT 1")).all())  # a warm connection
    before, cpu = dict(counts), time.thread_time()
    for a, b in zip(ids[::2], ids[1::2], strict=True):
        assert db.run(partial(rounds.start_duel_for_pair, pair=(a, b), task=task, duration_secs=1800)) is not None
    cpu = time.thread_time() - cpu
    print(json.dumps({"cpu_ms": 1000 * cpu / n, "statements": (counts["statements"] - before["statements"]) / n,
                      "transactions": (counts["transactions"] - before["transactions"]) / n}), flush=True)
    db.dispose()


class Dispatcher:
    def __init__(self, code_dir: Path, database_url: str, taski_url: str, log_path: Path):
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(code_dir), database_url, taski_url],
            cwd=code_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, "PYTHONPATH": str(code_dir)})
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"the dispatcher did not start; see {log_path}")

    def counts(self) -> dict:
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# -- the run ----------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="duely-dispatch-bench-"))
        self.tmp.chmod(0o755)
        self.procs: list[subprocess.Popen] = []
        self.url = ""
        self.taski_url = ""
        self.duels: list[tuple[int, int, int]] = []  # (duel id, player a, player b)

    def start(self) -> None:
        sys.path.insert(0, str(ROOT))
        from duely.infra import free_port, start_broker, start_embedded_postgres, wait_for_port
        from duely.migrate import upgrade

        self.url = start_embedded_postgres(self.tmp / "pg")
        upgrade(self.url)
        broker_port = free_port()
        self.procs.append(start_broker(broker_port, self.tmp / "broker.log"))
        port = free_port()
        with open(self.tmp / "devtaski.log", "ab") as out:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "duely.devtaski", "--devtaski-port", str(port), "--kafka-bootstrap-servers",
                 f"127.0.0.1:{broker_port}", "--devtaski-state-dir", str(self.tmp / "devtaski"), "--devtaski-judge",
                 "instant", "--log-level", "WARNING"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
        wait_for_port("127.0.0.1", port, timeout=60)
        self.taski_url = f"http://127.0.0.1:{port}"

    def seed(self, pairs: int) -> None:
        import requests
        from sqlalchemy import text

        from duely import duels, eventlog
        from duely.db import Database

        task = requests.get(self.taski_url + "/api/tasks/1", timeout=10).json()
        db = Database(self.url, pool_size=1, max_overflow=0)
        with db.transaction() as s:
            ids = list(s.execute(text(
                "INSERT INTO users (nickname, password_hash) SELECT 'disp' || g, 'x' FROM generate_series(1, :n) g RETURNING id"
            ), {"n": 2 * pairs}).scalars())
        for a, b in zip(ids[::2], ids[1::2], strict=True):
            def act(session, a=a, b=b):
                eventlog.lock_users(session, (a, b))
                return duels.create_duel(session, (a, b), task, 24 * 3600)

            self.duels.append((db.run(act), a, b))
        db.dispose()

    def export(self, ref: str) -> Path:
        target = self.tmp / f"code-{ref}"
        target.mkdir()
        archive = subprocess.run(["git", "archive", ref, "duely"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        return target

    def feed(self, conn, n: int, rate: float) -> None:
        """Insert `n` submissions `1/rate` apart, each in its own transaction that NOTIFYs the dispatchers."""
        start = time.monotonic()
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            duel_id, a, b = self.duels[i % len(self.duels)]
            conn.execute(
                "INSERT INTO submissions (id, duel_id, user_id, language, solution, submitted_at)"
                " VALUES (%s, %s, %s, 'python', %s, clock_timestamp()) RETURNING pg_notify('duely_dispatch', '')",
                (uuid.uuid4(), duel_id, a if i % 2 else b, "# verdict: Wrong answer on test #1\nprint(1)\n"))

    def measure(self, code_dir: Path, label: str, rate: float) -> dict:
        import psycopg

        from duely.db import psycopg_url

        n = self.args.submissions
        dispatcher = Dispatcher(code_dir, self.url, self.taski_url, self.tmp / f"dispatcher-{label}.log")
        with psycopg.connect(psycopg_url(self.url), autocommit=True) as conn:
            conn.execute("DELETE FROM submissions")
            time.sleep(1.2)  # let the dispatcher's first sweep pass
            before, cpu_before = dispatcher.counts(), cpu_secs(dispatcher.proc.pid)
            feeder = threading.Thread(target=self.feed, args=(psycopg.connect(psycopg_url(self.url), autocommit=True), n, rate))
            feeder.start()
            feeder.join()
            deadline = time.monotonic() + 60
            while conn.execute("SELECT count(*) FROM submissions WHERE status = 'pending'").fetchone()[0]:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{label}: submissions still pending after 60 s; see {self.tmp}")
                time.sleep(0.01)
            cpu_after, after = cpu_secs(dispatcher.proc.pid), dispatcher.counts()
            p50, p99, sent_once = conn.execute(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - submitted_at)),"
                " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - submitted_at)),"
                " bool_and(send_attempts = 1) FROM submissions").fetchone()
        dispatcher.stop()
        return {"cpu_ms": 1000 * (cpu_after - cpu_before) / n,
                "statements": (after["statements"] - before["statements"]) / n,
                "transactions": (after["transactions"] - before["transactions"]) / n,
                "runs": (after["runs"] - before["runs"]) / n,
                "p50_ms": 1000 * p50, "p99_ms": 1000 * p99, "sent_once": sent_once}

    def measure_starts(self, code_dir: Path) -> dict:
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--starts", str(code_dir), self.url,
                              str(self.args.duels)], cwd=code_dir, env={**os.environ, "PYTHONPATH": str(code_dir)},
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    def run(self) -> None:
        self.start()
        self.seed(50)
        versions = [(f"base {self.args.baseline}", self.export(self.args.baseline))] if self.args.baseline else []
        versions.append(("this tree", ROOT))
        if self.args.duels:
            print(f"duel starts (matchmaking's transaction for a queued pair), {self.args.duels} one after another,"
                  f" best of {self.args.rounds} rounds (CPU of the starting thread)")
            print(f"{'code':<18} {'CPU ms/duel':>11} {'stmts/duel':>10} {'txns/duel':>9}")
            for label, code_dir in versions:
                best = min((self.measure_starts(code_dir) for _ in range(self.args.rounds)), key=lambda r: r["cpu_ms"])
                print(f"{label:<18} {best['cpu_ms']:>11.2f} {best['statements']:>10.2f} {best['transactions']:>9.2f}",
                      flush=True)
        rates = [float(r) for r in self.args.rates.split(",") if r]
        if not rates:
            return
        print(f"{self.args.submissions} submissions per measure, best of {self.args.rounds} rounds (CPU of the dispatcher process)")
        print(f"{'code':<18} {'rate/s':>6} {'CPU ms/sub':>10} {'stmts/sub':>9} {'txns/sub':>8} {'runs/sub':>8}"
              f" {'sent p50 ms':>11} {'p99 ms':>7}")
        for rate in rates:
            for label, code_dir in versions:
                results = [self.measure(code_dir, f"{label.split()[0]}-{rate:g}-{i}", rate) for i in range(self.args.rounds)]
                best = min(results, key=lambda r: r["cpu_ms"])
                assert all(r["sent_once"] for r in results), "a submission was sent more than once"
                print(f"{label:<18} {rate:>6g} {best['cpu_ms']:>10.2f} {best['statements']:>9.2f} {best['transactions']:>8.2f}"
                      f" {best['runs']:>8.2f} {best['p50_ms']:>11.1f} {best['p99_ms']:>7.1f}", flush=True)

    def close(self) -> None:
        from duely.infra import stop_embedded_postgres

        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        stop_embedded_postgres(self.tmp / "pg")
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:])
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--starts":
        starts_worker(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="25,100", help="submissions per second, comma-separated")
    parser.add_argument("--submissions", type=int, default=600, help="submissions per measure")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duels", type=int, default=300, help="matchmaking duel starts to measure (0: none)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref of the code to compare with ('' for none)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    bench = Bench(parser.parse_args())
    try:
        bench.run()
    finally:
        bench.close()


if __name__ == "__main__":
    main()
