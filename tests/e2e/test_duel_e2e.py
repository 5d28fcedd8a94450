"""A whole duel on the real stack: PostgreSQL, broker, dev Taski, gunicorn (gevent), scheduler
and consumer as processes, two players over HTTP, each following their own event log."""

from __future__ import annotations

import signal
import time

from tests.fixtures.stack import HttpPlayer, reference_solution

WRONG = "print(0)\n"


def of_type(kind, **match):
    return lambda e: e["type"] == kind and all(e["data"].get(k) == v for k, v in match.items())


def assert_gapless(player: HttpPlayer) -> None:
    ids = [e["id"] for e in player.events]
    assert ids == list(range(1, len(ids) + 1)), ids


def start_duel(stack) -> tuple[HttpPlayer, HttpPlayer, int, dict]:
    alice, bob = HttpPlayer(stack.url, "alice"), HttpPlayer(stack.url, "bob")
    for p in (alice, bob):
        assert p.call("POST", "/api/queue").status_code == 202
    started = alice.wait_for(of_type("duel_started"), 40, "duel_started")
    bob.wait_for(of_type("duel_started", duel_id=started["data"]["duel_id"]), 20, "duel_started")
    return alice, bob, started["data"]["duel_id"], started["data"]["task"]


def test_two_players_play_a_whole_duel(make_stack, devtaski):
    stack = make_stack(devtaski.url)
    alice, bob, duel_id, task = start_duel(stack)
    assert [e["type"] for e in alice.events] == ["queue_joined", "queue_left", "duel_started"]
    duel = alice.call("GET", f"/api/duels/{duel_id}").json()
    assert duel["status"] == "active" and duel["task"]["statement"]

    # A wrong submission: stored, judged, the opponent hears only the verdict.
    resp = alice.call("POST", f"/api/duels/{duel_id}/submit", json={"solution": WRONG, "language": "python",
                                                                   "client_temp_id": "w1"})
    assert resp.status_code == 202
    wrong_id = resp.json()["submission_id"]
    verdict = alice.wait_for(of_type("submission_verdict", submission_id=wrong_id), 60, "verdict")["data"]["verdict"]
    assert verdict != "Accepted" and "on test #" in verdict
    created = [e for e in alice.events if e["type"] == "submission_created"]
    assert created[0]["data"]["submission_id"] == wrong_id and created[0]["data"]["client_temp_id"] == "w1"
    heard = bob.wait_for(of_type("opponent_verdict", duel_id=duel_id), 20, "opponent_verdict")
    assert heard["data"]["verdict"] == verdict and "solution" not in heard["data"]
    assert all(s["solution"] is None or s["user_id"] == bob.id
               for s in bob.call("GET", f"/api/duels/{duel_id}/submissions").json()["submissions"])

    # The right one: progress test by test, then Accepted, then the duel is over.
    resp = alice.call("POST", f"/api/duels/{duel_id}/submit", json={"solution": reference_solution(task["id"]),
                                                                   "language": "python"})
    good_id = resp.json()["submission_id"]
    finished = alice.wait_for(of_type("duel_finished", duel_id=duel_id), 90, "duel_finished")
    mine = [e for e in alice.events if e["data"].get("submission_id") == good_id]
    assert [e["type"] for e in mine][0] == "submission_created"
    assert [e["type"] for e in mine][-1] == "submission_verdict" and mine[-1]["data"]["verdict"] == "Accepted"
    assert any(e["type"] == "submission_update" and e["data"]["status"].startswith("Test #") for e in mine)
    data = finished["data"]
    assert (data["outcome"], data["winner_id"], data["reason"]) == ("win", alice.id, "accepted")
    assert data["rating_changes"][str(alice.id)] > 0 > data["rating_changes"][str(bob.id)]
    bob_finished = bob.wait_for(of_type("duel_finished", duel_id=duel_id), 20, "duel_finished")
    assert bob_finished["data"] == data

    # History and the finished duel, as anyone sees them.
    me = alice.call("GET", "/api/users/me").json()
    assert me["rating"] == 1500 + data["rating_changes"][str(alice.id)] and me["duels"]["won"] == 1
    history = bob.call("GET", f"/api/users/{alice.id}/duels").json()
    assert history["duels"][0]["id"] == duel_id and history["duels"][0]["result"]["winner_id"] == alice.id
    subs = bob.call("GET", f"/api/duels/{duel_id}/submissions").json()["submissions"]
    assert [s["verdict"] == "Accepted" for s in subs] == [False, True] and all(s["solution"] for s in subs)
    assert alice.call("POST", f"/api/duels/{duel_id}/submit", json={"solution": WRONG, "language": "python"}).status_code == 409
    for p in (alice, bob):
        assert_gapless(p)


def test_kill_9_of_scheduler_and_consumer_loses_and_doubles_nothing(make_stack, devtaski):
    stack = make_stack(devtaski.url, judge_timeout=4)
    alice, bob, duel_id, task = start_duel(stack)
    stack.consumer.kill(signal.SIGKILL)
    ids = []
    for i in range(3):
        resp = alice.call("POST", f"/api/duels/{duel_id}/submit",
                          json={"solution": WRONG + f"# {i}\n", "language": "python", "client_temp_id": f"k{i}"})
        ids.append(resp.json()["submission_id"])
    time.sleep(1.5)                      # the scheduler is dispatching them; verdicts pile up in Kafka
    stack.scheduler.kill(signal.SIGKILL)
    time.sleep(1)
    stack.scheduler.start()
    stack.consumer.start()
    for sid in ids:
        alice.wait_for(of_type("submission_verdict", submission_id=sid), 90, f"verdict of {sid}")
    good = alice.call("POST", f"/api/duels/{duel_id}/submit", json={"solution": reference_solution(task["id"]),
                                                                   "language": "python"}).json()["submission_id"]
    alice.wait_for(of_type("duel_finished"), 90, "duel_finished")
    bob.wait_for(of_type("duel_finished"), 30, "duel_finished")
    time.sleep(2)                        # any duplicate would arrive now
    alice.poll(timeout=0)
    bob.poll(timeout=0)
    for sid in ids + [good]:
        assert sum(1 for e in alice.events if e["type"] == "submission_verdict" and e["data"]["submission_id"] == sid) == 1
    assert sum(1 for e in bob.events if e["type"] == "opponent_verdict") == 4
    assert sum(1 for e in alice.events if e["type"] == "duel_finished") == 1
    for p in (alice, bob):
        assert_gapless(p)
