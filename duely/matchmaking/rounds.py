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

from sqlalchemy import text
from sqlalchemy.orm import Session

from duely.config import Config
from duely.db import Database
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


def waiting_players(session: Session, ttl_secs: float) -> list[Waiting]:
    """Everyone queued and still polling, with their rating, its deviation and their last opponent."""
    rows = session.execute(text(
        f"""
        SELECT q.user_id, u.rating, u.rating_deviation, q.joined_at,
               (SELECT other.user_id FROM duel_players mine
                  JOIN duel_players other ON other.duel_id = mine.duel_id AND other.user_id <> mine.user_id
                 WHERE mine.user_id = q.user_id ORDER BY mine.duel_id DESC LIMIT 1) AS last_opponent_id
        FROM queue_entries q
        JOIN users u ON u.id = q.user_id
        LEFT JOIN presence p ON p.user_id = q.user_id
        WHERE {queue.PRESENT_SQL}
        """
    ), {"ttl": ttl_secs}).all()
    return [Waiting(user_id=r.user_id, rating=r.rating, joined_at=r.joined_at, last_opponent_id=r.last_opponent_id,
                    deviation=r.rating_deviation) for r in rows]


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
    def read(session: Session) -> tuple[list[Waiting], dt.datetime]:
        return waiting_players(session, config.queue_ttl), session.execute(text("SELECT now()")).scalar_one()

    waiting, now = db.read(read)
    if len(waiting) < 2:
        return 0
    pairs = pair_players(waiting, now)
    if not pairs:
        return 0
    ratings = {w.user_id: w.rating for w in waiting}
    seen = db.read(partial(start.tasks_seen_by, user_ids=[uid for pair in pairs for uid in pair]))
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
