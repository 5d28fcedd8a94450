"""The matchmaking queue: join, leave, status, and expiry of users who stopped polling.

A waiting user stays queued only while it keeps long-polling /api/updates: its `presence`
row (refreshed by each poll) must be younger than QUEUE_TTL.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from duely import challenges, duels, errors, eventlog, notify
from duely.auth import TOKEN_OWNER_SQL, bad_token
from duely.clock import isoformat
from duely.db import driver_execute, execute_alone
from duely.eventlog import presence
from duely.eventlog.store import USER_LOG, append_ctes, isoformat_sql, notify_sql
from duely.eventlog.types import EventType, QueueJoined, QueueLeft, QueueLeftReason
from duely.logs import kv
from duely.statuses import QueueStatus

log = logging.getLogger(__name__)

# A join wakes the matchmaking loop (duely/wakeup.py) at its commit; the sweep pairs anyway.
MATCHMAKING_CHANNEL = "duely_matchmaking"
MATCHMAKING_SWEEP_SECS = 1.0
WAKE_MATCHMAKING_SQL = notify.queue_sql(f"'{MATCHMAKING_CHANNEL}'", "''")
# The join's and the leave's own statements run on the driver (db.driver_execute): hot path.
_JOIN = f"""
    INSERT INTO queue_entries (user_id)
    SELECT %(u)s WHERE NOT EXISTS (SELECT 1 FROM duel_players WHERE user_id = %(u)s AND is_active)
    ON CONFLICT (user_id) DO NOTHING
    RETURNING joined_at, {WAKE_MATCHMAKING_SQL}
    """
_LEAVE = "DELETE FROM queue_entries WHERE user_id = %(u)s RETURNING user_id"


# The hot join and leave of the API in ONE statement each, token check included, run alone
# (Database.run_alone: autocommit, no BEGIN/COMMIT round trips). They do the common case only and
# change nothing otherwise; the caller then runs the full path (`join`, `leave`) in a transaction.
#
# One statement has one snapshot, taken before its locks are granted, so a check made after
# waiting for a lock could miss what the lock holder committed. What they could miss is always
# reported in the user's log (a duel started, a queue join or leave, a rematch offer made or
# ended: every such change appends an event, which bumps `users.last_event_id` under this lock),
# so each statement compares the user's row as locked (the newest version) with its snapshot:
# when they differ it does nothing and says so, and the full path decides with fresh reads.
_TOKEN_CTE = f"tok AS ({TOKEN_OWNER_SQL})"
_PENDING_REMATCH = challenges.pending_rematch_offer("t.user_id", alias="c")
# A join: lock the user; when it has no pending rematch offer (either side: the full path ends
# them, locking their other players too), plays no duel and its row did not change since the
# snapshot: queue it, touch its presence, append `queue_joined`, NOTIFY the user's polls and the
# matchmaking loop; or, when it already waits, touch its presence only (the join is idempotent).
# Answers one row (none: a bad token): the user's id, since when it waits (NULL: the full path
# decides), whether this statement queued it.
_JOIN_ALONE = f"""
    WITH {_TOKEN_CTE}, locked AS MATERIALIZED (
        SELECT u.id, u.last_event_id FROM users u JOIN tok t ON u.id = t.user_id FOR NO KEY UPDATE OF u
    ), me AS MATERIALIZED (
        SELECT t.user_id AS owner,
               l.last_event_id = u.last_event_id
               AND NOT EXISTS (SELECT 1 FROM challenges c WHERE {_PENDING_REMATCH})
               AND NOT EXISTS (SELECT 1 FROM duel_players p WHERE p.user_id = t.user_id AND p.is_active) AS plain,
               (SELECT q.joined_at FROM queue_entries q WHERE q.user_id = t.user_id) AS waiting_since
        FROM tok t JOIN locked l ON l.id = t.user_id JOIN users u ON u.id = t.user_id
    ), joined AS (
        INSERT INTO queue_entries (user_id) SELECT owner FROM me WHERE plain AND waiting_since IS NULL
        ON CONFLICT (user_id) DO NOTHING
        RETURNING user_id AS owner, joined_at
    ), seen AS (
        INSERT INTO presence (user_id, last_seen_at)
        SELECT owner, now() FROM joined UNION ALL SELECT owner, now() FROM me WHERE plain AND waiting_since IS NOT NULL
        ON CONFLICT (user_id) DO UPDATE SET last_seen_at = excluded.last_seen_at
        RETURNING user_id
    ), {append_ctes("ev", "joined", USER_LOG, EventType.QUEUE_JOINED.value,
                    "jsonb_build_object('since', " + isoformat_sql("s.joined_at") + ")")}
    SELECT me.owner, CASE WHEN me.plain THEN coalesce(j.joined_at, me.waiting_since) END, j.joined_at IS NOT NULL,
           (SELECT count(*) FROM seen) AS seen,
           (SELECT count({notify_sql(USER_LOG, "ev.owner", own=True)}) + count({WAKE_MATCHMAKING_SQL}) FROM ev) AS notified
    FROM me LEFT JOIN joined j ON true
    """
# A leave: lock the user, take it out of the queue, append `queue_left` (reason `left`).
# Answers one row (none: a bad token): the user's id, whether it left, whether its row is
# unchanged since the snapshot (when it did not leave and the row changed, the full path decides).
_LEAVE_ALONE = f"""
    WITH {_TOKEN_CTE}, locked AS MATERIALIZED (
        SELECT u.id AS owner, u.last_event_id FROM users u JOIN tok t ON u.id = t.user_id FOR NO KEY UPDATE OF u
    ), gone AS (
        DELETE FROM queue_entries q USING locked l WHERE q.user_id = l.owner RETURNING q.user_id AS owner
    ), {append_ctes("ev", "gone", USER_LOG, EventType.QUEUE_LEFT.value,
                    f"jsonb_build_object('reason', '{QueueLeftReason.LEFT.value}')")}
    SELECT l.owner, (SELECT count({notify_sql(USER_LOG, "ev.owner", own=True)}) FROM ev) > 0 AS left_queue,
           l.last_event_id = u.last_event_id AS unchanged
    FROM locked l JOIN users u ON u.id = l.owner
    """


def join_alone(session: Session | Connection, token_hash: str) -> tuple[int, dt.datetime | None]:
    """The API's join in one statement (`_JOIN_ALONE`, on an autocommit connection: Database.run_alone):
    (the caller's id, since when it waits) when it joined or already waited; (id, None) when it
    changed nothing and the full path (`join`, in a transaction) must decide. Unauthorized for a
    bad token."""
    row = execute_alone(session, _JOIN_ALONE, {"h": token_hash}).fetchone()
    if row is None:
        raise bad_token()
    user_id: int = row[0]
    if row[2]:
        log.info("queue joined", extra=kv(user_id=user_id))
    return user_id, row[1]


def leave_alone(session: Session | Connection, token_hash: str) -> tuple[int, bool | None]:
    """The API's leave in one statement (`_LEAVE_ALONE`, as `join_alone`): (the caller's id, True)
    when it left, (id, False) when it was not waiting, (id, None) when the full path (`leave`)
    must decide. Unauthorized for a bad token."""
    row = execute_alone(session, _LEAVE_ALONE, {"h": token_hash}).fetchone()
    if row is None:
        raise bad_token()
    user_id, left, unchanged = row
    if left:
        log.info("queue left", extra=kv(user_id=user_id, reason=QueueLeftReason.LEFT))
        return user_id, True
    return user_id, False if unchanged else None


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
    eventlog.append(session, user_id, QueueJoined(since=joined_at), own=True)
    log.info("queue joined", extra=kv(user_id=user_id))
    return joined_at


def leave(session: Session, user_id: int, reason: QueueLeftReason = QueueLeftReason.LEFT) -> bool:
    """Take the user out of the queue with a `queue_left` event; False when it was not waiting."""
    eventlog.lock_users(session, [user_id])
    gone = driver_execute(session, _LEAVE, {"u": user_id}).fetchone()
    if gone is None:
        return False
    # the user's own leave only echoes their request; an expiry is news to them
    eventlog.append(session, user_id, QueueLeft(reason=reason), own=reason is QueueLeftReason.LEFT)
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
