"""Assertions shared by the devtaski tests."""

from __future__ import annotations


def assert_judged_cleanly(messages: list[dict], tests_passed: int, verdict: str) -> None:
    """Exactly one update per passed test ("Test #k passed", seq k), then the verdict with the next seq."""
    updates = [m for m in messages if m["type"] == "update"]
    verdicts = [m for m in messages if m["type"] == "verdict"]
    assert [(m["seq"], m["status"]) for m in updates] == [(k, f"Test #{k} passed") for k in range(1, tests_passed + 1)], messages
    assert [(m["seq"], m["verdict"]) for m in verdicts] == [(tests_passed + 1, verdict)], messages
    assert all(m["at"].endswith("Z") for m in messages)
