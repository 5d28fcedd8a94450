"""Verdicts applied per second by one consumer (issue 5).

Starts its own embedded PostgreSQL and tansu broker, makes N submissions in N/2 duels,
publishes for each submission 3 `update` messages and a final `verdict` (a few Accepted, so
some duels finish on the way), then measures in the same run:
  baseline  raw kafka-python read rate of those messages (no database);
  consumer  duely.verdicts.consume applying them (one transaction per poll batch, events included).
Prints messages/s, verdicts/s, the process CPU per message (the consumer's cost; the database
server's CPU is not included) and the ratio consumer/baseline; then, in process, statements and
client CPU per submission when each batch is one submission's messages (the instant judge's
pattern: a submission's messages arrive together, so the swarm's batches are small).

    .venv/bin/python bench/verdicts.py [--submissions 2000] [--updates 3]

Steady mode (`--rate`), the instant judge's pattern: consumer.py runs as its own process and
the bench publishes one submission's 2-12 messages at a time (1-11 updates and the verdict,
sent together), N submissions a second (Poisson arrivals, or `--even`) for S seconds. Prints the consumer process's CPU (from
/proc, user + system, its idle polling included) per submission and per message, and publish ->
verdict applied (the submission's judged_at) p50 / p99. Run it at 25/s and 100/s to see batching:

    .venv/bin/python bench/verdicts.py --rate 25 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's duely, not an installed one

from kafka import KafkaConsumer, KafkaProducer  # noqa: E402
from sqlalchemy import event, text  # noqa: E402

from duely import duels, eventlog, verdicts  # noqa: E402
from duely.config import Config  # noqa: E402
from duely.db import Database  # noqa: E402
from duely.infra import free_port, start_broker, start_embedded_postgres, stop_embedded_postgres  # noqa: E402
from duely.migrate import upgrade  # noqa: E402

UPDATES_PER_SUBMISSION = 3  # the default; the swarm's instant judge averages ~5 messages per submission


def make_submissions(db: Database, count: int, prefix: str = "u") -> list[str]:
    ids: list[str] = []
    with db.transaction() as s:
        users = sorted(s.execute(text(
            "INSERT INTO users (nickname, password_hash) SELECT :p || g, 'x' FROM generate_series(1, :n) g RETURNING id"),
            {"n": count, "p": prefix}).scalars())
    task = {"id": 1, "title": "t", "statement": "s"}
    for pair in range(count // 2):
        a, b = users[2 * pair], users[2 * pair + 1]

        def act(s, a=a, b=b):
            eventlog.lock_users(s, (a, b))
            duel_id = duels.create_duel(s, (a, b), task, 3600)
            out = []
            for uid in (a, b):
                sid = uuid.uuid4()
                s.execute(text("INSERT INTO submissions (id, duel_id, user_id, language, solution, status) "
                               "VALUES (:i, :d, :u, 'python', 'print(1)', 'testing')"), {"i": sid, "d": duel_id, "u": uid})
                out.append(str(sid))
            return out

        ids.extend(db.run(act))
    return ids


def messages_of(i: int, sid: str, updates: int) -> list[bytes]:
    """The i-th submission's messages: `updates` progress messages, then its verdict (1 in 10 Accepted)."""
    out = [json.dumps({"submission_id": sid, "seq": seq, "type": "update", "status": f"Test #{seq} passed"}).encode()
           for seq in range(1, updates + 1)]
    verdict = "Accepted" if i % 10 == 0 else "Wrong Answer on test #4"
    out.append(json.dumps({"submission_id": sid, "seq": updates + 1, "type": "verdict", "verdict": verdict}).encode())
    return out


def publish(bootstrap: str, topic: str, submission_ids: list[str], updates: int) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    sent = 0
    for i, sid in enumerate(submission_ids):
        for value in messages_of(i, sid, updates):
            producer.send(topic, key=sid.encode(), value=value)
            sent += 1
    producer.flush()
    producer.close()
    return sent


def small_batches(db: Database, count: int, updates: int) -> tuple[float, float]:
    """In process, no broker: `count` fresh submissions, each one's messages applied as one batch
    (what the consumer gets from the instant judge: a submission's messages arrive together).
    Returns statements and client CPU seconds (this thread; the database server's not included)
    per submission."""
    ids = make_submissions(db, count, prefix="v")
    statements = 0

    def counted(*_args) -> None:
        nonlocal statements
        statements += 1

    event.listen(db.engine, "before_cursor_execute", counted)
    cpu = time.thread_time()
    for i, sid in enumerate(ids):
        batch = [(value, f"bench@{i}") for value in messages_of(i, sid, updates)]
        db.run(lambda s, batch=batch: verdicts.apply_batch(s, batch))
    cpu = time.thread_time() - cpu
    event.remove(db.engine, "before_cursor_execute", counted)
    return statements / count, cpu / count


def raw_read_rate(bootstrap: str, topic: str, expected: int) -> tuple[float, float]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
                             heartbeat_interval_ms=1000)
    got, started, cpu = 0, None, 0.0
    deadline = time.monotonic() + 120
    while got < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500, max_records=200).values():
            if started is None:
                started, cpu = time.perf_counter(), time.process_time()
            got += len(records)
        if got:
            consumer.commit()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    consumer.close()
    return got / elapsed, cpu / got


def consumer_rate(db: Database, config: Config, submission_ids: list[str], messages: int) -> tuple[float, float, float]:
    """Messages/s, verdicts/s, and process CPU seconds per message (the consumer thread, its
    broker client and this watching loop: ~all of it the consumer's) from the first change on."""
    stop = threading.Event()
    thread = threading.Thread(target=verdicts.consume, args=(db, config, stop), daemon=True)
    thread.start()
    started, cpu = None, 0.0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with db.transaction() as s:
            judged, touched = s.execute(text(
                "SELECT count(*) FILTER (WHERE status = 'judged'), count(*) FILTER (WHERE last_seq > 0) FROM submissions"
            )).one()
        if touched and started is None:
            started, cpu = time.perf_counter(), time.process_time()
        if judged == len(submission_ids):
            break
        time.sleep(0.05)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    stop.set()
    thread.join(30)
    return messages / elapsed, len(submission_ids) / elapsed, cpu / messages


ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_secs(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def judged_at(db: Database, ids: list[str]) -> dict[str, float]:
    with db.transaction() as s:
        rows = s.execute(text("SELECT id::text, extract(epoch FROM judged_at) FROM submissions "
                              "WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'judged'"), {"ids": ids}).all()
    return {sid: float(at) for sid, at in rows}


def verdict_transactions(db: Database, ids: list[str]) -> int:
    """How many transactions wrote these submissions' verdicts (their rows' xmin): ~ the consumer's batches."""
    with db.transaction() as s:
        return s.execute(text("SELECT count(DISTINCT xmin::text) FROM submissions WHERE id = ANY(CAST(:ids AS uuid[]))"),
                         {"ids": ids}).scalar_one()


def wait_judged(db: Database, ids: list[str], timeout_secs: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout_secs
    while True:
        done = judged_at(db, ids)
        if len(done) == len(ids) or time.monotonic() > deadline:
            return done
        time.sleep(0.05)


def steady(url: str, bootstrap: str, rate: float, seconds: float, seed: int, even: bool) -> None:
    """consumer.py in its own process; one submission's messages published together, `rate` a second."""
    db = Database(url)
    topic = "taski.steady"
    count = int(rate * seconds)
    ids = make_submissions(db, count + 2, prefix="s")
    warm, ids = ids[:2], ids[2:]
    rng = random.Random(seed)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    env = {**os.environ, "DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TASKI_TOPIC": topic,
           "DUELY_CONSUMER_GROUP": "steady", "LOG_LEVEL": "WARNING"}
    consumer = subprocess.Popen([sys.executable, str(ROOT / "consumer.py")], cwd=ROOT, env=env)
    try:
        def send(i: int, sid: str) -> int:
            messages = messages_of(i, sid, rng.randint(1, 11))
            for value in messages:
                producer.send(topic, key=sid.encode(), value=value)
            producer.flush()
            return len(messages)

        for i, sid in enumerate(warm):  # the consumer joins its group and reads them: start-up is not measured
            send(i, sid)
        if len(wait_judged(db, warm, 120)) != len(warm):
            raise SystemExit("the consumer did not apply the warm-up submissions")
        time.sleep(0.5)
        cpu, sent, published = process_cpu_secs(consumer.pid), 0, {}
        began, at = time.monotonic(), 0.0
        for i, sid in enumerate(ids):
            at += 1 / rate if even else rng.expovariate(rate)  # independent players: Poisson arrivals
            pause = began + at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            published[sid] = time.time()
            sent += send(i + 2, sid)
        done = wait_judged(db, ids, 120)
        cpu = process_cpu_secs(consumer.pid) - cpu
        elapsed = time.monotonic() - began
        transactions = verdict_transactions(db, ids)
    finally:
        consumer.terminate()
        consumer.wait(30)
        producer.close()
        db.dispose()
    latencies = sorted((done[sid] - published[sid]) * 1000 for sid in done)
    arrivals = "evenly spaced" if even else "Poisson arrivals"
    print(f"steady: {len(ids)} submissions at {rate:g}/s ({arrivals}) ({sent} messages, {sent / len(ids):.1f} per submission) "
          f"in {elapsed:.1f} s; applied {len(done)}, in {transactions} transactions "
          f"({len(done) / transactions:.2f} verdicts per batch); load average {os.getloadavg()[0]:.1f}")
    print(f"consumer.py process CPU: {cpu * 1e3 / len(ids):.2f} ms/submission, {cpu * 1e3 / sent:.3f} ms/message "
          f"({cpu / elapsed * 100:.0f}% of a core)")
    print(f"publish -> verdict applied: p50 {statistics.median(latencies):.0f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=2000)
    parser.add_argument("--updates", type=int, default=UPDATES_PER_SUBMISSION, help="progress messages per submission")
    parser.add_argument("--rate", type=float, help="steady mode: submissions per second (consumer.py as a process)")
    parser.add_argument("--seconds", type=float, default=20, help="steady mode: how long to publish")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--even", action="store_true", help="steady mode: evenly spaced submissions, not Poisson arrivals")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = start_embedded_postgres(Path(tmp) / "pg", cleanup_mode=None)
        port = free_port()
        broker = start_broker(port, Path(tmp) / "tansu.log")
        bootstrap = f"127.0.0.1:{port}"
        try:
            upgrade(url)
            if args.rate:
                steady(url, bootstrap, args.rate, args.seconds, args.seed, args.even)
                return
            db = Database(url)
            topic = "taski.bench"
            ids = make_submissions(db, args.submissions)
            messages = publish(bootstrap, topic, ids, args.updates)
            baseline, baseline_cpu = raw_read_rate(bootstrap, topic, messages)
            config = Config(database_url=url, kafka_bootstrap_servers=bootstrap, taski_topic=topic, duely_consumer_group="bench")
            msg_rate, verdict_rate, cpu = consumer_rate(db, config, ids, messages)
            with db.transaction() as s:
                finished = s.execute(text("SELECT count(*) FROM duels WHERE status = 'finished'")).scalar_one()
                event_count = s.execute(text("SELECT count(*) FROM events")).scalar_one()
            print(f"submissions: {len(ids)}, messages: {messages} ({args.updates} updates + 1 verdict each)")
            print(f"baseline  raw Kafka read (no database):     {baseline:10.0f} messages/s"
                  f"  CPU {baseline_cpu * 1e3:.3f} ms/message")
            print(f"consumer  applied with events, txn per batch:{msg_rate:10.0f} messages/s  = {verdict_rate:.0f} verdicts/s"
                  f"  CPU {cpu * 1e3:.3f} ms/message")
            print(f"ratio consumer/baseline: {msg_rate / baseline:.3f}")
            print(f"duels finished on the way: {finished}; events written: {event_count}")
            per_statements, per_cpu = small_batches(db, min(args.submissions, 400), args.updates)
            print(f"one submission's messages per batch (in process): {per_statements:.1f} statements/submission,"
                  f"  client CPU {per_cpu * 1e3:.2f} ms/submission")
            db.dispose()
        finally:
            broker.terminate()
            broker.wait()
            stop_embedded_postgres(Path(tmp) / "pg")


if __name__ == "__main__":
    main()
