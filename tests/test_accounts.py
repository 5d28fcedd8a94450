"""Registration, login, logout, profiles, leaderboard and token handling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from duely.api import create_app
from duely.config import Config, to_environ
from duely.infra import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


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


# -- login lockout: per (nickname, address) pair, per address, per nickname (README, "Login lockout") --

def login_from(client, address: str, nickname: str, password: str, headers: dict | None = None):
    return client.post("/api/auth/login", json={"nickname": nickname, "password": password},
                       environ_base={"REMOTE_ADDR": address}, headers=headers or {})


def test_a_locked_pair_answers_a_clear_429_and_locks_only_that_pair(client, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    for _ in range(5):
        assert login_from(client, "198.51.100.1", "alice", "guess guess").status_code == 401
    resp = login_from(client, "198.51.100.1", "alice", alice.password)
    assert resp.status_code == 429
    body = resp.get_json()["error"]
    assert body["code"] == "rate_limited" and "retry" in body["message"].lower()
    assert 0 < int(resp.headers["Retry-After"]) <= 300 and body["retry_after"] == int(resp.headers["Retry-After"])
    # The same player from elsewhere, and another player from the same address, still get in.
    assert login_from(client, "198.51.100.2", "alice", alice.password).status_code == 200
    assert login_from(client, "198.51.100.1", "bob", bob.password).status_code == 200


def test_strangers_failures_never_lock_the_owner_out(client, make_user):
    alice = make_user("alice")
    # Thirty strangers, two guesses each: far past the per-nickname limit (20).
    strangers = [f"203.0.113.{i}" for i in range(1, 31)]
    for address in strangers:
        for _ in range(2):
            assert login_from(client, address, "alice", "guess guess").status_code in (401, 429)
    # The nickname is now under attack: an address that failed on it is refused, even with the
    # right password...
    assert login_from(client, strangers[0], "alice", alice.password).status_code == 429
    # ...a new address gets one guess...
    assert login_from(client, "192.0.2.200", "alice", "guess again").status_code == 401
    assert login_from(client, "192.0.2.200", "alice", "guess again").status_code == 429
    # ...and the owner, from an address that has not failed, logs in.
    assert login_from(client, "192.0.2.1", "alice", alice.password).status_code == 200


def test_an_address_is_locked_after_many_failures_over_all_nicknames(client, make_user):
    mallory, bob = make_user("mallory"), make_user("bob")
    for i in range(20):
        assert login_from(client, "198.51.100.7", f"victim{i}", "guess guess").status_code == 401
        if i in (4, 9, 14):  # logging into one's own account in between does not wipe the record
            assert login_from(client, "198.51.100.7", "mallory", mallory.password).status_code == 200
    resp = login_from(client, "198.51.100.7", "victim99", "guess guess")
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0
    assert login_from(client, "198.51.100.7", "bob", bob.password).status_code == 429
    assert login_from(client, "198.51.100.8", "bob", bob.password).status_code == 200


def test_concurrent_guesses_cannot_slip_past_the_limit(app, make_user):
    """Attempts are counted before the (slow) password check, so a burst of parallel guesses
    from one address gets no more tries than the same guesses one by one."""
    make_user("alice")
    barrier = threading.Barrier(16)
    statuses: list[int] = []

    def guess() -> None:
        c = app.test_client()
        barrier.wait()
        statuses.append(login_from(c, "198.51.100.9", "alice", "guess guess").status_code)

    threads = [threading.Thread(target=guess) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [401] * 5 + [429] * 11


# -- the client address behind a proxy (FORWARDED_ALLOW_IPS) --

def test_x_forwarded_for_is_believed_from_a_trusted_proxy_only(client, make_user):
    alice = make_user("alice")
    # From the proxy on this host (the test client's peer is 127.0.0.1, trusted by default),
    # each X-Forwarded-For is its own client: one client's failures lock only that client.
    for _ in range(5):
        assert login_from(client, "127.0.0.1", "alice", "guess guess", {"X-Forwarded-For": "198.51.100.1"}).status_code == 401
    assert login_from(client, "127.0.0.1", "alice", alice.password, {"X-Forwarded-For": "198.51.100.1"}).status_code == 429
    # The proxy appends the address it saw: what a client wrote before it is not believed.
    forged = {"X-Forwarded-For": "198.51.100.2, 198.51.100.1"}
    assert login_from(client, "127.0.0.1", "alice", alice.password, forged).status_code == 429
    assert login_from(client, "127.0.0.1", "alice", alice.password, {"X-Forwarded-For": "198.51.100.2"}).status_code == 200

    # A peer that is not a trusted proxy cannot pass its failures off as someone else's.
    for _ in range(6):
        assert login_from(client, "203.0.113.5", "alice", "guess guess", {"X-Forwarded-For": "198.51.100.3"}).status_code in (401, 429)
    assert login_from(client, "127.0.0.1", "alice", alice.password, {"X-Forwarded-For": "198.51.100.3"}).status_code == 200
    assert login_from(client, "203.0.113.5", "alice", alice.password, {"X-Forwarded-For": "198.51.100.3"}).status_code == 429


def test_forwarded_allow_ips_names_the_trusted_proxies(config, db):
    c = create_app(config.replace(forwarded_allow_ips="10.0.0.0/8, 192.0.2.10"), db).test_client()
    assert c.post("/api/users", json={"nickname": "alice", "password": "correct horse"}).status_code == 201
    for _ in range(5):
        assert login_from(c, "10.1.2.3", "alice", "guess guess", {"X-Forwarded-For": "198.51.100.1"}).status_code == 401
    # 10.1.2.3 is a trusted proxy: the failures were 198.51.100.1's, not the proxy's.
    assert login_from(c, "10.1.2.3", "alice", "correct horse", {"X-Forwarded-For": "198.51.100.4"}).status_code == 200
    assert login_from(c, "192.0.2.10", "alice", "correct horse", {"X-Forwarded-For": "198.51.100.1"}).status_code == 429
    # Loopback is no longer trusted once the list is set: its header is ignored.
    for _ in range(5):
        assert login_from(c, "127.0.0.1", "alice", "guess guess", {"X-Forwarded-For": "198.51.100.5"}).status_code == 401
    assert login_from(c, "10.1.2.3", "alice", "correct horse", {"X-Forwarded-For": "198.51.100.5"}).status_code == 200
    assert login_from(c, "127.0.0.1", "alice", "correct horse").status_code == 429


# -- password hashing off the event loop, under the real server --

@pytest.fixture
def one_worker_server(database_url, config, db, tmp_path):
    """gunicorn with one gevent worker hashing one password at a time: a burst of registrations
    queues for that one thread."""
    port = free_port()
    env = {**os.environ, **to_environ(Config(database_url=database_url, secret_key=config.secret_key, port=port,
                                             workers=1, password_hash_threads=1, log_level="WARNING"))}
    with open(tmp_path / "gunicorn.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "duely" / "gunicorn_conf.py"), "app:app"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_burst_of_registrations_does_not_hold_up_other_requests(one_worker_server, make_poller, append_event):
    base, burst = one_worker_server, 40
    alice = make_poller()
    assert requests.get(f"{base}/api/updates", params={"timeout": 0}, headers=alice.headers, timeout=30).status_code == 200
    pool = ThreadPoolExecutor(burst + 1)
    held = pool.submit(requests.get, f"{base}/api/updates", params={"timeout": 60, "last_event_id": 0},
                       headers=alice.headers, timeout=90)
    done: list[int] = []

    def register(i: int) -> None:
        resp = requests.post(f"{base}/api/users", json={"nickname": f"burst{i}", "password": "correct horse"}, timeout=120)
        done.append(resp.status_code)

    registrations = [pool.submit(register, i) for i in range(burst)]
    deadline = time.monotonic() + 60
    while not done and time.monotonic() < deadline:  # the burst is under way: hashes are queued
        time.sleep(0.01)
    # The first is in and the rest still queue for the one hashing thread. Not "exactly one": this
    # thread may be descheduled long enough for a second hash to finish before it looks.
    assert done and set(done) == {201} and len(done) < burst // 4, done
    # Meanwhile the worker's event loop answers the rest of the world: a cheap GET, and a held
    # poll woken by an event, each long before the queued hashes are through.
    me = requests.get(f"{base}/api/users/me", headers=alice.headers, timeout=60)
    assert me.status_code == 200
    append_event(alice.id)
    woken = held.result(60)
    assert woken.status_code == 200 and [e["id"] for e in woken.json()["events"]] == [1]
    assert len(done) < burst // 2, f"{len(done)} of {burst} registrations were through first"
    for f in registrations:
        f.result(120)
    assert sorted(done) == [201] * burst
    pool.shutdown()
