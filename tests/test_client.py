"""The Python client library (clients/python/duely_client) against the real stack: gunicorn
(gevent), scheduler, consumer, broker and an instant dev Taski as processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import requests

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


@pytest.mark.parametrize("follow", ["updates", "stream"])
def test_updates_that_do_not_wake_on_own_echoes_get_them_with_the_next_event(instant_stack, db, follow):
    from duely import eventlog
    from duely.eventlog.types import QueueLeft, QueueLeftReason

    client = Client(instant_stack.url)
    user_id = client.register(f"solo-{follow}", "correct horse")["id"]
    updates = client.updates(timeout=20, wake_on_own=False) if follow == "updates" else client.stream(wake_on_own=False)
    seen: list[tuple[str, float]] = []

    def follow():
        for event in updates:
            seen.append((event["type"], time.monotonic()))

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(0.5)  # its poll is held
    client.join_queue()  # an echo of its own call: no answer for it alone
    time.sleep(1.5)
    assert seen == []
    news_at = time.monotonic()
    db.run(lambda s: eventlog.append(s, user_id, QueueLeft(reason=QueueLeftReason.EXPIRED)))  # news: it wakes
    _wait(lambda: len(seen) == 2)
    updates.stop.set()
    if follow == "stream":
        updates.close()
    assert [kind for kind, _ in seen] == ["queue_joined", "queue_left"]
    assert seen[0][1] - news_at < 5


@pytest.mark.parametrize("follow", ["updates", "stream"])
def test_updates_resync_after_410_and_continue(instant_stack, db, follow):
    """The same for `updates()` (long polls) and `stream()` (the SSE stream)."""
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

    events = client.updates(0, timeout=2, on_resync=resync) if follow == "updates" else client.stream(0, on_resync=resync)
    first = next(events)
    if follow == "stream":
        events.close()
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


# -- challenges, rematch, settings, blocks, spectating, rating history ---------------------------

def _players(url: str, *names: str) -> list[Client]:
    clients = []
    for name in names:
        client = Client(url)
        client.register(name, "correct horse")
        clients.append(client)
    return clients


def test_challenge_by_name_accepted_starts_the_duel_for_both(instant_stack):
    alice, bob = _players(instant_stack.url, "alice", "bob")
    a_updates, b_updates = alice.updates(timeout=5), bob.updates(timeout=5)
    challenge = alice.create_challenge("BOB", rated=False, duration=600)
    assert challenge["status"] == "pending" and challenge["to"]["user_id"] == bob.user_id
    assert challenge["rated"] is False and challenge["duration_secs"] == 600 and challenge["invite_url"] is None
    assert next_event(b_updates, "challenge_received")["data"]["challenge"]["id"] == challenge["id"]
    assert [c["id"] for c in bob.challenges()["incoming"]] == [challenge["id"]]
    assert [c["id"] for c in alice.challenges()["outgoing"]] == [challenge["id"]]

    accepted = bob.accept_challenge(challenge["id"])
    duel_id = accepted["duel"]["id"]
    assert accepted["challenge"]["status"] == "accepted" and accepted["challenge"]["duel_id"] == duel_id
    assert accepted["duel"]["rated"] is False
    for updates in (a_updates, b_updates):
        assert next_event(updates, "duel_started")["data"]["duel_id"] == duel_id
    assert alice.challenge(challenge["id"])["status"] == "accepted"
    assert alice.challenges() == {"incoming": [], "outgoing": []}
    with pytest.raises(duely_client.ChallengeClosed) as closed:
        bob.decline_challenge(challenge["id"])
    assert closed.value.status == 409 and closed.value.code == "challenge_closed"


def test_open_challenge_accepted_by_a_third_client(instant_stack):
    alice, bob, carol = _players(instant_stack.url, "alice", "bob", "carol")
    a_updates, c_updates = alice.updates(timeout=5), carol.updates(timeout=5)
    offer = alice.create_challenge(None)
    assert offer["to"] is None and offer["invite_url"] and offer["id"] in offer["invite_url"]
    assert bob.challenge(offer["id"])["id"] == offer["id"]  # anyone signed in may see an open one
    with pytest.raises(duely_client.CannotAcceptOwn) as own:
        alice.accept_challenge(offer["id"])
    assert own.value.status == 400 and own.value.code == "cannot_accept_own"
    with pytest.raises(duely_client.CannotDeclineOpen):
        bob.decline_challenge(offer["id"])

    accepted = carol.accept_challenge(offer["id"])
    assert accepted["challenge"]["accepted_by"]["user_id"] == carol.user_id
    duel_id = accepted["duel"]["id"]
    assert {p["user_id"] for p in accepted["duel"]["players"]} == {alice.user_id, carol.user_id}
    assert next_event(a_updates, "duel_started")["data"]["opponent"]["user_id"] == carol.user_id
    assert next_event(c_updates, "duel_started")["data"]["duel_id"] == duel_id
    with pytest.raises(duely_client.ChallengeClosed):  # someone was faster
        bob.accept_challenge(offer["id"])

    mine = bob.create_challenge(None)
    assert bob.cancel_challenge(mine["id"])["status"] == "canceled"
    with pytest.raises(duely_client.NotFound):
        bob.challenge("no-such-challenge")


def test_rematch_offered_and_accepted(instant_stack):
    alice, bob = _players(instant_stack.url, "alice", "bob")
    a_updates, b_updates = alice.updates(timeout=5), bob.updates(timeout=5)
    first = bob.accept_challenge(alice.create_challenge("bob", rated=False)["id"])["duel"]["id"]
    next_event(a_updates, "duel_started")
    with pytest.raises(duely_client.DuelActive) as active:
        alice.rematch(first)
    assert active.value.code == "duel_active"
    alice.resign(first)
    next_event(b_updates, "duel_finished")

    offer = alice.rematch(first)
    assert offer["kind"] == "rematch" and offer["rematch_of"] == first and offer["status"] == "pending"
    assert alice.rematch(first)["id"] == offer["id"]  # a repeat answers the same offer
    assert next_event(b_updates, "rematch_offered")["data"]["challenge"]["id"] == offer["id"]
    accepted = bob.rematch(first)  # bob offering back accepts alice's offer
    assert accepted["id"] == offer["id"] and accepted["status"] == "accepted"
    second = next_event(a_updates, "duel_started")["data"]["duel_id"]
    assert second == accepted["duel_id"] != first
    assert next_event(b_updates, "duel_started")["data"]["duel_id"] == second
    (carol,) = _players(instant_stack.url, "carol")
    with pytest.raises(duely_client.Forbidden) as forbidden:
        carol.rematch(first)
    assert forbidden.value.status == 403 and forbidden.value.code == "forbidden"


def test_settings_and_blocks_refusals_carry_their_codes(instant_stack):
    alice, bob, carol = _players(instant_stack.url, "alice", "bob", "carol")
    assert carol.settings() == {"accept_challenges": True}
    assert carol.update_settings(accept_challenges=False) == {"accept_challenges": False}
    assert carol.update_settings() == {"accept_challenges": False}  # nothing given, nothing changed
    with pytest.raises(duely_client.ChallengesDisabled) as disabled:
        alice.create_challenge("carol")
    assert disabled.value.status == 403 and disabled.value.code == "challenges_disabled"
    with pytest.raises(duely_client.CannotChallengeSelf) as itself:
        alice.create_challenge("alice")
    assert itself.value.status == 400 and itself.value.code == "cannot_challenge_self"

    pending = alice.create_challenge("bob")
    b_updates = bob.updates(timeout=5)
    bob.block(alice.user_id)
    bob.block(alice.user_id)  # idempotent
    assert bob.blocks() == [{"user_id": alice.user_id, "nickname": "alice"}]
    assert next_event(b_updates, "challenge_canceled")["data"]["challenge"]["id"] == pending["id"]
    assert alice.challenge(pending["id"])["status"] == "canceled"
    for who, whom in ((alice, "bob"), (bob, "alice")):  # the same answer whoever blocked whom
        with pytest.raises(duely_client.Blocked) as blocked:
            who.create_challenge(whom)
        assert blocked.value.status == 403 and blocked.value.code == "blocked"
    with pytest.raises(duely_client.CannotBlockSelf) as self_block:
        bob.block(bob.user_id)
    assert self_block.value.code == "cannot_block_self"
    with pytest.raises(duely_client.NotFound):
        bob.block(999999)
    with pytest.raises(duely_client.ValidationError) as invalid:
        bob.decline_challenge(alice.create_challenge(None)["id"], reason="because")
    assert invalid.value.code == "validation_error"

    bob.unblock(alice.user_id)
    bob.unblock(alice.user_id)
    assert bob.blocks() == []
    assert alice.create_challenge("bob")["status"] == "pending"


def test_duel_updates_is_a_spectators_view_to_the_finish(instant_stack):
    alice, bob, dave = _players(instant_stack.url, "alice", "bob", "dave")
    duel_id = bob.accept_challenge(alice.create_challenge("bob")["id"])["duel"]["id"]
    duels, _ = dave.duels("active")
    assert duel_id in [d["id"] for d in duels]

    seen: list[dict] = []
    watching = dave.duel_updates(duel_id, timeout=5)
    follower = threading.Thread(target=lambda: seen.extend(watching), daemon=True)  # ends after duel_finished
    follower.start()
    sid = alice.submit(duel_id, WRONG)
    _wait(lambda: any(e["type"] == "submission" and e["data"]["verdict"] for e in seen))
    alice.resign(duel_id)
    follower.join(30)
    assert not follower.is_alive() and watching.ended

    assert [e["id"] for e in seen] == list(range(1, len(seen) + 1))  # the whole log, in order
    assert seen[0]["type"] == "duel_started" and seen[0]["data"]["duel_id"] == duel_id
    submissions = [e["data"] for e in seen if e["type"] == "submission"]
    assert {s["submission_id"] for s in submissions} == {sid}
    assert submissions[-1]["verdict"] == "Wrong Answer on test #1"
    assert all("solution" not in s for s in submissions)  # never code
    finished = seen[-1]
    assert finished["type"] == "duel_finished" and finished["data"]["winner_id"] == bob.user_id
    assert finished["data"]["reason"] == "resign"
    assert [e["id"] for e in dave.duel_updates(duel_id, last_event_id=finished["id"] - 1)] == [finished["id"]]
    assert duel_id in [d["id"] for d in dave.duels("finished")[0]]

    ticket = dave.stream_ticket()
    assert ticket["ticket"] and ticket["expires_at"]
    with requests.get(f"{instant_stack.url}/api/duels/{duel_id}/stream", params={"ticket": ticket["ticket"]},
                      stream=True, timeout=10) as stream:
        assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")


def test_rating_history_after_a_rated_duel(instant_stack):
    alice, bob = _players(instant_stack.url, "alice", "bob")
    assert alice.rating_history(alice.user_id) == ([], None)
    duel_id = bob.accept_challenge(alice.create_challenge("bob")["id"])["duel"]["id"]
    alice.resign(duel_id)
    points, next_before = bob.rating_history(alice.user_id)
    assert next_before is None and [p["duel_id"] for p in points] == [duel_id]
    lost = alice.duel(duel_id)["rating_changes"][str(alice.user_id)]
    assert lost < 0 and points[0]["rating"] - points[0]["rating_before"] == lost
    assert points[0]["rating"] == alice.me()["rating"]
    with pytest.raises(duely_client.NotFound):
        alice.rating_history(999999)


def test_duel_updates_resync_after_410_like_updates(instant_stack, db):
    from sqlalchemy import text

    alice, bob, dave = _players(instant_stack.url, "alice", "bob", "dave")
    duel_id = bob.accept_challenge(alice.create_challenge("bob")["id"])["duel"]["id"]
    alice.submit(duel_id, WRONG)
    _wait(lambda: any(e["data"].get("verdict") for e in dave.poll_duel(duel_id, 0, timeout=0)["events"]))
    newest = dave.poll_duel(duel_id, 0, timeout=0)["last_event_id"]
    with db.transaction() as s:  # as pruning would: the log's start is gone
        s.execute(text("DELETE FROM duel_events WHERE duel_id = :d AND id <= 2"), {"d": duel_id})
    resyncs: list[int] = []

    def resync(cursor: int) -> None:  # a spectator re-reads duel() here; meanwhile the duel goes on
        resyncs.append(cursor)
        alice.resign(duel_id)

    seen = list(dave.duel_updates(duel_id, 0, timeout=5, on_resync=resync))
    assert resyncs == [newest]
    assert [(e["id"], e["type"]) for e in seen] == [(newest + 1, "duel_finished")]
    with pytest.raises(duely_client.NotFound):
        next(dave.duel_updates(999999, timeout=0))  # not retried: there is nothing to wait for


# -- keep-alive connections: a server closing an idle one as the client reuses it ---------------

class ClosingServer:
    """A tiny real HTTP/1.1 server that answers the first request of each connection (keep-alive)
    and closes the connection on the next one without answering: what a server does when its
    keep-alive time runs out just as the client sends on the idle connection. `answer_first=False`
    closes every connection unanswered (a server going down). `reset=True` closes with an RST;
    `cut=True` sends the start of an answer first (the server had read the request)."""

    ANSWERS = {("POST", "/api/queue"): (202, b'{"status": "waiting", "since": null, "duel_id": null}'),
               ("POST", "/api/duels/7/submit"): (202, b'{"submission_id": "s-1"}'),
               ("GET", "/api/queue"): (200, b'{"status": "idle", "since": null, "duel_id": null}'),
               ("POST", "/api/challenges"): (201, b'{"id": "c-1", "status": "pending"}')}

    def __init__(self, *, answer_first: bool = True, reset: bool = False, cut: bool = False):
        import socket

        self.answer_first, self.reset, self.cut = answer_first, reset, cut
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received: list[tuple[str, str, int]] = []  # (method, path, n-th request on its connection)
        self.bodies: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        import socket
        import struct

        reader = conn.makefile("rb")
        for nth in range(1, 1000):
            line = reader.readline()
            if not line:
                break
            method, path, _ = line.decode().split(" ", 2)
            length = 0
            while (header := reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            self.bodies.append(reader.read(length))
            self.received.append((method, path, nth))
            if nth > 1 or not self.answer_first:
                if self.cut:
                    conn.sendall(b"HTTP/1.1 202 X\r\nContent-Length: 100\r\n\r\n{")
                if self.reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                break
            status, body = self.ANSWERS.get((method, path), (200, b"{}"))
            conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (status, len(body), body))
        reader.close()
        conn.close()


@pytest.fixture
def closing_server():
    servers: list[ClosingServer] = []

    def make(**kw) -> ClosingServer:
        servers.append(ClosingServer(**kw))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.mark.parametrize("reset", [False, True], ids=["eof", "reset"])
def test_idempotent_calls_on_a_connection_closed_as_reused_are_sent_again_at_once(closing_server, reset):
    server = closing_server(reset=reset)
    answers: list[tuple[str, int]] = []
    client = Client(server.url, "token", on_response=lambda method, route, status, secs: answers.append((method, status)))
    assert client.queue_status()["status"] == "idle"  # opens the connection the next calls find closed
    assert client.join_queue()["status"] == "waiting"
    assert client.queue_status()["status"] == "idle"
    assert client.submit(7, "print(1)") == "s-1"
    # Each was refused once on the reused connection and sent again on a new one, inside one call:
    # no error and no backoff reached the caller (one answer each, none failed).
    assert [(m, p) for m, p, _ in server.received] == [
        ("GET", "/api/queue"), ("POST", "/api/queue"), ("POST", "/api/queue"), ("GET", "/api/queue"),
        ("GET", "/api/queue"), ("POST", "/api/duels/7/submit"), ("POST", "/api/duels/7/submit")]
    assert answers == [("GET", 200), ("POST", 202), ("GET", 200), ("POST", 202)]
    assert client.transport.stale_retries == 3
    assert server.bodies[-1] == server.bodies[-2]  # the same client_temp_id both times


def test_other_calls_on_a_connection_closed_as_reused_are_not_sent_twice(closing_server):
    server = closing_server()
    client = Client(server.url, "token")
    client.queue_status()
    with pytest.raises(duely_client.ConnectionFailed):
        client.create_challenge("bob")  # not idempotent: the server might have acted on it
    assert [(m, p) for m, p, _ in server.received] == [("GET", "/api/queue"), ("POST", "/api/challenges")]
    assert client.create_challenge("bob")["id"] == "c-1"  # on a new connection


@pytest.mark.parametrize("reset", [False, True], ids=["eof", "reset"])
def test_an_answer_cut_off_is_not_sent_again_at_once(closing_server, reset):
    server = closing_server(cut=True, reset=reset)
    client = Client(server.url, "token")
    client.queue_status()
    with pytest.raises(duely_client.ConnectionFailed):
        client.join_queue()  # idempotent, but the server had read it: the caller's backoff decides
    assert [(m, p) for m, p, _ in server.received] == [("GET", "/api/queue"), ("POST", "/api/queue")]
    assert client.transport.stale_retries == 0


def test_a_failure_on_a_new_connection_is_not_repeated_at_once(closing_server):
    server = closing_server(answer_first=False)
    stop = threading.Event()
    client = Client(server.url, "token", on_response=lambda *answer: stop.set())  # one poll, then the end
    with pytest.raises(duely_client.ConnectionFailed):
        client.queue_status()
    assert server.received == [("GET", "/api/queue", 1)]  # left to the caller's backoff
    stop.clear()
    updates = client.updates(timeout=0, stop=stop)
    assert list(updates) == [] and updates.failures == 1
    assert server.received[1:] == [("GET", "/api/updates?last_event_id=0&timeout=0&limit=100", 1)]


def test_idle_past_the_servers_keepalive_then_any_call_works(instant_stack, tmp_path):
    """A real gunicorn (Duely's settings, keep-alive cut to 1 s) closes the client's idle
    connection; the next call, even one that is never repeated (resign), goes on a new one."""
    from duely.infra import free_port
    from tests.fixtures.stack import ROOT, Process

    port = free_port()
    web = Process("web-keepalive-1s", [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "duely" / "gunicorn_conf.py"),
                                       "--keep-alive", "1", "app:app"],
                  {**instant_stack.env, "PORT": str(port)}, tmp_path, port=port)
    web.start()
    try:
        alice, bob = _players(f"http://127.0.0.1:{port}", "alice", "bob")
        duel_id = bob.accept_challenge(alice.create_challenge("bob")["id"])["duel"]["id"]
        alice.duel(duel_id)
        time.sleep(1.5)  # past the server's keep-alive: it has closed alice's connection
        assert alice.resign(duel_id)["status"] == "finished"
        time.sleep(1.5)
        assert alice.join_queue()["status"] == "waiting"
        assert alice.transport.stale_retries == 0  # found closed before use, not by a failed request
    finally:
        web.stop()


def test_a_callers_own_session_carries_the_calls(instant_stack):
    """`Client(session=...)` (the caller's adapters, auth, proxies) goes through requests."""
    session = requests.Session()
    seen: list[str] = []
    session.hooks["response"].append(lambda response, **kw: seen.append(response.request.method))
    client = Client(instant_stack.url, session=session)
    user = client.register("viasession", "correct horse")
    assert client.me()["id"] == user["id"] and session.headers["Authorization"] == f"Bearer {user['token']}"
    assert client.join_queue()["status"] == "waiting"
    client.leave_queue()  # 204: no body
    with pytest.raises(duely_client.NotFound) as missing:
        client.duel(999999)
    assert missing.value.code == "not_found"
    assert seen == ["POST", "GET", "POST", "DELETE", "GET"]


def test_a_pooled_connection_numbered_above_1023_is_reused(instant_stack):
    """A process with many clients (a swarm of bots) has descriptors above 1023, which select()
    refuses: the check of an idle pooled connection before its reuse must still work there."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip("this process may not open 2048 descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    ballast = [socket.socket() for _ in range(1100)]  # the client's connection gets a number above them
    try:
        client = Client(instant_stack.url)
        client.register("manyfds", "correct horse")  # opens the connection, left in the pool
        (conn, _), = client.transport._idle
        assert conn.sock.fileno() > 1023
        assert client.join_queue()["status"] == "waiting"  # reuses it, after the check
        assert client.queue_status()["status"] == "waiting"
        assert client.transport._idle[0][0] is conn
    finally:
        for sock in ballast:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
