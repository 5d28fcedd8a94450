"""All of Duely's settings, read in one place.

`load_config(argv, environ)` is the only code that looks at the command line or the
environment: command-line flags win over environment variables, which win over defaults.
Every setting is listed in README.md ("Settings").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

_DURATION_UNITS_SECS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int | float) -> float:
    """Seconds from `90`, `90s`, `30m`, `2h` or `7d`."""
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30, 30s, 5m, 2h, 7d)")
    return float(match.group(1)) * _DURATION_UNITS_SECS[match.group(2)]


def _setting(default: Any, help: str, kind: str = "str") -> Any:
    return field(default=default, metadata={"help": help, "kind": kind})


@dataclass(frozen=True)
class Config:
    # Where things are
    database_url: str | None = _setting(None, "PostgreSQL URL; unset = embedded pgserver in DATA_DIR/pg")
    kafka_bootstrap_servers: str | None = _setting(None, "Kafka brokers host:port[,..]; unset = embedded tansu broker on KAFKA_PORT")
    taski_url: str | None = _setting(None, "Taski base URL; unset = the development Taski on DEVTASKI_PORT")
    data_dir: str = _setting(".duely", "Directory for embedded PostgreSQL data, logs and the generated secret key")
    # HTTP server
    host: str = _setting("127.0.0.1", "Address the API binds to")
    port: int = _setting(5001, "Port of the API", "int")
    workers: int = _setting(2, "gunicorn gevent worker processes", "int")
    worker_connections: int = _setting(12000, "Concurrent connections per gevent worker (held long-polls included)", "int")
    db_pool_size: int = _setting(
        20, "Database connections a web worker opens as needed and keeps for reuse (see README, \"Database connections\")", "int")
    db_max_overflow: int = _setting(
        0, "Extra connections a web worker may open under load beyond DB_POOL_SIZE, closed after each use (costly)", "int")
    db_pool_timeout: float = _setting(3.0, "Wait for a free database connection, then answer 503 unavailable (duration)", "duration")
    forwarded_allow_ips: str = _setting("127.0.0.1,::1", "Proxies trusted for X-Forwarded-For (IPs/networks, comma-separated; *: any)")
    kafka_port: int = _setting(19092, "Port of the embedded broker (when KAFKA_BOOTSTRAP_SERVERS is unset)", "int")
    devtaski_port: int = _setting(5002, "Port of the development Taski (when TASKI_URL is unset)", "int")
    # Taski and Kafka
    taski_topic: str = _setting("taski.submissions", "Kafka topic Taski publishes judging progress to")
    duely_consumer_group: str = _setting("duely", "Kafka consumer group id of consumer.py")
    taski_timeout: float = _setting(5.0, "Timeout of one HTTP call to Taski (duration)", "duration")
    judge_timeout: float = _setting(120.0, "A submission still testing after this long is sent to Taski again (duration)", "duration")
    # Auth
    secret_key: str = _setting("", "Key for token hashing; unset = generated once and kept in DATA_DIR/secret_key (make run) or a dev key")
    token_ttl: float = _setting(30 * 86400.0, "Lifetime of an auth token (duration)", "duration")
    login_max_failures: int = _setting(5, "Failed logins per nickname and address pair before a lockout (README)", "int")
    login_lockout: float = _setting(300.0, "How long a login lockout lasts (duration)", "duration")
    password_hash_threads: int = _setting(2, "Password hashes (~130 ms of CPU) one web worker computes at once, off its event loop", "int")
    # Game rules
    queue_ttl: float = _setting(30.0, "A queued user who has not polled /api/updates for this long leaves the queue (duration)", "duration")
    duel_duration: float = _setting(1800.0, "Length of a duel (duration)", "duration")
    max_solution_bytes: int = _setting(65536, "Largest accepted solution, in bytes (UTF-8)", "int")
    submit_rate_limit: int = _setting(10, "Submissions one user may make per SUBMIT_RATE_WINDOW", "int")
    submit_rate_window: float = _setting(60.0, "Window of SUBMIT_RATE_LIMIT (duration)", "duration")
    # Challenges and rematch offers (docs/challenges.md)
    challenge_ttl: float = _setting(600.0, "A challenge to a named player expires after this long (duration)", "duration")
    open_challenge_ttl: float = _setting(86400.0, "An open challenge (invite link) expires after this long (duration)", "duration")
    rematch_ttl: float = _setting(60.0, "A rematch offer expires after this long (duration)", "duration")
    challenge_max_pending: int = _setting(5, "Pending challenges one player may have out at once (rematch offers not counted)", "int")
    challenge_max_per_hour: int = _setting(20, "Challenges and rematch offers one player may create per hour", "int")
    # Event log
    event_retention: float = _setting(7 * 86400.0, "Events older than this are pruned; older last_event_id gets 410 (duration)", "duration")
    sse_heartbeat: float = _setting(15.0, "An idle event stream (SSE) writes a heartbeat comment this often (duration)",
                                    "duration")
    stream_ticket_ttl: float = _setting(3600.0, "Lifetime of a stream ticket (?ticket= of the event streams), at most "
                                        "its token's (duration)", "duration")
    # Development Taski (duely/devtaski; used when TASKI_URL is unset)
    devtaski_workers: int = _setting(2, "Judging worker processes of the development Taski", "int")
    devtaski_state_dir: str | None = _setting(None, "Where the development Taski keeps judged results; unset = DATA_DIR/devtaski")
    devtaski_problems_dir: str | None = _setting(None, "Problem set of the development Taski; unset = the bundled duely/devtaski/problems")
    devtaski_judge: str = _setting("sandbox", "How the development Taski judges: sandbox (runs the code) or instant "
                                   "(benchmarks: runs nothing, verdict from a `# verdict: ...` marker, else Accepted)")
    devtaski_sandbox: str = _setting("auto", "How the development Taski isolates judged code: auto (bwrap when it works), bwrap, rlimits")
    devtaski_uid_base: int = _setting(61000, "First unprivileged uid judged code runs as (one per worker, claimed with a lock file)", "int")
    # Operations
    log_level: str = _setting("INFO", "Logging level of every process")

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def required(self, name: str) -> str:
        """The value of setting `name`, one that may be unset (DATABASE_URL, TASKI_URL, ...) but
        that this process cannot run without: `make run` and the tests set them for every process."""
        value = getattr(self, name)
        if not value:
            raise SystemExit(f"{name.upper()} is not set (make run and the tests set it)")
        return str(value)


def _settings() -> list[dataclasses.Field]:
    return list(fields(Config))


def _convert(f: dataclasses.Field, raw: str) -> Any:
    kind = f.metadata["kind"]
    if kind == "int":
        return int(raw)
    if kind == "duration":
        return parse_duration(raw)
    return raw


def env_name(f: dataclasses.Field) -> str:
    return f.name.upper()


def flag_name(f: dataclasses.Field) -> str:
    return "--" + f.name.replace("_", "-")


def build_arg_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Duely settings (flags > environment > defaults)")
    for f in _settings():
        parser.add_argument(flag_name(f), dest=f.name, default=None, metavar=env_name(f), help=f.metadata["help"])
    return parser


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config from flags (`argv`), then the environment, then defaults.

    `argv=None` means no flags (processes under gunicorn get theirs through the
    environment); pass `sys.argv[1:]` explicitly to honour the command line.
    """
    environ = os.environ if environ is None else environ
    flags = build_arg_parser().parse_args(list(argv or []))
    values: dict[str, Any] = {}
    for f in _settings():
        raw = getattr(flags, f.name)
        if raw is None:
            raw = environ.get(env_name(f))
        if raw is None or raw == "":
            continue
        try:
            values[f.name] = _convert(f, raw)
        except ValueError as exc:
            raise SystemExit(f"bad value for {env_name(f)}: {exc}") from None
    return Config(**values)


def to_environ(config: Config) -> dict[str, str]:
    """The environment that makes a child process load exactly this config."""
    env = {}
    for f in _settings():
        value = getattr(config, f.name)
        if value is not None:
            env[env_name(f)] = str(value)
    return env


def settings_table() -> str:
    """Markdown table of every setting, for the README (`python -m duely.config`)."""
    rows = ["| environment / flag | default | meaning |", "|---|---|---|"]
    for f in _settings():
        default = f.default if f.default not in (None, "") else "unset"
        rows.append(f"| `{env_name(f)}` / `{flag_name(f)}` | `{default}` | {f.metadata['help']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
