"""Wiring and lifetime of the development Taski process: build the parts from the Config, serve
HTTP on 127.0.0.1:DEVTASKI_PORT until SIGTERM/SIGINT, then stop the judges and flush Kafka.

HTTP is served by gevent's WSGIServer in the main thread (no monkey-patching: the judges and the
Kafka publisher stay plain threads, and a view never blocks on them: it queues a job and returns).
werkzeug's development server, a thread per connection and http.server's parsing, cost about a
third of the process's CPU per submission under the instant judge. The hot requests are answered
below Flask (duely/devtaski/fast_routes.py)."""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path

import gevent
import gevent.socket
from gevent.pywsgi import WSGIServer

from duely import logs
from duely.config import Config
from duely.devtaski.app import create_devtaski_app
from duely.devtaski.fast_routes import FastRoutes
from duely.devtaski.faults import Faults
from duely.devtaski.instant import InstantJudge
from duely.devtaski.languages import available_languages
from duely.devtaski.pool import JudgePool, WorkerSettings
from duely.devtaski.problems import BUNDLED_DIR, load_problems
from duely.devtaski.publisher import Publisher
from duely.devtaski.service import DevTaski
from duely.devtaski.store import SubmissionStore
from duely.gcfreeze import freeze_startup_heap

log = logging.getLogger("duely.devtaski")

HOST = "127.0.0.1"
KAFKA_FLUSH_ON_STOP_SECS = 5.0
STOP_REQUESTS_SECS = 2.0  # requests in progress at a stop get this long to finish


def state_dir(config: Config) -> Path:
    return Path(config.devtaski_state_dir or Path(config.data_dir) / "devtaski")


def listener(host: str, port: int) -> gevent.socket.socket:
    """The listening socket, with TCP_NODELAY (accepted connections inherit it): without it a
    keep-alive client waited ~40 ms for each response (Nagle's algorithm against delayed ACKs)."""
    sock = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def run(config: Config) -> None:
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
    # a slow fault must not stall other requests; the hot requests are answered below Flask
    app = FastRoutes(create_devtaski_app(service, faults, sleep=gevent.sleep), service, faults)
    http = WSGIServer(listener(HOST, config.devtaski_port), app, log=None, error_log=log)  # no line per request

    def on_signal() -> None:
        gevent.spawn(http.stop, timeout=STOP_REQUESTS_SECS)  # serve_forever then returns

    gevent.signal_handler(signal.SIGTERM, on_signal)
    gevent.signal_handler(signal.SIGINT, on_signal)
    log.info("development Taski is up", extra=logs.kv(
        url=f"http://{HOST}:{config.devtaski_port}", tasks=len(problems), languages=",".join(languages),
        judge=config.devtaski_judge,
        workers=" ".join(f"uid={w.uid}/{w.sandbox_mode}" for w in workers), kafka=bootstrap, topic=config.taski_topic,
        state=store.path))
    freeze_startup_heap()
    try:
        http.serve_forever()
    finally:
        log.info("stopping")
        pool.stop()
        publisher.stop(KAFKA_FLUSH_ON_STOP_SECS)
        store.close()
        log.info("stopped")
