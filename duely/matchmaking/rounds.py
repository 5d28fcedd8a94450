"""One matchmaking round: read the queue, pair (pure `pairing.pair_players`), start duels.

For each pair the task comes from Taski *outside* any transaction (an HTTP call must not
hold locks); then one transaction locks both users, takes both out of the queue, creates
the duel and writes the events (duely/matchmaking/start.py, shared with challenges). If
either left meanwhile, that pair is skipped. If Taski is down or pausing us, the round stops
and everyone stays queued.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import Executor
from functools import partial

from sqlalchemy.orm import Session

from duely.config import Config
from duely.db import Database, driver_execute
from duely.logs import kv
from duely.matchmaking import queue, start
from duely.matchmaking.pairing import Waiting, pair_players
from duely.taski import TaskiClient, TaskiError, TaskiNotFound

log = logging.getLogger(__name__)

# Queue joins wake a round at once, but woken rounds start at least this far apart: under a
# burst of joins one round pairs many players (and pairs them better: the pairing is global)
# instead of a round per join each reading the whole queue. A lone join still waits at most this.
WOKEN_MIN_GAP_SECS = 0.1
# Duels of one round started at once (each holds a database connection for its transaction;
# SCHEDULER_POOL in duely/db.py has room for them next to dispatch and the periodic jobs).
STARTS_IN_FLIGHT = 4


# Everyone queued and still polling, with the transaction's time; on the driver (db.driver_execute):
# a woken round runs it for every burst of joins.
_WAITING = f"""
    SELECT q.user_id, u.rating, u.rating_deviation, q.joined_at,
           (SELECT other.user_id FROM duel_players mine
              JOIN duel_players other ON other.duel_id = mine.duel_id AND other.user_id <> mine.user_id
             WHERE mine.user_id = q.user_id ORDER BY mine.duel_id DESC LIMIT 1) AS last_opponent_id,
           now() AS now
    FROM queue_entries q
    JOIN users u ON u.id = q.user_id
    LEFT JOIN presence p ON p.user_id = q.user_id
    WHERE {queue.PRESENT_SQL.replace(":ttl", "%(ttl)s")}
    """


def waiting_players(session: Session, ttl_secs: float) -> list[Waiting]:
    """Everyone queued and still polling, with their rating, its deviation and their last opponent."""
    return waiting_players_now(session, ttl_secs)[0]


def waiting_players_now(session: Session, ttl_secs: float) -> tuple[list[Waiting], dt.datetime | None]:
    """`waiting_players` and the transaction's time (None when nobody waits), in one statement."""
    rows = driver_execute(session, _WAITING, {"ttl": float(ttl_secs)}).fetchall()
    waiting = [Waiting(user_id=r[0], rating=r[1], joined_at=r[3], last_opponent_id=r[4], deviation=r[2]) for r in rows]
    return waiting, (rows[0][5] if rows else None)


def start_duel_for_pair(session: Session, pair: tuple[int, int], task: dict, duration_secs: float) -> int | None:
    """In one transaction: both out of the queue, the duel created, events written. None if
    either player is no longer waiting (left, expired, or matched by a concurrent round)."""
    # join/leave/expiry take the same locks: the queue holds still (and so do their rematch offers)
    start.lock_pair(session, pair)
    return start.begin_duel(session, pair, task, duration_secs, need_queued=2)


def run_round(db: Database, config: Config, taski: TaskiClient, starters: Executor | None = None) -> int:
    """Pair whoever can be paired now; returns the number of duels started.

    The pairs' duels start up to STARTS_IN_FLIGHT at once on `starters` (the process's pool,
    Runtime.duel_starters; None starts them one by one): each pair's Taski call and transaction
    is mostly waiting, and one at a time a burst of joins waited in line for them."""
    def read(session: Session) -> tuple[list[Waiting], list[tuple[int, int]], dict[int, set[str]]]:
        # one read transaction: the queue, the pairing (pure, no database work) and the tasks
        # the paired players have had
        waiting, now = waiting_players_now(session, config.queue_ttl)
        if len(waiting) < 2 or now is None:
            return waiting, [], {}
        pairs = pair_players(waiting, now)
        seen = start.tasks_seen_by(session, [uid for pair in pairs for uid in pair]) if pairs else {}
        return waiting, pairs, seen

    waiting, pairs, seen = db.read(read)
    if not pairs:
        return 0
    ratings = {w.user_id: w.rating for w in waiting}
    halted = threading.Event()  # Taski is down or pausing us: the pairs not yet started stay queued

    def start_pair(pair: tuple[int, int]) -> bool:
        if halted.is_set():
            return False
        try:
            task = start.choose_task(taski, round((ratings[pair[0]] + ratings[pair[1]]) / 2), seen[pair[0]] | seen[pair[1]])
        except TaskiNotFound:
            log.warning("Taski has no task for this pair", extra=kv(players=f"{pair[0]},{pair[1]}"))
            return False
        except TaskiError as exc:
            if not halted.is_set():
                log.warning("no task from Taski; players stay queued", extra=kv(problem=exc))
            halted.set()
            return False
        return db.run(partial(start_duel_for_pair, pair=pair, task=task, duration_secs=config.duel_duration)) is not None

    started = starters.map(start_pair, pairs) if starters is not None and len(pairs) > 1 else map(start_pair, pairs)
    return sum(1 for ok in started if ok)
