"""Accounts: registration, profiles and the leaderboard."""

from __future__ import annotations

import re

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from duely import errors, rating
from duely.clock import isoformat
from duely.models import User

NICKNAME_RE = re.compile(r"^[A-Za-z0-9_-]{3,32}$")
PASSWORD_MIN_LEN = 8
PASSWORD_MAX_LEN = 256


def create_user(session: Session, nickname: str, password_hash: str) -> User:
    """Create an account with an already hashed password (duely.passwords: hash it before the
    transaction, not while holding a connection). Raises NicknameTaken (case-insensitive,
    race-safe via the unique index)."""
    start = rating.NEWCOMER
    user = User(nickname=nickname, password_hash=password_hash, rating=start.shown, rating_exact=start.rating,
                rating_deviation=start.deviation, rating_volatility=start.volatility)
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError:
        raise errors.NicknameTaken() from None
    return user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise errors.NotFound("No such user.")
    return user


def find_by_nickname(session: Session, nickname: str) -> User | None:
    return session.execute(select(User).where(text("lower(nickname) = lower(:n)")), {"n": nickname}).scalar_one_or_none()


def leaderboard(session: Session, limit: int, offset: int) -> list[User]:
    return list(session.execute(select(User).order_by(User.rating.desc(), User.id).limit(limit).offset(offset)).scalars())


def user_json(user: User) -> dict:
    return {
        "id": user.id,
        "nickname": user.nickname,
        "rating": user.rating,
        "rating_deviation": round(user.rating_deviation),
        "provisional": user.rating_deviation >= rating.PROVISIONAL_DEVIATION,
        "duels": {"played": user.played, "won": user.won, "lost": user.lost, "drawn": user.drawn},
        "created_at": isoformat(user.created_at),
    }
