"""Submitting: storage before 202, idempotency, access rules, limits, and who sees what."""

from __future__ import annotations

import threading

from sqlalchemy import text

from tests.fixtures.stack import event_types

SOLUTION = "print(sum(map(int, input().split())))"


def submit(user, duel_id, solution=SOLUTION, language="python", **extra):
    headers = extra.pop("headers", {})
    return user.post(f"/api/duels/{duel_id}/submit", json={"solution": solution, "language": language, **extra},
                     headers=headers)


def count_submissions(db) -> int:
    with db.transaction() as s:
        return s.execute(text("SELECT count(*) FROM submissions")).scalar_one()


def test_submit_stores_before_answering_and_announces_it(make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    resp = submit(alice, duel_id, client_temp_id="tmp-1")
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["status"] == "pending" and len(body["submission_id"]) == 36
    assert event_types(db, alice.id)[-1] == "submission_created"
    assert event_types(db, bob.id) == ["duel_started"]  # the opponent hears only verdicts
    mine = alice.get(f"/api/duels/{duel_id}/submissions").get_json()["submissions"]
    assert [(s["id"], s["status"], s["client_temp_id"], s["solution"]) for s in mine] == \
        [(body["submission_id"], "pending", "tmp-1", SOLUTION)]


def test_repeated_submit_with_same_client_temp_id_returns_same_id(make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    first = submit(alice, duel_id, client_temp_id="abc").get_json()["submission_id"]
    again = submit(alice, duel_id, client_temp_id="abc").get_json()["submission_id"]
    via_header = submit(alice, duel_id, headers={"Idempotency-Key": "key-1"}).get_json()["submission_id"]
    via_header_again = submit(alice, duel_id, headers={"Idempotency-Key": "key-1"}).get_json()["submission_id"]
    other = submit(alice, duel_id, client_temp_id="def").get_json()["submission_id"]
    assert first == again and via_header == via_header_again
    assert len({first, via_header, other}) == 3
    assert count_submissions(db) == 3
    assert event_types(db, alice.id).count("submission_created") == 3


def test_concurrent_duplicate_submits_create_one_submission(app, make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    barrier = threading.Barrier(6)
    ids: list[str] = []

    def go():
        client = app.test_client()
        barrier.wait()
        resp = client.post(f"/api/duels/{duel_id}/submit", headers=alice.headers,
                           json={"solution": SOLUTION, "language": "python", "client_temp_id": "same"})
        assert resp.status_code == 202, resp.get_json()
        ids.append(resp.get_json()["submission_id"])

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 6 and len(set(ids)) == 1
    assert count_submissions(db) == 1
    assert event_types(db, alice.id).count("submission_created") == 1


def test_only_players_may_submit(make_user, duel_between, db):
    alice, bob, eve = make_user("alice"), make_user("bob"), make_user("eve")
    duel_id = duel_between(alice, bob)
    resp = submit(eve, duel_id)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    assert submit(eve, 999999).status_code == 404
    assert count_submissions(db) == 0


def test_submit_after_deadline_or_finish_is_409(make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    with db.transaction() as s:
        s.execute(text("UPDATE duels SET deadline = now() - interval '1 second' WHERE id = :d"), {"d": duel_id})
    resp = submit(alice, duel_id)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "duel_finished"
    with db.transaction() as s:
        s.execute(text("UPDATE duels SET deadline = now() + interval '1 hour', status = 'finished' WHERE id = :d"),
                  {"d": duel_id})
    assert submit(alice, duel_id).get_json()["error"]["code"] == "duel_finished"
    assert count_submissions(db) == 0


def test_bad_submissions_are_rejected_and_change_nothing(make_user, duel_between, db, config):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    cases = [
        (submit(alice, duel_id, language="cobol"), 400, "validation_error", "language"),
        (submit(alice, duel_id, solution="   \n"), 400, "validation_error", "solution"),
        (submit(alice, duel_id, solution="x" * (config.max_solution_bytes + 1)), 413, "payload_too_large", None),
        (alice.post(f"/api/duels/{duel_id}/submit", json={"language": "python"}), 400, "validation_error", "solution"),
        (submit(alice, duel_id, client_temp_id=""), 400, "validation_error", "client_temp_id"),
    ]
    for resp, status, code, field in cases:
        assert resp.status_code == status, resp.get_json()
        err = resp.get_json()["error"]
        assert err["code"] == code
        if field:
            assert field in err["fields"]
    assert count_submissions(db) == 0
    # Multi-byte characters count as bytes against the limit.
    big = "é" * (config.max_solution_bytes // 2 + 1)
    assert submit(alice, duel_id, solution=big).status_code == 413


def test_submissions_are_rate_limited_per_user(make_user, duel_between, db, config):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    for i in range(config.submit_rate_limit):
        assert submit(alice, duel_id, client_temp_id=f"n{i}").status_code == 202
    resp = submit(alice, duel_id, client_temp_id="one-too-many")
    assert resp.status_code == 429 and resp.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= config.submit_rate_window + 1
    # A retry of an already stored submission is still answered (idempotency beats the limit).
    assert submit(alice, duel_id, client_temp_id="n0").status_code == 202
    assert submit(bob, duel_id).status_code == 202  # the limit is per user
    assert count_submissions(db) == config.submit_rate_limit + 1


def test_opponent_code_is_hidden_during_the_duel_and_shown_after(make_user, duel_between, db):
    alice, bob, eve = make_user("alice"), make_user("bob"), make_user("eve")
    duel_id = duel_between(alice, bob)
    submit(alice, duel_id, solution="print('alice')")
    submit(bob, duel_id, solution="print('bob')")
    seen_by_bob = bob.get(f"/api/duels/{duel_id}/submissions").get_json()["submissions"]
    assert [s["solution"] for s in seen_by_bob] == ["print('bob')"]
    assert eve.get(f"/api/duels/{duel_id}/submissions").get_json()["submissions"] == []
    assert bob.post(f"/api/duels/{duel_id}/resign").status_code == 202
    after = eve.get(f"/api/duels/{duel_id}/submissions").get_json()["submissions"]
    assert sorted(s["solution"] for s in after) == ["print('alice')", "print('bob')"]


def test_languages_are_listed(make_user):
    body = make_user("alice").get("/api/languages").get_json()
    ids = [lang["id"] for lang in body["languages"]]
    assert "python" in ids and all(lang["name"] for lang in body["languages"])
