"""Verdict intake: Taski's Kafka messages applied to submissions (consumer.py)."""

from __future__ import annotations

import logging
import signal
import threading

from duely import logs
from duely.config import Config

log = logging.getLogger(__name__)


def run_consumer(config: Config) -> None:
    logs.setup(config.log_level, "consumer")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("consumer waiting: message intake arrives with the duel lifecycle")
    stop.wait()
