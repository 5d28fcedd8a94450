"""Matchmaking rounds on the real database and the dev Taski: pairs start duels atomically,
nobody is in two duels even with concurrent rounds, Taski trouble leaves everyone queued."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from duely.matchmaking import rounds
from duely.taski import TaskiClient
from tests.fixtures.stack import event_types, start_duel


def queue_up(*users):
    for u in users:
        assert u.post("/api/queue").status_code == 202


def active_duels(db) -> dict[int, int]:
    with db.transaction() as s:
        rows = s.execute(text("SELECT user_id, duel_id FROM duel_players WHERE is_active")).all()
    return {r.user_id: r.duel_id for r in rows}


@pytest.fixture
def taski(devtaski) -> TaskiClient:
    return TaskiClient(devtaski.url, timeout_secs=5, retry_delays_secs=(0.05,))


def test_a_round_pairs_two_waiting_players_into_one_duel(make_user, db, config, taski):
    alice, bob = make_user("alice"), make_user("bob")
    queue_up(alice, bob)
    assert rounds.run_round(db, config, taski) == 1
    duels = active_duels(db)
    assert duels[alice.id] == duels[bob.id]
    for me in (alice, bob):
        assert event_types(db, me.id) == ["queue_joined", "queue_left", "duel_started"]
        status = me.get("/api/queue").get_json()
        assert (status["status"], status["duel_id"]) == ("in_duel", duels[me.id]) and status["since"]
    duel = alice.get(f"/api/duels/{duels[alice.id]}").get_json()
    assert duel["status"] == "active" and duel["task"]["title"] and duel["task"]["statement"]
    assert {p["user_id"] for p in duel["players"]} == {alice.id, bob.id}
    with db.transaction() as s:
        started = s.execute(text("SELECT data FROM events WHERE user_id = :u AND type = 'duel_started'"), {"u": alice.id}).scalar()
    assert started["opponent"] == {"user_id": bob.id, "nickname": "bob", "rating": 1500, "provisional": True}
    assert started["deadline"] == duel["deadline"]
    # two newcomers: each stands to win or lose the same, and the event says what the duel says
    # (a first duel between newcomers is rated by rating.establishing_rating: +163.9)
    assert started["stakes"] == duel["stakes"] == {str(u.id): {"win": 164, "draw": 0, "loss": -164} for u in (alice, bob)}


def test_tasks_either_player_already_had_are_excluded(make_user, db, config, taski, devtaski):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    seen = set()
    for task_id in (1, 2, 3):  # alice and bob each had some tasks already
        resp = devtaski.get(f"/api/tasks/{task_id}")
        assert resp.status_code == 200
        duel_id = start_duel(db, alice.id if task_id != 3 else bob.id, carol.id, task=resp.json())
        (alice if task_id != 3 else bob).post(f"/api/duels/{duel_id}/resign")
        seen.add(task_id)
    queue_up(alice, bob)
    assert rounds.run_round(db, config, taski) == 1
    duel = alice.get(f"/api/duels/{active_duels(db)[alice.id]}").get_json()
    assert duel["task"]["id"] not in seen


def test_taski_down_leaves_both_queued(make_user, db, config):
    from duely.infra import free_port

    alice, bob = make_user("alice"), make_user("bob")
    queue_up(alice, bob)
    dead = TaskiClient(f"http://127.0.0.1:{free_port()}", timeout_secs=1, retry_delays_secs=(0.05,))
    assert rounds.run_round(db, config, dead) == 0
    assert active_duels(db) == {}
    assert alice.get("/api/queue").get_json()["status"] == bob.get("/api/queue").get_json()["status"] == "waiting"


def test_taski_down_during_a_parallel_round_leaves_everyone_queued(make_user, db, config):
    from duely.infra import free_port

    users = [make_user(f"player{i}") for i in range(8)]
    queue_up(*users)
    dead = TaskiClient(f"http://127.0.0.1:{free_port()}", timeout_secs=1, retry_delays_secs=(0.05,))
    with ThreadPoolExecutor(rounds.STARTS_IN_FLIGHT) as starters:
        assert rounds.run_round(db, config, dead, starters) == 0
    assert active_duels(db) == {}
    assert {u.get("/api/queue").get_json()["status"] for u in users} == {"waiting"}


def test_a_parallel_round_starts_every_pair_once_on_an_unseen_task(make_user, db, config, taski, devtaski):
    users = [make_user(f"player{i}") for i in range(12)]
    had = devtaski.get("/api/tasks/1").json()
    for a, b in zip(users[0::2], users[1::2], strict=True):  # everyone has had task 1 already
        duel_id = start_duel(db, a.id, b.id, task=had)
        assert a.post(f"/api/duels/{duel_id}/resign").status_code == 202
    queue_up(*users)
    with ThreadPoolExecutor(rounds.STARTS_IN_FLIGHT) as starters:
        assert rounds.run_round(db, config, taski, starters) == 6
    duels = active_duels(db)
    assert len(duels) == 12 and len(set(duels.values())) == 6
    for u in users:
        assert event_types(db, u.id).count("duel_started") == 2  # the old duel and this round's one
        assert u.get(f"/api/duels/{duels[u.id]}").get_json()["task"]["id"] != had["id"]


def test_taski_rate_limit_pauses_and_leaves_both_queued(make_user, db, config, taski, devtaski):
    alice, bob = make_user("alice"), make_user("bob")
    queue_up(alice, bob)
    devtaski.set_faults({"rate_limit": {"count": 1, "retry_after": 1}})
    assert rounds.run_round(db, config, taski) == 0
    assert taski.paused_for() > 0 and active_duels(db) == {}
    import time

    time.sleep(taski.paused_for() + 0.05)
    assert rounds.run_round(db, config, taski) == 1


def test_players_who_stopped_polling_are_not_paired(make_user, db, config, taski):
    alice, bob = make_user("alice"), make_user("bob")
    queue_up(alice, bob)
    with db.transaction() as s:
        s.execute(text("UPDATE presence SET last_seen_at = now() - interval '1 hour' WHERE user_id = :u"), {"u": bob.id})
    assert rounds.run_round(db, config, taski) == 0


def test_concurrent_rounds_never_put_a_user_in_two_duels(make_user, db, config, devtaski):
    """Three schedulers' rounds at once, each starting its pairs' duels in parallel."""
    users = [make_user(f"player{i}") for i in range(10)]
    queue_up(*users)
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def round_():
        try:
            barrier.wait()
            with ThreadPoolExecutor(rounds.STARTS_IN_FLIGHT) as starters:
                rounds.run_round(db, config, TaskiClient(devtaski.url, timeout_secs=5), starters)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=round_) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    duels = active_duels(db)
    assert len(duels) == 10 and len(set(duels.values())) == 5
    for u in users:  # exactly one duel_started, one queue_left each
        types = event_types(db, u.id)
        assert types.count("duel_started") == 1 and types.count("queue_left") == 1


def test_a_join_wakes_matchmaking(make_user, db, config, taski):
    from duely.matchmaking import queue
    from duely.wakeup import WokenLoop

    loop = WokenLoop(config.database_url, queue.MATCHMAKING_CHANNEL, lambda: rounds.run_round(db, config, taski),
                     3600, "matchmaking-test").start()  # the sweep never comes in this test
    try:
        deadline = time.monotonic() + 30
        while loop.runs < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
        alice, bob = make_user("alice"), make_user("bob")
        for user in (alice, bob):
            assert user.post("/api/queue").status_code == 202
        while "duel_started" not in event_types(db, bob.id):
            assert time.monotonic() < deadline, event_types(db, bob.id)
            time.sleep(0.02)
        assert loop.woken_runs >= 1
        assert event_types(db, alice.id) == ["queue_joined", "queue_left", "duel_started"]
    finally:
        loop.stop()


def test_a_pair_whose_player_left_before_the_start_writes_nothing(make_user, db, config):
    """The start re-checks the queue under the players' locks: bob left after the round read it,
    so the transaction writes no duel, no event, and alice keeps her place."""
    from tests.fixtures.stack import SAMPLE_TASK

    alice, bob = make_user("alice"), make_user("bob")
    queue_up(alice, bob)
    assert bob.delete("/api/queue").status_code in (200, 202, 204)
    before = {u.id: event_types(db, u.id) for u in (alice, bob)}
    assert db.run(lambda s: rounds.start_duel_for_pair(s, (alice.id, bob.id), SAMPLE_TASK, 1800)) is None
    with db.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM duels")).scalar_one() == 0
        assert s.execute(text("SELECT user_id FROM queue_entries")).scalars().all() == [alice.id]
    assert {u.id: event_types(db, u.id) for u in (alice, bob)} == before
