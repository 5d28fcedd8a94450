"""The event types of the log (docs/api.md, "Event types")."""

from __future__ import annotations

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
