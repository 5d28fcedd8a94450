"""Fault switches: the dev Taski misbehaves exactly as asked, and recovers when they are reset."""

from __future__ import annotations

import threading
import time

from tests.devtaski.helpers import assert_judged_cleanly

SOLVE = "a, b = map(int, input().split())\nprint(a + b)\n"


def test_rate_limit_answers_429_with_retry_after_then_recovers(devtaski):
    devtaski.set_faults({"rate_limit": {"count": 2, "retry_after": 3}})
    for _ in range(2):
        resp = devtaski.get("/api/tasks/1")
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "3"
        assert resp.json()["error"]["code"] == "rate_limited"
    assert devtaski.get("/api/tasks/1").status_code == 200


def test_rate_limit_applies_to_submissions_and_judges_nothing(devtaski, taski_messages, problem_by_slug):
    devtaski.set_faults({"rate_limit": {"count": 1, "retry_after": 1}})
    payload = {"submission_id": "rate-limited-" + str(time.time_ns()), "task_id": problem_by_slug["a-plus-b"].id,
               "language": "python", "solution": SOLVE}
    assert devtaski.post("/api/submissions", json=payload).status_code == 429
    assert devtaski.get(f"/admin/submissions/{payload['submission_id']}").status_code == 404
    assert devtaski.post("/api/submissions", json=payload).status_code == 202  # the client's retry goes through
    assert taski_messages.verdict(payload["submission_id"])["verdict"] == "Accepted"


def test_server_error_answers_5xx_then_recovers(devtaski):
    devtaski.set_faults({"server_error": {"count": 2}})
    assert [devtaski.get("/api/languages").status_code for _ in range(3)] == [503, 503, 200]
    devtaski.set_faults({"server_error": {"count": 1, "status": 500}})
    assert devtaski.get("/api/languages").status_code == 500


def test_slow_delays_requests(devtaski):
    devtaski.set_faults({"slow": {"delay_ms": 600, "count": 1}})
    started = time.monotonic()
    assert devtaski.get("/api/languages").status_code == 200
    assert time.monotonic() - started >= 0.6
    started = time.monotonic()
    devtaski.get("/api/languages")
    assert time.monotonic() - started < 0.5


def test_a_slow_request_does_not_hold_up_the_others(devtaski):
    devtaski.set_faults({"slow": {"delay_ms": 3000, "count": 1}})
    slow = threading.Thread(target=lambda: devtaski.get("/api/languages"))
    slow.start()
    while (devtaski.get("/admin/faults").json().get("slow") or {}).get("remaining"):  # the slow one took the fault
        time.sleep(0.01)
    assert devtaski.get("/api/languages").status_code == 200
    assert slow.is_alive()  # answered while the slow one still waits (one server thread: it must not block)
    slow.join()


def test_admin_endpoints_show_and_reset_faults_and_are_never_faulted(devtaski):
    shown = devtaski.set_faults({"server_error": {"count": 5}, "kafka_duplicate": True})
    assert shown["server_error"]["remaining"] == 5 and shown["kafka_duplicate"] is True
    assert devtaski.get("/admin/faults").status_code == 200
    devtaski.get("/api/languages")
    assert devtaski.get("/admin/faults").json()["server_error"]["remaining"] == 4
    devtaski.reset_faults()
    assert devtaski.get("/admin/faults").json() == {}
    assert devtaski.get("/api/languages").status_code == 200


def test_invalid_fault_spec_is_400(devtaski):
    resp = devtaski.post("/admin/faults", json={"earthquake": {"count": 1}})
    assert resp.status_code == 400 and "earthquake" in resp.json()["message"]


def test_kafka_duplicate_publishes_every_message_twice(devtaski, taski_messages, problem_by_slug):
    problem = problem_by_slug["a-plus-b"]
    devtaski.set_faults({"kafka_duplicate": True})
    sid = devtaski.submit(problem.id, SOLVE)
    messages = taski_messages.wait_for(sid, lambda ms: sum(m["type"] == "verdict" for m in ms) == 2)
    messages = taski_messages.settle(sid, 0.3)
    assert messages[::2] == messages[1::2]  # each one immediately repeated
    assert_judged_cleanly(messages[::2], len(problem.tests), "Accepted")


def test_kafka_reorder_publishes_a_submissions_messages_newest_first(devtaski, taski_messages, problem_by_slug):
    problem = problem_by_slug["a-plus-b"]
    devtaski.set_faults({"kafka_reorder": True})
    sid = devtaski.submit(problem.id, SOLVE)
    messages = taski_messages.wait_for(sid, lambda ms: len(ms) == len(problem.tests) + 1)
    assert messages[0]["type"] == "verdict"
    assert [m["seq"] for m in messages] == sorted((m["seq"] for m in messages), reverse=True)
    assert_judged_cleanly(sorted(messages, key=lambda m: m["seq"]), len(problem.tests), "Accepted")
