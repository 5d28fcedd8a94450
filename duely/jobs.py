"""The scheduler process's jobs. Dispatch and matchmaking are woken by NOTIFY (a submit, a
queue join) with a sweep every second as the safety net (duely/wakeup.py); the others are
periodic (APScheduler). Each job is a plain function of the database and config, so tests run
one round directly; several scheduler processes may run at once: every job is safe under
concurrency (row locks / SKIP LOCKED)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from apscheduler.schedulers.blocking import BlockingScheduler

from duely import dispatch, duels, logs
from duely.config import Config
from duely.db import Database
from duely.events import PRUNE_INTERVAL_SECS, prune_job
from duely.matchmaking import queue, rounds
from duely.taski import client_for
from duely.wakeup import WokenLoop

log = logging.getLogger(__name__)

Job = Callable[[Database, Config], object]


def matchmaking_job(db: Database, config: Config) -> int:
    return rounds.run_round(db, config, client_for(config.taski_url, config.taski_timeout))


def dispatch_job(db: Database, config: Config) -> int:
    return dispatch.run_round(db, config, client_for(config.taski_url, config.taski_timeout))


def finish_job(db: Database, config: Config) -> int:
    """Finish every duel whose result has become certain (deadline passed, Accepted judged)."""
    with db.transaction() as session:
        due = duels.duels_due(session)
    return sum(1 for duel_id in due if db.run(lambda s, d=duel_id: duels.try_finish(s, d, skip_locked=True)))


def queue_expiry_job(db: Database, config: Config) -> int:
    """Drop queued users who stopped polling /api/updates for QUEUE_TTL."""
    with db.transaction() as session:
        stale = queue.stale_user_ids(session, config.queue_ttl)
    return sum(1 for uid in stale if db.run(lambda s, u=uid: queue.expire_one(s, u, config.queue_ttl)))


def woken_loops(db: Database, config: Config) -> list[WokenLoop]:
    """The jobs run on a NOTIFY from the transaction that made work for them, and every second anyway."""
    return [
        WokenLoop(config.database_url, dispatch.DISPATCH_CHANNEL, lambda: dispatch_job(db, config),
                  dispatch.DISPATCH_SWEEP_SECS, "dispatch", more=lambda sent: sent >= dispatch.ROUND_SIZE),
        WokenLoop(config.database_url, queue.MATCHMAKING_CHANNEL, lambda: matchmaking_job(db, config),
                  queue.MATCHMAKING_SWEEP_SECS, "matchmaking"),
    ]


def scheduled_jobs() -> list[tuple[str, Job, float]]:
    """(name, function, interval in seconds) of every periodic job."""
    return [
        ("finish", finish_job, 1.0),
        ("queue_expiry", queue_expiry_job, 2.0),
        ("prune_events", prune_job, PRUNE_INTERVAL_SECS),
    ]


def run_scheduler(config: Config) -> None:
    logs.setup(config.log_level, "scheduler")
    # Room for the parallel sends of dispatch, a matchmaking round and the periodic jobs at once.
    db = Database(config.database_url, pool_size=4, max_overflow=dispatch.SENDS_IN_FLIGHT + 8)
    scheduler = BlockingScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
    for name, job, interval in scheduled_jobs():
        scheduler.add_job(job, "interval", seconds=interval, args=(db, config), id=name, name=name)

    loops = [loop.start() for loop in woken_loops(db, config)]

    def stop(signum, frame):
        log.info("stopping scheduler")
        for loop in loops:
            loop.stop_event.set()
        scheduler.shutdown(wait=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scheduler started with jobs: %s (woken: %s)", ", ".join(n for n, _, _ in scheduled_jobs()),
             ", ".join(loop.name for loop in loops))
    scheduler.start()
    for loop in loops:
        loop.stop()
    db.dispose()
