"""The scheduler process's periodic jobs (APScheduler). Each job is a plain function of the
database and config, so tests run one round directly; several scheduler processes may run
at once: every job is safe under concurrency (row locks / SKIP LOCKED)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from apscheduler.schedulers.blocking import BlockingScheduler

from duely import logs
from duely.config import Config
from duely.db import Database

log = logging.getLogger(__name__)

Job = Callable[[Database, Config], object]


def scheduled_jobs() -> list[tuple[str, Job, float]]:
    """(name, function, interval in seconds) of every periodic job."""
    return []


def run_scheduler(config: Config) -> None:
    logs.setup(config.log_level, "scheduler")
    db = Database(config.database_url, pool_size=4, max_overflow=4)
    scheduler = BlockingScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
    for name, job, interval in scheduled_jobs():
        scheduler.add_job(job, "interval", seconds=interval, args=(db, config), id=name, name=name)

    def stop(signum, frame):
        log.info("stopping scheduler")
        scheduler.shutdown(wait=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scheduler started with jobs: %s", ", ".join(n for n, _, _ in scheduled_jobs()) or "none")
    scheduler.start()
    db.dispose()
