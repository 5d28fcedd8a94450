"""Crashes and restarts: of the dev Taski itself (kill -9 mid-judging), of the broker (memory-only
tansu comes back empty), and judging without bubblewrap. Each test runs its own dev Taski."""

from __future__ import annotations

import subprocess
import time

import psutil
import pytest

from duely.infra import free_port, start_broker
from tests.devtaski.helpers import assert_judged_cleanly
from tests.fixtures.devtaski import TopicReader

SOLVE = "a, b = map(int, input().split())\nprint(a + b)\n"
SLOW_SOLVE = "import time\ntime.sleep(0.3)\n" + SOLVE


def processes_of(uids: list[int]) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real in uids]


def wait_until(condition, timeout_secs: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_secs
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout_secs}s")
        time.sleep(0.05)


def test_kill_9_mid_judging_then_restart_and_resend(start_devtaski, taski_messages, problem_by_slug):
    problem = problem_by_slug["a-plus-b"]
    devtaski = start_devtaski()
    judged = devtaski.submit(problem.id, SOLVE)
    judged_verdict = taski_messages.verdict(judged)
    uids = devtaski.worker_uids()
    workers = psutil.Process(devtaski.proc.pid).children()

    interrupted = devtaski.submit(problem.id, SLOW_SOLVE)
    taski_messages.wait_for(interrupted, lambda ms: any(m["type"] == "update" for m in ms))
    devtaski.kill()
    # the workers and whatever they were running die with the service
    wait_until(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers), what="workers gone")
    wait_until(lambda: processes_of(uids) == [], what="sandboxed processes gone")
    assert not has_verdict_now(taski_messages, interrupted)

    devtaski.start()
    devtaski.submit(problem.id, SOLVE, submission_id=judged)  # judged before the crash: verdict re-published
    devtaski.submit(problem.id, SLOW_SOLVE, submission_id=interrupted)  # was mid-judging: judged again
    messages = taski_messages.wait_for(judged, lambda ms: sum(m["type"] == "verdict" for m in ms) == 2)
    assert [m for m in messages if m["type"] == "verdict"] == [judged_verdict, judged_verdict]
    assert taski_messages.verdict(interrupted)["verdict"] == "Accepted"
    assert devtaski.state(interrupted)["judgings"] == 1 and devtaski.state(judged)["judgings"] == 0


def without_repeats(messages: list[dict]) -> list[dict]:
    unique: list[dict] = []
    for message in messages:
        if message not in unique:
            unique.append(message)
    return unique


def has_verdict_now(reader: TopicReader, sid: str) -> bool:
    return any(m["type"] == "verdict" for m in reader.settle(sid, 0.3))


@pytest.fixture
def own_broker(tmp_path):
    """A broker of this test's own, which it may kill and restart (memory-only: it comes back empty)."""
    port = free_port()
    log_path = tmp_path / "tansu.log"
    state = {"proc": start_broker(port, log_path)}

    def restart() -> None:
        state["proc"].kill()
        state["proc"].wait()
        state["proc"] = start_broker(port, log_path)

    def stop() -> None:
        state["proc"].kill()
        state["proc"].wait()

    yield {"bootstrap": f"127.0.0.1:{port}", "restart": restart, "stop": stop, "start": lambda: state.update(
        proc=start_broker(port, log_path))}
    state["proc"].kill()
    try:
        state["proc"].wait(5)
    except subprocess.TimeoutExpired:
        pass


def test_publishing_survives_a_broker_that_restarts_empty(own_broker, start_devtaski, problem_by_slug):
    problem = problem_by_slug["a-plus-b"]
    devtaski = start_devtaski(kafka_bootstrap=own_broker["bootstrap"], topic="taski.restart-test")
    reader = TopicReader(own_broker["bootstrap"], devtaski.topic)
    before = devtaski.submit(problem.id, SOLVE)
    verdict_before = reader.verdict(before)
    reader.close()

    own_broker["stop"]()
    during = devtaski.submit(problem.id, SOLVE)  # judged while there is no broker at all
    wait_until(lambda: devtaski.state(during)["status"] == "judged", what="judged without a broker")
    own_broker["start"]()  # empty: no topic, no messages

    devtaski.submit(problem.id, SOLVE, submission_id=before)  # Duely's recovery: re-send
    reader = TopicReader(own_broker["bootstrap"], devtaski.topic)
    try:
        assert reader.verdict(before) == verdict_before
        # at least once: a send the broker failed to acknowledge may have landed and is sent again
        delivered = reader.wait_for(during)
        assert [m["seq"] for m in delivered] == sorted(m["seq"] for m in delivered)
        assert_judged_cleanly(without_repeats(delivered), len(problem.tests), "Accepted")
        after = devtaski.submit(problem.id, SOLVE)
        assert reader.verdict(after)["verdict"] == "Accepted"
    finally:
        reader.close()
    assert devtaski.running


def test_without_bubblewrap_limits_still_hold(start_devtaski, taski_messages, problem_by_slug):
    problem = problem_by_slug["a-plus-b"]
    devtaski = start_devtaski(extra_args=("--devtaski-sandbox", "rlimits"))
    assert {w["sandbox"] for w in devtaski.get("/healthz").json()["workers"]} == {"rlimits"}
    uids = devtaski.worker_uids()
    cases = {
        SOLVE: "Accepted",
        "hoard = []\nwhile True:\n    hoard.append(bytearray(10**7))\n": "Memory Limit Exceeded on test #1",
        "print(1 // 0)\n": "Runtime Error on test #1",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n": None,
    }
    ids = {devtaski.submit(problem.id, source): expected for source, expected in cases.items()}
    for sid, expected in ids.items():
        verdict = taski_messages.verdict(sid)["verdict"]
        if expected is None:  # the fork bomb: stopped one way or the other
            assert verdict in ("Time Limit Exceeded on test #1", "Runtime Error on test #1")
        else:
            assert verdict == expected
    wait_until(lambda: processes_of(uids) == [], what="sandboxed processes gone")
