"""Logging for every process: one line per record, `key=value` pairs after the message, so
one submission can be followed end to end with `grep submission_id=<uuid>`."""

from __future__ import annotations

import logging
import sys


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def setup(level: str = "INFO", process: str = "duely") -> None:
    """Send every record to stderr as one line. Called once per process, by its Runtime
    (duely/runtime.py) or the dev Taski's entry points; calling it again replaces the handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(f"%(asctime)s %(levelname)s {process}[%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def kv(**fields: object) -> dict:
    """`log.info("sent", extra=kv(submission_id=sid))` attaches key=value pairs to a line."""
    return {"fields": fields}
