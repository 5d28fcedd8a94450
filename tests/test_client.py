"""The Python client library (clients/python/duely_client) against the real stack: gunicorn
(gevent), scheduler, consumer, broker and an instant dev Taski as processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tests.fixtures.proxy import FlakyProxy
from tests.fixtures.stack import CLIENT_DIR

sys.path.insert(0, str(CLIENT_DIR))

import duely_client  # noqa: E402
from duely_client import Client  # noqa: E402

WRONG = "print(0)\n# verdict: Wrong Answer on test #1\n"


def next_event(updates, kind: str, within_secs: float = 30) -> dict:
    deadline = time.monotonic() + within_secs
    for event in updates:
        if event["type"] == kind:
            return event
        assert time.monotonic() < deadline, f"no {kind} within {within_secs}s"
    raise AssertionError("updates ended")


def test_importable_without_the_server_dependencies():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import duely_client; "
            "bad = [m for m in ('duely', 'flask', 'sqlalchemy', 'psycopg', 'kafka') if m in sys.modules]; "
            "assert not bad, bad; print(duely_client.Client.__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(CLIENT_DIR)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Client"


def test_every_endpoint_and_errors_carry_the_code(instant_stack):
    alice, bob = Client(instant_stack.url), Client(instant_stack.url)
    assert alice.health()["status"] == "ok"
    registered = alice.register("alice", "correct horse")
    assert registered["nickname"] == "alice" and alice.token
    bob.register("bob", "correct horse")
    with pytest.raises(duely_client.NicknameTaken) as taken:
        Client(instant_stack.url).register("alice", "other password")
    assert taken.value.status == 409 and taken.value.code == "nickname_taken"
    with pytest.raises(duely_client.Unauthorized) as wrong:
        Client(instant_stack.url).login("alice", "wrong password")
    assert wrong.value.code == "unauthorized"
    again = Client(instant_stack.url)
    assert again.login("alice", "correct horse")["id"] == registered["id"] and again.me()["id"] == registered["id"]
    assert again.login_or_register("carol", "correct horse")["nickname"] == "carol"
    again.logout()
    with pytest.raises(duely_client.Unauthorized):
        again.me()

    assert alice.user(bob.user_id)["nickname"] == "bob"
    assert {u["nickname"] for u in alice.leaderboard(limit=10)} == {"alice", "bob", "carol"}
    assert "python" in {lang["id"] for lang in alice.languages()}
    with pytest.raises(duely_client.NotFound) as missing:
        alice.duel(999999)
    assert missing.value.code == "not_found"

    alice_updates, bob_updates = alice.updates(timeout=5), bob.updates(timeout=5)
    assert alice.join_queue()["status"] == "waiting" and alice.queue_status()["status"] == "waiting"
    bob.join_queue()
    started = next_event(alice_updates, "duel_started")
    duel_id = started["data"]["duel_id"]
    assert alice.queue_status() == {"status": "in_duel", "since": alice.queue_status()["since"], "duel_id": duel_id}
    with pytest.raises(duely_client.AlreadyInDuel):
        alice.join_queue()
    assert alice.duel(duel_id)["task"]["statement"]

    sid = alice.submit(duel_id, WRONG)
    verdict = next_event(alice_updates, "submission_verdict")
    assert verdict["data"] == {**verdict["data"], "submission_id": sid, "verdict": "Wrong Answer on test #1"}
    assert [s["id"] for s in alice.submissions(duel_id)] == [sid]
    with pytest.raises(duely_client.ValidationError) as invalid:
        alice.submit(duel_id, "print(1)", language="cobol")
    assert invalid.value.code == "validation_error" and "language" in invalid.value.fields

    finished = alice.resign(duel_id)
    assert finished["status"] == "finished" and finished["result"]["winner_id"] == bob.user_id
    assert next_event(bob_updates, "duel_finished")["data"]["duel_id"] == duel_id
    with pytest.raises(duely_client.DuelFinished) as over:
        alice.submit(duel_id, "print(1)")
    assert over.value.code == "duel_finished"
    duels, next_before = bob.history(bob.user_id)
    assert [d["id"] for d in duels] == [duel_id] and next_before is None
    bob.join_queue()
    bob.leave_queue()
    assert bob.queue_status()["status"] == "idle"


def test_updates_survive_a_server_restart(instant_stack, db):
    from duely import eventlog
    from duely.eventlog.types import QueueLeft, QueueLeftReason

    client = Client(instant_stack.url)
    user_id = client.register("patient", "correct horse")["id"]
    updates = client.updates(timeout=2)
    seen: list[int] = []
    failures: list[int] = []

    def follow():
        for event in updates:
            seen.append(event["id"])
            failures.append(updates.failures)

    threading.Thread(target=follow, daemon=True).start()
    db.run(lambda s: eventlog.append(s, user_id, QueueLeft(reason=QueueLeftReason.LEFT)))
    _wait(lambda: len(seen) == 1)

    instant_stack.web.stop()  # SIGTERM: held polls are answered, then nobody listens
    for _ in range(3):
        db.run(lambda s: eventlog.append(s, user_id, QueueLeft(reason=QueueLeftReason.LEFT)))
    time.sleep(1.5)  # the iterator is failing to connect now
    instant_stack.web.start()
    db.run(lambda s: eventlog.append(s, user_id, QueueLeft(reason=QueueLeftReason.LEFT)))
    _wait(lambda: len(seen) == 5, within_secs=60)
    updates.stop.set()
    assert seen == [1, 2, 3, 4, 5]  # nothing lost, nothing twice, in order
    assert updates.last_event_id == 5


def test_updates_resync_after_410_and_continue(instant_stack, db):
    from sqlalchemy import text

    from duely import eventlog
    from duely.clock import utcnow
    from duely.eventlog.types import QueueJoined, QueueLeft, QueueLeftReason

    client = Client(instant_stack.url)
    user_id = client.register("late", "correct horse")["id"]
    for _ in range(3):
        db.run(lambda s: eventlog.append(s, user_id, QueueLeft(reason=QueueLeftReason.LEFT)))
    with db.transaction() as s:  # as pruning would
        s.execute(text("DELETE FROM events WHERE user_id = :u AND id <= 2"), {"u": user_id})
    resyncs: list[int] = []

    def resync(newest: int) -> None:  # a bot re-reads its REST snapshot here; meanwhile life goes on
        resyncs.append(newest)
        db.run(lambda s: eventlog.append(s, user_id, QueueJoined(since=utcnow())))

    updates = client.updates(0, timeout=2, on_resync=resync)
    first = next(updates)
    assert resyncs == [3] and first["id"] == 4 and first["type"] == "queue_joined"


def test_updates_honour_503_retry_after(instant_stack, db):
    from duely import eventlog
    from duely.eventlog.types import QueueLeft, QueueLeftReason

    proxy = FlakyProxy(instant_stack.port)
    try:
        direct = Client(instant_stack.url)
        user_id = direct.register("waiter", "correct horse")["id"]
        body = b'{"error": {"code": "unavailable", "message": "database unreachable"}}'
        proxy.canned.append(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        db.run(lambda s: eventlog.append(s, user_id, QueueLeft(reason=QueueLeftReason.LEFT)))
        updates = Client(proxy.url, direct.token).updates(timeout=2)
        started = time.monotonic()
        event = next(updates)
        assert event["id"] == 1 and proxy.canned_served == 1
        assert time.monotonic() - started >= 0.9  # it waited Retry-After before asking again
    finally:
        proxy.close()


def test_submit_retried_after_a_lost_answer_makes_one_submission(instant_stack):
    proxy = FlakyProxy(instant_stack.port)
    try:
        alice, bob = Client(instant_stack.url), Client(instant_stack.url)
        alice.register("alice", "correct horse")
        bob.register("bob", "correct horse")
        a_updates, b_updates = alice.updates(timeout=5), bob.updates(timeout=5)
        alice.join_queue()
        bob.join_queue()
        duel_id = next_event(a_updates, "duel_started")["data"]["duel_id"]
        next_event(b_updates, "duel_started")

        flaky = Client(proxy.url, alice.token)
        proxy.drop_next = 1  # the server stores it, the answer is lost on the way back
        sid = flaky.submit(duel_id, WRONG)
        assert proxy.dropped == 1
        assert [s["id"] for s in alice.submissions(duel_id)] == [sid]
        created = next_event(a_updates, "submission_created")
        assert created["data"]["submission_id"] == sid
    finally:
        proxy.close()


def _wait(predicate, within_secs: float = 30) -> None:
    deadline = time.monotonic() + within_secs
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
