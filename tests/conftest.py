"""Test fixtures: a real PostgreSQL (TEST_DATABASE_URL or an embedded pgserver) and a real
Kafka-protocol broker (KAFKA_BOOTSTRAP_SERVERS or tansu), both started once per test session.

Tests commit for real (long polls, concurrency, several processes), so isolation is by
truncating every table before each test rather than by rolling back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import text

from duely.config import Config
from duely.db import Database
from duely.infra import free_port, start_broker, start_embedded_postgres, stop_embedded_postgres
from duely.migrate import upgrade
from duely.models import Base

TEST_SECRET_KEY = "test-secret-key"

# Each subsystem keeps its fixtures in its own module.
pytest_plugins = ["tests.fixtures.devtaski", "tests.fixtures.events", "tests.fixtures.stack"]


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    data_dir = None
    if not url:
        # Not under pytest's tmp root: that is 0700 root, and as root pgserver runs the server
        # as its own unprivileged user, which must reach the data directory.
        data_dir = Path(tempfile.mkdtemp(prefix="duely-test-pg-"))
        data_dir.chmod(0o755)
        url = start_embedded_postgres(data_dir / "pg", cleanup_mode=None)
    upgrade(url)
    yield url
    if data_dir is not None:
        stop_embedded_postgres(data_dir / "pg")
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """A broker for the whole session: KAFKA_BOOTSTRAP_SERVERS, or tansu on a free port."""
    external = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    port = free_port()
    proc = start_broker(port, tmp_path_factory.mktemp("broker") / "tansu.log")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def session_db(database_url) -> Database:
    database = Database(database_url, pool_size=20, max_overflow=20)
    yield database
    database.dispose()


@pytest.fixture
def db(session_db) -> Database:
    """The database, emptied before the test."""
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with session_db.transaction() as s:
        s.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return session_db


@pytest.fixture
def config(database_url) -> Config:
    return Config(database_url=database_url, secret_key=TEST_SECRET_KEY)


@pytest.fixture
def runtime(config, db):
    """This test's own per-process state (duely/runtime.py): its listener, poll reader, presence
    throttle and token cache start empty and are closed after the test."""
    from duely.runtime import Runtime

    rt = Runtime(config, db)
    yield rt
    rt.close()


@pytest.fixture
def app(config, db, runtime):
    from duely.api import create_app

    application = create_app(config, db, runtime)
    application.testing = False  # exercise the real error handlers
    return application


@pytest.fixture
def client(app):
    return app.test_client()


class ApiUser:
    """A registered user with a token, for driving the API in tests."""

    def __init__(self, client, nickname: str, password: str = "correct horse"):
        resp = client.post("/api/users", json={"nickname": nickname, "password": password})
        assert resp.status_code == 201, resp.get_json()
        body = resp.get_json()
        self.client = client
        self.id: int = body["id"]
        self.nickname = nickname
        self.password = password
        self.token: str = body["token"]

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path, **kw):
        return self.client.get(path, headers=self.headers, **kw)

    def post(self, path, **kw):
        return self.client.post(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def delete(self, path, **kw):
        return self.client.delete(path, headers=self.headers, **kw)


@pytest.fixture
def make_user(client):
    def factory(nickname: str, password: str = "correct horse") -> ApiUser:
        return ApiUser(client, nickname, password)

    return factory
