"""Which writes wake whom: an event that only echoes its user's own request is announced with
the key `o:<user id>` (duely/eventlog/listener.py `own_key`), so a poll with `wake_on_own=false`
sleeps through it; everything else with the plain `<user id>` (docs/events.md, "Waiting and wake-up")."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest

from duely.db import psycopg_url
from duely.eventlog.listener import NOTIFY_CHANNEL, Listener, duel_key, own_key, parse_wake_key
from duely.eventlog.types import QueueLeftReason
from duely.matchmaking import queue


def payloads_of(database_url: str, action: Callable[[], object]) -> list[str]:
    """The NOTIFY payloads on the events channel sent by what `action` commits."""
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as conn:
        conn.execute(f'LISTEN "{NOTIFY_CHANNEL}"')
        action()
        got: list[str] = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            got += [n.payload for n in conn.notifies(timeout=0.2, stop_after=100)]
        return got


def test_the_users_own_writes_are_announced_as_echoes_to_them(database_url, make_user, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    mine, plain = f"o:{alice.id}", str(alice.id)
    assert payloads_of(database_url, lambda: alice.post("/api/queue")) == [mine]
    assert payloads_of(database_url, lambda: alice.delete("/api/queue")) == [mine]
    got = payloads_of(database_url, lambda: alice.post("/api/challenges", json={"to": "bob"}))
    assert sorted(got) == sorted([mine, str(bob.id)])  # bob's challenge_received is news to him
    duel_id = duel_between(alice, bob)
    got = payloads_of(database_url, lambda: alice.post(f"/api/duels/{duel_id}/submit",
                                                       json={"solution": "print(1)", "language": "python"}))
    assert mine in got and plain not in got and str(bob.id) not in got


def test_what_happens_to_a_user_is_announced_plainly(database_url, make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    with db.transaction() as s:
        queue.join(s, alice.id)
    got = payloads_of(database_url, lambda: _expire(db, alice.id))
    assert got == [str(alice.id)]
    duel_id = duel_between(alice, bob)
    got = payloads_of(database_url, lambda: alice.post(f"/api/duels/{duel_id}/resign"))
    assert str(alice.id) in got and str(bob.id) in got and f"o:{alice.id}" not in got


def _expire(db, user_id: int) -> None:
    with db.transaction() as s:
        assert queue.leave(s, user_id, reason=QueueLeftReason.EXPIRED)


def test_payloads_parse_to_the_key_and_whether_it_is_an_echo():
    assert parse_wake_key(own_key(5)) == (5, True)
    assert parse_wake_key("5") == (5, False)
    assert parse_wake_key(duel_key(7)) == (duel_key(7), False)
    for bad in ("o:", "o:x", "x:5", "", "5.0"):
        with pytest.raises(ValueError):
            parse_wake_key(bad)


def test_an_echo_wakes_only_the_waiters_that_want_echoes_and_news_wakes_all():
    listener = Listener("postgresql://unused")  # never started: no connection, only its waiters
    eager, quiet, other = listener.subscribe(5), listener.subscribe(5, wake_on_own=False), listener.subscribe(6)
    assert listener.wake(5, own=True) == 1
    assert eager.wait(0) and not quiet.wait(0) and not other.wait(0)
    eager.clear()
    assert listener.wake(5) == 2
    assert eager.wait(0) and quiet.wait(0) and not other.wait(0)
