"""The transaction rule (duely/db.py, docs/lifecycle.md "Transactions"): `Database.run` retries a
whole transaction that PostgreSQL aborted for a deadlock or a serialization failure, a bounded
number of times. The failures are real ones, provoked with a second session; nothing is mocked."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from duely.db import TRANSACTION_ATTEMPTS, driver_execute, pipelined, psycopg_url


def new_user(db, nickname: str) -> int:
    with db.transaction() as s:
        return s.execute(text("INSERT INTO users (nickname, password_hash) VALUES (:n, 'x') RETURNING id"),
                         {"n": nickname}).scalar_one()


def won(db, user_id: int) -> int:
    return db.read(lambda s: s.execute(text("SELECT won FROM users WHERE id = :u"), {"u": user_id}).scalar_one())


def repeatable_read(session) -> None:
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def test_a_serialization_failure_is_retried_and_the_change_made_once(db):
    user = new_user(db, "serial")
    calls: list[int] = []
    with psycopg.connect(psycopg_url(db.url), autocommit=True) as other:
        def change(session) -> int:
            calls.append(1)
            repeatable_read(session)
            seen = session.execute(text("SELECT won FROM users WHERE id = :u"), {"u": user}).scalar_one()  # the snapshot
            if len(calls) == 1:  # another session changes the row and commits after our snapshot
                other.execute("UPDATE users SET won = won + 1 WHERE id = %s", (user,))
            session.execute(text("UPDATE users SET won = :w WHERE id = :u"), {"w": seen + 10, "u": user})
            return seen

        assert db.run(change) == 1  # the retry saw the other session's change
    assert len(calls) == 2
    assert won(db, user) == 11  # both changes, neither lost


def test_a_deadlock_is_retried_and_both_transactions_commit(db):
    first, second = new_user(db, "lockfirst"), new_user(db, "locksecond")
    other = psycopg.connect(psycopg_url(db.url))
    # The other session waits long before checking for a deadlock, so ours finds it and is the one aborted.
    other.execute("SET deadlock_timeout = '30s'")
    other_done = threading.Event()
    calls: list[int] = []

    def other_waits_for_first() -> None:
        other.execute("UPDATE users SET won = won + 1 WHERE id = %s", (first,))  # waits for our lock on `first`
        other.commit()
        other_done.set()

    def change(session) -> None:
        calls.append(1)
        session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
        session.execute(text("UPDATE users SET won = won + 1 WHERE id = :u"), {"u": first})
        if len(calls) == 1:
            other.execute("UPDATE users SET won = won + 1 WHERE id = %s", (second,))
            threading.Thread(target=other_waits_for_first, daemon=True).start()
            wait_until_waiting_for_a_lock(db, other.info.backend_pid)
        # Ours waits for `second`, held by the other session, which waits for `first`, held by us.
        session.execute(text("UPDATE users SET won = won + 1 WHERE id = :u"), {"u": second})

    try:
        db.run(change)
        assert other_done.wait(10), "the other transaction never got its lock"
    finally:
        other.close()
    assert len(calls) == 2
    assert (won(db, first), won(db, second)) == (2, 2)


def test_a_failure_that_keeps_coming_back_is_raised_after_the_last_attempt(db):
    user = new_user(db, "hopeless")
    calls: list[int] = []
    with psycopg.connect(psycopg_url(db.url), autocommit=True) as other:
        def change(session) -> None:
            calls.append(1)
            repeatable_read(session)
            session.execute(text("SELECT won FROM users WHERE id = :u"), {"u": user})
            other.execute("UPDATE users SET won = won + 1 WHERE id = %s", (user,))
            session.execute(text("UPDATE users SET won = 0 WHERE id = :u"), {"u": user})

        with pytest.raises(DBAPIError) as raised:
            db.run(change)
    assert raised.value.orig.sqlstate == "40001"
    assert len(calls) == TRANSACTION_ATTEMPTS
    assert won(db, user) == TRANSACTION_ATTEMPTS  # only the other session's changes


def test_an_error_that_is_no_conflict_is_not_retried(db):
    calls: list[int] = []

    def change(session) -> None:
        calls.append(1)
        session.execute(text("SELECT 1 / 0"))

    with pytest.raises(DBAPIError):
        db.run(change)
    assert calls == [1]


def wait_until_waiting_for_a_lock(db, pid: int) -> None:
    with psycopg.connect(psycopg_url(db.url), autocommit=True) as watcher:
        for _ in range(500):
            row = watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            if row and row[0] == "Lock":
                return
            time.sleep(0.01)
    raise AssertionError("the other session never waited for the lock")


def test_a_failure_inside_pipelined_statements_is_retried_like_any_other(db):
    """In pipeline mode a statement's error surfaces at a fetch, not at its execute; `pipelined`
    hands it to SQLAlchemy's handler there, so `run` sees the usual DBAPIError and retries, and
    the statements sent after the failing one did nothing."""
    user = new_user(db, "piped")
    calls: list[int] = []
    with psycopg.connect(psycopg_url(db.url), autocommit=True) as other:
        def change(session) -> int:
            calls.append(1)
            repeatable_read(session)
            with pipelined(session):
                seen = driver_execute(session, "SELECT won FROM users WHERE id = %(u)s", {"u": user}).fetchone()[0]
                if len(calls) == 1:
                    other.execute("UPDATE users SET won = won + 1 WHERE id = %s", (user,))
                driver_execute(session, "UPDATE users SET won = %(w)s WHERE id = %(u)s", {"w": seen + 10, "u": user})
                driver_execute(session, "UPDATE users SET lost = lost + 1 WHERE id = %(u)s", {"u": user})
                return driver_execute(session, "SELECT lost FROM users WHERE id = %(u)s", {"u": user}).fetchone()[0]

        assert db.run(change) == 1  # the first attempt's second update did nothing
    assert len(calls) == 2
    assert won(db, user) == 11


def test_a_driver_error_inside_pipelined_statements_is_sqlalchemys_error(db):
    def broken(session) -> None:
        with pipelined(session):
            driver_execute(session, "SELECT 1 / 0")
            driver_execute(session, "SELECT 1").fetchone()

    with pytest.raises(DBAPIError) as raised:
        db.run(broken)
    assert isinstance(raised.value.orig, psycopg.errors.DivisionByZero)
    assert db.read(lambda s: s.execute(text("SELECT 1")).scalar_one()) == 1  # the pool's connection is usable
