"""`make run`: start the whole system and keep it up, as a small supervisor.

Starts PostgreSQL (embedded pgserver unless DATABASE_URL), the Kafka-protocol broker (tansu
unless KAFKA_BOOTSTRAP_SERVERS), the development Taski (unless TASKI_URL), applies migrations,
then runs gunicorn (gevent workers), scheduler.py and consumer.py. A child that dies is
restarted with a growing backoff; SIGINT/SIGTERM stop everything in order (web first, so
in-flight requests finish; the broker last) and nothing is left behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from duely import logs
from duely.backoff import CHILD_RESTART, Retry
from duely.config import Config, load_config, to_environ
from duely.infra import broker_command, start_embedded_postgres, stop_embedded_postgres, wait_for_port

log = logging.getLogger("duely.run")
ROOT = Path(__file__).resolve().parent.parent
HEALTHY_AFTER_SECS = 30.0  # a child up this long gets its backoff reset
STOP_GRACE_SECS = 30.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies (even by kill -9), so no orphans stay."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int | None = None  # waited for after start
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_backoff: Retry = field(default_factory=CHILD_RESTART.start)
    restart_at: float | None = None
    restarts: int = field(default=0)

    def start(self, log_dir: Path) -> None:
        out = open(log_dir / f"{self.name}.log", "ab")
        # A new session: the terminal's Ctrl-C reaches only the supervisor, which then stops
        # children in order with SIGTERM (gunicorn's graceful signal; SIGINT is its fast one).
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        out.close()
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started", extra=logs.kv(process=self.name, pid=self.proc.pid))

    def stop(self, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("did not stop in time; killing", extra=logs.kv(process=self.name))
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        log.info("stopped", extra=logs.kv(process=self.name, code=self.proc.returncode))


class Supervisor:
    def __init__(self, children: list[Child], log_dir: Path):
        self.children = children
        self.log_dir = log_dir
        self.stopping = False

    def start_all(self) -> None:
        # Dependencies first (broker, Taski); nobody waits for them: every process retries
        # its peers, which it must do anyway to survive their restarts.
        for child in reversed(self.children):
            child.start(self.log_dir)

    def watch(self, on_ready: Callable[[], None]) -> None:
        ready = False
        while not self.stopping:
            now = time.monotonic()
            if not ready and all(_listening(c.port) for c in self.children if c.port):
                ready = True
                on_ready()
            for child in self.children:
                if self.stopping:
                    break
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.restarts += 1
                        child.start(self.log_dir)
                    continue
                code = child.proc.poll() if child.proc else None
                if code is None:
                    if now - child.started_at > HEALTHY_AFTER_SECS:
                        child.restart_backoff.reset()
                    continue
                delay = child.restart_backoff.next()
                log.warning("exited; restarting", extra=logs.kv(process=child.name, code=code, in_secs=delay))
                child.restart_at = now + delay
            time.sleep(0.2)

    def stop_all(self) -> None:
        self.stopping = True
        for child in self.children:  # children are listed in stop order
            child.stop(STOP_GRACE_SECS)


def _listening(port: int) -> bool:
    try:
        wait_for_port("127.0.0.1", port, timeout=0)
        return True
    except TimeoutError:
        return False


def _secret_key(config: Config, data_dir: Path) -> str:
    if config.secret_key:
        return config.secret_key
    path = data_dir / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def build_children(config: Config, run_devtaski: bool, run_broker: bool, python: str = sys.executable) -> list[Child]:
    """The supervised processes, in stop order (web first, broker last)."""
    env = {**os.environ, **to_environ(config)}
    children = [
        Child("web", [python, "-m", "gunicorn", "-c", str(ROOT / "duely" / "gunicorn_conf.py"), "app:app"], env,
              port=config.port),
        Child("scheduler", [python, str(ROOT / "scheduler.py")], env),
        Child("consumer", [python, str(ROOT / "consumer.py")], env),
    ]
    if run_devtaski:
        children.append(Child("devtaski", [python, "-m", "duely.devtaski"], env, port=config.devtaski_port))
    if run_broker:
        children.append(Child("broker", broker_command(config.kafka_port), env, port=config.kafka_port))
    return children


def main(argv: list[str] | None = None) -> None:
    config = load_config(sys.argv[1:] if argv is None else argv)
    logs.setup(config.log_level, "run")
    data_dir = (ROOT / config.data_dir).resolve()
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    embedded_pg = config.database_url is None
    run_broker = config.kafka_bootstrap_servers is None
    run_devtaski = config.taski_url is None
    if embedded_pg:
        log.info("starting embedded PostgreSQL in %s", data_dir / "pg")
        config = config.replace(database_url=start_embedded_postgres(data_dir / "pg"))
    config = config.replace(
        kafka_bootstrap_servers=config.kafka_bootstrap_servers or f"127.0.0.1:{config.kafka_port}",
        taski_url=config.taski_url or f"http://127.0.0.1:{config.devtaski_port}",
        secret_key=_secret_key(config, data_dir),
    )

    from duely.migrate import upgrade

    upgrade(config.required("database_url"))
    log.info("migrations applied")

    supervisor = Supervisor(build_children(config, run_devtaski, run_broker), log_dir)

    def on_signal(signum, frame):
        supervisor.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        supervisor.start_all()
        supervisor.watch(lambda: log.info("Duely is up: API at http://%s:%d (logs in %s; Ctrl-C stops)",
                                          config.host, config.port, log_dir))
    finally:
        log.info("stopping")
        supervisor.stop_all()
        if embedded_pg:
            stop_embedded_postgres(data_dir / "pg")
        log.info("all stopped")


if __name__ == "__main__":
    main()
