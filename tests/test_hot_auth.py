"""The hot endpoints (submit, queue join and leave, the long poll) check the token inside their
own transaction or read (duely/api/common.py `run_as_caller`, eventlog.poll): access control is
the same as everywhere, a refused request changes nothing, and 401 still comes before 400."""

from __future__ import annotations

import pytest
from sqlalchemy import text

SOLUTION = "print(sum(map(int, input().split())))"


def counts(db, user_id: int) -> dict:
    with db.transaction() as s:
        return dict(s.execute(text(
            "SELECT (SELECT count(*) FROM submissions WHERE user_id = :u) AS submissions,"
            " (SELECT count(*) FROM queue_entries WHERE user_id = :u) AS queued,"
            " (SELECT count(*) FROM events WHERE user_id = :u) AS events"), {"u": user_id}).one()._mapping)


def hot_requests(client, headers: dict, duel_id: int) -> dict:
    return {
        "submit": client.post(f"/api/duels/{duel_id}/submit", headers=headers,
                              json={"solution": SOLUTION, "language": "python", "client_temp_id": "again"}),
        "join": client.post("/api/queue", headers=headers),
        "leave": client.delete("/api/queue", headers=headers),
        "updates": client.get("/api/updates?timeout=0", headers=headers),
    }


def test_a_revoked_token_is_refused_on_every_hot_endpoint_and_changes_nothing(client, make_user, duel_between, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    duel_id = duel_between(alice, bob)
    # Each endpoint accepted the token first (so nothing about it is remembered as bad).
    ok = hot_requests(client, alice.headers, duel_id)
    assert [ok[k].status_code for k in ("submit", "join", "updates")] == [202, 409, 200]
    assert carol.post("/api/queue").status_code == 202
    assert carol.get("/api/updates?timeout=0").status_code == 200
    other = client.post("/api/auth/login", json={"nickname": "carol", "password": carol.password}).get_json()["token"]
    assert alice.post("/api/auth/logout").status_code == 204
    assert carol.post("/api/auth/logout").status_code == 204

    for user in (alice, carol):
        before = counts(db, user.id)
        refused = hot_requests(client, {**user.headers}, duel_id)
        for name, resp in refused.items():
            assert resp.status_code == 401, (user.nickname, name, resp.get_json())
            assert resp.get_json()["error"]["code"] == "unauthorized"
        assert counts(db, user.id) == before
    # Carol's other token still works: her queue entry is still there, and she can leave.
    assert client.delete("/api/queue", headers={"Authorization": f"Bearer {other}"}).status_code == 204
    assert counts(db, carol.id)["queued"] == 0


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer garbage"}, {"Authorization": "Basic abc"}])
def test_a_missing_or_bad_token_is_401_before_a_bad_body_or_an_unknown_duel(client, make_user, duel_between, headers):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    for path, body in ((f"/api/duels/{duel_id}/submit", {"solution": 5}), (f"/api/duels/{duel_id}/submit", None),
                       ("/api/duels/999999/submit", {"solution": SOLUTION, "language": "python"})):
        resp = client.post(path, headers=headers, json=body)
        assert resp.status_code == 401, (path, body, resp.get_json())
        assert resp.get_json()["error"]["code"] == "unauthorized"
    for method in ("POST", "DELETE"):
        assert client.open("/api/queue", method=method, headers=headers).status_code == 401


def test_with_a_good_token_a_bad_body_is_still_400_and_an_unknown_duel_404(make_user, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    resp = alice.post(f"/api/duels/{duel_id}/submit", json={"solution": 5})
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "validation_error"
    resp = alice.post("/api/duels/999999/submit", json={"solution": SOLUTION, "language": "python"})
    assert resp.status_code == 404
