"""The matchmaking queue: join, leave, status, and expiry of users who stopped polling.

A waiting user stays queued only while it keeps long-polling /api/updates: its `presence`
row (refreshed by each poll) must be younger than QUEUE_TTL.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import text
from sqlalchemy.orm import Session

from duely import challenges, duels, errors, eventlog
from duely.clock import isoformat
from duely.db import driver_execute
from duely.eventlog import presence
from duely.eventlog.types import QueueJoined, QueueLeft, QueueLeftReason
from duely.logs import kv
from duely.statuses import QueueStatus

log = logging.getLogger(__name__)

# A join wakes the matchmaking loop (duely/wakeup.py) at its commit; the sweep pairs anyway.
MATCHMAKING_CHANNEL = "duely_matchmaking"
MATCHMAKING_SWEEP_SECS = 1.0
# The join's and the leave's own statements run on the driver (db.driver_execute): hot path.
_JOIN = f"""
    INSERT INTO queue_entries (user_id)
    SELECT %(u)s WHERE NOT EXISTS (SELECT 1 FROM duel_players WHERE user_id = %(u)s AND is_active)
    ON CONFLICT (user_id) DO NOTHING
    RETURNING joined_at, pg_notify('{MATCHMAKING_CHANNEL}', '')
    """
_LEAVE = "DELETE FROM queue_entries WHERE user_id = %(u)s RETURNING user_id"


def join(session: Session, user_id: int) -> dt.datetime:
    """Put the user in the queue (idempotent); returns since when it waits. 409 while in a duel.
    Joining ends the user's rematch offers, both ways (docs/challenges.md)."""
    # serialises with matchmaking, which locks players too; the partners' logs get challenge_expired
    challenges.lock_with_rematch_partners(session, [user_id])
    # The usual case in one round trip: not playing, not yet queued -> queued, and the NOTIFY
    # that runs a matchmaking round as soon as this commits.
    joined = driver_execute(session, _JOIN, {"u": user_id}).fetchone()
    if joined is None:  # playing, or already waiting
        if duels.active_duel_id(session, user_id) is not None:
            raise errors.AlreadyInDuel()
        presence.touch(session, user_id)  # joining counts as being present
        since: dt.datetime = session.execute(
            text("SELECT joined_at FROM queue_entries WHERE user_id = :u"), {"u": user_id}).scalar_one()
        return since
    presence.touch(session, user_id)
    challenges.end_rematch_offers(session, [user_id])
    joined_at: dt.datetime = joined[0]
    eventlog.append(session, user_id, QueueJoined(since=joined_at))
    log.info("queue joined", extra=kv(user_id=user_id))
    return joined_at


def leave(session: Session, user_id: int, reason: QueueLeftReason = QueueLeftReason.LEFT) -> bool:
    """Take the user out of the queue with a `queue_left` event; False when it was not waiting."""
    eventlog.lock_users(session, [user_id])
    gone = driver_execute(session, _LEAVE, {"u": user_id}).fetchone()
    if gone is None:
        return False
    eventlog.append(session, user_id, QueueLeft(reason=reason))
    log.info("queue left", extra=kv(user_id=user_id, reason=reason))
    return True


def status(session: Session, user_id: int) -> dict:
    duel_id = duels.active_duel_id(session, user_id)
    if duel_id is not None:
        since = session.execute(text("SELECT started_at FROM duels WHERE id = :d"), {"d": duel_id}).scalar()
        return {"status": QueueStatus.IN_DUEL, "since": isoformat(since), "duel_id": duel_id}
    since = session.execute(text("SELECT joined_at FROM queue_entries WHERE user_id = :u"), {"u": user_id}).scalar()
    if since is not None:
        return {"status": QueueStatus.WAITING, "since": isoformat(since), "duel_id": None}
    return {"status": QueueStatus.IDLE, "since": None, "duel_id": None}


# The one presence rule of the queue, for SQL over `queue_entries q LEFT JOIN presence p`
# (parameter :ttl): a queued user is present while its last poll, or its join before any
# poll, is younger than QUEUE_TTL. Matchmaking pairs only present users; expiry drops the rest.
PRESENT_SQL = "coalesce(p.last_seen_at, q.joined_at) >= now() - make_interval(secs => :ttl)"


def stale_user_ids(session: Session, ttl_secs: float, only_user_id: int | None = None) -> list[int]:
    """Queued users whose last poll is older than the TTL."""
    return list(session.execute(text(
        f"""
        SELECT q.user_id FROM queue_entries q LEFT JOIN presence p ON p.user_id = q.user_id
        WHERE NOT ({PRESENT_SQL})
          AND (CAST(:only AS bigint) IS NULL OR q.user_id = :only)
        """
    ), {"ttl": ttl_secs, "only": only_user_id}).scalars())


def expire_one(session: Session, user_id: int, ttl_secs: float) -> bool:
    """Drop one stale user (re-checked under its lock: it may have polled meanwhile)."""
    eventlog.lock_users(session, [user_id])
    if not stale_user_ids(session, ttl_secs, only_user_id=user_id):
        return False
    return leave(session, user_id, reason=QueueLeftReason.EXPIRED)
