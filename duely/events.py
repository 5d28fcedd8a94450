"""The per-user event log (outbox). See docs/events.md.

This module owns every write to the `events` table: `append` is the one function that
adds an event, inside the caller's transaction, so an event exists exactly when the change
it reports is committed. Ids are allocated under the user's row lock (`users.last_event_id`),
so for one user commit order equals id order and a reader can never skip an id.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from duely.clock import isoformat

NOTIFY_CHANNEL = "duely_events"

EVENT_TYPES = frozenset(
    {
        "queue_joined",
        "queue_left",
        "duel_started",
        "submission_created",
        "submission_update",
        "submission_verdict",
        "opponent_verdict",
        "duel_finished",
    }
)


def lock_users(session: Session, user_ids: Iterable[int]) -> None:
    """Take the row locks of several users in id order (one order everywhere: no deadlocks)."""
    ids = sorted(set(user_ids))
    if ids:
        session.execute(text("SELECT id FROM users WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"), {"ids": ids})


def append(session: Session, user_id: int, type: str, data: dict[str, Any]) -> int:
    """Append one event to `user_id`'s log in the caller's transaction; returns its id.

    The NOTIFY is transactional too: PostgreSQL delivers it only if and when the caller commits.
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    event_id = session.execute(
        text("UPDATE users SET last_event_id = last_event_id + 1 WHERE id = :uid RETURNING last_event_id"),
        {"uid": user_id},
    ).scalar_one()
    session.execute(
        text("INSERT INTO events (user_id, id, type, data) VALUES (:uid, :id, :type, CAST(:data AS jsonb))"),
        {"uid": user_id, "id": event_id, "type": type, "data": _dumps(data)},
    )
    session.execute(text("SELECT pg_notify(:ch, :uid)"), {"ch": NOTIFY_CHANNEL, "uid": str(user_id)})
    return event_id


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return isoformat(value)
    return str(value)
