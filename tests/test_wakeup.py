"""duely/wakeup.py: a woken loop runs on NOTIFY, and a burst of notifications under
`min_gap_secs` makes a few runs spaced by the gap, each after the notifications it serves."""

import threading
import time

import psycopg

from duely.db import psycopg_url
from duely.wakeup import WokenLoop

CHANNEL = "duely_wakeup_test"


def test_a_burst_of_wake_ups_makes_few_runs_spaced_by_the_gap(config):
    run_starts: list[float] = []
    ran = threading.Event()

    def job() -> None:
        run_starts.append(time.monotonic())
        ran.set()

    gap = 0.3
    loop = WokenLoop(config.database_url, CHANNEL, job, 3600, "wakeup-test", min_gap_secs=gap).start()
    try:
        assert ran.wait(30) and loop.listening.wait(30)  # the first run, at start
        sent_at = []
        with psycopg.connect(psycopg_url(config.database_url), autocommit=True) as conn:
            for _ in range(20):
                conn.execute(f"NOTIFY {CHANNEL}")
                sent_at.append(time.monotonic())
                time.sleep(0.03)
        deadline = time.monotonic() + 30
        while run_starts[-1] < sent_at[-1]:  # the last notification is served by a run after it
            assert time.monotonic() < deadline, "the last wake-up was never served"
            time.sleep(0.02)
        woken = run_starts[1:]
        assert 1 <= len(woken) < 20 / 2, woken  # folded: far fewer runs than notifications
        assert all(b - a >= gap * 0.95 for a, b in zip(run_starts, run_starts[1:], strict=False)), run_starts
    finally:
        loop.stop()


def test_without_a_gap_every_separate_wake_up_runs_at_once(config):
    runs = threading.Semaphore(0)
    loop = WokenLoop(config.database_url, CHANNEL, runs.release, 3600, "wakeup-test").start()
    try:
        assert runs.acquire(timeout=30) and loop.listening.wait(30)
        with psycopg.connect(psycopg_url(config.database_url), autocommit=True) as conn:
            for _ in range(3):
                conn.execute(f"NOTIFY {CHANNEL}")
                assert runs.acquire(timeout=30)  # each one served before the next is sent
        assert loop.woken_runs == 3
    finally:
        loop.stop()
