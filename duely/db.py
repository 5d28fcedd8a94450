"""Engines and transactions. Domain code takes a `Session`; callers own the transaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATEs worth retrying the whole transaction for: serialization failure, deadlock.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def psycopg_url(url: str) -> str:
    """The libpq form of a URL (for raw psycopg connections such as the LISTEN one)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def make_engine(database_url: str, pool_size: int = 10, max_overflow: int = 10) -> Engine:
    return create_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


class Database:
    """One engine and its session factory; one per process."""

    def __init__(self, database_url: str, pool_size: int = 10, max_overflow: int = 10):
        self.url = database_url
        self.engine = make_engine(database_url, pool_size, max_overflow)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with self.sessionmaker() as session:
            with session.begin():
                yield session

    def run(self, fn: Callable[[Session], T], attempts: int = 4) -> T:
        """Run `fn(session)` in a transaction, retrying it on deadlock/serialization failure."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as session:
                    return fn(session)
            except (OperationalError, DBAPIError) as exc:
                sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
                if sqlstate not in _RETRYABLE_SQLSTATES or attempt == attempts:
                    raise
                log.info("retrying transaction after sqlstate %s (attempt %d)", sqlstate, attempt)
                time.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()
