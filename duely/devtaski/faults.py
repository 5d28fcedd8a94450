"""Fault switches, so tests and demos can make the development Taski misbehave on purpose.

Set through `POST /admin/faults` (merged into the current set), shown by `GET`, cleared by
`DELETE`. HTTP faults apply to `/api/*` only (the admin endpoints always answer):
  {"rate_limit": {"count": N, "retry_after": S}}   the next N requests get 429 + Retry-After: S
  {"server_error": {"count": N, "status": 503}}    the next N requests get that 5xx
  {"slow": {"delay_ms": D, "count": N}}             the next N requests (all, if no count) wait D ms
Kafka faults apply to messages published while they are on:
  {"kafka_duplicate": true}   every message is published twice
  {"kafka_reorder": true}     a submission's messages are held until its verdict, then published newest first
A null (or false) value switches that fault off.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

HTTP_FAULTS = ("rate_limit", "server_error", "slow")
KAFKA_FAULTS = ("kafka_duplicate", "kafka_reorder")


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class HttpFault:
    status: int
    message: str
    retry_after_secs: int | None = None


@dataclass(frozen=True)
class KafkaFaults:
    duplicate: bool = False
    reorder: bool = False


def _int(spec: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = spec.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FaultSpecError(f"{name} must be an integer in {low}..{high}")
    return value


class Faults:
    """Thread-safe switchboard; counts are consumed by `take_http`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, dict | bool] = {}

    def configure(self, spec: object) -> None:
        """Merge `spec` into the active faults; raises FaultSpecError (and changes nothing) if invalid."""
        if not isinstance(spec, dict):
            raise FaultSpecError("the body must be a JSON object")
        changes: dict[str, dict | bool | None] = {}
        for name, value in spec.items():
            if name not in HTTP_FAULTS + KAFKA_FAULTS:
                raise FaultSpecError(f"unknown fault {name!r} (known: {', '.join(HTTP_FAULTS + KAFKA_FAULTS)})")
            if value is None or value is False:
                changes[name] = None
            elif name in KAFKA_FAULTS:
                if value is not True:
                    raise FaultSpecError(f"{name} must be true, false or null")
                changes[name] = True
            elif not isinstance(value, dict):
                raise FaultSpecError(f"{name} must be an object or null")
            elif name == "rate_limit":
                changes[name] = {"remaining": _int(value, "count", 1, 1, 10**6),
                                 "retry_after": _int(value, "retry_after", 1, 0, 3600)}
            elif name == "server_error":
                changes[name] = {"remaining": _int(value, "count", 1, 1, 10**6), "status": _int(value, "status", 503, 500, 599)}
            else:
                delay = _int(value, "delay_ms", None, 0, 600_000)
                if delay is None:
                    raise FaultSpecError("slow needs delay_ms")
                changes[name] = {"remaining": _int(value, "count", None, 1, 10**6), "delay_ms": delay}
        with self._lock:
            for name, value in changes.items():
                if value is None:
                    self._state.pop(name, None)
                else:
                    self._state[name] = value

    def reset(self) -> None:
        with self._lock:
            self._state.clear()

    def snapshot(self) -> dict:
        with self._lock:
            return {name: (dict(v) if isinstance(v, dict) else v) for name, v in self._state.items()}

    def http_armed(self) -> bool:
        """Whether any API request would now be stalled or answered with an error (nothing is consumed)."""
        with self._lock:
            return any(name in self._state for name in HTTP_FAULTS)

    def take_http(self) -> tuple[float, HttpFault | None]:
        """For one API request: how long to stall it (seconds), and the error to answer instead, if any."""
        with self._lock:
            delay_secs = 0.0
            slow = self._state.get("slow")
            if isinstance(slow, dict):
                delay_secs = slow["delay_ms"] / 1000
                self._consume("slow", slow)
            limited = self._state.get("rate_limit")
            if isinstance(limited, dict):
                self._consume("rate_limit", limited)
                return delay_secs, HttpFault(429, "Rate limited (fault switch).", retry_after_secs=limited["retry_after"])
            failing = self._state.get("server_error")
            if isinstance(failing, dict):
                self._consume("server_error", failing)
                return delay_secs, HttpFault(failing["status"], "Unavailable (fault switch).")
            return delay_secs, None

    def kafka(self) -> KafkaFaults:
        with self._lock:
            return KafkaFaults(duplicate=bool(self._state.get("kafka_duplicate")), reorder=bool(self._state.get("kafka_reorder")))

    def _consume(self, name: str, fault: dict) -> None:
        if fault["remaining"] is None:
            return
        fault["remaining"] -= 1
        if fault["remaining"] <= 0:
            del self._state[name]
