"""The statuses of duels, submissions and queue places, named once for Python and for SQL.

They are `StrEnum`s: a member is its string, so it compares, serialises and binds as one. SQL
that must name a status writes the member's `.sql` literal (`f"... WHERE status <> {SubmissionState.JUDGED.sql}"`):
a literal, not a bound parameter, because PostgreSQL uses a partial index (`WHERE status <> 'judged'`)
only for a query that spells the same literal.
"""

from __future__ import annotations

from enum import StrEnum


class SqlStatus(StrEnum):
    @property
    def sql(self) -> str:
        """The member as an SQL string literal (values are plain lowercase words: nothing to escape)."""
        return f"'{self.value}'"


class DuelStatus(SqlStatus):
    ACTIVE = "active"
    FINISHED = "finished"


class SubmissionState(SqlStatus):
    """Where a submission is: stored, with Taski, or judged (its verdict is final)."""

    PENDING = "pending"
    TESTING = "testing"
    JUDGED = "judged"


class QueueStatus(SqlStatus):
    """A user's place in matchmaking, as `GET /api/queue` reports it."""

    WAITING = "waiting"
    IDLE = "idle"
    IN_DUEL = "in_duel"


class ChallengeStatus(SqlStatus):
    """Where a challenge or rematch offer is (docs/challenges.md): pending, then closed one way."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    CANCELED = "canceled"
    EXPIRED = "expired"


class ChallengeKind(SqlStatus):
    CHALLENGE = "challenge"  # to a named player, or open (anyone with the link)
    REMATCH = "rematch"  # offered to the opponent of a finished duel
