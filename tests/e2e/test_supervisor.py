"""`make run`'s supervisor (duely/run.py): kill -9 of any one process is followed by its
restart and the system serves again; Ctrl-C stops everything and leaves nothing behind;
the data survives a restart of the whole system."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests

from duely.infra import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
ROLES = {  # role -> how to recognise its process among the supervisor's children
    "web": "gunicorn",
    "scheduler": "scheduler.py",
    "consumer": "consumer.py",
    "devtaski": "duely.devtaski",
    "broker": "tansu",
}


class RunningSystem:
    def __init__(self, data_dir: Path):
        self.port, self.kafka_port, self.taski_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = data_dir / "run.log"
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "TASKI_URL")}
        argv = [sys.executable, "-m", "duely.run", "--data-dir", str(data_dir), "--port", str(self.port),
                "--kafka-port", str(self.kafka_port), "--devtaski-port", str(self.taski_port)]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_serving(90)

    def wait_serving(self, within_secs: float) -> float:
        started = time.monotonic()
        wait_for_port("127.0.0.1", self.port, timeout=within_secs)
        while time.monotonic() - started < within_secs:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not serving within {within_secs}s:\n{self.log()}")

    def children(self) -> dict[str, psutil.Process]:
        found = {}
        for child in psutil.Process(self.proc.pid).children():
            try:
                cmdline = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
            for role, mark in ROLES.items():
                if mark in cmdline and child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    found[role] = child
        return found

    def every_pid(self) -> set[int]:
        return {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


@pytest.fixture
def data_dir():
    path = Path(tempfile.mkdtemp(prefix="duely-run-test-"))
    path.chmod(0o755)  # the embedded PostgreSQL runs as its own user and must reach it
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_supervisor_restarts_any_killed_process_and_stops_cleanly(data_dir):
    system = RunningSystem(data_dir)
    try:
        token = requests.post(system.url + "/api/users", json={"nickname": "keeper", "password": "correct horse"},
                              timeout=10).json()["token"]
        children = system.children()
        assert set(children) == set(ROLES), (children, system.log())
        for role in ROLES:
            victim = system.children()[role]
            victim.send_signal(signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                replacement = system.children().get(role)
                if replacement is not None and replacement.pid != victim.pid:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"{role} was not restarted:\n{system.log()}")
            system.wait_serving(30)
            if role == "devtaski":
                wait_for_port("127.0.0.1", system.taski_port, timeout=30)
            if role == "broker":
                wait_for_port("127.0.0.1", system.kafka_port, timeout=30)
        assert "exited; restarting" in system.log()
        me = requests.get(system.url + "/api/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert me.status_code == 200 and me.json()["nickname"] == "keeper"
        pids = system.every_pid()
    finally:
        code = system.interrupt()
    assert code == 0, system.log()
    time.sleep(0.5)
    assert [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE] == []
    assert not (data_dir / "pg" / "postmaster.pid").exists(), "PostgreSQL was left running"

    # A second run on the same data still knows the user.
    again = RunningSystem(data_dir)
    try:
        login = requests.post(again.url + "/api/auth/login", json={"nickname": "keeper", "password": "correct horse"},
                              timeout=10)
        assert login.status_code == 200
    finally:
        assert again.interrupt() == 0
