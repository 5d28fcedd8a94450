"""Who wins a duel, and when that is certain: a pure function of the duel's submissions.

No database, no clock, no I/O: `duels.try_finish` loads the submissions under the duel's row
lock, calls `decide` with the time, and finishes the duel when it returns a Decision. The
contract's rule (docs/api.md, "Who wins") and the choices made where it is silent:

* The first player, by `submitted_at`, whose submission is Accepted wins. That is certain
  only once every submission of the opponent made at or before that time has a verdict: one
  still being judged could be Accepted and earlier. The winner's own earlier pending
  submissions do not matter (they could only make the same player win).
* Tie: both players' first Accepted submissions have the very same `submitted_at` (microsecond
  timestamps, so very rare). Neither was first, so the duel is a draw, reason "accepted". An
  opponent submission at that same instant still being judged therefore blocks a decision
  like an earlier one does.
* Deadline: only submissions made strictly before the deadline count (the API refuses later
  ones; any that slip through are ignored, judged or not). An Accepted made before the
  deadline wins even if judged after it. At or after the deadline with no such win, the duel
  is a draw, reason "timeout", once every counted submission has its verdict.
* Resign: the opponent of `resigned_by` wins at once, reason "resign", even if submissions
  are still being judged, unless the result was already certain without the resignation
  (the same call would have finished the duel a moment earlier; a player who resigns after
  their own Accepted was confirmed keeps the win).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ACCEPTED_VERDICT = "Accepted"  # any other verdict is a rejection; None means not judged yet


@dataclass(frozen=True, slots=True)
class SubmissionView:
    """What the rule needs of a submission: whose, when, and its verdict (None until judged)."""

    user_id: int
    submitted_at: datetime
    verdict: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of a finished duel, as the contract's `result` object."""

    outcome: Literal["win", "draw"]
    winner_id: int | None
    reason: Literal["accepted", "timeout", "resign"]


def decide(
    submissions: Sequence[SubmissionView],
    now: datetime,
    deadline: datetime,
    player_ids: Sequence[int],
    resigned_by: int | None = None,
) -> Decision | None:
    """The duel's result if it is certain at `now`, else None (wait for verdicts or the deadline).

    `player_ids` are the duel's two players. Raises ValueError when there are not exactly two
    distinct players, or a submission or `resigned_by` belongs to someone else.
    """
    players = tuple(player_ids)
    if len(players) != 2 or players[0] == players[1]:
        raise ValueError("a duel has exactly two distinct players")
    if any(s.user_id not in players for s in submissions):
        raise ValueError("a submission by someone who is not a player of this duel")
    if resigned_by is not None and resigned_by not in players:
        raise ValueError("only a player can resign")

    counted = [s for s in submissions if s.submitted_at < deadline]
    by_accepted = _first_accepted(counted, players)
    if by_accepted is not None:
        return by_accepted
    if now >= deadline and all(s.verdict is not None for s in counted):
        # No Accepted among them: had there been one, _first_accepted would have decided,
        # since nothing is left to judge.
        return Decision("draw", None, "timeout")
    if resigned_by is not None:
        return Decision("win", _opponent(players, resigned_by), "resign")
    return None


def _first_accepted(counted: list[SubmissionView], players: tuple[int, int]) -> Decision | None:
    """The result by the first Accepted submission, if one exists and no earlier one can still overtake it."""
    accepted = [s for s in counted if s.verdict == ACCEPTED_VERDICT]
    if not accepted:
        return None
    first_at = min(s.submitted_at for s in accepted)
    first_by = {s.user_id for s in accepted if s.submitted_at == first_at}
    if len(first_by) == 2:
        return Decision("draw", None, "accepted")
    (winner,) = first_by
    opponent = _opponent(players, winner)
    if any(s.user_id == opponent and s.verdict is None and s.submitted_at <= first_at for s in counted):
        return None  # it may be Accepted: earlier wins, the same instant draws
    return Decision("win", winner, "accepted")


def _opponent(players: tuple[int, int], user_id: int) -> int:
    return players[1] if user_id == players[0] else players[0]
