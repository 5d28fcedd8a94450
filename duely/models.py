"""The database schema, as SQLAlchemy models. Migrations in migrations/ create it.

Invariants held by the schema itself (not only by code):
- nicknames are unique case-insensitively (`ux_users_nickname_lower`);
- a user is a player of at most one active duel (`ux_duel_players_one_active`);
- a submit is idempotent per (duel, user, client_temp_id) (`ux_submissions_client_temp_id`);
- event ids are per user, `(user_id, id)` is the key and the read index; a duel's public log
  likewise per duel, `(duel_id, id)`;
- a player has at most one pending rematch offer per duel (`ux_challenges_one_rematch_offer`).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TIMESTAMP

from duely.statuses import ChallengeKind, ChallengeStatus, DuelStatus, SubmissionState

TZ = TIMESTAMP(timezone=True)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    nickname: Mapped[str] = mapped_column(Text, nullable=False)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    # The shown (whole) rating: always round(rating_exact), kept as a column for the
    # leaderboard index and matchmaking. The Glicko-2 state is the next four (duely/rating.py).
    rating: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1500"))
    rating_exact: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("1500"))
    rating_deviation: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("350"))
    rating_volatility: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("0.09"))
    rated_at: Mapped[dt.datetime | None] = mapped_column(TZ)  # end of the last rated duel; None before the first
    # In the establishing period: rated from all their duels so far (duely/rating.py, migration 0003).
    establishing: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    played: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    won: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    lost: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    drawn: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # False: nobody may challenge this player by name (docs/challenges.md, migration 0004).
    accept_challenges: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    # Newest event id of this user's log; bumped under the row lock (see duely/eventlog/store.py).
    last_event_id: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    created_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False, server_default=func.now())

    __table_args__ = (
        Index("ux_users_nickname_lower", func.lower(nickname), unique=True),
        Index("ix_users_rating", rating.desc(), id),
    )


class AuthToken(Base):
    __tablename__ = "auth_tokens"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    token_hash: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False, server_default=func.now())
    expires_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(TZ)


class LoginThrottle(Base):
    """Failed-login counters keyed by `nick:<lower nickname>` or `ip:<address>`."""

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    window_started_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False, server_default=func.now())
    locked_until: Mapped[dt.datetime | None] = mapped_column(TZ)


class Presence(Base):
    """When a user last polled /api/updates; the queue drops users who stopped polling."""

    __tablename__ = "presence"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    last_seen_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False, server_default=func.now())


class QueueEntry(Base):
    __tablename__ = "queue_entries"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    joined_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False, server_default=func.now())


class Event(Base):
    __tablename__ = "events"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False, server_default=func.now())

    __table_args__ = (Index("ix_events_created_at", "created_at"),)


class Duel(Base):
    __tablename__ = "duels"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text(DuelStatus.ACTIVE.sql))
    task_id: Mapped[str] = mapped_column(Text, nullable=False)
    # Snapshot of Taski's task object as it was when the duel started.
    task: Mapped[dict] = mapped_column(JSONB, nullable=False)
    started_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False, server_default=func.now())
    deadline: Mapped[dt.datetime] = mapped_column(TZ, nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(TZ)
    outcome: Mapped[str | None] = mapped_column(Text)  # win | draw
    winner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str | None] = mapped_column(Text)  # accepted | timeout | resign
    # False: a casual duel from a challenge; finishing it changes no rating (duels.finish).
    rated: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    # Newest event id of this duel's public log; bumped under the row lock (duely/eventlog/store.py).
    last_event_id: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))

    __table_args__ = (Index("ix_duels_active_deadline", "deadline", postgresql_where=text(f"status = {DuelStatus.ACTIVE.sql}")),
                      Index("ix_duels_status_id", "status", text("id DESC")))


class DuelEvent(Base):
    """A duel's public log (spectators): ids per duel, like `events` per user."""

    __tablename__ = "duel_events"
    duel_id: Mapped[int] = mapped_column(ForeignKey("duels.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False, server_default=func.now())

    __table_args__ = (Index("ix_duel_events_created_at", "created_at"),)


class DuelPlayer(Base):
    __tablename__ = "duel_players"
    duel_id: Mapped[int] = mapped_column(ForeignKey("duels.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    rating_before: Mapped[int] = mapped_column(Integer, nullable=False)
    rating_after: Mapped[int | None] = mapped_column(Integer)
    deviation_after: Mapped[float | None] = mapped_column(Double)  # RD after the duel (None: rated before Glicko-2)
    # {"win", "draw", "loss"}: the shown change for each result, fixed when the duel starts.
    stakes: Mapped[dict | None] = mapped_column(JSONB)
    # {"win", "draw", "loss"}: the Glicko-2 state [rating, RD, volatility] after each result,
    # fixed when the duel starts and applied at the finish (None: started before migration 0003).
    outcomes: Mapped[dict | None] = mapped_column(JSONB)
    # Mirrors duels.status so that the unique index below can hold "one active duel per user".
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))

    __table_args__ = (
        Index("ux_duel_players_one_active", "user_id", unique=True, postgresql_where=text("is_active")),
        Index("ix_duel_players_user_duel", "user_id", duel_id.desc()),
    )


class Submission(Base):
    __tablename__ = "submissions"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    duel_id: Mapped[int] = mapped_column(ForeignKey("duels.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    language: Mapped[str] = mapped_column(Text, nullable=False)
    solution: Mapped[str] = mapped_column(Text, nullable=False)
    client_temp_id: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False, server_default=func.now())
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text(SubmissionState.PENDING.sql))
    progress: Mapped[str | None] = mapped_column(Text)  # Taski's latest text, e.g. "Test #2 passed"
    verdict: Mapped[str | None] = mapped_column(Text)
    last_seq: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    send_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    sent_at: Mapped[dt.datetime | None] = mapped_column(TZ)  # last successful hand-over to Taski
    last_message_at: Mapped[dt.datetime | None] = mapped_column(TZ)  # last progress message from Taski
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(TZ)  # backoff after a failed send
    judged_at: Mapped[dt.datetime | None] = mapped_column(TZ)

    __table_args__ = (
        Index(
            "ux_submissions_client_temp_id",
            "duel_id",
            "user_id",
            "client_temp_id",
            unique=True,
            postgresql_where=text("client_temp_id IS NOT NULL"),
        ),
        Index("ix_submissions_duel_submitted", "duel_id", "submitted_at"),
        Index("ix_submissions_user_submitted", "user_id", "submitted_at"),
        Index("ix_submissions_unjudged", "status", "submitted_at", postgresql_where=text(f"status <> {SubmissionState.JUDGED.sql}")),
    )


class Challenge(Base):
    """A challenge (named or open) or a rematch offer; see duely/challenges.py, docs/challenges.md."""

    __tablename__ = "challenges"
    # Random, not a sequence: an open challenge is accepted by whoever has its link.
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False, server_default=text(ChallengeKind.CHALLENGE.sql))
    challenger_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    to_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))  # None: open
    rated: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    duration_secs: Mapped[int] = mapped_column(Integer, nullable=False)
    rematch_of: Mapped[int | None] = mapped_column(ForeignKey("duels.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text(ChallengeStatus.PENDING.sql))
    decline_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False, server_default=func.now())
    expires_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False)
    closed_at: Mapped[dt.datetime | None] = mapped_column(TZ)
    accepted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    duel_id: Mapped[int | None] = mapped_column(ForeignKey("duels.id", ondelete="SET NULL"))

    __table_args__ = (
        CheckConstraint("kind IN ('challenge', 'rematch')", name="ck_challenges_kind"),
        CheckConstraint("status IN ('pending', 'accepted', 'declined', 'canceled', 'expired')", name="ck_challenges_status"),
        CheckConstraint("kind = 'challenge' OR (rematch_of IS NOT NULL AND to_user_id IS NOT NULL)", name="ck_challenges_rematch"),
        Index("ix_challenges_challenger_created", "challenger_id", "created_at"),
        Index("ix_challenges_to_pending", "to_user_id", postgresql_where=text(f"status = {ChallengeStatus.PENDING.sql}")),
        Index("ix_challenges_pending_expiry", "expires_at", postgresql_where=text(f"status = {ChallengeStatus.PENDING.sql}")),
        Index("ux_challenges_one_rematch_offer", "rematch_of", "challenger_id", unique=True,
              postgresql_where=text(f"status = {ChallengeStatus.PENDING.sql} AND kind = {ChallengeKind.REMATCH.sql}")),
    )


class Block(Base):
    """`blocker_id` blocked `blocked_id`: no challenges between the two, either way."""

    __tablename__ = "blocks"
    blocker_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    blocked_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZ, nullable=False, server_default=func.now())

    __table_args__ = (
        CheckConstraint("blocker_id <> blocked_id", name="ck_blocks_not_self"),
        Index("ix_blocks_blocked", "blocked_id", "blocker_id"),
    )
