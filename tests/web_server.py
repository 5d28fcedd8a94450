"""A real web process for HTTP-level tests: gunicorn with Duely's config and worker class."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from duely.config import Config, to_environ
from duely.infra import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


class WebServer:
    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path):
        self.proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def gunicorn(database_url: str, secret_key: str, log_dir: Path, workers: int = 1) -> Iterator[WebServer]:
    port = free_port()
    env = {**os.environ, **to_environ(Config(database_url=database_url, secret_key=secret_key, port=port,
                                             workers=workers, log_level="INFO"))}
    log_path = log_dir / "gunicorn.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "duely" / "gunicorn_conf.py"), "app:app"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        yield WebServer(proc, port, log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
