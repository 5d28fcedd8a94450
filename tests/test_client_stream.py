"""The client library's event stream (`Client.stream()`, `Client.duel_stream()`: Server-Sent
Events) against the real stack: the same promises as `updates()` (in order, each once, resumed
after restarts, Retry-After; the 410 resync is tested with updates() in tests/test_client.py),
on one open connection."""

from __future__ import annotations

import itertools
import json
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


def _wait(predicate, within_secs: float = 30) -> None:
    deadline = time.monotonic() + within_secs
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _append_left(db, user_id: int) -> None:
    from duely import eventlog
    from duely.eventlog.types import QueueLeft, QueueLeftReason

    db.run(lambda s: eventlog.append(s, user_id, QueueLeft(reason=QueueLeftReason.LEFT)))


def _follow(events) -> list[dict]:
    seen: list[dict] = []
    threading.Thread(target=lambda: seen.extend(events), daemon=True).start()
    return seen


def test_stream_follows_the_log_in_order_and_resumes_across_a_server_restart(instant_stack, db):
    client = Client(instant_stack.url)
    user_id = client.register("streamer", "correct horse")["id"]
    _append_left(db, user_id)
    events = client.stream()
    seen = _follow(events)
    _wait(lambda: len(seen) == 1)
    _append_left(db, user_id)  # committed while the stream is open: written to it at once
    _wait(lambda: len(seen) == 2)

    instant_stack.web.stop()  # SIGTERM: the server ends its streams, then nobody listens
    for _ in range(3):
        _append_left(db, user_id)
    time.sleep(1.5)  # the stream is failing to reconnect now
    assert events.failures >= 1
    instant_stack.web.start()
    _append_left(db, user_id)
    _wait(lambda: len(seen) == 6, within_secs=60)
    events.close()
    assert [e["id"] for e in seen] == [1, 2, 3, 4, 5, 6]  # nothing lost, nothing twice, in order
    assert {e["type"] for e in seen} == {"queue_left"} and events.last_event_id == 6
    assert events.opened >= 2 and events.failures == 0  # opened again after the restart, and healthy


def test_stream_carries_a_duel_for_both_players_like_updates(instant_stack):
    alice, bob = Client(instant_stack.url), Client(instant_stack.url)
    alice.register("alice", "correct horse")
    bob.register("bob", "correct horse")
    alice_events, bob_polls = alice.stream(), bob.updates(timeout=5)
    alice_seen = _follow(alice_events)
    alice.join_queue()
    bob.join_queue()
    _wait(lambda: any(e["type"] == "duel_started" for e in alice_seen))
    duel_id = next(e for e in alice_seen if e["type"] == "duel_started")["data"]["duel_id"]
    sid = alice.submit(duel_id, WRONG)
    _wait(lambda: any(e["type"] == "submission_verdict" for e in alice_seen))
    alice.resign(duel_id)
    _wait(lambda: any(e["type"] == "duel_finished" for e in alice_seen))
    alice_events.close()

    # the stream's events are exactly the log the long poll reads
    assert alice_seen == alice.poll(0, timeout=0)["events"][:len(alice_seen)]
    assert [e["id"] for e in alice_seen] == list(range(1, len(alice_seen) + 1))
    verdict = next(e for e in alice_seen if e["type"] == "submission_verdict")
    assert verdict["data"]["submission_id"] == sid and verdict["data"]["verdict"] == "Wrong Answer on test #1"
    assert any(e["type"] == "duel_finished" for e in bob_polls)


def test_stream_after_logout_raises_unauthorized(instant_stack, db):
    client = Client(instant_stack.url)
    user_id = client.register("leaver", "correct horse")["id"]
    other = Client(instant_stack.url, client.token)  # the same session in another program
    events = client.stream()
    _append_left(db, user_id)
    assert next(events)["id"] == 1
    other.logout()
    _append_left(db, user_id)  # the stream's next read re-checks the token: the stream ends
    with pytest.raises(duely_client.Unauthorized):
        next(events)  # ...and opening it again is refused, not retried
    assert events.last_event_id == 1  # nothing after the logout was given out


def test_stream_frames_cut_anywhere_by_a_proxy_and_a_503_first(instant_stack, db):
    """A frame cut across chunks (a proxy may re-chunk), CRLF line ends and comments are read as
    one event; a 503 with Retry-After is waited out; the next stream resumes after the last id."""
    proxy = FlakyProxy(instant_stack.port)
    try:
        direct = Client(instant_stack.url)
        user_id = direct.register("chunked", "correct horse")["id"]
        for _ in range(3):
            _append_left(db, user_id)
        real = direct.poll(0, timeout=0)["events"]
        body = b'{"error": {"code": "unavailable", "message": "database unreachable"}}'
        proxy.canned.append(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        first = ("retry: 2000\n\nid: 1\r\nevent: queue_left\r\ndata: " + json.dumps(real[0]) + "\r\n\r\n: heartbeat\n\n"
                 + "id: 2\nevent: queue_left\ndata: " + json.dumps(real[1]) + "\n\n").encode()
        cuts = [0, 5, 30, len(first) - 60, len(first) - 1, len(first)]  # mid-field, mid-JSON, mid-line-end
        chunks = b"".join(b"%x\r\n%s\r\n" % (b - a, first[a:b]) for a, b in itertools.pairwise(cuts))
        proxy.canned.append(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + chunks + b"0\r\n\r\n")
        events = Client(proxy.url, direct.token).stream()
        started = time.monotonic()
        got = [next(events) for _ in range(3)]  # 1 and 2 from the canned stream, then 3 from the server
        events.close()
        assert time.monotonic() - started >= 0.9  # it waited Retry-After before opening again
        assert proxy.canned_served == 2 and events.opened == 2
        assert got == real
    finally:
        proxy.close()


def test_duel_stream_is_a_spectators_view_to_the_finish(instant_stack):
    alice, bob, dave = (Client(instant_stack.url) for _ in range(3))
    for client, name in ((alice, "alice"), (bob, "bob"), (dave, "dave")):
        client.register(name, "correct horse")
    duel_id = bob.accept_challenge(alice.create_challenge("bob")["id"])["duel"]["id"]
    watching = dave.duel_stream(duel_id)
    seen: list[dict] = []
    follower = threading.Thread(target=lambda: seen.extend(watching), daemon=True)  # ends after duel_finished
    follower.start()
    alice.submit(duel_id, WRONG)
    _wait(lambda: any(e["type"] == "submission" and e["data"]["verdict"] for e in seen))
    alice.resign(duel_id)
    follower.join(30)
    assert not follower.is_alive() and watching.ended
    assert seen == list(dave.duel_updates(duel_id, timeout=0))
    assert seen[0]["type"] == "duel_started" and seen[-1]["type"] == "duel_finished"
    with pytest.raises(duely_client.NotFound):
        next(dave.duel_stream(999999))
