"""Wiring and lifetime of the development Taski process: build the parts from the Config, serve
HTTP on 127.0.0.1:DEVTASKI_PORT until SIGTERM/SIGINT, then stop the judges and flush Kafka."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from werkzeug.serving import make_server

from duely import logs
from duely.config import Config
from duely.devtaski.app import create_devtaski_app
from duely.devtaski.faults import Faults
from duely.devtaski.instant import InstantJudge
from duely.devtaski.languages import available_languages
from duely.devtaski.pool import JudgePool, WorkerSettings
from duely.devtaski.problems import BUNDLED_DIR, load_problems
from duely.devtaski.publisher import Publisher
from duely.devtaski.service import DevTaski
from duely.devtaski.store import SubmissionStore

log = logging.getLogger("duely.devtaski")

HOST = "127.0.0.1"
KAFKA_FLUSH_ON_STOP_SECS = 5.0


def state_dir(config: Config) -> Path:
    return Path(config.devtaski_state_dir or Path(config.data_dir) / "devtaski")


def run(config: Config) -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise here
    problems = load_problems(Path(config.devtaski_problems_dir) if config.devtaski_problems_dir else BUNDLED_DIR)
    languages = available_languages()
    store = SubmissionStore(state_dir(config))
    faults = Faults()
    bootstrap = config.kafka_bootstrap_servers or f"127.0.0.1:{config.kafka_port}"
    publisher = Publisher(bootstrap, config.taski_topic, faults)
    pool: JudgePool | InstantJudge
    if config.devtaski_judge == "instant":
        pool = InstantJudge()
    elif config.devtaski_judge == "sandbox":
        pool = JudgePool(config.devtaski_workers, WorkerSettings(config.devtaski_uid_base, config.devtaski_sandbox, config.log_level))
    else:
        raise SystemExit(f"bad value for DEVTASKI_JUDGE: {config.devtaski_judge!r} (sandbox or instant)")
    service = DevTaski(problems, languages, store, publisher, pool)
    publisher.start()
    workers = pool.start(service.handle_event, service.handle_events) if isinstance(pool, InstantJudge) \
        else pool.start(service.handle_event)
    http = make_server(HOST, config.devtaski_port, create_devtaski_app(service, faults), threaded=True)

    def on_signal(signum, frame):
        threading.Thread(target=http.shutdown, name="shutdown").start()  # shutdown() waits for serve_forever

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("development Taski is up", extra=logs.kv(
        url=f"http://{HOST}:{config.devtaski_port}", tasks=len(problems), languages=",".join(languages),
        judge=config.devtaski_judge,
        workers=" ".join(f"uid={w.uid}/{w.sandbox_mode}" for w in workers), kafka=bootstrap, topic=config.taski_topic,
        state=store.path))
    try:
        http.serve_forever()
    finally:
        log.info("stopping")
        pool.stop()
        publisher.stop(KAFKA_FLUSH_ON_STOP_SECS)
        store.close()
        log.info("stopped")
