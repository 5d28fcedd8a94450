"""Tokens and logins. Tokens are random, stored only as keyed hashes, expire and are revocable;
failed logins are throttled per (nickname, address) pair, per address and per nickname.

The lockout rule (README, "Login lockout"), in the spirit of what large sites do: guessing is
limited where it comes from, so strangers can never lock a player out of their own account.
- A (nickname, address) pair gets LOGIN_MAX_FAILURES failed logins per LOGIN_LOCKOUT window;
  the next attempt locks that pair (only that pair) for LOGIN_LOCKOUT.
- An address gets WIDE_FACTOR times as many over all nicknames (one address may be a whole
  school behind NAT), then it is locked for every nickname.
- A nickname gets WIDE_FACTOR times as many over all addresses (a botnet spreading its guesses
  thin). Past that the nickname is "under attack" for LOGIN_LOCKOUT: every address that has
  already failed on it recently is refused, so each further address gets one guess. An address
  with no recent failure on the nickname (the owner at home) still logs in with the right password.
Attempts are counted *before* the password is checked and refunded when it was right, so a
burst of concurrent guesses cannot slip past the limits while their hashes are being checked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace

from sqlalchemy import text, update
from sqlalchemy.orm import Session

from duely import errors
from duely.clock import utcnow
from duely.config import Config
from duely.db import driver_execute
from duely.models import AuthToken, User
from duely.users import find_by_nickname, get_user

# How many more failures an address (over all nicknames) or a nickname (over all addresses)
# gets than one (nickname, address) pair.
WIDE_FACTOR = 4


def hash_token(secret_key: str, token: str) -> str:
    return hmac.new(secret_key.encode(), token.encode(), hashlib.sha256).hexdigest()


def issue_token(session: Session, user_id: int, secret_key: str, ttl_secs: float) -> str:
    token = secrets.token_urlsafe(32)
    session.add(AuthToken(user_id=user_id, token_hash=hash_token(secret_key, token),
                          expires_at=utcnow() + dt.timedelta(seconds=ttl_secs)))
    session.flush()
    return token


def live_token_sql(hash_sql: str, alias: str = "auth_tokens") -> str:
    """The token rule as an SQL condition on a row of `auth_tokens` named `alias`: its hash is
    `hash_sql` (a parameter or a column), it is not revoked and not expired. The one definition:
    every statement that checks a bearer token itself embeds it (`TOKEN_OWNER_SQL`, the hot
    one-statement writes, the poll's join in eventlog/store.py)."""
    return f"{alias}.token_hash = {hash_sql} AND {alias}.revoked_at IS NULL AND {alias}.expires_at > now()"


# The user a token hash (parameter `h`) belongs to: no row for a bad token. Run on the driver
# directly (db.driver_execute): every authenticated request runs it, and SQLAlchemy's execution
# cost more CPU than the statement; the hot writes embed it as a CTE.
TOKEN_OWNER_SQL = f"SELECT user_id FROM auth_tokens WHERE {live_token_sql('%(h)s')}"


def bad_token() -> errors.Unauthorized:
    """The one answer to a missing, unknown, expired or revoked token."""
    return errors.Unauthorized("The token is missing, unknown, expired or revoked.")


def authenticate(session: Session, token: str, secret_key: str) -> int:
    """The user id a bearer token belongs to; Unauthorized if unknown, expired or revoked."""
    return authenticate_hash(session, hash_token(secret_key, token))


def authenticate_hash(session: Session, token_hash: str) -> int:
    """`authenticate` for a token already hashed (`hash_token`): also the first statement of a
    hot write's own transaction, which then needs no connection or session of its own for it."""
    row = driver_execute(session, TOKEN_OWNER_SQL, {"h": token_hash}).fetchone()
    if row is None:
        raise bad_token()
    user_id: int = row[0]
    return user_id


def revoke_token(session: Session, token: str, secret_key: str) -> None:
    session.execute(
        update(AuthToken)
        .where(AuthToken.token_hash == hash_token(secret_key, token), AuthToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


@dataclass(frozen=True)
class LoginAttempt:
    """An attempt counted by `begin_login`: refused (retry_after set), or to be checked against
    `password_hash` (None for an unknown nickname) and then finished by `finish_login`."""

    pair_key: str
    address_key: str
    nickname_key: str
    user_id: int | None = None
    password_hash: str | None = None
    retry_after: float | None = None
    refusal: str = ""

    def raise_if_refused(self) -> None:
        if self.retry_after is not None:
            raise errors.RateLimited(self.retry_after, self.refusal)


_CHARGE_SQL = text(
    """
    INSERT INTO login_throttle AS t (key, failures, window_started_at) VALUES (:key, 1, now())
    ON CONFLICT (key) DO UPDATE SET
      failures = CASE WHEN t.window_started_at <= now() - make_interval(secs => :window)
                      THEN 1 ELSE t.failures + 1 END,
      window_started_at = CASE WHEN t.window_started_at <= now() - make_interval(secs => :window)
                      THEN now() ELSE t.window_started_at END
    RETURNING failures,
              coalesce(extract(epoch FROM t.locked_until - now()), 0)::float AS lock_left,
              extract(epoch FROM t.window_started_at + make_interval(secs => :window) - now())::float AS window_left
    """
)
_LOCK_SQL = text(
    "UPDATE login_throttle SET locked_until = now() + make_interval(secs => :lock), failures = 0, "
    "window_started_at = now() WHERE key = :key"
)


@dataclass(frozen=True)
class LoginPolicy:
    """The lockout rule's numbers (module docstring), from LOGIN_MAX_FAILURES and LOGIN_LOCKOUT;
    built once per process (`from_config`)."""

    max_failures: int
    lockout_secs: float

    @classmethod
    def from_config(cls, config: Config) -> LoginPolicy:
        return cls(max_failures=config.login_max_failures, lockout_secs=config.login_lockout)


def begin_login(session: Session, nickname: str, remote_addr: str | None, policy: LoginPolicy) -> LoginAttempt:
    """Count one login attempt against the lockout rule (module docstring). The caller commits
    (a refusal may have set a lock), raises if refused, checks the password with no database
    connection held, then calls `finish_login` if it was right."""
    max_failures, lockout_secs = policy.max_failures, policy.lockout_secs
    nick = nickname.lower()
    address = remote_addr or "unknown"
    keys = {"pair_key": f"pair:{nick}|{address}", "address_key": f"ip:{address}", "nickname_key": f"nick:{nick}"}
    counted = LoginAttempt(pair_key=keys["pair_key"], address_key=keys["address_key"], nickname_key=keys["nickname_key"])
    locked = session.execute(
        text("SELECT max(extract(epoch FROM locked_until - now()))::float FROM login_throttle "
             "WHERE key = ANY(:keys) AND locked_until > now()"),
        {"keys": [keys["pair_key"], keys["address_key"]]},
    ).scalar()
    if locked is not None:
        return replace(counted, retry_after=locked, refusal="Too many failed logins; retry later.")

    counts = {name: session.execute(_CHARGE_SQL, {"key": key, "window": lockout_secs}).one()
              for name, key in keys.items()}
    wide_limit = max_failures * WIDE_FACTOR
    for name, limit in (("pair_key", max_failures), ("address_key", wide_limit)):
        if counts[name].lock_left > 0:  # locked by a concurrent attempt since the check above
            return replace(counted, retry_after=counts[name].lock_left, refusal="Too many failed logins; retry later.")
        if counts[name].failures > limit:
            session.execute(_LOCK_SQL, {"key": keys[name], "lock": lockout_secs})
            return replace(counted, retry_after=lockout_secs, refusal="Too many failed logins; retry later.")
    nickname_lock_left = counts["nickname_key"].lock_left
    if counts["nickname_key"].failures > wide_limit:
        session.execute(_LOCK_SQL, {"key": keys["nickname_key"], "lock": lockout_secs})
        nickname_lock_left = lockout_secs
    pair = counts["pair_key"]
    if nickname_lock_left > 0 and pair.failures > 1:
        return replace(counted, retry_after=min(nickname_lock_left, pair.window_left),
                       refusal="Too many failed logins on this nickname; retry later.")

    user = find_by_nickname(session, nickname)
    return replace(counted, user_id=user.id if user else None, password_hash=user.password_hash if user else None)


def finish_login(session: Session, attempt: LoginAttempt, secret_key: str, ttl_secs: float) -> tuple[str, User]:
    """After the right password: refund the attempt (this pair starts clean) and issue a token."""
    assert attempt.user_id is not None and attempt.retry_after is None
    session.execute(text("DELETE FROM login_throttle WHERE key = :key"), {"key": attempt.pair_key})
    session.execute(
        text("UPDATE login_throttle SET failures = greatest(failures - 1, 0) WHERE key = ANY(:keys)"),
        {"keys": [attempt.address_key, attempt.nickname_key]},
    )
    return issue_token(session, attempt.user_id, secret_key, ttl_secs), get_user(session, attempt.user_id)
