"""GET /api/updates through the Flask app (docs/api.md, "Event log")."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import text

from duely import eventlog
from duely.clock import utcnow
from duely.eventlog import store
from duely.eventlog.types import QueueJoined, QueueLeft, QueueLeftReason
from duely.runtime import Runtime
from tests.fixtures.events import is_present, last_seen, progress, write_with_late_commits


def poll(client, user, **query):
    return client.get("/api/updates", query_string=query, headers=user.headers)


def test_without_a_token_is_401(client):
    resp = client.get("/api/updates?timeout=0")
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthorized"
    resp = client.get("/api/updates?timeout=0", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401


def test_a_bad_token_is_401_even_with_a_bad_query(client):
    resp = client.get("/api/updates?timeout=x", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401


def test_a_logged_out_token_stops_working_at_once(client, make_poller, updates_listener):
    alice = make_poller()
    assert poll(client, alice, timeout=0).status_code == 200
    assert client.post("/api/auth/logout", headers=alice.headers).status_code == 204
    assert poll(client, alice, timeout=0).status_code == 401
    assert poll(client, alice, timeout=1).status_code == 401


def test_an_expired_token_is_401(client, make_poller, db):
    alice = make_poller()
    with db.transaction() as s:
        s.execute(text("UPDATE auth_tokens SET expires_at = now() - interval '1 second'"))
    assert poll(client, alice, timeout=0).status_code == 401


def test_a_token_revoked_during_a_held_poll_gets_401_on_the_next_read(client, make_poller, db, append_event, updates_listener):
    alice = make_poller()
    assert poll(client, alice, timeout=0).status_code == 200

    def revoke_then_write():
        time.sleep(0.3)
        with db.transaction() as s:
            s.execute(text("UPDATE auth_tokens SET revoked_at = now()"))
        append_event(alice.id)

    threading.Thread(target=revoke_then_write).start()
    assert poll(client, alice, timeout=10).status_code == 401


def test_the_first_poll_of_a_token_new_to_this_process_is_held_too(app, make_poller, append_event, updates_listener):
    """A token this process has not seen: the user is known only after the first read, and an
    event committed right then must still wake the poll."""
    alice = make_poller()
    threading.Timer(0.3, append_event, args=(alice.id,)).start()
    started = time.monotonic()
    resp = poll(app.test_client(), alice, timeout=20)
    assert [e["id"] for e in resp.get_json()["events"]] == [1] and time.monotonic() - started < 10


def test_empty_log_answers_empty_with_the_given_id(client, make_poller):
    alice = make_poller()
    resp = poll(client, alice, timeout=0)
    assert resp.status_code == 200
    assert resp.get_json() == {"events": [], "last_event_id": 0}
    assert resp.headers["Cache-Control"] == "no-store"


def test_events_come_in_order_with_the_contract_shape(client, make_poller, db):
    alice = make_poller()
    with db.transaction() as s:
        eventlog.append(s, alice.id, QueueJoined(since=dt.datetime(2026, 11, 22, 17, tzinfo=dt.UTC)))
        eventlog.append(s, alice.id, QueueLeft(reason=QueueLeftReason.LEFT))
    body = poll(client, alice, timeout=0).get_json()
    assert body["last_event_id"] == 2
    assert [(e["id"], e["type"], e["data"]) for e in body["events"]] == [
        (1, "queue_joined", {"since": "2026-11-22T17:00:00Z"}),
        (2, "queue_left", {"reason": "left"}),
    ]
    assert all(e["created_at"].endswith("Z") for e in body["events"])
    assert poll(client, alice, last_event_id=1, timeout=0).get_json()["events"][0]["id"] == 2


def test_limit_pages_through_the_log(client, make_poller, append_event):
    alice = make_poller()
    for _ in range(5):
        append_event(alice.id)
    page = poll(client, alice, limit=2, timeout=0).get_json()
    assert [e["id"] for e in page["events"]] == [1, 2] and page["last_event_id"] == 2
    page = poll(client, alice, limit=100, last_event_id=2, timeout=0).get_json()
    assert [e["id"] for e in page["events"]] == [3, 4, 5]


def test_defaults_are_id_0_and_limit_100(client, make_poller, append_event):
    alice = make_poller()
    for _ in range(101):
        append_event(alice.id)
    body = client.get("/api/updates", headers=alice.headers).get_json()  # has events: answers at once
    assert [e["id"] for e in body["events"]] == list(range(1, 101))


def test_a_held_poll_is_answered_when_the_event_commits(client, make_poller, append_event, updates_listener):
    alice = make_poller()
    notified_before = updates_listener.notifications
    timer = threading.Timer(0.3, append_event, args=(alice.id,))
    started = time.monotonic()
    timer.start()
    resp = poll(client, alice, timeout=30)
    elapsed = time.monotonic() - started
    assert [e["id"] for e in resp.get_json()["events"]] == [1]
    # The commit came at 0.3 s and the timeout is 30 s: only the notification can explain this.
    assert 0.3 <= elapsed < 10
    assert updates_listener.notifications > notified_before


def test_wake_up_latency_after_commit_is_small(client, make_poller, append_event, updates_listener):
    """Within 100 ms of the commit by the contract; measured, with a generous bound against a loaded CI box."""
    alice = make_poller()
    committed_at: list[float] = []

    def write():
        append_event(alice.id)
        committed_at.append(time.monotonic())

    threading.Timer(0.3, write).start()
    resp = poll(client, alice, timeout=30)
    answered_at = time.monotonic()
    assert resp.get_json()["events"]
    assert answered_at - committed_at[0] < 1.0


def held_poll(client, user, **query) -> tuple[threading.Thread, dict]:
    """A poll held in a thread; `answer` gets its JSON body and when it came (monotonic)."""
    answer: dict = {}

    def run():
        resp = poll(client, user, **query)
        answer.update(body=resp.get_json(), status=resp.status_code, at=time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answer


@pytest.mark.parametrize("via", ["fast path", "flask view"])
def test_a_poll_that_asks_not_to_wake_on_own_echoes_sleeps_through_them_and_gets_them_with_the_next_event(
        app, client, make_poller, append_event, updates_listener, via):
    fast = app.wsgi_app.app
    answered_fast = fast.answered
    extra = {} if via == "fast path" else {"x": "1"}  # an unknown argument sends the poll to Flask
    alice = make_poller()
    thread, answer = held_poll(client, alice, timeout=20, wake_on_own="false", **extra)
    time.sleep(0.3)  # held by now
    # Her own join, submit-like echoes: the join's queue_joined does not answer her poll...
    assert client.post("/api/queue", headers=alice.headers).status_code == 202
    thread.join(1.5)
    assert thread.is_alive() and not answer
    # ...her own leave neither; an event from elsewhere does, with everything before it, in order.
    assert client.delete("/api/queue", headers=alice.headers).status_code == 204
    thread.join(0.7)
    assert thread.is_alive()
    woke_at = time.monotonic()
    append_event(alice.id)
    thread.join(10)
    assert answer["status"] == 200 and answer["at"] - woke_at < 5
    assert [(e["id"], e["type"]) for e in answer["body"]["events"]] == [
        (1, "queue_joined"), (2, "queue_left"), (3, "submission_update")]
    assert answer["body"]["events"][1]["data"] == {"reason": "left"}
    assert (fast.answered - answered_fast == 1) is (via == "fast path")


def test_by_default_and_with_wake_on_own_true_a_held_poll_wakes_for_its_own_echoes(client, make_poller, updates_listener):
    for flag in ({}, {"wake_on_own": "true"}, {"wake_on_own": "1"}):
        alice = make_poller()
        thread, answer = held_poll(client, alice, timeout=20, **flag)
        time.sleep(0.3)
        joined_at = time.monotonic()
        assert client.post("/api/queue", headers=alice.headers).status_code == 202
        thread.join(10)
        assert [e["type"] for e in answer["body"]["events"]] == ["queue_joined"], flag
        assert answer["at"] - joined_at < 5


def test_own_echoes_already_in_the_log_answer_a_poll_at_once_whatever_it_asked(client, make_poller):
    alice = make_poller()
    assert client.post("/api/queue", headers=alice.headers).status_code == 202
    started = time.monotonic()
    body = poll(client, alice, timeout=20, wake_on_own="false").get_json()
    assert [e["type"] for e in body["events"]] == ["queue_joined"] and time.monotonic() - started < 5


def test_an_expiry_is_news_even_to_a_poll_that_sleeps_through_its_own_echoes(app, make_poller, db, runtime, updates_listener):
    """A `queue_left` the user did not ask for (expired) wakes a `wake_on_own=false` poll."""
    from duely.matchmaking import queue

    alice = make_poller()
    with db.transaction() as s:
        queue.join(s, alice.id)
    client = app.test_client()
    thread, answer = held_poll(client, alice, timeout=20, wake_on_own="false", last_event_id=1)
    time.sleep(0.3)
    expired_at = time.monotonic()
    with db.transaction() as s:
        assert queue.leave(s, alice.id, reason=QueueLeftReason.EXPIRED)
    thread.join(10)
    assert [e["data"] for e in answer["body"]["events"]] == [{"reason": "expired"}]
    assert answer["at"] - expired_at < 5


def test_an_empty_poll_returns_after_its_timeout(client, make_poller, updates_listener):
    alice = make_poller()
    started = time.monotonic()
    resp = poll(client, alice, timeout=1)
    elapsed = time.monotonic() - started
    assert resp.get_json() == {"events": [], "last_event_id": 0}
    assert 1.0 <= elapsed < 6


def test_fractional_timeouts_are_accepted(client, make_poller, updates_listener):
    alice = make_poller()
    assert poll(client, alice, timeout=0.2).status_code == 200


def test_events_of_a_rolled_back_transaction_never_appear(client, make_poller, db, updates_listener):
    alice = make_poller()

    def write_then_roll_back():
        time.sleep(0.2)
        with db.sessionmaker() as s:
            s.begin()
            eventlog.append(s, alice.id, QueueJoined(since=utcnow()))
            s.rollback()

    thread = threading.Thread(target=write_then_roll_back)
    thread.start()
    resp = poll(client, alice, timeout=1)
    thread.join()
    assert resp.get_json() == {"events": [], "last_event_id": 0}
    with db.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM events")).scalar() == 0


def test_a_user_never_sees_another_users_events(client, make_poller, append_event, updates_listener):
    alice, bob = make_poller(), make_poller()
    append_event(bob.id, QueueLeft(reason=QueueLeftReason.LEFT))
    threading.Timer(0.2, append_event, args=(bob.id,)).start()
    assert poll(client, alice, timeout=1).get_json() == {"events": [], "last_event_id": 0}
    assert [e["id"] for e in poll(client, bob, timeout=0).get_json()["events"]] == [1, 2]
    # Bob's id 2 is ahead of Alice's log.
    assert poll(client, alice, last_event_id=2, timeout=0).status_code == 400


def test_concurrent_writers_and_an_http_poller(app, make_poller, db, updates_listener):
    """Writer threads commit at random moments; a client following the API sees 1..N once each."""
    alice = make_poller()
    writers = [threading.Thread(target=write_with_late_commits, args=(db, alice.id, 20, i, None)) for i in range(6)]
    for w in writers:
        w.start()
    client = app.test_client()
    seen: list[int] = []
    after = 0
    deadline = time.monotonic() + 60
    while len(seen) < 120 and time.monotonic() < deadline:
        body = poll(client, alice, last_event_id=after, timeout=5, limit=9).get_json()
        seen += [e["id"] for e in body["events"]]
        after = body["last_event_id"]
    for w in writers:
        w.join()
    assert seen == list(range(1, 121))


def test_many_held_polls_of_different_users_each_get_their_own_event(app, make_poller, append_event, updates_listener):
    users = [make_poller() for _ in range(8)]
    results: dict[int, dict] = {}

    def hold(user):
        results[user.id] = poll(app.test_client(), user, timeout=30).get_json()

    threads = [threading.Thread(target=hold, args=(u,)) for u in users]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while updates_listener.waiter_count() < len(users) and time.monotonic() < deadline:
        time.sleep(0.02)
    for i, u in enumerate(users):
        append_event(u.id, progress(f"for {i}"))
    for t in threads:
        t.join(20)
    for i, u in enumerate(users):
        assert [e["data"]["status"] for e in results[u.id]["events"]] == [f"for {i}"]


# -- 400 / 410 -----------------------------------------------------------------------------

def test_an_id_ahead_of_the_log_is_400(client, make_poller, append_event):
    alice = make_poller()
    append_event(alice.id)
    resp = poll(client, alice, last_event_id=2, timeout=0)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "bad_request"


def test_an_expired_id_is_410_with_the_id_to_continue_from(client, make_poller, append_event, db):
    alice = make_poller()
    for _ in range(4):
        append_event(alice.id)
    with db.transaction() as s:
        s.execute(text("UPDATE events SET created_at = created_at - interval '8 days' WHERE id <= 2"))
        store.prune(s, utcnow() - dt.timedelta(days=7))
    resp = poll(client, alice, last_event_id=0, timeout=0)
    assert resp.status_code == 410
    error = resp.get_json()["error"]
    assert error["code"] == "events_expired" and error["last_event_id"] == 4 and error["message"]
    # After the resync the client continues from the given id.
    assert poll(client, alice, last_event_id=4, timeout=0).get_json() == {"events": [], "last_event_id": 4}
    assert [e["id"] for e in poll(client, alice, last_event_id=2, timeout=0).get_json()["events"]] == [3, 4]


def test_the_retention_job_prunes_and_then_old_cursors_get_410(client, make_poller, append_event, db, config):
    alice = make_poller()
    append_event(alice.id)
    append_event(alice.id)
    with db.transaction() as s:
        s.execute(text("UPDATE events SET created_at = created_at - interval '2 hours'"))
    assert store.prune_job(Runtime(config.replace(event_retention=3600.0), db)) == 2
    resp = poll(client, alice, last_event_id=1, timeout=0)
    assert resp.status_code == 410 and resp.get_json()["error"]["last_event_id"] == 2


# -- validation ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"timeout": -1}, "timeout"),
        ({"timeout": 61}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": "nan"}, "timeout"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "all"}, "limit"),
        ({"last_event_id": -1}, "last_event_id"),
        ({"last_event_id": "x"}, "last_event_id"),
        ({"last_event_id": 2**63}, "last_event_id"),
        ({"wake_on_own": "maybe"}, "wake_on_own"),
        ({"wake_on_own": "yes"}, "wake_on_own"),
    ],
)
def test_bad_query_values_are_validation_errors(client, make_poller, query, field):
    alice = make_poller()
    resp = poll(client, alice, **query)
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error["code"] == "validation_error" and field in error["fields"]


def test_boundary_values_are_accepted(client, make_poller):
    alice = make_poller()
    assert poll(client, alice, timeout=0, limit=1).status_code == 200
    assert poll(client, alice, timeout=0, limit=100, last_event_id=0).status_code == 200


# -- presence ------------------------------------------------------------------------------

def test_a_poll_refreshes_the_users_presence(client, make_poller, db, runtime):
    alice = make_poller()
    with db.transaction() as s:
        assert last_seen(s, alice.id) is None
    poll(client, alice, timeout=0)
    with db.transaction() as s:
        assert is_present(s, alice.id, 5)
        s.execute(text("UPDATE presence SET last_seen_at = now() - interval '1 hour'"))
    runtime.presence.forget(alice.id)  # as if the throttle window had passed
    poll(client, alice, timeout=0)
    with db.transaction() as s:
        assert is_present(s, alice.id, 5)


def test_openapi_documents_the_endpoint(client):
    spec = client.get("/api/openapi.json").get_json()
    params = {p["name"] for p in spec["paths"]["/api/updates"]["get"]["parameters"]}
    assert {"last_event_id", "timeout", "limit", "wake_on_own"} <= params
    duel_params = {p["name"] for p in spec["paths"]["/api/duels/{duel_id}/updates"]["get"]["parameters"]}
    assert {"last_event_id", "timeout", "limit"} <= duel_params and "wake_on_own" not in duel_params
    for path, params in (("/api/stream", {"last_event_id", "ticket", "wake_on_own", "Last-Event-ID"}),
                         ("/api/duels/{duel_id}/stream", {"last_event_id", "ticket", "Last-Event-ID"})):
        assert {p["name"] for p in spec["paths"][path]["get"]["parameters"]} == params, path
