"""Database outages and overload: telling them from bugs, and logging them once.

A database that is down, restarting or out of connections, and a connection pool that has none
free, are "come back soon" conditions: the API answers 503 `unavailable` with `Retry-After`
(duely/api/error_handlers.py), the scheduler and the consumer wait and retry. Everything else a
driver raises (a bad statement, a constraint, a deadlock) stays an internal error: it is a bug.

The same outage reaches every request and every job, so it is logged once: `BurstLog` (web) logs
the first 503 of a burst and how many followed; `OutageLog` (scheduler, consumer) logs one WARNING
when the database goes away and one INFO when it is back, and paces the retries in between.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from duely.backoff import DATABASE_OUTAGE, Backoff

# SQLSTATE classes that mean "the server cannot serve us now", not "the statement is wrong":
# 08 connection exception, 53 insufficient resources (too many connections, out of memory or
# disk), 57 operator intervention (shutting down, starting up, statement cancelled), 58 system error.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
_TOO_MANY_CONNECTIONS = "53300"

# Retry-After (seconds) for each kind of unavailability.
RETRY_AFTER_UNREACHABLE_SECS = 5
RETRY_AFTER_BUSY_SECS = 2


def unavailable_reason(exc: BaseException | None) -> str | None:
    """"unreachable" (the database is down or restarting), "busy" (no connection to be had now),
    or None when `exc` is not about availability (then it is a bug, answered 500)."""
    seen = 0
    while exc is not None and seen < 10:  # follow `raise ... from`: PollReadFailed wraps the driver's error
        seen += 1
        if isinstance(exc, PoolTimeout):
            return "busy"
        if isinstance(exc, DBAPIError):
            if exc.connection_invalidated:
                return "unreachable"
            exc = exc.orig
            continue
        if isinstance(exc, psycopg.OperationalError):
            state = exc.sqlstate
            if state == _TOO_MANY_CONNECTIONS:
                return "busy"
            # No SQLSTATE: the server never answered (refused, gone, timed out).
            if state is None or state[:2] in _UNAVAILABLE_CLASSES:
                return "unreachable"
            return None
        exc = exc.__cause__
    return None


def is_unavailable(exc: BaseException | None) -> bool:
    return unavailable_reason(exc) is not None


def retry_after_secs(reason: str) -> int:
    return RETRY_AFTER_BUSY_SECS if reason == "busy" else RETRY_AFTER_UNREACHABLE_SECS


class BurstLog:
    """Logs the first of a burst of like events, not each one: a burst ends after `quiet_secs`
    without one, and the next burst's line says how many the previous one had."""

    def __init__(self, logger: logging.Logger, quiet_secs: float = 10.0):
        self._log = logger
        self._quiet_secs = quiet_secs
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._count = 0

    def hit(self, message: str, *args: object) -> bool:
        """Count one event; returns True when this one was logged (it started a burst)."""
        now = time.monotonic()
        with self._lock:
            new_burst = now - self._last > self._quiet_secs
            previous, self._last = self._count, now
            self._count = 1 if new_burst else self._count + 1
        if new_burst:
            suffix = f" (the previous burst had {previous})" if previous else ""
            self._log.warning(message + "; further ones are not logged until %ds pass without one" + suffix,
                              *args, int(self._quiet_secs))
        return new_burst


class OutageLog:
    """For a background loop: one WARNING when the database becomes unavailable, one INFO when
    it answers again, and a capped exponential backoff for the retries in between."""

    def __init__(self, logger: logging.Logger, backoff: Backoff = DATABASE_OUTAGE):
        self._log = logger
        self._policy = backoff
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry = backoff.start()
        self._retry_at = 0.0

    @property
    def failures(self) -> int:
        """Failed attempts of the current outage (0 while the database answers)."""
        return self._retry.failures

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException) -> bool:
        """Record a failure. True when `exc` is an outage (logged at its start only, retry later
        after `backoff_secs`); False when it is anything else (the caller handles it)."""
        reason = unavailable_reason(exc)
        if reason is None:
            return False
        now = time.monotonic()
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = now
                self._retry.reset()
            self._retry_at = now + self._retry.next()
        if first:
            self._log.warning("database %s: %s; retrying quietly (backoff up to %.0fs) until it answers",
                              reason, _first_line(exc), self._policy.cap)
        return True

    def ok(self) -> None:
        """The database answered: log the end of an outage, if there was one."""
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            failures, self._retry_at = self._retry.failures, 0.0
            self._retry.reset()
        if since is not None:
            self._log.info("database reachable again after %.1fs (%d failed attempts); resuming",
                           time.monotonic() - since, failures)

    @property
    def backoff_secs(self) -> float:
        """The wait before the next retry (the policy's first while the database answers)."""
        return self._retry.last or self._policy.delay(1)

    def retry_due(self) -> bool:
        """False while an outage is on and its next retry is not yet due."""
        return self._down_since is None or time.monotonic() >= self._retry_at


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
