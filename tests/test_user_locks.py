"""A user's row lock, the one every writer of the user's log takes (docs/events.md), serialises
those writers but never a transaction that only inserts a row naming the user.

Taken FOR UPDATE, it blocked such inserts: their foreign key check takes KEY SHARE on the user. A
new player's first queue join and the presence heartbeat then deadlocked (PostgreSQL's log of
bench/swarm.py, at the players' first joins): the heartbeat inserted the player's presence row and
waited at its key check for the join's lock on the user; the join, holding that lock, waited to
write the same presence row. Each such deadlock cost a second (`deadlock_timeout`) and a retry.

A presence write never waits for a presence row another transaction is writing (it is marking
the same user seen): a poll's reader writes presence for its whole batch on one of its process's
two reader connections, so such a wait held every poll of the batch, then every poll of the
process, and after DB_POOL_TIMEOUT they were answered 503."""

from __future__ import annotations

import threading

import psycopg
import pytest
from sqlalchemy import text

from duely import auth, challenges, duels, eventlog, verdicts
from duely.db import psycopg_url
from duely.eventlog import presence
from duely.eventlog.presence import PresenceThrottle
from duely.eventlog.reader import BatchedReader, _Read
from duely.eventlog.store import PollKey
from duely.matchmaking import queue
from tests.conftest import TEST_SECRET_KEY
from tests.test_spectate import submit

# Long enough for any insert that does not wait on a lock, short against a lock held until the
# test ends it.
UNBLOCKED_SECS = 5.0


def finishes_while_held(fn) -> bool:
    """Run `fn()` in a thread; True when it has returned within UNBLOCKED_SECS (it raised nothing).
    A thread still running is joined by the caller's rollback: see `holding_lock`."""
    out: dict = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except Exception as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(UNBLOCKED_SECS)
    if "error" in out:
        raise out["error"]
    return not thread.is_alive()


def assert_user_row_locked(db, user_id: int) -> None:
    """The lock under test is really held: another transaction cannot take the user's row."""
    with psycopg.connect(psycopg_url(db.url)) as other:
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute("SELECT id FROM users WHERE id = %s FOR NO KEY UPDATE NOWAIT", (user_id,))


def presence_rows(db, user_id: int) -> int:
    with db.transaction() as s:
        return s.execute(text("SELECT count(*) FROM presence WHERE user_id = :u"), {"u": user_id}).scalar_one()


def test_a_new_players_first_presence_is_written_by_the_heartbeat_while_their_log_is_locked(make_user, db):
    """The deadlock's two sides, in the order that deadlocked: a writer holds the player's log
    lock, the heartbeat writes their first presence row, then the writer writes it too."""
    alice = make_user("alice")
    with db.transaction() as s:
        s.execute(text("DELETE FROM presence WHERE user_id = :u"), {"u": alice.id})  # a player who never polled
    with db.transaction() as writer:
        eventlog.lock_users(writer, [alice.id])  # what the join's first step takes
        assert_user_row_locked(db, alice.id)
        heartbeat = PresenceThrottle()
        assert finishes_while_held(lambda: db.run(lambda s: heartbeat.touch_many(s, [alice.id]), attempts=1))
        presence.touch(writer, alice.id)  # the join's own presence write: no deadlock
    assert presence_rows(db, alice.id) == 1


def _join(s, alice, bob, duel_id, sid) -> None:
    queue.join_alone(s, auth.hash_token(TEST_SECRET_KEY, alice.token))


def _leave(s, alice, bob, duel_id, sid) -> None:
    queue.leave_alone(s, auth.hash_token(TEST_SECRET_KEY, alice.token))


def _append(s, alice, bob, duel_id, sid) -> None:
    eventlog.lock_users(s, [alice.id, bob.id])


def _rematch(s, alice, bob, duel_id, sid) -> None:
    challenges.lock_with_rematch_partners(s, [alice.id])


def _resign(s, alice, bob, duel_id, sid) -> None:
    duels.resign(s, bob.id, duel_id)


def _finish(s, alice, bob, duel_id, sid) -> None:
    assert duels.try_finish(s, duel_id, resigned_by=bob.id)


def _verdict(s, alice, bob, duel_id, sid) -> None:
    assert verdicts.apply_message(s, verdicts.TaskiMessage(sid, 1, "verdict", "Accepted"))


@pytest.mark.parametrize("lock", [_join, _leave, _append, _rematch, _resign, _finish, _verdict],
                         ids=["queue join", "queue leave", "event append", "rematch partners", "resignation",
                              "finish", "verdict intake"])
def test_a_login_elsewhere_does_not_wait_for_a_writer_holding_the_users_log(make_user, duel_between, db, lock):
    """Every statement that locks users itself: while its transaction is open, the player can
    still log in elsewhere (a token row naming them), and the writers of their log still wait."""
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = sid = None
    if lock not in (_join, _leave, _rematch):
        duel_id = duel_between(alice, bob)
        sid = submit(db, alice.id, duel_id)
    with db.transaction() as writer:
        lock(writer, alice, bob, duel_id, sid)
        assert_user_row_locked(db, alice.id)
        assert finishes_while_held(lambda: db.run(lambda s: auth.issue_token(s, alice.id, TEST_SECRET_KEY, 60),
                                                  attempts=1))


def last_seen(db, user_id: int):
    with db.transaction() as s:
        return s.execute(text("SELECT last_seen_at FROM presence WHERE user_id = :u"), {"u": user_id}).scalar_one()


@pytest.mark.parametrize("writer", ["a poll's reader", "the heartbeat"])
def test_a_presence_write_skips_a_row_another_transaction_is_writing(make_user, db, writer):
    alice, bob = make_user("alice"), make_user("bob")
    with db.transaction() as s:
        presence.write(s, [alice.id, bob.id])
    bob_before = last_seen(db, bob.id)
    with db.transaction() as holder:
        presence.touch(holder, alice.id)  # alice's queue join, say, not yet committed
        if writer == "the heartbeat":
            assert finishes_while_held(lambda: db.run(lambda s: presence.write(s, [alice.id, bob.id]), attempts=1))
        else:
            reader = BatchedReader(db.url, 1)
            batch = [_Read(PollKey.user(alice.id), 0, 100, True), _Read(PollKey.user(bob.id), 0, 100, True)]
            try:
                assert finishes_while_held(lambda: reader._run(batch))
            finally:
                reader.close()
            assert all(r.error is None and r.row is not None for r in batch)
        alice_held = holder.execute(text("SELECT last_seen_at FROM presence WHERE user_id = :u"),
                                    {"u": alice.id}).scalar_one()
    assert last_seen(db, bob.id) > bob_before  # the free row is written
    assert last_seen(db, alice.id) == alice_held  # the held one is the holder's to write
