"""Engines and transactions. Domain code takes a `Session`; callers own the transaction.

The rule for callers (docs/lifecycle.md, "Transactions"): a change runs as `db.run(fn)`, one
transaction retried whole on a deadlock or serialization failure; a read runs as `db.read(fn)`.
`fn(session)` does database work only (no HTTP, no password hashing), since it may run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import TextClause, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from duely import notify
from duely.backoff import TRANSACTION_RETRY

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATEs worth retrying the whole transaction for: serialization failure, deadlock.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}
# Tries of one `run` (the first and its retries) before the failure is raised.
TRANSACTION_ATTEMPTS = 4


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def psycopg_url(url: str) -> str:
    """The libpq form of a URL (for raw psycopg connections such as the LISTEN one)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


# A server that does not answer a connection attempt within this long counts as unreachable.
CONNECT_TIMEOUT_SECS = 5
# pool_timeout of background processes (scheduler, consumer): they may wait, nobody is waiting on them.
BACKGROUND_POOL_TIMEOUT_SECS = 30.0
# Connections of the scheduler and consumer processes (pool + overflow), for the connection
# budget in the README ("Database connections"). Kept, not overflow: an overflow connection is
# closed when it is returned, and the scheduler's dispatch, matchmaking, duel starters and periodic
# jobs together often held more than a pool of 4, so it opened ~6 new PostgreSQL backends a
# second under the swarm's load (pg_stat_database.sessions), each forked, authenticated and
# planning its statements afresh.
SCHEDULER_POOL = (8, 0)
CONSUMER_POOL = (4, 0)


# A pooled connection idle for longer than this is pinged before use (a restarted server
# leaves the pool's connections dead). One busy enough to be reused within it skips the
# round trip: pinging every checkout cost each request one more round trip per transaction.
# A connection that dies within this window fails its statement, which invalidates the whole
# pool (SQLAlchemy's disconnect handling) and answers 503 like any outage (duely/outage.py).
PING_IDLE_SECS = 2.0

# Every pooled connection plans its prepared statements once (psycopg prepares a statement after
# its fifth run on a connection) instead of at every run. PostgreSQL's default (`auto`) kept
# re-planning the hot data-modifying statements for each run's values: in PostgreSQL's own log
# (log_min_duration_statement = 0, 1,000 swarm players) the planning at bind took about as long
# as the execution (0.85 of 1.96 ms per event append, 0.45 of 1.56 ms per submit, 1.66 of 2.36 ms
# per duel start). A statement whose generic plan could be slow must not depend on its values
# for its plan (the duel start's rating history is written so: duels._OPEN).
# The poll readers' own connections (duely/eventlog/reader.py) use the same mode.
PLAN_CACHE_MODE = "force_generic_plan"


def make_engine(database_url: str, pool_size: int = 10, max_overflow: int = 10,
                pool_timeout: float = BACKGROUND_POOL_TIMEOUT_SECS, application_name: str = "duely") -> Engine:
    engine = create_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # When every connection is taken, a request waits this long, then is answered 503
        # (sqlalchemy.exc.TimeoutError, see duely/outage.py) instead of queueing for ever.
        pool_timeout=pool_timeout,
        pool_recycle=1800,
        connect_args=_connect_args(database_url, application_name),
    )
    _ping_when_idle(engine, PING_IDLE_SECS)
    _plan_once(engine, PLAN_CACHE_MODE)
    _notify_after_commit(engine)
    return engine


def _connect_args(database_url: str, application_name: str) -> dict[str, Any]:
    """The pool's connection settings: `application_name` tells the process's pool apart in
    pg_stat_activity (duely-web, duely-scheduler, ...), unless DATABASE_URL names one itself."""
    args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_SECS}
    if "application_name" not in make_url(sqlalchemy_url(database_url)).query:
        args["application_name"] = application_name
    return args


def _plan_once(engine: Engine, mode: str) -> None:
    """Set `plan_cache_mode` on every new connection of `engine` (see PLAN_CACHE_MODE)."""
    @event.listens_for(engine, "connect")
    def _connected(dbapi_connection, record) -> None:
        # outside any transaction: a SET inside one that is rolled back would be undone
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            dbapi_connection.execute(f"SET plan_cache_mode = {mode}")
        finally:
            dbapi_connection.autocommit = autocommit


def _ping_when_idle(engine: Engine, idle_secs: float) -> None:
    """pool_pre_ping, but only for connections that sat in the pool longer than `idle_secs`."""
    @event.listens_for(engine, "connect")
    def _connected(dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, proxy) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < idle_secs:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool invalidates it and retries with a new connection
            raise sa_exc.DisconnectionError(str(exc)) from exc


def _notify_after_commit(engine: Engine) -> None:
    """Every transaction of `engine` commits as `COMMIT` followed by `notify.SEND_SQL`, in one
    pipeline (one round trip, as the plain COMMIT took): the notifications its statements queued
    (`notify.queue_sql`) leave by a transaction of their own (see duely/notify.py for why).
    SQLAlchemy's own COMMIT then finds no transaction open, and psycopg sends nothing."""
    from psycopg.pq import TransactionStatus  # here, not at import time: see duely/eventlog/listener.py

    @event.listens_for(engine, "commit")
    def _committing(connection: Connection) -> None:
        driver = connection.connection.driver_connection
        if driver is None or driver.info.transaction_status != TransactionStatus.INTRANS:
            return  # nothing to commit, or a failed transaction: SQLAlchemy's commit says so
        try:
            with driver.pipeline():
                _commit_then_send(driver)
        except Exception as exc:
            connection._handle_dbapi_exception(exc, "COMMIT", {}, None, None)  # raises it, wrapped
            raise


class Database:
    """One engine and its session factory; one per process."""

    def __init__(self, database_url: str, pool_size: int = 10, max_overflow: int = 10,
                 pool_timeout: float = BACKGROUND_POOL_TIMEOUT_SECS, application_name: str = "duely"):
        self.url = database_url
        self.pool_timeout = pool_timeout  # the poll reader's connections wait as long (duely/eventlog/reader.py)
        self.engine = make_engine(database_url, pool_size, max_overflow, pool_timeout, application_name)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._autocommit_sessionmaker = sessionmaker(self._autocommit_engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with self.sessionmaker() as session:
            with session.begin():
                yield session

    @contextmanager
    def autocommit(self) -> Iterator[Session]:
        """A session without a transaction, for one read statement (no BEGIN/COMMIT round trips:
        the token check every authenticated request makes). Never for several statements that
        must agree, nor for writes."""
        with self._autocommit_sessionmaker() as session:
            yield session

    def run(self, fn: Callable[[Session], T], attempts: int = TRANSACTION_ATTEMPTS, pipeline: bool = False) -> T:
        """Run `fn(session)` in a transaction and commit; on a deadlock or serialization failure
        (SQLSTATE 40P01, 40001) roll back and run it again, up to `attempts` times in all, after a
        short jittered wait (backoff.TRANSACTION_RETRY). Every change goes through here.

        `pipeline`: `fn` runs inside `pipelined` (so it uses `driver_execute` only), the BEGIN
        queued with its first statements and the COMMIT and the notifications' send
        (duely/notify.py) behind its last, going to the server with the pipeline's closing Sync:
        the transaction costs two round trips fewer than BEGIN ... COMMIT around the same statements."""
        def once() -> T:
            with self.transaction() as session:
                if not pipeline:
                    return fn(session)
                with pipelined(session, begin=True):
                    result = fn(session)
                    _queue_commit(session)
                return result
        return _retried(once, attempts, "transaction")

    def run_alone(self, fn: Callable[[Connection], T], attempts: int = TRANSACTION_ATTEMPTS) -> T:
        """`run` for an `fn` that makes ONE statement (data-modifying CTEs and all, `driver_execute`)
        on a connection in autocommit: the statement is its own transaction, so it costs no BEGIN
        and COMMIT round trips, and no Session either (the hot writes). Retried like `run` on a
        deadlock or serialization failure."""
        def once() -> T:
            with self._autocommit_engine.connect() as connection:
                return fn(connection)
        return _retried(once, attempts, "statement")

    def read(self, fn: Callable[[Session], T]) -> T:
        """Run `fn(session)`, which only reads, in one transaction (one consistent connection;
        nothing to retry: plain reads take no locks, so they neither deadlock nor fail to serialize
        at READ COMMITTED)."""
        with self.transaction() as session:
            return fn(session)

    def open_connections(self, count: int) -> int:
        """Open up to `count` pool connections now (never more than the pool keeps) and leave them
        in the pool; returns how many it holds afterwards. The engine's first connection runs
        SQLAlchemy's dialect set-up (several round trips) while every other new connection waits
        for it, and each new connection costs PostgreSQL a process: done when a web worker starts,
        the first requests after a (re)start no longer queue behind that (the cold start of
        `bench/updates.py --parts actions`, README)."""
        pool = self.engine.pool
        count = min(count, pool.size()) if isinstance(pool, QueuePool) else count
        held: list[Connection] = []
        try:
            for _ in range(count):
                connection = self.engine.connect()
                held.append(connection)
                connection.execute(text("SELECT 1"))
        finally:
            records = [connection.info for connection in held]  # the pool's record of each
            for connection in held:
                connection.close()
        for record in records:
            # Pinged at their first use, like connections that sat idle (_ping_when_idle): the
            # database may restart before a request ever takes them, and a worker that saw no
            # outage would otherwise answer its first request after the restart with a 503.
            record["idle_since"] = float("-inf")
        return pool.checkedin() if isinstance(pool, QueuePool) else len(held)

    def dispose(self) -> None:
        self.engine.dispose()


def _retried(once: Callable[[], T], attempts: int, what: str) -> T:
    """`once()`, again after a deadlock or serialization failure, up to `attempts` times in all."""
    retry = TRANSACTION_RETRY.start()
    for attempt in range(1, attempts + 1):
        try:
            return once()
        except (OperationalError, DBAPIError) as exc:
            sqlstate = retryable_sqlstate(exc)
            if sqlstate is None or attempt == attempts:
                raise
            wait = retry.next()
            log.info("retrying %s after sqlstate %s (attempt %d, in %.3fs)", what, sqlstate, attempt, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


_PSYCOPG_DIALECT = PGDialect_psycopg()


def driver_sql(statement: TextClause) -> str:
    """A `text()` statement (SQLAlchemy's `:name` parameters) as `driver_execute` takes it:
    `%(name)s` parameters and `%` escaped, compiled by SQLAlchemy's own psycopg dialect, so both
    read the statement alike. Compile once, where the statement is defined."""
    return str(statement.compile(dialect=_PSYCOPG_DIALECT))


def driver_execute(session: Session | Connection, sql: str, params: dict[str, Any] | None = None,
                   named: bool = False) -> Any:
    """Run one plain SQL statement (psycopg's `%(name)s` parameter style) on the session's connection
    (or on a Connection: Database.run_alone), in its transaction, through psycopg itself; returns the psycopg cursor (rows are tuples, or
    named tuples with `named`).

    For the hot path's statements only (the token check, the submit, the queue join): SQLAlchemy's
    execution machinery (statement cache, result metadata, events) cost each statement several
    times what psycopg itself did (py-spy, bench/request_cpu.py). Errors are SQLAlchemy's as
    usual: a driver error is handed to the Connection's own handler, which wraps it (so
    `run`'s retry and duely/outage.py see a DBAPIError) and invalidates the pool on a disconnect."""
    connection = session.connection() if isinstance(session, Session) else session
    driver = connection.connection.driver_connection
    assert driver is not None
    try:
        if named:
            from psycopg.rows import namedtuple_row

            return driver.cursor(row_factory=namedtuple_row).execute(sql, params)
        return driver.execute(sql, params)
    except Exception as exc:
        connection._handle_dbapi_exception(exc, sql, params or {}, None, None)  # raises it, wrapped
        raise


def execute_alone(connection: Session | Connection, sql: str, params: dict[str, Any] | None = None,
                  named: bool = False) -> Any:
    """`driver_execute` for the one statement of a `Database.run_alone` function: on its
    autocommit connection, the statement runs as a transaction of its own and the notifications
    it queued (`notify.queue_sql`) are sent after its commit, BEGIN, the statement, COMMIT and
    `notify.SEND_SQL` going in one pipeline (one round trip, as the statement alone took).
    Returns the cursor, its rows read after the commit. Inside a transaction (a Session, the
    full path), it is `driver_execute`: the transaction's commit sends the notifications."""
    if isinstance(connection, Session):
        return driver_execute(connection, sql, params, named)
    driver = connection.connection.driver_connection
    assert driver is not None
    if not driver.autocommit:
        return driver_execute(connection, sql, params, named)
    import psycopg  # here, not at import time: see duely/eventlog/listener.py
    from psycopg.rows import namedtuple_row

    try:
        with driver.pipeline():
            driver.execute("BEGIN")
            cursor = driver.cursor(row_factory=namedtuple_row) if named else driver.cursor()
            cursor.execute(sql, params)
            _commit_then_send(driver)
    except Exception as exc:
        if driver.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            try:  # the statement failed inside BEGIN: end that transaction before the pool takes it back
                driver.rollback()
            except psycopg.Error:
                pass  # a broken connection: the handler below invalidates it
        connection._handle_dbapi_exception(exc, sql, params or {}, None, None)  # raises it, wrapped
        raise
    return cursor


@contextmanager
def pipelined(session: Session, begin: bool = False) -> Iterator[None]:
    """psycopg's pipeline mode on the session's connection for the block: `driver_execute` returns
    at once and statements go to the server together, in order, when a result is first fetched
    (one round trip for all that were sent; leaving the block costs one more, the pipeline's
    Sync). Each statement still runs after the one before it has finished (its snapshot is taken
    then, its locks are waited for then).

    psycopg starts a transaction in pipeline mode with a BEGIN it waits for (a Sync of its own:
    one more round trip, seen in libpq's trace). With `begin`, a transaction not yet started is
    started by this block instead, its BEGIN queued with the first statements: the connection is
    in autocommit for the block (psycopg then adds no BEGIN) and is given back as it was, the
    transaction rolled back if the block left it open (`Database.run(..., pipeline=True)` queues
    its COMMIT; an error or an early return leaves it open).

    Only `driver_execute` inside the block: SQLAlchemy's own `execute` cannot read results in
    pipeline mode. A driver error surfaces at a fetch (or at the block's end) rather than at the
    execute, and is handed to the Connection's handler there, as `driver_execute` does."""
    connection = session.connection()
    driver = connection.connection.driver_connection
    assert driver is not None
    import psycopg  # here, not at import time: see duely/eventlog/listener.py

    if driver.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF:
        yield  # inside a pipelined block already (`Database.run(..., pipeline=True)`): a nested one would Sync
        return
    own_begin = begin and driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    if own_begin:
        driver.autocommit = True  # before the pipeline: inside it, psycopg would Sync to check
    try:
        with driver.pipeline():
            if own_begin:
                driver.execute("BEGIN")
            yield
    except psycopg.Error as exc:
        connection._handle_dbapi_exception(exc, "(pipelined statements)", {}, None, None)  # raises it, wrapped
        raise
    finally:
        if own_begin:
            _end_own_transaction(connection, driver)


def _end_own_transaction(connection: Connection, driver: Any) -> None:
    """After a `pipelined(..., begin=True)` block: roll back the transaction it left open, then
    put the connection back out of autocommit, as SQLAlchemy and the pool expect it. A connection
    that cannot be put back (it broke) is invalidated, never pooled in autocommit."""
    import psycopg  # here, not at import time: see duely/eventlog/listener.py

    try:
        if driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            driver.execute("ROLLBACK")
        driver.autocommit = False
    except psycopg.Error:
        connection.invalidate()


def _queue_commit(session: Session) -> None:
    """Queue COMMIT and `notify.SEND_SQL` in the session's open pipeline (`Database.run`'s
    `pipeline`); the block's Sync sends them. SQLAlchemy's own commit then finds the transaction
    ended and sends nothing (`_notify_after_commit`)."""
    if session.identity_map:  # ORM changes would be flushed by SQLAlchemy's commit, after ours
        raise AssertionError("a pipelined transaction writes through driver_execute only")
    driver = session.connection().connection.driver_connection
    assert driver is not None
    _commit_then_send(driver)


def _commit_then_send(driver: Any) -> None:
    """Queue COMMIT, then `notify.SEND_SQL` as a transaction of its own, in `driver`'s open
    pipeline: the one way every commit of Duely ends (duely/notify.py)."""
    driver.execute("COMMIT")
    driver.execute(notify.SEND_SQL)


def retryable_sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a deadlock or serialization failure, else None."""
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return sqlstate if sqlstate in _RETRYABLE_SQLSTATES else None


def connection_budget(workers: int, pool_size: int, max_overflow: int, poll_readers: int) -> int:
    """Most connections one host's Duely may open: per web worker its pool and overflow, its
    LISTEN connection and its poll readers; plus one scheduler and one consumer."""
    return workers * (pool_size + max_overflow + 1 + poll_readers) + sum(SCHEDULER_POOL) + sum(CONSUMER_POOL)


def check_connection_budget(database_url: str, needed: int) -> None:
    """Log whether `needed` connections fit in what PostgreSQL allows (max_connections less
    the reserved ones); a WARNING when not: under load the surplus requests would be refused."""
    import psycopg  # here, not at import time: see duely/eventlog/listener.py on importing it after gevent's patch

    try:
        with psycopg.connect(psycopg_url(database_url), connect_timeout=CONNECT_TIMEOUT_SECS) as conn:
            row = conn.execute(
                "SELECT current_setting('max_connections')::int"
                " - current_setting('superuser_reserved_connections')::int"
                " - coalesce(current_setting('reserved_connections', true)::int, 0)"
            ).fetchone()
            allowed = row[0] if row else 0
    except Exception as exc:  # the database may be down at start; requests will say so
        log.warning("could not check the database connection budget: %s", str(exc).strip().splitlines()[0])
        return
    if needed > allowed:
        log.warning("database connections: up to %d needed (WORKERS x (DB_POOL_SIZE + DB_MAX_OVERFLOW + 1 LISTEN"
                    " + poll readers) + scheduler + consumer) but PostgreSQL allows %d; lower DB_POOL_SIZE,"
                    " DB_MAX_OVERFLOW or WORKERS, or raise max_connections", needed, allowed)
    else:
        log.info("database connections: up to %d needed, PostgreSQL allows %d", needed, allowed)
