"""Domain errors. Each carries the contract's error code and HTTP status; the API layer
renders every one of them as `{"error": {"code", "message"[, "fields"]}}`."""

from __future__ import annotations

from typing import Any


class DuelyError(Exception):
    code = "bad_request"
    status = 400
    message = "Bad request."

    def __init__(self, message: str | None = None, *, fields: dict | None = None, headers: dict | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.fields = fields
        self.headers = headers or {}
        self.extra = extra or {}


class BadRequest(DuelyError):
    pass


class ValidationFailed(DuelyError):
    code = "validation_error"
    message = "The request is not valid."


class Unauthorized(DuelyError):
    code = "unauthorized"
    status = 401
    message = "A valid bearer token is required."


class Forbidden(DuelyError):
    code = "forbidden"
    status = 403
    message = "You are not allowed to do that."


class NotFound(DuelyError):
    code = "not_found"
    status = 404
    message = "Not found."


class Conflict(DuelyError):
    code = "conflict"
    status = 409
    message = "Conflict."


class NicknameTaken(Conflict):
    code = "nickname_taken"
    message = "That nickname is taken."


class AlreadyInDuel(Conflict):
    code = "already_in_duel"
    message = "You are playing a duel already."


class DuelFinished(Conflict):
    code = "duel_finished"
    message = "The duel is over."


class CannotChallengeSelf(DuelyError):
    code = "cannot_challenge_self"
    message = "You cannot challenge yourself."


class CannotAcceptOwn(DuelyError):
    code = "cannot_accept_own"
    message = "You cannot accept your own challenge."


class CannotDeclineOpen(DuelyError):
    code = "cannot_decline_open"
    message = "An open challenge cannot be declined; it simply expires unless someone accepts it."


class CannotBlockSelf(DuelyError):
    code = "cannot_block_self"
    message = "You cannot block yourself."


class ChallengesDisabled(Forbidden):
    code = "challenges_disabled"
    message = "That player does not accept challenges."


class Blocked(Forbidden):
    # The same answer whichever of the two blocked the other: it never says who blocked whom.
    code = "blocked"
    message = "You cannot challenge or play this player: one of you has blocked the other."


class OpponentBusy(Conflict):
    code = "opponent_busy"
    message = "That player is playing a duel."


class ChallengeClosed(Conflict):
    code = "challenge_closed"
    message = "This challenge is no longer pending (accepted, declined, canceled or expired)."


class DuelActive(Conflict):
    code = "duel_active"
    message = "The duel is still going on."


class EventsExpired(DuelyError):
    code = "events_expired"
    status = 410
    message = "Events after that id are no longer kept; resync from the REST snapshot."


class PayloadTooLarge(DuelyError):
    code = "payload_too_large"
    status = 413
    message = "The request body is too large."


class RateLimited(DuelyError):
    code = "rate_limited"
    status = 429
    message = "Too many requests; retry later."

    def __init__(self, retry_after: float, message: str | None = None):
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, headers={"Retry-After": str(seconds)}, extra={"retry_after": seconds})
        self.retry_after = seconds


class Unavailable(DuelyError):
    """The database is unreachable or has no connection free right now: come back soon.
    (Not a bug: the client retries after `Retry-After` seconds and nothing was changed.)"""

    code = "unavailable"
    status = 503
    message = "The service is briefly unavailable; retry later."

    def __init__(self, retry_after: float, message: str | None = None):
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, headers={"Retry-After": str(seconds)}, extra={"retry_after": seconds})
        self.retry_after = seconds
