"""The scheduler process's jobs. Dispatch and matchmaking are woken by NOTIFY (a submit, a
queue join) with a sweep every second as the safety net (duely/wakeup.py); the others are
periodic (APScheduler). Each job is a plain function of the process's Runtime (its database,
config and Taski client), so tests run one round directly; several scheduler processes may run
at once: every job is safe under concurrency (row locks / SKIP LOCKED).

While the database is unreachable the jobs do not fail every second: `guarded` logs the outage
once (WARNING) and its end (INFO), and retries with a capped backoff. A job cut short by the
outage left nothing half done (each step is one transaction); the next round picks it up.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Callable
from functools import partial

from apscheduler.schedulers.blocking import BlockingScheduler

from duely import challenges, dispatch, duels, outage
from duely.config import Config
from duely.db import SCHEDULER_POOL, Database
from duely.eventlog.store import PRUNE_INTERVAL_SECS, prune_job
from duely.gcfreeze import freeze_startup_heap
from duely.matchmaking import queue, rounds
from duely.runtime import Runtime
from duely.wakeup import WokenLoop

log = logging.getLogger(__name__)

ScheduledJob = Callable[[Runtime], object]


def matchmaking_job(runtime: Runtime) -> int:
    return rounds.run_round(runtime.db, runtime.config, runtime.taski(), runtime.duel_starters())


def dispatch_job(runtime: Runtime) -> int:
    return dispatch.run_round(runtime.db, runtime.config, runtime.taski(), runtime.dispatch_senders())


def finish_job(runtime: Runtime) -> int:
    """Finish every duel whose result has become certain (deadline passed, Accepted judged)."""
    db = runtime.db
    due = db.read(duels.duels_due)
    return sum(1 for duel_id in due if db.run(partial(duels.try_finish, duel_id=duel_id, skip_locked=True)))


def queue_expiry_job(runtime: Runtime) -> int:
    """Drop queued users who stopped polling /api/updates for QUEUE_TTL."""
    db, config = runtime.db, runtime.config
    stale = db.read(partial(queue.stale_user_ids, ttl_secs=config.queue_ttl))
    return sum(1 for uid in stale if db.run(partial(queue.expire_one, user_id=uid, ttl_secs=config.queue_ttl)))


def challenge_expiry_job(runtime: Runtime) -> int:
    """Expire challenges and rematch offers past their time (set-based, a batch per transaction)."""
    return challenges.expiry_job(runtime.db)


def woken_loops(runtime: Runtime, database_outage: outage.OutageLog) -> list[WokenLoop]:
    """The jobs run on a NOTIFY from the transaction that made work for them, and every second anyway."""
    url = runtime.db.url
    return [
        WokenLoop(url, dispatch.DISPATCH_CHANNEL, partial(guarded(dispatch_job, database_outage), runtime),
                  dispatch.DISPATCH_SWEEP_SECS, "dispatch", more=_full_round, min_gap_secs=dispatch.WOKEN_MIN_GAP_SECS),
        WokenLoop(url, queue.MATCHMAKING_CHANNEL, partial(guarded(matchmaking_job, database_outage), runtime),
                  queue.MATCHMAKING_SWEEP_SECS, "matchmaking", min_gap_secs=rounds.WOKEN_MIN_GAP_SECS),
    ]


def _full_round(sent: object) -> bool:
    return isinstance(sent, int) and sent >= dispatch.ROUND_SIZE


def scheduled_jobs() -> list[tuple[str, ScheduledJob, float]]:
    """(name, function, interval in seconds) of every periodic job."""
    return [
        ("finish", finish_job, 1.0),
        ("queue_expiry", queue_expiry_job, 2.0),
        ("challenge_expiry", challenge_expiry_job, 1.0),
        ("prune_events", prune_job, PRUNE_INTERVAL_SECS),
    ]


def guarded(job: ScheduledJob, database_outage: outage.OutageLog) -> ScheduledJob:
    """`job`, quiet during a database outage: the jobs share `database_outage`, so the outage is
    logged once, and while it lasts a job runs only when a retry is due (capped backoff)."""

    @functools.wraps(job)
    def run(runtime: Runtime) -> object:
        if not database_outage.retry_due():
            return None
        try:
            result = job(runtime)
        except Exception as exc:
            if database_outage.failed(exc):
                return None
            raise
        database_outage.ok()
        return result

    return run


def run_scheduler(config: Config) -> None:
    runtime = Runtime(config, Database(config.required("database_url"), *SCHEDULER_POOL, application_name="duely-scheduler"),
                      process="scheduler")
    scheduler = BlockingScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
    database_outage = outage.OutageLog(log)
    for name, job, interval in scheduled_jobs():
        scheduler.add_job(guarded(job, database_outage), "interval", seconds=interval, args=(runtime,), id=name, name=name)

    loops = [loop.start() for loop in woken_loops(runtime, database_outage)]

    def stop(signum, frame):
        log.info("stopping scheduler")
        for loop in loops:
            loop.stop_event.set()
        scheduler.shutdown(wait=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    freeze_startup_heap()
    log.info("scheduler started with jobs: %s (woken: %s)", ", ".join(n for n, _, _ in scheduled_jobs()),
             ", ".join(loop.name for loop in loops))
    scheduler.start()
    for loop in loops:
        loop.stop()
    runtime.close()
    runtime.db.dispose()
