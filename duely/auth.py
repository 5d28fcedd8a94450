"""Tokens and logins. Tokens are random, stored only as keyed hashes, expire and are revocable;
failed logins are throttled per nickname and per client address."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash

from duely import errors
from duely.clock import utcnow
from duely.db import Database
from duely.models import AuthToken, User
from duely.users import find_by_nickname

# Checked against when the nickname is unknown, so that a miss costs as much as a hit.
_DUMMY_HASH = "scrypt:32768:8:1$duely$" + "0" * 128


def hash_token(secret_key: str, token: str) -> str:
    return hmac.new(secret_key.encode(), token.encode(), hashlib.sha256).hexdigest()


def issue_token(session: Session, user_id: int, secret_key: str, ttl_secs: float) -> str:
    token = secrets.token_urlsafe(32)
    session.add(AuthToken(user_id=user_id, token_hash=hash_token(secret_key, token),
                          expires_at=utcnow() + dt.timedelta(seconds=ttl_secs)))
    session.flush()
    return token


def authenticate(session: Session, token: str, secret_key: str) -> int:
    """The user id a bearer token belongs to; Unauthorized if unknown, expired or revoked."""
    row = session.execute(
        select(AuthToken.user_id).where(
            AuthToken.token_hash == hash_token(secret_key, token),
            AuthToken.revoked_at.is_(None),
            AuthToken.expires_at > utcnow(),
        )
    ).first()
    if row is None:
        raise errors.Unauthorized("The token is missing, unknown, expired or revoked.")
    return row[0]


def revoke_token(session: Session, token: str, secret_key: str) -> None:
    session.execute(
        update(AuthToken)
        .where(AuthToken.token_hash == hash_token(secret_key, token), AuthToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def _throttle_keys(nickname: str, remote_addr: str | None) -> list[str]:
    keys = ["nick:" + nickname.lower()]
    if remote_addr:
        keys.append("ip:" + remote_addr)
    return keys


def _check_lockout(session: Session, keys: list[str]) -> None:
    locked_until = session.execute(
        text("SELECT max(locked_until) FROM login_throttle WHERE key = ANY(:keys) AND locked_until > now()"),
        {"keys": keys},
    ).scalar()
    if locked_until is not None:
        raise errors.RateLimited((locked_until - utcnow()).total_seconds(), "Too many failed logins; retry later.")


# An address may be shared by many players (NAT), so it gets a larger allowance than a nickname.
ADDRESS_FAILURES_FACTOR = 4


def record_failure(session: Session, keys: list[str], max_failures: int, lockout_secs: float) -> None:
    """Count a failed login; the `max_failures`-th failure within the window locks a nickname
    (ADDRESS_FAILURES_FACTOR times as many lock an address)."""
    for key in keys:
        limit = max_failures * (ADDRESS_FAILURES_FACTOR if key.startswith("ip:") else 1)
        session.execute(
            text(
                """
                INSERT INTO login_throttle AS t (key, failures, window_started_at) VALUES (:key, 1, now())
                ON CONFLICT (key) DO UPDATE SET
                  failures = CASE WHEN t.window_started_at < now() - make_interval(secs => :window)
                                  THEN 1 ELSE t.failures + 1 END,
                  window_started_at = CASE WHEN t.window_started_at < now() - make_interval(secs => :window)
                                  THEN now() ELSE t.window_started_at END
                """
            ),
            {"key": key, "window": lockout_secs},
        )
        session.execute(
            text(
                "UPDATE login_throttle SET locked_until = now() + make_interval(secs => :lock), failures = 0, "
                "window_started_at = now() WHERE key = :key AND failures >= :max"
            ),
            {"key": key, "lock": lockout_secs, "max": limit},
        )


def login(db: Database, nickname: str, password: str, remote_addr: str | None, secret_key: str,
          ttl_secs: float, max_failures: int, lockout_secs: float) -> tuple[str, User] | None:
    """Check credentials. Returns (token, user), or None after recording a failure (the caller
    answers 401). Raises RateLimited while the nickname or address is locked.

    Two short transactions around the password check, which holds no database connection: it
    takes ~100 ms of CPU, and a burst of logins must not take every connection of the pool."""
    keys = _throttle_keys(nickname, remote_addr)
    with db.transaction() as session:
        _check_lockout(session, keys)
        user = find_by_nickname(session, nickname)
    if not check_password_hash(user.password_hash if user else _DUMMY_HASH, password) or user is None:
        db.run(lambda s: record_failure(s, keys, max_failures, lockout_secs))
        return None

    def succeed(session: Session) -> str:
        session.execute(text("DELETE FROM login_throttle WHERE key = ANY(:keys)"), {"keys": keys[:1]})
        return issue_token(session, user.id, secret_key, ttl_secs)

    return db.run(succeed), user
