"""Finishing duels: the contract's "who wins" rule, ratings in the same transaction, history."""

from __future__ import annotations

from sqlalchemy import text

from duely import duels
from duely.jobs import finish_job
from tests.fixtures.stack import event_types
from tests.test_submissions import submit
from tests.test_verdicts import apply, msg


def duel_state(user, duel_id):
    return user.get(f"/api/duels/{duel_id}").get_json()


def test_earlier_submission_still_testing_blocks_a_later_accepted(make_user, duel_between, db, runtime):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    early = submit(alice, duel_id).get_json()["submission_id"]   # submitted first, judged last
    late = submit(bob, duel_id).get_json()["submission_id"]
    apply(db, msg(late, 1, "verdict", "Accepted"))
    finish_job(runtime)
    assert duel_state(alice, duel_id)["status"] == "active"     # alice's earlier one may still win
    apply(db, msg(early, 1, "verdict", "Accepted"))
    finished = duel_state(alice, duel_id)
    assert finished["status"] == "finished"
    assert finished["result"] == {"outcome": "win", "winner_id": alice.id, "reason": "accepted"}
    assert finished["rating_changes"][str(alice.id)] > 0 > finished["rating_changes"][str(bob.id)]


def test_later_accepted_wins_once_earlier_opponent_submission_fails(make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    early = submit(alice, duel_id).get_json()["submission_id"]
    late = submit(bob, duel_id).get_json()["submission_id"]
    apply(db, msg(late, 1, "verdict", "Accepted"))
    apply(db, msg(early, 1, "verdict", "Wrong Answer on test #1"))
    result = duel_state(bob, duel_id)["result"]
    assert result == {"outcome": "win", "winner_id": bob.id, "reason": "accepted"}


def test_finish_writes_ratings_records_and_events_together(make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    sid = submit(alice, duel_id).get_json()["submission_id"]
    apply(db, msg(sid, 1, "verdict", "Accepted"))
    me, other = alice.get("/api/users/me").get_json(), bob.get("/api/users/me").get_json()
    duel = duel_state(alice, duel_id)
    assert me["rating"] - 1500 == duel["rating_changes"][str(alice.id)] > 0
    assert other["rating"] - 1500 == duel["rating_changes"][str(bob.id)] < 0
    assert me["duels"] == {"played": 1, "won": 1, "lost": 0, "drawn": 0}
    assert other["duels"] == {"played": 1, "won": 0, "lost": 1, "drawn": 0}
    players = {p["user_id"]: p for p in duel["players"]}
    assert players[alice.id]["rating_before"] == 1500 and players[alice.id]["rating_after"] == me["rating"]
    assert event_types(db, alice.id)[-1] == event_types(db, bob.id)[-1] == "duel_finished"
    assert alice.post("/api/queue").status_code == 202  # free to play again


def test_deadline_draw_waits_for_submissions_made_before_it(make_user, duel_between, db, runtime):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    sid = submit(alice, duel_id).get_json()["submission_id"]
    with db.transaction() as s:
        s.execute(text("UPDATE duels SET deadline = now() WHERE id = :d"), {"d": duel_id})
    finish_job(runtime)
    assert duel_state(alice, duel_id)["status"] == "active"   # alice's submission may still be Accepted
    apply(db, msg(sid, 1, "verdict", "Wrong Answer on test #1"))
    finish_job(runtime)
    duel = duel_state(alice, duel_id)
    assert duel["result"] == {"outcome": "draw", "winner_id": None, "reason": "timeout"}
    assert duel["rating_changes"] == {str(alice.id): 0, str(bob.id): 0}   # a draw between equals


def test_accepted_before_deadline_judged_after_it_still_wins(make_user, duel_between, db, runtime):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    sid = submit(bob, duel_id).get_json()["submission_id"]
    with db.transaction() as s:
        s.execute(text("UPDATE duels SET deadline = now() WHERE id = :d"), {"d": duel_id})
    finish_job(runtime)
    apply(db, msg(sid, 1, "verdict", "Accepted"))
    assert duel_state(bob, duel_id)["result"]["winner_id"] == bob.id


def test_deadline_with_nothing_submitted_is_a_draw_by_the_job(make_user, duel_between, db, runtime):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    with db.transaction() as s:
        s.execute(text("UPDATE duels SET deadline = now() WHERE id = :d"), {"d": duel_id})
    assert finish_job(runtime) == 1
    assert duel_state(alice, duel_id)["result"]["outcome"] == "draw"
    assert finish_job(runtime) == 0


def test_the_job_finds_an_active_duel_with_an_accepted_submission_and_only_that(make_user, duel_between, db, runtime):
    # The sweep on its own: the Accepted verdict is written directly, not through the consumer
    # (which finishes a duel in the verdict's own transaction), so only the job can finish it.
    alice, bob, carol, dave = (make_user(n) for n in ("alice", "bob", "carol", "dave"))
    accepted_duel, other_duel = duel_between(alice, bob), duel_between(carol, dave)
    sid = submit(alice, accepted_duel).get_json()["submission_id"]
    submit(carol, other_duel)
    with db.transaction() as s:
        s.execute(text("UPDATE submissions SET status = 'judged', verdict = 'Wrong Answer on test #1' WHERE duel_id = :d"),
                  {"d": other_duel})
        s.execute(text("UPDATE submissions SET status = 'judged', verdict = 'Accepted' WHERE id = :s"), {"s": sid})
    assert db.read(duels.duels_due) == [accepted_duel]
    assert finish_job(runtime) == 1
    assert duel_state(alice, accepted_duel)["result"] == {"outcome": "win", "winner_id": alice.id, "reason": "accepted"}
    assert duel_state(carol, other_duel)["status"] == "active"
    assert db.read(duels.duels_due) == []


def test_resign_gives_the_opponent_the_win_once(make_user, duel_between, db):
    alice, bob, eve = make_user("alice"), make_user("bob"), make_user("eve")
    duel_id = duel_between(alice, bob)
    assert eve.post(f"/api/duels/{duel_id}/resign").status_code == 403
    resp = alice.post(f"/api/duels/{duel_id}/resign")
    assert resp.status_code == 202
    assert resp.get_json()["result"] == {"outcome": "win", "winner_id": bob.id, "reason": "resign"}
    again = bob.post(f"/api/duels/{duel_id}/resign")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "duel_finished"
    assert event_types(db, alice.id).count("duel_finished") == 1


def test_history_is_newest_first_and_paginated(make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    ids = []
    for _ in range(3):
        ids.append(duel_between(alice, bob))
        alice.post(f"/api/duels/{ids[-1]}/resign")
    page = bob.get(f"/api/users/{alice.id}/duels?limit=2").get_json()
    assert [d["id"] for d in page["duels"]] == [ids[2], ids[1]]
    rest = bob.get(f"/api/users/{alice.id}/duels?limit=2&before_id={page['next_before_id']}").get_json()
    assert [d["id"] for d in rest["duels"]] == [ids[0]] and rest["next_before_id"] is None
    assert bob.get("/api/users/999999/duels").status_code == 404
    assert bob.get(f"/api/users/{alice.id}/duels?limit=500").status_code == 400
    duel = page["duels"][0]
    assert set(duel) >= {"id", "status", "task", "players", "started_at", "deadline", "finished_at", "result", "rating_changes"}
    assert duel["task"]["statement"]
