"""Registration, login, logout, profiles, leaderboard and token handling."""

from __future__ import annotations

import threading

from sqlalchemy import text

from duely.api import create_app


def test_register_returns_user_and_working_token(client):
    resp = client.post("/api/users", json={"nickname": "alice", "password": "correct horse"})
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["nickname"] == "alice" and body["rating"] == 1500 and isinstance(body["id"], int)
    me = client.get("/api/users/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.get_json()["duels"] == {"played": 0, "won": 0, "lost": 0, "drawn": 0}
    assert me.get_json()["created_at"].endswith("Z")


def test_password_and_token_are_stored_only_as_hashes(client, db):
    body = client.post("/api/users", json={"nickname": "alice", "password": "correct horse"}).get_json()
    with db.transaction() as s:
        pw = s.execute(text("SELECT password_hash FROM users")).scalar_one()
        hashes = s.execute(text("SELECT token_hash FROM auth_tokens")).scalars().all()
    assert pw.startswith("scrypt:") and "correct horse" not in pw
    assert body["token"] not in hashes and len(hashes) == 1


def test_duplicate_nickname_is_case_insensitive(client):
    assert client.post("/api/users", json={"nickname": "Alice", "password": "correct horse"}).status_code == 201
    resp = client.post("/api/users", json={"nickname": "aLICE", "password": "other password"})
    assert resp.status_code == 409
    assert resp.get_json()["error"]["code"] == "nickname_taken"


def test_concurrent_registrations_of_one_nickname_create_one_user(app, db):
    results: list[int] = []
    barrier = threading.Barrier(8)

    def register(i: int) -> None:
        c = app.test_client()
        barrier.wait()
        nickname = "racer" if i % 2 else "RACER"
        results.append(c.post("/api/users", json={"nickname": nickname, "password": "correct horse"}).status_code)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] + [409] * 7
    with db.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM users")).scalar_one() == 1


def test_login_gives_new_token_and_user(client, make_user):
    alice = make_user("alice")
    resp = client.post("/api/auth/login", json={"nickname": "ALICE", "password": alice.password})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["user"]["id"] == alice.id and body["token"] != alice.token
    assert client.get("/api/users/me", headers={"Authorization": f"Bearer {body['token']}"}).status_code == 200


def test_login_with_wrong_password_or_unknown_user_is_401(client, make_user):
    make_user("alice")
    for body in ({"nickname": "alice", "password": "wrong password"}, {"nickname": "nobody", "password": "x" * 8}):
        resp = client.post("/api/auth/login", json=body)
        assert resp.status_code == 401
        assert resp.get_json()["error"]["code"] == "unauthorized"


def test_login_is_throttled_after_repeated_failures(client, make_user):
    alice = make_user("alice")
    for _ in range(5):
        assert client.post("/api/auth/login", json={"nickname": "alice", "password": "guess guess"}).status_code == 401
    resp = client.post("/api/auth/login", json={"nickname": "alice", "password": alice.password})
    assert resp.status_code == 429
    assert resp.get_json()["error"]["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) > 0


def test_successful_login_resets_the_failure_count(client, make_user):
    alice = make_user("alice")
    for _ in range(4):
        client.post("/api/auth/login", json={"nickname": "alice", "password": "guess guess"})
    assert client.post("/api/auth/login", json={"nickname": "alice", "password": alice.password}).status_code == 200
    for _ in range(4):
        client.post("/api/auth/login", json={"nickname": "alice", "password": "guess guess"})
    assert client.post("/api/auth/login", json={"nickname": "alice", "password": alice.password}).status_code == 200


def test_logout_revokes_the_token_at_once_and_only_that_token(client, make_user):
    alice = make_user("alice")
    other = client.post("/api/auth/login", json={"nickname": "alice", "password": alice.password}).get_json()["token"]
    assert alice.post("/api/auth/logout").status_code == 204
    resp = alice.get("/api/users/me")
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/api/users/me", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_missing_garbage_and_malformed_tokens_are_401(client, make_user):
    make_user("alice")
    for headers in ({}, {"Authorization": "Bearer garbage"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        resp = client.get("/api/users/me", headers=headers)
        assert resp.status_code == 401, headers
        assert resp.get_json()["error"]["code"] == "unauthorized"


def test_expired_token_is_401(config, db, make_user):
    alice_app = create_app(config.replace(token_ttl=0.0), db)
    c = alice_app.test_client()
    token = c.post("/api/users", json={"nickname": "alice", "password": "correct horse"}).get_json()["token"]
    assert c.get("/api/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_token_signed_with_another_secret_key_is_401(config, db, client, make_user):
    alice = make_user("alice")
    other_app = create_app(config.replace(secret_key="another key"), db)
    assert other_app.test_client().get("/api/users/me", headers=alice.headers).status_code == 401


def test_user_profile_and_404(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    resp = alice.get(f"/api/users/{bob.id}")
    assert resp.status_code == 200 and resp.get_json()["nickname"] == "bob"
    assert "password_hash" not in resp.get_json()
    missing = alice.get("/api/users/999999")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


def test_leaderboard_orders_by_rating_and_pages(make_user, db):
    users = [make_user(f"player{i}") for i in range(4)]
    with db.transaction() as s:
        for i, u in enumerate(users):
            s.execute(text("UPDATE users SET rating = :r WHERE id = :id"), {"r": 1400 + 50 * i, "id": u.id})
    body = users[0].get("/api/leaderboard?limit=2").get_json()
    assert [u["nickname"] for u in body["users"]] == ["player3", "player2"]
    body = users[0].get("/api/leaderboard?limit=2&offset=2").get_json()
    assert [u["nickname"] for u in body["users"]] == ["player1", "player0"]
    assert users[0].get("/api/leaderboard?limit=0").status_code == 400
    assert users[0].get("/api/leaderboard?limit=abc").get_json()["error"]["code"] == "validation_error"
