"""Presence: when a user last long-polled `GET /api/updates`. See docs/events.md ("Presence").

The matchmaking queue keeps a user only while they keep polling (docs/api.md, `QUEUE_TTL`), so
every poll refreshes `presence.last_seen_at`, and so does every held poll, in one batched
write per worker (`PresenceThrottle.touch_many`, driven by the listener's heartbeat). Writes from
polls are throttled per process (the throttle lives in the process's Runtime, duely/runtime.py):
a user who polls many times a second costs one write per PRESENCE_THROTTLE_SECS, far below QUEUE_TTL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from sqlalchemy.orm import Session

# Far below QUEUE_TTL (30 s by default), so a throttled poll never makes a user look absent.
PRESENCE_THROTTLE_SECS = 5.0
# The throttle memory is swept when it grows past this many users (entries are tiny).
_THROTTLE_SWEEP_SIZE = 50_000

# In the driver's own parameter style, so that the poll's fast path (duely/eventlog/reader.py, plain
# psycopg connections) runs the very same statement.
#
# It never waits for a row another transaction is writing: that writer is marking the same user
# seen at the same moment, so the row is skipped (SKIP LOCKED). A poll's reader writes this for its
# whole batch on one of the process's few reader connections (duely/eventlog/reader.py), so a
# wait here would hold every poll of the batch, and then the process's other polls, for as long
# as some other transaction kept the row. A user's first row is inserted (ON CONFLICT DO NOTHING
# for a first row two writers insert at once).
UPSERT_SQL = """
    WITH wanted AS (SELECT unnest(CAST(%(ids)s AS bigint[])) AS uid),
    free AS (
        SELECT p.user_id FROM presence p WHERE p.user_id IN (SELECT uid FROM wanted)
        ORDER BY p.user_id FOR NO KEY UPDATE SKIP LOCKED
    ), seen AS (
        UPDATE presence p SET last_seen_at = now() FROM free f WHERE p.user_id = f.user_id
    )
    INSERT INTO presence (user_id, last_seen_at)
    SELECT uid, now() FROM wanted w WHERE NOT EXISTS (SELECT 1 FROM presence p WHERE p.user_id = w.uid)
    ON CONFLICT (user_id) DO NOTHING
    """

def touch(session: Session, user_id: int) -> None:
    """Mark `user_id` as seen now (in the caller's transaction). Never throttled."""
    write(session, [user_id])


def write(session: Session, user_ids: Iterable[int]) -> list[int]:
    """Mark several users as seen now, in one statement; returns their ids in lock order."""
    ids = sorted(set(user_ids))  # one lock order for concurrent upserts: no deadlocks
    if ids:
        session.connection().exec_driver_sql(UPSERT_SQL, {"ids": ids})
    return ids


class PresenceThrottle:
    """This process's memory of when it last wrote each user's presence (one per Runtime)."""

    def __init__(self) -> None:
        self._last_write: dict[int, float] = {}  # user id -> time.monotonic() of this process's last write
        self._lock = threading.Lock()

    def touch_many(self, session: Session, user_ids: Iterable[int],
                   throttle_secs: float = PRESENCE_THROTTLE_SECS) -> list[int]:
        """The held-polls heartbeat: mark as seen now, in one statement, those of `user_ids` that
        this process has not written within `throttle_secs` (a user who polls often was written by
        the poll itself); returns the ids written.

        Its commit does not wait for the WAL flush, as the polls' own presence writes do not
        (duely/eventlog/reader.py): losing the last second of presence in a crash is harmless.
        It used to write every held user, ~500 rows per worker every HEARTBEAT_SECS; with the
        throttle a heartbeat writes ~100-250 under bench/swarm.py's load. (The change was first
        credited with fewer late deliveries there; later runs of one tree gave 14 and 494 late
        verdicts, so that was the run-to-run spread: the late deliveries are the box's run queue,
        see the README, "Measured figures".)"""
        now = time.monotonic()
        with self._lock:
            due = [uid for uid in set(user_ids) if now - self._last_write.get(uid, -throttle_secs) >= throttle_secs]
            for uid in due:  # claimed before the write, as claim_write does
                self._last_write[uid] = now
        if due:
            session.connection().exec_driver_sql("SET LOCAL synchronous_commit = off")
        return write(session, due)

    def claim_write(self, user_id: int, throttle_secs: float = PRESENCE_THROTTLE_SECS) -> bool:
        """The throttle of poll-driven writes: True (and the slot is taken) when `user_id`'s presence
        is due for a write by this process; the caller then runs UPSERT_SQL for it.

        The memory is per process, so a poll reaching another worker writes at once; and the first
        poll after a pause longer than the throttle always writes."""
        now = time.monotonic()
        with self._lock:
            last = self._last_write.get(user_id)
            if last is not None and now - last < throttle_secs:
                return False
            # Claimed before the write so that concurrent polls of one user write once.
            self._last_write[user_id] = now
            if len(self._last_write) > _THROTTLE_SWEEP_SIZE:
                self._sweep(now, throttle_secs)
        return True

    def forget(self, user_id: int | None = None) -> None:
        """Drop the throttle memory (of one user, or of everyone), so the next poll writes."""
        with self._lock:
            if user_id is None:
                self._last_write.clear()
            else:
                self._last_write.pop(user_id, None)

    def _sweep(self, now: float, throttle_secs: float) -> None:
        for uid in [uid for uid, t in self._last_write.items() if now - t >= throttle_secs]:
            del self._last_write[uid]
