"""Applying Taski's messages: idempotent, ordered by seq, final verdicts, poison skipped."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import text

from duely import verdicts
from tests.fixtures.stack import event_types, last_event_id
from tests.test_submissions import submit


def msg(sid, seq, kind, value):
    field = "status" if kind == "update" else "verdict"
    return json.dumps({"submission_id": str(sid), "seq": seq, "type": kind, field: value,
                       "at": "2026-11-23T00:00:00Z"}).encode()


def apply(db, raw) -> bool:
    return db.run(lambda s: verdicts.apply_message(s, verdicts.parse_message(raw)))


def state(db, sid):
    with db.transaction() as s:
        return s.execute(text("SELECT status, progress, verdict, last_seq FROM submissions WHERE id = :i"),
                         {"i": sid}).one()


@pytest.fixture
def duel_with_submission(make_user, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    sid = submit(alice, duel_id).get_json()["submission_id"]
    return alice, bob, duel_id, sid


def test_updates_then_verdict_reach_owner_and_opponent(duel_with_submission, db):
    alice, bob, duel_id, sid = duel_with_submission
    a0, b0 = last_event_id(db, alice.id), last_event_id(db, bob.id)
    assert apply(db, msg(sid, 1, "update", "Test #1 passed"))
    assert alice.get(f"/api/duels/{duel_id}/submissions").get_json()["submissions"][0]["status"] == "Test #1 passed"
    assert apply(db, msg(sid, 2, "verdict", "Wrong Answer on test #2"))
    assert event_types(db, alice.id, a0) == ["submission_update", "submission_verdict"]
    assert event_types(db, bob.id, b0) == ["opponent_verdict"]
    with db.transaction() as s:
        data = s.execute(text("SELECT data FROM events WHERE user_id = :u ORDER BY id DESC LIMIT 1"), {"u": bob.id}).scalar()
    assert data["verdict"] == "Wrong Answer on test #2" and data["duel_id"] == duel_id
    assert "solution" not in data and "submission_id" not in data
    sub = alice.get(f"/api/duels/{duel_id}/submissions").get_json()["submissions"][0]
    assert (sub["status"], sub["verdict"]) == ("judged", "Wrong Answer on test #2")


def test_duplicate_messages_change_nothing(duel_with_submission, db):
    alice, bob, _, sid = duel_with_submission
    for raw in (msg(sid, 1, "update", "Test #1 passed"), msg(sid, 2, "verdict", "Wrong Answer on test #2")):
        assert apply(db, raw)
        mark_a, mark_b = last_event_id(db, alice.id), last_event_id(db, bob.id)
        assert not apply(db, raw)
        assert (last_event_id(db, alice.id), last_event_id(db, bob.id)) == (mark_a, mark_b)


def test_reordered_messages_never_go_back_and_an_update_never_overrides_a_verdict(duel_with_submission, db):
    alice, _, _, sid = duel_with_submission
    mark = last_event_id(db, alice.id)
    assert apply(db, msg(sid, 3, "update", "Test #3 passed"))
    assert not apply(db, msg(sid, 2, "update", "Test #2 passed"))
    assert state(db, sid).progress == "Test #3 passed"
    assert apply(db, msg(sid, 5, "verdict", "Accepted"))
    assert not apply(db, msg(sid, 4, "update", "Test #4 passed"))
    assert not apply(db, msg(sid, 6, "update", "Test #5 passed"))  # even a newer seq: the verdict is final
    assert not apply(db, msg(sid, 7, "verdict", "Wrong Answer on test #1"))
    st = state(db, sid)
    assert (st.status, st.verdict, st.last_seq) == ("judged", "Accepted", 5)
    assert event_types(db, alice.id, mark)[:2] == ["submission_update", "submission_verdict"]
    assert event_types(db, alice.id, mark).count("submission_verdict") == 1


def test_verdict_first_then_stale_updates(duel_with_submission, db):
    _, _, _, sid = duel_with_submission
    assert apply(db, msg(sid, 4, "verdict", "Time Limit Exceeded on test #3"))
    for seq in (1, 2, 3):
        assert not apply(db, msg(sid, seq, "update", f"Test #{seq} passed"))
    assert state(db, sid).verdict == "Time Limit Exceeded on test #3"


@pytest.mark.parametrize("raw", [
    b"not json", b"[1, 2]", b'{"seq": 1, "type": "update", "status": "x"}',
    b'{"submission_id": "nope", "seq": 1, "type": "update", "status": "x"}',
    json.dumps({"submission_id": str(uuid.uuid4()), "seq": "1", "type": "update", "status": "x"}).encode(),
    json.dumps({"submission_id": str(uuid.uuid4()), "seq": 1, "type": "other", "status": "x"}).encode(),
    json.dumps({"submission_id": str(uuid.uuid4()), "seq": 1, "type": "verdict"}).encode(),
])
def test_malformed_messages_are_poison(raw):
    with pytest.raises(verdicts.PoisonMessage):
        verdicts.parse_message(raw)


def test_unknown_submission_is_skipped_without_error(db, duel_with_submission, caplog):
    alice, _, _, sid = duel_with_submission
    mark = last_event_id(db, alice.id)
    for raw in (msg(uuid.uuid4(), 1, "update", "Test #1 passed"), msg(uuid.uuid4(), 2, "verdict", "Accepted"), b"garbage"):
        db.run(lambda s, raw=raw: verdicts.apply_batch(s, [(raw, "t/0@1")]))
    assert last_event_id(db, alice.id) == mark
    assert "skipping message" in caplog.text
    db.run(lambda s: verdicts.apply_batch(s, [(msg(sid, 1, "update", "Test #1 passed"), "t/0@2")]))  # the partition goes on
    assert state(db, sid).progress == "Test #1 passed"


def test_a_batch_applies_every_progress_message_in_order(make_user, duel_between, db):
    """One event per progress message, even when the verdict that follows is in the same batch
    (docs/api.md: `submission_update` on each progress message from Taski)."""
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    judged = submit(alice, duel_id, client_temp_id="a").get_json()["submission_id"]
    testing = submit(alice, duel_id, client_temp_id="b").get_json()["submission_id"]
    a0 = last_event_id(db, alice.id)
    batch = [msg(judged, 1, "update", "Test #1 passed"), msg(testing, 1, "update", "Test #1 passed"),
             msg(judged, 2, "update", "Test #2 passed"), msg(testing, 2, "update", "Test #2 passed"),
             msg(judged, 3, "verdict", "Wrong Answer on test #3")]
    assert db.run(lambda s: verdicts.apply_batch(s, [(raw, f"t/0@{i}") for i, raw in enumerate(batch)])) == 5
    with db.transaction() as s:
        rows = s.execute(text("SELECT type, data->>'submission_id' AS sid, data->>'status' AS status FROM events "
                              "WHERE user_id = :u AND id > :a ORDER BY id"), {"u": alice.id, "a": a0}).all()
    assert [tuple(r) for r in rows] == [("submission_update", judged, "Test #1 passed"),
                                        ("submission_update", testing, "Test #1 passed"),
                                        ("submission_update", judged, "Test #2 passed"),
                                        ("submission_update", testing, "Test #2 passed"),
                                        ("submission_verdict", judged, None)]
    assert tuple(state(db, judged)) == ("judged", "Test #2 passed", "Wrong Answer on test #3", 3)
    assert tuple(state(db, testing)) == ("testing", "Test #2 passed", None, 2)
