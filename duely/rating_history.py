"""A player's rating history: one point per finished rated duel, read from `duel_players`.

Each finished duel already stores every player's shown rating before and after it and the RD
after it (`duels.finish`), so the history needs no table of its own. A user plays one duel at
a time, so duel ids (start order) are also finish order: pages go by duel id, newest first.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from duely import rating
from duely.clock import isoformat
from duely.statuses import DuelStatus


def rating_history(session: Session, user_id: int, limit: int, before_id: int | None) -> tuple[list[dict], int | None]:
    """Points newest first, and the `before_id` of the next (older) page, or None."""
    rows = session.execute(text(
        f"""
        SELECT p.duel_id, d.finished_at, p.rating_before, p.rating_after, p.deviation_after
        FROM duel_players p JOIN duels d ON d.id = p.duel_id
        WHERE p.user_id = :u AND d.status = {DuelStatus.FINISHED.sql} AND d.rated
          AND (CAST(:before AS bigint) IS NULL OR p.duel_id < :before)
        ORDER BY p.duel_id DESC
        LIMIT :limit
        """
    ), {"u": user_id, "before": before_id, "limit": limit + 1}).all()
    points = [{
        "duel_id": r.duel_id,
        "finished_at": isoformat(r.finished_at),
        "rating_before": r.rating_before,
        "rating": r.rating_after,
        # None for duels rated before Glicko-2 (no RD was kept then)
        "rating_deviation": None if r.deviation_after is None else round(r.deviation_after),
        "provisional": r.deviation_after is not None and r.deviation_after >= rating.PROVISIONAL_DEVIATION,
    } for r in rows[:limit]]
    next_before_id = rows[limit - 1].duel_id if len(rows) > limit else None
    return points, next_before_id
