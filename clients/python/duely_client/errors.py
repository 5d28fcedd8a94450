"""Errors: every non-2xx answer is raised as a DuelyError carrying the contract's error code."""

from __future__ import annotations

from typing import Any


class DuelyError(Exception):
    """An error answer of the API: `status` (HTTP), `code` (the JSON error code), `message`,
    `fields` (validation errors), `body` (the whole JSON error object), `retry_after` (seconds)."""

    def __init__(self, status: int, code: str, message: str, *, fields: dict[str, Any] | None = None,
                 body: dict[str, Any] | None = None, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.fields = fields or {}
        self.body = body or {}
        self.retry_after = retry_after


class ValidationError(DuelyError):
    """400 `validation_error` / `bad_request` (and the more precise 400 codes below)."""


class CannotChallengeSelf(ValidationError):
    """400 `cannot_challenge_self`."""


class CannotAcceptOwn(ValidationError):
    """400 `cannot_accept_own`: your own challenge or rematch offer."""


class CannotDeclineOpen(ValidationError):
    """400 `cannot_decline_open`: an open challenge has no addressee to decline it."""


class CannotBlockSelf(ValidationError):
    """400 `cannot_block_self`."""


class Unauthorized(DuelyError):
    """401: missing, unknown, expired or revoked token (or wrong password at login)."""


class Forbidden(DuelyError):
    """403 `forbidden` (and the more precise 403 codes below)."""


class ChallengesDisabled(Forbidden):
    """403 `challenges_disabled`: the addressee turned challenges by name off."""


class Blocked(Forbidden):
    """403 `blocked`: one of the two players blocked the other (never says who)."""


class NotFound(DuelyError):
    """404."""


class Conflict(DuelyError):
    """409 `conflict` (and every more precise 409 code below)."""


class NicknameTaken(Conflict):
    """409 `nickname_taken`."""


class AlreadyInDuel(Conflict):
    """409 `already_in_duel`."""


class DuelFinished(Conflict):
    """409 `duel_finished`: the duel is over (or its deadline passed)."""


class OpponentBusy(Conflict):
    """409 `opponent_busy`: the other player is playing a duel."""


class ChallengeClosed(Conflict):
    """409 `challenge_closed`: no longer pending (accepted, also by someone faster; declined; canceled; expired)."""


class DuelActive(Conflict):
    """409 `duel_active`: a rematch of a duel that is not finished."""


class EventsExpired(DuelyError):
    """410 `events_expired`: resync from the REST snapshot, continue from `last_event_id`."""

    @property
    def last_event_id(self) -> int:
        return int(self.body.get("last_event_id", 0))


class RateLimited(DuelyError):
    """429: retry after `retry_after` seconds."""


class Unavailable(DuelyError):
    """503 `unavailable` (e.g. the database is down); retry after `retry_after` seconds if given."""


class ServerError(DuelyError):
    """Any other 5xx."""


class ConnectionFailed(DuelyError):
    """No answer at all: connection refused or reset, timeout. `status` is 0, `code` `connection_failed`."""

    def __init__(self, message: str):
        super().__init__(0, "connection_failed", message)


_BY_CODE: dict[str, type[DuelyError]] = {
    "nickname_taken": NicknameTaken, "already_in_duel": AlreadyInDuel, "duel_finished": DuelFinished,
    "events_expired": EventsExpired, "cannot_challenge_self": CannotChallengeSelf,
    "cannot_accept_own": CannotAcceptOwn, "cannot_decline_open": CannotDeclineOpen,
    "cannot_block_self": CannotBlockSelf, "challenges_disabled": ChallengesDisabled, "blocked": Blocked,
    "opponent_busy": OpponentBusy, "challenge_closed": ChallengeClosed, "duel_active": DuelActive,
}
# A code this library does not know is raised by its HTTP status (as the contract asks).
_BY_STATUS: dict[int, type[DuelyError]] = {
    400: ValidationError, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: EventsExpired,
    429: RateLimited, 503: Unavailable,
}


def error_for(status: int, body: Any, retry_after_header: str | None) -> DuelyError:
    """The exception for an error answer (`body` is its decoded JSON, or None when it was not JSON)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("code") or ("internal_error" if status >= 500 else "http_error"))
    message = str(error.get("message") or f"HTTP {status}")
    retry_after: float | None = None
    for raw in (retry_after_header, error.get("retry_after")):
        try:
            retry_after = max(0.0, float(raw))  # type: ignore[arg-type]
            break
        except (TypeError, ValueError):
            continue
    kind = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else DuelyError)
    return kind(status, code, message, fields=error.get("fields"), body=error, retry_after=retry_after)
