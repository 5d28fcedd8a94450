"""The matchmaking queue: join/leave/status, idempotency, expiry, and duel exclusivity."""

from __future__ import annotations

from sqlalchemy import text

from duely.jobs import queue_expiry_job
from tests.fixtures.stack import event_types


def test_join_is_idempotent_and_writes_one_event(make_user, db):
    alice = make_user("alice")
    first = alice.post("/api/queue")
    assert first.status_code == 202 and first.get_json()["status"] == "waiting"
    second = alice.post("/api/queue")
    assert second.status_code == 202 and second.get_json()["since"] == first.get_json()["since"]
    assert event_types(db, alice.id) == ["queue_joined"]
    status = alice.get("/api/queue").get_json()
    assert status["status"] == "waiting" and status["since"] == first.get_json()["since"] and status["duel_id"] is None


def test_leave_writes_queue_left_and_is_204_also_when_idle(make_user, db):
    alice = make_user("alice")
    assert alice.delete("/api/queue").status_code == 204
    assert event_types(db, alice.id) == []
    alice.post("/api/queue")
    assert alice.delete("/api/queue").status_code == 204
    assert event_types(db, alice.id) == ["queue_joined", "queue_left"]
    assert alice.get("/api/queue").get_json() == {"status": "idle", "since": None, "duel_id": None}


def test_cannot_queue_while_in_a_duel(make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    resp = alice.post("/api/queue")
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "already_in_duel"
    assert alice.get("/api/queue").get_json()["status"] == "in_duel"
    assert alice.get("/api/queue").get_json()["duel_id"] == duel_id
    with db.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM queue_entries")).scalar_one() == 0


def test_queue_requires_auth(client):
    assert client.post("/api/queue").status_code == 401
    assert client.get("/api/queue").status_code == 401


def test_users_who_stop_polling_expire_from_the_queue(make_user, db, runtime):
    alice, bob = make_user("alice"), make_user("bob")
    alice.post("/api/queue")
    bob.post("/api/queue")
    with db.transaction() as s:  # alice's last poll was long ago; bob is still polling
        s.execute(text("UPDATE presence SET last_seen_at = now() - interval '1 hour' WHERE user_id = :u"), {"u": alice.id})
    assert queue_expiry_job(runtime) == 1
    assert alice.get("/api/queue").get_json()["status"] == "idle"
    assert bob.get("/api/queue").get_json()["status"] == "waiting"
    assert event_types(db, alice.id) == ["queue_joined", "queue_left"]
    with db.transaction() as s:
        data = s.execute(text("SELECT data FROM events WHERE user_id = :u ORDER BY id DESC LIMIT 1"), {"u": alice.id}).scalar()
    assert data == {"reason": "expired"}
    assert queue_expiry_job(runtime) == 0
