"""Throughput of the development Taski: judged submissions per second, end to end.

    .venv/bin/python bench/taski_throughput.py [--submissions 100] [--workers 2] [--sandbox auto]

Starts its own tansu broker and dev Taski (free ports, temporary state), then POSTs N copies of
a trivial Accepted Python solution to a bundled problem with exactly 5 tests, all at once, and
waits until every verdict has arrived on Kafka. Measured from the first POST to the last
verdict, so HTTP, queueing, sandboxing (bwrap + rlimits + uid switch), the 5 runs per
submission and publishing are all included. Alongside, in the same run, the raw cost it is
compared with: the solution interpreter started 5 times (`python3 -I -B -c pass`), and the
same solution run on the same 5 inputs without any sandbox.

Instant mode (`--rate N`): the dev Taski with DEVTASKI_JUDGE=instant, submissions POSTed N a
second (Poisson arrivals, one keep-alive HTTP session, as Duely's dispatch) for S seconds, each
asking by its marker for Accepted or a Wrong Answer on a random test (1-12 messages). Prints the
dev Taski process's CPU per submission (from /proc, user + system) and POST -> verdict on Kafka
p50 / p99:

    .venv/bin/python bench/taski_throughput.py --rate 25 --seconds 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import requests
from kafka import KafkaConsumer, TopicPartition

from duely.devtaski.languages import solution_python
from duely.devtaski.problems import load_problems
from duely.infra import free_port, start_broker, wait_for_port

ROOT = Path(__file__).resolve().parent.parent

TOPIC = "taski.bench"
TESTS = 5
RAW_REPEATS = 20


def five_test_problem():
    """The lowest-rated bundled problem with exactly five tests, and its reference solution."""
    problem = min((p for p in load_problems().values() if len(p.tests) == TESTS), key=lambda p: p.difficulty)
    return problem, (ROOT / "tests" / "devtaski" / "solutions" / f"{problem.slug}.py").read_text()


def raw_costs_ms(problem, solution: str) -> tuple[float, float]:
    """Median wall time of (5 bare interpreter starts) and of (the solution on the 5 inputs, unsandboxed)."""
    python = solution_python()
    starts, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "solution.py"
        script.write_text(solution)
        for _ in range(RAW_REPEATS):
            began = time.perf_counter()
            for _ in range(TESTS):
                subprocess.run([python, "-I", "-B", "-c", "pass"], check=True)
            starts.append(time.perf_counter() - began)
            began = time.perf_counter()
            for test in problem.tests:
                subprocess.run([python, "-I", "-B", str(script)], input=test.input, capture_output=True, check=True)
            runs.append(time.perf_counter() - began)
    return statistics.median(starts) * 1000, statistics.median(runs) * 1000


def wait_for_verdicts(consumer: KafkaConsumer, ids: set[str], timeout_secs: float) -> dict[str, str]:
    verdicts: dict[str, str] = {}
    deadline = time.monotonic() + timeout_secs
    while len(verdicts) < len(ids):
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(verdicts)} of {len(ids)} verdicts after {timeout_secs}s")
        for records in consumer.poll(timeout_ms=100).values():
            for record in records:
                message = json.loads(record.value)
                if message["type"] == "verdict" and message["submission_id"] in ids:
                    verdicts[message["submission_id"]] = message["verdict"]
    return verdicts


def reader(bootstrap: str) -> KafkaConsumer:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50)
    while not consumer.partitions_for_topic(TOPIC):
        time.sleep(0.1)
        consumer.topics()
    partitions = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC)]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for partition in partitions:
        consumer.position(partition)  # resolve "end" now, before anything is submitted
    return consumer


def submit_batch(http: requests.Session, url: str, task_id: int, solution: str, count: int) -> set[str]:
    ids = set()
    for _ in range(count):
        sid = str(uuid.uuid4())
        resp = http.post(f"{url}/api/submissions", json={"submission_id": sid, "task_id": task_id, "language": "python",
                                                        "solution": solution}, timeout=10)
        resp.raise_for_status()
        ids.add(sid)
    return ids


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_secs(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def verdict_times(consumer: KafkaConsumer, ids: set[str], timeout_secs: float,
                  all_posted: threading.Event | None = None) -> tuple[dict[str, float], int]:
    """When each verdict was read (time.time()), and how many messages of these submissions came
    (`ids` may grow until `all_posted` is set)."""
    seen: dict[str, float] = {}
    messages = 0
    deadline = time.monotonic() + timeout_secs
    while not (all_posted is None or all_posted.is_set()) or len(seen) < len(ids):
        if time.monotonic() > deadline:
            break
        for records in consumer.poll(timeout_ms=100).values():
            now = time.time()
            for record in records:
                message = json.loads(record.value)
                if message["submission_id"] in ids:
                    messages += 1
                    if message["type"] == "verdict":
                        seen.setdefault(message["submission_id"], now)
    return seen, messages


@contextlib.contextmanager
def dev_taski(args: list[str]) -> Iterator[tuple[subprocess.Popen, str, str]]:
    """A broker and the dev Taski (with `args`) in a temporary directory: (its process, the
    bootstrap servers, its URL); both stopped at the end."""
    with tempfile.TemporaryDirectory(prefix="taski-bench-") as tmp:
        kafka_port, port = free_port(), free_port()
        bootstrap, url = f"127.0.0.1:{kafka_port}", f"http://127.0.0.1:{port}"
        broker = start_broker(kafka_port, Path(tmp) / "tansu.log")
        log = open(Path(tmp) / "devtaski.log", "wb")
        devtaski = subprocess.Popen(
            [sys.executable, "-m", "duely.devtaski", "--devtaski-port", str(port), "--kafka-bootstrap-servers", bootstrap,
             "--taski-topic", TOPIC, "--devtaski-state-dir", str(Path(tmp) / "state"), *args, "--log-level", "WARNING"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port("127.0.0.1", port, timeout=60)
            yield devtaski, bootstrap, url
        finally:
            devtaski.send_signal(signal.SIGTERM)
            devtaski.wait(30)
            broker.kill()
            broker.wait()
            log.close()


def instant(rate: float, seconds: float, seed: int) -> None:
    problem, _ = five_test_problem()
    rng = random.Random(seed)
    with dev_taski(["--devtaski-judge", "instant"]) as (devtaski, bootstrap, url):
        http = requests.Session()
        consumer = reader(bootstrap)

        post_secs: list[float] = []

        def post(sid: str) -> None:
            began = time.perf_counter()
            failed_on = rng.randint(1, TESTS + 1)  # TESTS + 1: Accepted
            marker = "" if failed_on > TESTS else f"# verdict: Wrong Answer on test #{failed_on}\n"
            resp = http.post(f"{url}/api/submissions", json={"submission_id": sid, "task_id": problem.id,
                                                            "language": "python", "solution": marker + "print(1)"},
                             timeout=10)
            resp.raise_for_status()
            post_secs.append(time.perf_counter() - began)

        warm = {str(uuid.uuid4()) for _ in range(5)}
        for sid in warm:
            post(sid)
        verdict_times(consumer, warm, 60)
        time.sleep(0.5)
        cpu = process_cpu_secs(devtaski.pid)
        posted: dict[str, float] = {}
        ids: set[str] = set()
        result: list = []
        all_posted = threading.Event()
        reading = threading.Thread(target=lambda: result.append(verdict_times(consumer, ids, seconds + 60, all_posted)))
        reading.start()  # reads while submitting: the verdicts' times are when they came
        began, at = time.monotonic(), 0.0
        for _ in range(int(rate * seconds)):
            at += rng.expovariate(rate)
            pause = began + at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sid = str(uuid.uuid4())
            ids.add(sid)
            posted[sid] = time.time()
            post(sid)
        all_posted.set()
        reading.join()
        seen, messages = result[0]
        cpu = process_cpu_secs(devtaski.pid) - cpu
        elapsed = time.monotonic() - began
        consumer.close()
    latencies = sorted((seen[sid] - posted[sid]) * 1000 for sid in seen)
    post_ms = sorted(secs * 1000 for secs in post_secs[len(warm):])
    print(f"instant: {len(posted)} submissions at {rate:g}/s (Poisson arrivals) in {elapsed:.1f} s, {len(seen)} verdicts, "
          f"{messages} messages ({messages / len(posted):.1f} per submission); load average {os.getloadavg()[0]:.1f}")
    print(f"dev Taski process CPU: {cpu * 1e3 / len(posted):.2f} ms/submission ({cpu / elapsed * 100:.0f}% of a core)")
    print(f"POST -> verdict read from Kafka: p50 {statistics.median(latencies):.0f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.0f} ms; the POST itself: p50 {statistics.median(post_ms):.1f} ms, "
          f"p99 {post_ms[int(len(post_ms) * 0.99) - 1]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--submissions", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sandbox", default="auto", choices=["auto", "bwrap", "rlimits"])
    parser.add_argument("--rate", type=float, help="instant mode: submissions per second to the instant judge")
    parser.add_argument("--seconds", type=float, default=20, help="instant mode: how long to submit")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.rate:
        instant(args.rate, args.seconds, args.seed)
        return

    problem, solution = five_test_problem()
    with dev_taski(["--devtaski-workers", str(args.workers), "--devtaski-sandbox", args.sandbox]) as (devtaski, bootstrap, url):
        http = requests.Session()
        sandbox = {w["sandbox"] for w in http.get(f"{url}/healthz", timeout=10).json()["workers"]}
        consumer = reader(bootstrap)
        wait_for_verdicts(consumer, submit_batch(http, url, problem.id, solution, args.workers * 2), 120)  # warm-up

        began = time.perf_counter()
        ids = submit_batch(http, url, problem.id, solution, args.submissions)
        posted = time.perf_counter() - began
        verdicts = wait_for_verdicts(consumer, ids, 600)
        elapsed = time.perf_counter() - began
        consumer.close()
        wrong = {v for v in verdicts.values() if v != "Accepted"}
        if wrong:
            raise SystemExit(f"unexpected verdicts {wrong}; see the dev Taski log")

    starts_ms, runs_ms = raw_costs_ms(problem, solution)
    per_submission_ms = elapsed * 1000 / args.submissions
    worker_ms = per_submission_ms * args.workers  # wall time one worker spends per submission
    print(f"problem: {problem.slug} ({TESTS} tests), solution: tests/devtaski/solutions/{problem.slug}.py")
    print(f"machine: {os.cpu_count()} cores; dev Taski: {args.workers} workers, sandbox {','.join(sorted(sandbox))}")
    print(f"judged: {args.submissions} submissions in {elapsed:.2f} s (POSTs took {posted:.2f} s) "
          f"-> {args.submissions / elapsed:.1f} submissions/s end to end (HTTP POST -> verdict on Kafka)")
    print(f"per submission: {per_submission_ms:.1f} ms of wall time, {worker_ms:.1f} ms of one worker's time")
    print(f"raw: python3 started {TESTS} times: {starts_ms:.1f} ms; the solution on the {TESTS} inputs, unsandboxed: {runs_ms:.1f} ms")
    print(f"ratio: judge time per submission / {TESTS} interpreter starts = {worker_ms / starts_ms:.2f}; "
          f"/ unsandboxed solution runs = {worker_ms / runs_ms:.2f}")
    print(f"ceiling if judging cost only the {TESTS} starts on {args.workers} workers: {args.workers * 1000 / starts_ms:.1f} submissions/s")


if __name__ == "__main__":
    main()
