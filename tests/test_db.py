"""The connection pool: a pooled connection that died while idle is replaced before use."""

from __future__ import annotations

import time

from sqlalchemy import text

from duely import db as dbmod
from duely.db import Database


def test_a_connection_killed_while_idle_is_replaced_before_use(database_url):
    database = Database(database_url, pool_size=1, max_overflow=0)
    try:
        with database.transaction() as s:
            first_pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with Database(database_url, pool_size=1, max_overflow=0).transaction() as other:
            assert other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first_pid}).scalar_one()
        time.sleep(dbmod.PING_IDLE_SECS + 0.2)  # idle long enough to be pinged at its next checkout
        with database.transaction() as s:  # no error: the ping found it dead and the pool reconnected
            assert s.execute(text("SELECT pg_backend_pid()")).scalar_one() != first_pid
        with database.autocommit() as s:  # the transaction-less session uses the same pool
            assert s.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        database.dispose()


def test_connections_opened_at_start_are_distinct_server_sessions_kept_in_the_pool(database_url):
    """What a web worker does as it starts (duely/gunicorn_conf.py): the connections stay in the
    pool for the first requests, and never more than the pool keeps."""
    database = Database(database_url, pool_size=3, max_overflow=2)
    try:
        assert database.open_connections(2) == 2
        assert database.engine.pool.checkedin() == 2
        assert database.open_connections(10) == 3  # the pool keeps 3: overflow ones would be closed at once
        held = [database.engine.connect() for _ in range(3)]
        try:  # three distinct server sessions, all taken from the pool: none had to be opened now
            assert len({c.execute(text("SELECT pg_backend_pid()")).scalar_one() for c in held}) == 3
            assert database.engine.pool.checkedin() == 0 and database.engine.pool.overflow() == 0
        finally:
            for c in held:
                c.close()
    finally:
        database.dispose()


def test_connections_opened_ahead_of_use_survive_a_restart_before_their_first_use(database_url):
    """A worker opens its connections as it starts; if the database restarts (here: their server
    sessions are ended) before any request takes them, the first request still succeeds."""
    name = "duely-test-opened-ahead"
    url = database_url + ("&" if "?" in database_url else "?") + "application_name=" + name
    database = Database(url, pool_size=2, max_overflow=0)
    try:
        database.open_connections(2)
        with Database(database_url, pool_size=1, max_overflow=0).transaction() as other:
            ended = other.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :n"),
                                  {"n": name}).scalar_one()
        assert ended == 2
        for _ in range(2):  # both pooled connections, each taken once: no error, a new session
            with database.transaction() as s:
                assert s.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        database.dispose()


def test_pooled_connections_plan_a_prepared_statement_once(database_url):
    """Every pooled connection, in a transaction or alone, uses generic plans for its prepared
    statements (db.PLAN_CACHE_MODE, set as it connects: a rolled back transaction keeps it)."""
    database = Database(database_url, pool_size=1, max_overflow=0)
    try:
        with database.transaction() as s:
            assert s.execute(text("SHOW plan_cache_mode")).scalar_one() == dbmod.PLAN_CACHE_MODE
        try:
            with database.transaction() as s:  # rolled back: the pool's one connection is reused next
                s.execute(text("SELECT 1"))
                raise LookupError
        except LookupError:
            pass
        with database.transaction() as s:
            assert s.execute(text("SHOW plan_cache_mode")).scalar_one() == dbmod.PLAN_CACHE_MODE
        assert database.run_alone(
            lambda c: dbmod.driver_execute(c, "SHOW plan_cache_mode").fetchone()[0]) == dbmod.PLAN_CACHE_MODE
    finally:
        database.dispose()


def test_a_pool_names_its_connections_for_pg_stat_activity(database_url):
    """An operator tells the processes' pools apart in pg_stat_activity (duely-web, duely-scheduler, ...)."""
    database = Database(database_url, pool_size=1, max_overflow=0, application_name="duely-web")
    try:
        with database.transaction() as s:
            pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with Database(database_url, pool_size=1, max_overflow=0).transaction() as other:
            names = dict(other.execute(text("SELECT pid, application_name FROM pg_stat_activity")).all())
        assert names[pid] == "duely-web"
    finally:
        database.dispose()
