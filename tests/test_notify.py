"""NOTIFY after the commit (duely/notify.py): what a writer queues leaves once its data is
committed, never for a rolled-back transaction or savepoint, never twice, never on the
connection's next transaction; and the statements run alone (db.execute_alone) keep those
rules. Real PostgreSQL and a real LISTEN connection; nothing is mocked."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from duely import notify
from duely.db import Database, driver_execute, execute_alone, psycopg_url

CHANNEL = "duely_test_notify"


def queue(session, payload: str) -> None:
    session.execute(text(f"SELECT {notify.queue_sql(':ch', ':p')}"), {"ch": CHANNEL, "p": payload})


@pytest.fixture
def listener(db):
    conn = psycopg.connect(psycopg_url(db.url), autocommit=True)
    conn.execute(f"LISTEN {CHANNEL}")
    yield conn
    conn.close()


def received(conn, wait: float = 0.5) -> list[str]:
    """The payloads that arrive within `wait` seconds (it stops waiting once none came for that long)."""
    payloads = [n.payload for n in conn.notifies(timeout=wait)]
    return payloads


@pytest.fixture
def one_connection_db(database_url):
    """A Database whose pool holds one connection, so consecutive transactions share it."""
    database = Database(database_url, pool_size=1, max_overflow=0)
    yield database
    database.dispose()


def new_user(session, nickname: str) -> int:
    return session.execute(text("INSERT INTO users (nickname, password_hash) VALUES (:n, 'x') RETURNING id"),
                           {"n": nickname}).scalar_one()


def test_a_committed_transaction_sends_what_it_queued_once_its_data_is_visible(db, listener):
    seen_at_wake: list[int] = []

    def write(session) -> int:
        user = new_user(session, "notified")
        queue(session, str(user))
        queue(session, str(user))  # the same twice: sent once, as NOTIFY folds them
        queue(session, "other")
        return user

    user = db.run(write)
    for n in listener.notifies(timeout=2, stop_after=2):
        with psycopg.connect(psycopg_url(db.url)) as reader:  # the writer's data, as a woken reader sees it
            seen_at_wake.append(reader.execute("SELECT count(*) FROM users WHERE id = %s", (user,)).fetchone()[0])
        assert n.payload in (str(user), "other")
    assert seen_at_wake == [1, 1]
    assert received(listener) == []  # nothing more: the repeated payload was sent once


def test_a_rolled_back_transaction_sends_nothing_and_leaves_nothing_for_the_next(one_connection_db, db, listener):
    class Refused(Exception):
        pass

    def write_then_fail(session) -> None:
        new_user(session, "rolledback")
        queue(session, "from the rolled-back one")
        raise Refused

    with pytest.raises(Refused):
        one_connection_db.run(write_then_fail)
    assert received(listener) == []
    one_connection_db.run(lambda s: queue(s, "next"))  # the same connection's next transaction
    assert received(listener) == ["next"]


def test_a_savepoint_rolled_back_drops_what_was_queued_inside_it(db, listener):
    def write(session) -> None:
        queue(session, "kept")
        savepoint = session.begin_nested()
        queue(session, "dropped")
        savepoint.rollback()

    db.run(write)
    assert received(listener) == ["kept"]


def test_what_was_sent_is_not_sent_again_by_the_connections_next_transactions(one_connection_db, db, listener):
    one_connection_db.run(lambda s: queue(s, "once"))
    assert received(listener) == ["once"]
    one_connection_db.run(lambda s: new_user(s, "quiet"))  # queues nothing
    one_connection_db.run_alone(lambda connection: execute_alone(connection, "SELECT 1").fetchone())
    assert received(listener) == []


def test_a_statement_run_alone_commits_then_sends(db, listener):
    wake = notify.queue_sql(repr(CHANNEL), repr("alone"))
    sql = f"INSERT INTO users (nickname, password_hash) VALUES ('alone', 'x') RETURNING id, {wake}"
    user_id = db.run_alone(lambda connection: execute_alone(connection, sql).fetchone()[0])
    assert received(listener) == ["alone"]
    assert db.read(lambda s: s.execute(text("SELECT nickname FROM users WHERE id = :u"), {"u": user_id}).scalar_one()) == "alone"


def test_a_statement_run_alone_that_fails_sends_nothing_and_leaves_its_connection_usable(one_connection_db, db, listener):
    failing = f"SELECT {notify.queue_sql(repr(CHANNEL), repr('failed'))}, 1 / 0"
    with pytest.raises(DBAPIError) as failure:
        one_connection_db.run_alone(lambda connection: execute_alone(connection, failing).fetchone())
    assert failure.value.orig.sqlstate == "22012"  # division by zero, wrapped as SQLAlchemy's own
    assert received(listener) == []
    ok = f"SELECT {notify.queue_sql(repr(CHANNEL), repr('after'))}"
    started = time.monotonic()
    one_connection_db.run_alone(lambda connection: execute_alone(connection, ok).fetchone())  # the same connection
    assert time.monotonic() - started < 5
    assert received(listener) == ["after"]
    with one_connection_db.transaction() as s:  # and a transaction on it starts clean
        assert s.execute(text("SELECT 1")).scalar_one() == 1


def test_a_pipelined_transaction_commits_with_its_last_statements_and_then_sends(db, listener):
    wake = notify.queue_sql(repr(CHANNEL), repr("pipelined"))
    insert = f"INSERT INTO users (nickname, password_hash) VALUES (%(n)s, 'x') RETURNING id, {wake}"

    def write(session) -> int:
        return driver_execute(session, insert, {"n": "piped"}).fetchone()[0]

    user_id = db.run(write, pipeline=True)
    assert received(listener) == ["pipelined"]
    assert db.read(lambda s: s.execute(text("SELECT nickname FROM users WHERE id = :u"), {"u": user_id}).scalar_one()) == "piped"


def test_a_pipelined_transaction_that_fails_commits_nothing_and_sends_nothing(one_connection_db, db, listener):
    wake = notify.queue_sql(repr(CHANNEL), repr("never"))
    insert = f"INSERT INTO users (nickname, password_hash) VALUES ('never', 'x') RETURNING id, {wake}"

    def write_then_fail(session) -> None:
        driver_execute(session, insert).fetchone()
        driver_execute(session, "SELECT 1 / 0")  # fails at the closing Sync, after the insert ran

    with pytest.raises(DBAPIError) as failure:
        one_connection_db.run(write_then_fail, pipeline=True)
    assert failure.value.orig.sqlstate == "22012"
    assert received(listener) == []
    assert db.read(lambda s: s.execute(text("SELECT count(*) FROM users WHERE nickname = 'never'")).scalar_one()) == 0
    one_connection_db.run(lambda s: queue(s, "after"))  # the connection is clean for the next transaction
    assert received(listener) == ["after"]
