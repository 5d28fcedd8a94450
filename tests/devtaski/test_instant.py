"""DEVTASKI_JUDGE=instant: the same HTTP and Kafka contract, no code run, the verdict from a marker."""

from __future__ import annotations

import uuid

import pytest

from duely.devtaski.instant import passed_count, verdict_for
from tests.fixtures.devtaski import TopicReader

SLUG = "a-plus-b"


def test_the_marker_names_the_verdict_and_accepted_is_the_default():
    assert verdict_for("print(1)\n") == "Accepted"
    assert verdict_for("x = 1\n# verdict: Wrong Answer on test #2\n") == "Wrong Answer on test #2"
    assert verdict_for("int main() {}\n  // Verdict: Compilation Error  \n") == "Compilation Error"
    assert verdict_for("s = 'verdict: Wrong Answer'\n") == "Accepted"  # only a comment line counts
    assert passed_count("Accepted", 5) == 5
    assert passed_count("Wrong Answer on test #3", 5) == 2
    assert passed_count("Time Limit Exceeded on test #9", 5) == 5
    assert passed_count("Compilation Error", 5) == 0


@pytest.fixture
def instant(start_devtaski, kafka_bootstrap):
    topic = f"instant-{uuid.uuid4().hex[:8]}"
    server = start_devtaski(topic=topic, extra_args=("--devtaski-judge", "instant"))
    reader = TopicReader(kafka_bootstrap, topic)
    yield server, reader
    reader.close()


def test_instant_judging_keeps_the_contract(instant, problem_by_slug):
    server, reader = instant
    problem = problem_by_slug[SLUG]
    accepted = server.submit(problem.id, "this is not even python\n")
    wrong = server.submit(problem.id, "print(0)\n# verdict: Wrong Answer on test #2\n")

    messages = reader.wait_for(accepted)
    assert [m["type"] for m in messages] == ["update"] * len(problem.tests) + ["verdict"]
    assert [m["seq"] for m in messages] == list(range(1, len(problem.tests) + 2))
    assert messages[-1]["verdict"] == "Accepted"
    assert messages[0]["status"] == "Test #1 passed"

    messages = reader.wait_for(wrong)
    assert [(m["type"], m["seq"]) for m in messages] == [("update", 1), ("verdict", 2)]
    assert messages[-1]["verdict"] == "Wrong Answer on test #2"

    # Idempotent as ever: a re-send judges nothing again and re-publishes the same verdict.
    server.submit(problem.id, "print(0)\n", submission_id=wrong)
    again = reader.wait_for(wrong, lambda ms: len(ms) == 3)
    assert again[-1] == messages[-1]
    assert server.state(wrong)["judgings"] == 1
    # The contract's 400s still hold.
    resp = server.post("/api/submissions", json={"submission_id": "x", "task_id": 999999, "language": "python",
                                                 "solution": "1"})
    assert resp.status_code == 400 and "unknown task" in resp.json()["message"]
    assert server.get("/healthz").json()["workers"] == [{"uid": -1, "sandbox": "instant"}]
