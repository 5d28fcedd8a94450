"""Nothing is lost when judge messages are lost (issue 8): the memory-only broker is killed
mid-judging and a fresh, empty one takes its port; the dev Taski is killed -9 mid-judging.
Every submission still reaches `judged` with the right verdict, each verdict event appears
exactly once in each log, and the duel finishes correctly."""

from __future__ import annotations

import time

from duely.infra import free_port, start_broker
from tests.e2e.test_duel_e2e import WRONG, assert_gapless, of_type, start_duel
from tests.fixtures.stack import reference_solution

SLOW_WRONG = "import time\ntime.sleep(1.0)\nprint(0)\n"  # judged slowly enough to be caught mid-way


def submit(player, duel_id, solution, key):
    resp = player.call("POST", f"/api/duels/{duel_id}/submit", json={"solution": solution, "language": "python",
                                                                    "client_temp_id": key})
    assert resp.status_code == 202, resp.text
    return resp.json()["submission_id"]


def finish_and_check(alice, bob, duel_id, task, submitted: dict[str, str]) -> None:
    for sid, owner in submitted.items():
        player = alice if owner == "alice" else bob
        player.wait_for(of_type("submission_verdict", submission_id=sid), 120, f"verdict of {sid}")
    good = submit(bob, duel_id, reference_solution(task["id"]), "good")
    finished = bob.wait_for(of_type("duel_finished", duel_id=duel_id), 120, "duel_finished")
    assert (finished["data"]["winner_id"], finished["data"]["reason"]) == (bob.id, "accepted")
    alice.wait_for(of_type("duel_finished", duel_id=duel_id), 30, "duel_finished")
    time.sleep(2)  # duplicates, if any, would arrive now
    alice.poll(timeout=0)
    bob.poll(timeout=0)
    submitted = {**submitted, good: "bob"}
    for sid, owner in submitted.items():
        me, them = (alice, bob) if owner == "alice" else (bob, alice)
        verdicts = [e["data"]["verdict"] for e in me.events if e["type"] == "submission_verdict"
                    and e["data"]["submission_id"] == sid]
        assert len(verdicts) == 1, (sid, verdicts)
        assert (verdicts[0] == "Accepted") == (sid == good) and not verdicts[0].startswith("Rejected")
    for me, them in ((alice, bob), (bob, alice)):
        mine = sum(1 for o in submitted.values() if o == me.nickname)
        assert sum(1 for e in them.events if e["type"] == "opponent_verdict") == mine
        assert sum(1 for e in me.events if e["type"] == "duel_finished") == 1
        assert_gapless(me)
    subs = alice.call("GET", f"/api/duels/{duel_id}/submissions").json()["submissions"]
    assert sorted(s["id"] for s in subs) == sorted(submitted) and all(s["state"] == "judged" for s in subs)


def test_broker_replaced_by_an_empty_one_mid_judging(make_stack, start_devtaski, tmp_path):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_broker(port, tmp_path / "broker-1.log")
    try:
        taski = start_devtaski(kafka_bootstrap=bootstrap)
        stack = make_stack(taski.url, kafka_bootstrap_servers=bootstrap, judge_timeout=5)
        alice, bob, duel_id, task = start_duel(stack)
        submitted = {submit(alice, duel_id, SLOW_WRONG + f"# {i}\n", f"a{i}"): "alice" for i in range(3)}
        submitted[submit(bob, duel_id, WRONG, "b0")] = "bob"
        time.sleep(2)  # some judged and consumed, some mid-judging, some still queued in Taski
        broker.kill()
        broker.wait()
        broker = start_broker(port, tmp_path / "broker-2.log")  # memory-only: no topic, no offsets
        finish_and_check(alice, bob, duel_id, task, submitted)
    finally:
        broker.kill()
        broker.wait()


def test_dev_taski_killed_mid_judging_and_restarted(make_stack, start_devtaski):
    taski = start_devtaski()
    stack = make_stack(taski.url, judge_timeout=5)
    alice, bob, duel_id, task = start_duel(stack)
    submitted = {submit(alice, duel_id, SLOW_WRONG + f"# {i}\n", f"a{i}"): "alice" for i in range(3)}
    submitted[submit(bob, duel_id, WRONG, "b0")] = "bob"
    time.sleep(2)
    taski.kill()            # SIGKILL, as kill -9
    time.sleep(1)
    taski.start()           # same port and state directory
    finish_and_check(alice, bob, duel_id, task, submitted)
