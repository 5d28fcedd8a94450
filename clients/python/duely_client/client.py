"""The Duely API client. One `Client` per player; it is not meant to be shared between threads
(each thread gets its own, as each keeps its own keep-alive connections)."""

from __future__ import annotations

import json as jsonlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypedDict
from urllib.parse import quote

import requests

from duely_client.errors import (
    ConnectionFailed,
    DuelyError,
    EventsExpired,
    RateLimited,
    ServerError,
    Unavailable,
    error_for,
)
from duely_client.transport import StreamAnswer, TransportError, build_path, encode_json, transport_for

DEFAULT_TIMEOUT_SECS = 10.0
POLL_TIMEOUT_SECS = 25.0
# The server writes a heartbeat on an idle event stream every SSE_HEARTBEAT (15 s by default):
# a stream silent this long is taken for a dead connection and opened again.
STREAM_IDLE_SECS = 45.0
BACKOFF_MIN_SECS = 0.2
BACKOFF_MAX_SECS = 10.0
SUBMIT_ATTEMPTS = 6


class User(TypedDict, total=False):
    id: int
    nickname: str
    rating: int
    created_at: str
    token: str  # only in the answer to registration


class QueueStatus(TypedDict):
    status: str  # waiting | idle | in_duel
    since: str | None
    duel_id: int | None


class Duel(TypedDict, total=False):
    id: int
    status: str  # active | finished
    rated: bool
    task: dict[str, Any]  # id, title, statement, time_limit_ms
    players: list[dict[str, Any]]
    started_at: str
    deadline: str
    finished_at: str | None
    result: dict[str, Any] | None  # outcome, winner_id, reason
    rating_changes: dict[str, int]
    stakes: dict[str, dict[str, int]]  # per user id: win, draw, loss


class PlayerRef(TypedDict, total=False):
    user_id: int
    nickname: str
    rating: int
    provisional: bool


class Challenge(TypedDict, total=False):
    id: str
    kind: str  # challenge | rematch
    challenger: PlayerRef
    to: PlayerRef | None  # None: an open challenge, anyone with its id may accept it
    rated: bool
    duration_secs: int
    rematch_of: int | None
    status: str  # pending | accepted | declined | canceled | expired
    decline_reason: str | None
    created_at: str
    expires_at: str
    closed_at: str | None
    duel_id: int | None
    accepted_by: PlayerRef | None
    invite_url: str | None


class Challenges(TypedDict):
    incoming: list[Challenge]
    outgoing: list[Challenge]


class Accepted(TypedDict):
    challenge: Challenge
    duel: Duel


class Settings(TypedDict, total=False):
    accept_challenges: bool


class BlockedUser(TypedDict):
    user_id: int
    nickname: str


class RatingPoint(TypedDict):
    duel_id: int
    finished_at: str
    rating_before: int
    rating: int
    rating_deviation: int | None
    provisional: bool


class StreamTicket(TypedDict):
    ticket: str
    expires_at: str


class Submission(TypedDict, total=False):
    id: str
    duel_id: int
    user_id: int
    language: str
    solution: str | None
    client_temp_id: str | None
    submitted_at: str
    status: str
    state: str  # pending | testing | judged
    verdict: str | None


class Event(TypedDict):
    id: int
    type: str
    created_at: str
    data: dict[str, Any]


class Page(TypedDict):
    events: list[Event]
    last_event_id: int


# One long poll of a log: (last_event_id, timeout) -> the page after it. `Updates` follows any of them.
PollFn = Callable[[int, float], Page]

# Called after every HTTP answer (or failure): (method, route, status or 0, seconds). For metrics.
ResponseHook = Callable[[str, str, int, float], None]


def _backoff(attempt: int, cap: float = BACKOFF_MAX_SECS) -> float:
    """Exponential backoff with full jitter: many clients coming back at once do not come in step."""
    return random.uniform(BACKOFF_MIN_SECS / 2, min(cap, BACKOFF_MIN_SECS * 2 ** attempt))


_IDEMPOTENT_METHODS = frozenset(("GET", "HEAD", "PUT", "DELETE", "OPTIONS"))


class Client:
    """Typed methods for every endpoint of Duely's public API.

    Errors are raised as `DuelyError` subclasses carrying the JSON error `code`; a request that
    got no answer at all raises `ConnectionFailed`. Only `updates()`, `duel_updates()` and
    `submit()` retry by themselves (they can do so safely); everything else is one request.
    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_SECS,
                 session: requests.Session | None = None, on_response: ResponseHook | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Straight http.client keep-alive connections; a given `session` (or a proxy from the
        # environment) goes through requests instead. See duely_client/transport.py.
        self.transport = transport_for(self.base_url, session)
        self.token = token
        self.on_response = on_response
        self.user_id: int | None = None

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value
        self.transport.set_header("Authorization", f"Bearer {value}" if value else None)

    def close(self) -> None:
        """Close the keep-alive connections (they are also closed when the client is collected)."""
        self.transport.close()

    def request(self, method: str, path: str, *, route: str | None = None, timeout: float | None = None,
                json: Any = None, params: dict[str, Any] | None = None, idempotent: bool | None = None) -> Any:
        """One API call: the decoded JSON answer (None for 204), or a raised DuelyError.

        `idempotent` (default: GET, PUT, DELETE) lets a request found on a stale keep-alive
        connection be sent again at once (duely_client/transport.py)."""
        if idempotent is None:
            idempotent = method in _IDEMPOTENT_METHODS
        started = time.monotonic()
        status = 0
        try:
            answer = self.transport.send(method, build_path(path, params), None if json is None else encode_json(json),
                                         timeout or self.timeout, idempotent)
            status = answer.status
        except TransportError as exc:
            raise ConnectionFailed(str(exc)) from exc
        finally:
            if self.on_response is not None:
                self.on_response(method, route or path, status, time.monotonic() - started)
        if status == 204:
            return None
        try:
            body = jsonlib.loads(answer.body.decode())  # str: json's own bytes sniffing costs more
        except ValueError:
            body = None
        if status >= 400:
            raise error_for(status, body, answer.retry_after)
        return body

    # -- accounts ------------------------------------------------------------------------------
    def register(self, nickname: str, password: str) -> User:
        """Create an account and use its token from now on."""
        user = self.request("POST", "/api/users", json={"nickname": nickname, "password": password},
                            route="POST /api/users")
        self.token, self.user_id = user["token"], user["id"]
        return user

    def login(self, nickname: str, password: str) -> User:
        """Log in and use the new token from now on; returns the user."""
        body = self.request("POST", "/api/auth/login", json={"nickname": nickname, "password": password},
                            route="POST /api/auth/login")
        self.token, self.user_id = body["token"], body["user"]["id"]
        return body["user"]

    def login_or_register(self, nickname: str, password: str) -> User:
        """Log in, or register when the nickname is new."""
        try:
            return self.register(nickname, password)
        except DuelyError as exc:
            if exc.code != "nickname_taken":
                raise
        return self.login(nickname, password)

    def logout(self) -> None:
        """Revoke the current token."""
        self.request("POST", "/api/auth/logout", route="POST /api/auth/logout")
        self.token = None

    def me(self) -> User:
        user = self.request("GET", "/api/users/me")
        self.user_id = user["id"]
        return user

    def user(self, user_id: int) -> User:
        return self.request("GET", f"/api/users/{int(user_id)}", route="GET /api/users/{id}")

    def leaderboard(self, limit: int = 20, offset: int = 0) -> list[User]:
        return self.request("GET", "/api/leaderboard", params={"limit": limit, "offset": offset})["users"]

    def history(self, user_id: int, limit: int = 20, before_id: int | None = None) -> tuple[list[Duel], int | None]:
        """A user's duels, newest first, and the `before_id` of the next page (None at the end)."""
        params: dict[str, Any] = {"limit": limit}
        if before_id is not None:
            params["before_id"] = before_id
        body = self.request("GET", f"/api/users/{int(user_id)}/duels", params=params, route="GET /api/users/{id}/duels")
        return body["duels"], body["next_before_id"]

    def rating_history(self, user_id: int, limit: int = 50,
                       before_id: int | None = None) -> tuple[list[RatingPoint], int | None]:
        """One point per finished rated duel of a user, newest first, and the `before_id` of the next page."""
        params: dict[str, Any] = {"limit": limit}
        if before_id is not None:
            params["before_id"] = before_id
        body = self.request("GET", f"/api/users/{int(user_id)}/rating-history", params=params,
                            route="GET /api/users/{id}/rating-history")
        return body["points"], body["next_before_id"]

    # -- settings and blocks ---------------------------------------------------------------------
    def settings(self) -> Settings:
        return self.request("GET", "/api/users/me/settings")

    def update_settings(self, *, accept_challenges: bool | None = None) -> Settings:
        """Change the given settings (the others stay as they are); returns all of them."""
        body: dict[str, Any] = {}
        if accept_challenges is not None:
            body["accept_challenges"] = accept_challenges
        return self.request("PATCH", "/api/users/me/settings", json=body, idempotent=True)  # sets values

    def blocks(self) -> list[BlockedUser]:
        """The players this user blocked, by nickname."""
        return self.request("GET", "/api/users/me/blocks")["users"]

    def block(self, user_id: int) -> None:
        """Block a player (idempotent): no challenges or rematches either way; pending ones are canceled."""
        self.request("PUT", f"/api/users/me/blocks/{int(user_id)}", route="PUT /api/users/me/blocks/{id}")

    def unblock(self, user_id: int) -> None:
        self.request("DELETE", f"/api/users/me/blocks/{int(user_id)}", route="DELETE /api/users/me/blocks/{id}")

    # -- queue -----------------------------------------------------------------------------------
    def join_queue(self) -> QueueStatus:
        """Wait for an opponent (idempotent). Keep `updates()` running to stay queued."""
        return self.request("POST", "/api/queue", route="POST /api/queue", idempotent=True)

    def leave_queue(self) -> None:
        self.request("DELETE", "/api/queue", route="DELETE /api/queue")

    def queue_status(self) -> QueueStatus:
        return self.request("GET", "/api/queue")

    # -- duels -----------------------------------------------------------------------------------
    def duel(self, duel_id: int) -> Duel:
        return self.request("GET", f"/api/duels/{int(duel_id)}", route="GET /api/duels/{id}")

    def submissions(self, duel_id: int) -> list[Submission]:
        return self.request("GET", f"/api/duels/{int(duel_id)}/submissions",
                            route="GET /api/duels/{id}/submissions")["submissions"]

    def submit(self, duel_id: int, solution: str, language: str = "python", client_temp_id: str | None = None,
               *, attempts: int = SUBMIT_ATTEMPTS) -> str:
        """Submit a solution; returns the submission id.

        The request carries a `client_temp_id` (generated unless given), so it can be repeated
        safely: after a network error, a timeout, a 5xx or a 503 it is sent again with the same
        key (backoff with jitter, honouring Retry-After), and the server answers the first
        submission's id instead of storing a second one. Other errors (409 duel_finished, 429
        rate_limited, 400...) are raised at once.
        """
        key = client_temp_id or uuid.uuid4().hex
        body = {"solution": solution, "language": language, "client_temp_id": key}
        for attempt in range(attempts):
            try:
                answer = self.request("POST", f"/api/duels/{int(duel_id)}/submit", json=body,
                                      route="POST /api/duels/{id}/submit", idempotent=True)  # by its key
                return answer["submission_id"]
            except (ConnectionFailed, ServerError, Unavailable) as exc:
                if attempt == attempts - 1:
                    raise
                time.sleep(exc.retry_after if exc.retry_after is not None else _backoff(attempt))
        raise AssertionError("unreachable")

    def resign(self, duel_id: int) -> Duel:
        """Give up: the opponent wins at once."""
        return self.request("POST", f"/api/duels/{int(duel_id)}/resign", route="POST /api/duels/{id}/resign")

    def rematch(self, duel_id: int) -> Challenge:
        """Offer the opponent of a finished duel a rematch. Returns the offer: pending (new, or the
        one already made), or the opponent's own offer, accepted (`duel_id` set), when they offered first."""
        return self.request("POST", f"/api/duels/{int(duel_id)}/rematch", route="POST /api/duels/{id}/rematch",
                            idempotent=True)  # a repeat answers the same offer

    def duels(self, status: str = "active", limit: int = 20,
              before_id: int | None = None) -> tuple[list[Duel], int | None]:
        """Everyone's duels by status (`active` or `finished`), newest first, for watching; and the
        `before_id` of the next page (None at the end)."""
        params: dict[str, Any] = {"status": status, "limit": limit}
        if before_id is not None:
            params["before_id"] = before_id
        body = self.request("GET", "/api/duels", params=params)
        return body["duels"], body["next_before_id"]

    # -- challenges ------------------------------------------------------------------------------
    def create_challenge(self, to: str | None, *, rated: bool = True, duration: int | None = None) -> Challenge:
        """Challenge a player by nickname, or make an open challenge (`to=None`: whoever has its id,
        e.g. through its `invite_url`, may accept it). `duration` is the duel's length in seconds."""
        body: dict[str, Any] = {"to": to, "rated": rated}
        if duration is not None:
            body["duration"] = duration
        return self.request("POST", "/api/challenges", json=body)

    def challenges(self) -> Challenges:
        """The pending challenges and rematch offers, to this user (`incoming`) and from them (`outgoing`)."""
        return self.request("GET", "/api/challenges")

    def challenge(self, challenge_id: str) -> Challenge:
        return self.request("GET", f"/api/challenges/{_segment(challenge_id)}", route="GET /api/challenges/{id}")

    def accept_challenge(self, challenge_id: str) -> Accepted:
        """Accept a challenge or rematch offer: the duel starts at once (`duel_started` follows in `updates()`)."""
        return self.request("POST", f"/api/challenges/{_segment(challenge_id)}/accept",
                            route="POST /api/challenges/{id}/accept")

    def decline_challenge(self, challenge_id: str, reason: str | None = None) -> Challenge:
        """Decline a challenge addressed to this user; `reason` is one of the contract's (default `generic`)."""
        body = {"reason": reason} if reason is not None else {}
        return self.request("POST", f"/api/challenges/{_segment(challenge_id)}/decline", json=body,
                            route="POST /api/challenges/{id}/decline")

    def cancel_challenge(self, challenge_id: str) -> Challenge:
        return self.request("POST", f"/api/challenges/{_segment(challenge_id)}/cancel",
                            route="POST /api/challenges/{id}/cancel")

    def languages(self) -> list[dict[str, str]]:
        return self.request("GET", "/api/languages")["languages"]

    def stream_ticket(self) -> StreamTicket:
        """A ticket for `?ticket=` on the Server-Sent Events streams, where no header can be sent."""
        return self.request("POST", "/api/stream-tickets")

    def health(self) -> dict[str, Any]:
        """GET /healthz: {"status": "ok"}; raises Unavailable when the database does not answer."""
        return self.request("GET", "/healthz")

    # -- the event log -------------------------------------------------------------------------
    def poll(self, last_event_id: int = 0, timeout: float = POLL_TIMEOUT_SECS, limit: int = 100, *,
             wake_on_own: bool = True) -> Page:
        """One long poll: the events after `last_event_id`, waiting up to `timeout` s for one.
        `wake_on_own=False`: not answered early for the events that only echo this user's own
        requests (`submission_created`, `queue_joined`...); they come with the next other event."""
        params: dict[str, Any] = {"last_event_id": last_event_id, "timeout": timeout, "limit": limit}
        if not wake_on_own:
            params["wake_on_own"] = "false"
        return self.request("GET", "/api/updates", params=params, timeout=timeout + self.timeout,
                            route="GET /api/updates")

    def updates(self, last_event_id: int = 0, *, timeout: float = POLL_TIMEOUT_SECS,
                on_resync: Callable[[int], object] | None = None, stop: threading.Event | None = None,
                wake_on_own: bool = True) -> Updates:
        """Every event after `last_event_id`, in order, forever (until `stop` is set). See `Updates`.
        `wake_on_own=False` suits a client that is its user's only one: what its own calls wrote
        (their answers say it already) waits for the next other event instead of costing a round
        trip each (see `poll`)."""
        poll: PollFn | None = None if wake_on_own else (lambda last, wait: self.poll(last, wait, wake_on_own=False))
        return Updates(self, last_event_id, timeout=timeout, on_resync=on_resync, stop=stop, poll=poll)

    def stream(self, last_event_id: int = 0, *, on_resync: Callable[[int], object] | None = None,
               stop: threading.Event | None = None, idle_timeout: float = STREAM_IDLE_SECS,
               wake_on_own: bool = True) -> EventStream:
        """`updates()` over the Server-Sent Events stream: the same events, in order, each once,
        with the same reconnects, waits and 410 resync, on one open connection. See `EventStream`.
        `wake_on_own=False`: the echoes of this user's own calls come with the next other event."""
        path = "/api/stream" if wake_on_own else "/api/stream?wake_on_own=false"
        return EventStream(self, last_event_id, path=path, on_resync=on_resync, stop=stop, idle_timeout=idle_timeout)

    def duel_stream(self, duel_id: int, last_event_id: int = 0, *, on_resync: Callable[[int], object] | None = None,
                    stop: threading.Event | None = None, idle_timeout: float = STREAM_IDLE_SECS) -> EventStream:
        """`duel_updates()` over the duel's Server-Sent Events stream; ends after `duel_finished`."""
        return EventStream(self, last_event_id, path=f"/api/duels/{int(duel_id)}/stream",
                           route="GET /api/duels/{id}/stream", on_resync=on_resync, stop=stop,
                           idle_timeout=idle_timeout, end_after="duel_finished")

    def poll_duel(self, duel_id: int, last_event_id: int = 0, timeout: float = POLL_TIMEOUT_SECS,
                  limit: int = 100) -> Page:
        """One long poll of a duel's public log (anyone signed in may watch any duel)."""
        return self.request("GET", f"/api/duels/{int(duel_id)}/updates",
                            params={"last_event_id": last_event_id, "timeout": timeout, "limit": limit},
                            timeout=timeout + self.timeout, route="GET /api/duels/{id}/updates")

    def duel_updates(self, duel_id: int, last_event_id: int = 0, *, timeout: float = POLL_TIMEOUT_SECS,
                     on_resync: Callable[[int], object] | None = None,
                     stop: threading.Event | None = None) -> Updates:
        """A spectator's view: every event of a duel's public log after `last_event_id` (`duel_started`,
        `submission`, `duel_finished`; never code), with the same reconnects, waits and 410 resync
        as `updates()` (`on_resync` is the place to re-read `duel()`). `duel_finished` is the log's
        last event, so iteration ends after yielding it (or earlier, when `stop` is set)."""
        duel_id = int(duel_id)
        return Updates(self, last_event_id, timeout=timeout, on_resync=on_resync, stop=stop,
                       poll=lambda last, wait: self.poll_duel(duel_id, last, wait), end_after="duel_finished")


class EventStream:
    """An iterator over a log's events read from its Server-Sent Events stream (`GET /api/stream`,
    or a duel's public `GET /api/duels/{id}/stream`): what `Updates` does, without a request per
    answer. The server writes each event as it is committed on the one open connection, so
    there is no gap between a poll's answer and the next poll, and neither side parses a
    request or an answer's headers per event.

    The same promises as `Updates`: events in order, each once; `last_event_id` is the id of the
    last event yielded, and every (re)connect resumes after it (`Last-Event-ID`). A stream that
    ends (the server restarting) is opened again at once; connection failures and 5xx are retried
    with exponential backoff and jitter; 429 and 503 wait `Retry-After`; 410 `events_expired` calls
    `on_resync(new_last_event_id)` and continues from that id. A stream silent for `idle_timeout`
    seconds (no event, no heartbeat) is taken for a dead connection and opened again. Other errors
    (401 after a logout, 404) are raised. `stop` is checked between events and heartbeats; `close()`
    ends the iteration at once, from any thread.
    """

    def __init__(self, client: Client, last_event_id: int = 0, *, path: str = "/api/stream",
                 route: str = "GET /api/stream", on_resync: Callable[[int], object] | None = None,
                 stop: threading.Event | None = None, idle_timeout: float = STREAM_IDLE_SECS,
                 end_after: str | None = None):
        self.client = client
        self.path, self.route = path, route
        self.last_event_id = last_event_id
        self.on_resync = on_resync
        self.stop = stop or threading.Event()
        self.idle_timeout = idle_timeout
        self.end_after = end_after
        self.ended = False
        self.failures = 0  # consecutive opens that failed or ended without a frame (for logs and tests)
        self.opened = 0  # streams opened (for tests)
        self._answer: StreamAnswer | None = None
        self._lines: Iterator[bytes] | None = None
        self._framed = False  # the open stream has delivered a frame or a heartbeat

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while not self.ended:
            if self.stop.is_set():
                self.close()
                break
            if self._lines is None:
                self._open()
                continue
            event = self._next_frame()
            if event is None or event["id"] <= self.last_event_id:  # a heartbeat; or an event seen already
                continue
            self.last_event_id = event["id"]
            if self.end_after is not None and event["type"] == self.end_after:
                self.ended = True
                self.close()
            return event
        raise StopIteration

    def close(self) -> None:
        """Stop iterating and close the stream's connection (a read blocked on it returns at once)."""
        self.stop.set()
        answer, self._answer, self._lines = self._answer, None, None
        if answer is not None:
            answer.close()

    def _open(self) -> None:
        if self.failures:
            if self.stop.wait(_backoff(self.failures)):
                return
        started, status = time.monotonic(), 0
        try:
            answer = self.client.transport.open_stream(
                self.path, {"Accept": "text/event-stream", "Last-Event-ID": str(self.last_event_id)},
                self.idle_timeout)
            status = answer.status
        except TransportError:
            self.failures += 1
            return
        finally:
            if self.client.on_response is not None:
                self.client.on_response("GET", self.route, status, time.monotonic() - started)
        if status == 200:
            self.opened += 1
            self._answer, self._lines, self._framed = answer, answer.lines(), False
            return
        try:
            body = jsonlib.loads(answer.body.decode())
        except ValueError:
            body = None
        error = error_for(status, body, answer.retry_after)
        if isinstance(error, EventsExpired):
            self.failures = 0
            if self.on_resync is not None:
                self.on_resync(error.last_event_id)
            self.last_event_id = error.last_event_id
        elif isinstance(error, (RateLimited, Unavailable)):
            self.stop.wait(error.retry_after if error.retry_after is not None else _backoff(self.failures + 1))
        elif isinstance(error, ServerError):
            self.failures += 1
        else:
            raise error

    def _next_frame(self) -> Event | None:
        """The next event of the open stream, or None after a heartbeat or when the stream ended
        (then it is closed, and the next call opens another)."""
        assert self._lines is not None
        data: list[bytes] = []
        try:
            for line in self._lines:
                if line:
                    if line.startswith(b"data:"):
                        data.append(line[6:] if line[5:6] == b" " else line[5:])
                    elif line.startswith(b":"):  # a comment: the heartbeat
                        self._framed, self.failures = True, 0
                        return None
                    continue  # id:, event:, retry: (the id is in the data, the wait is ours)
                if data:  # a blank line ends a frame
                    self._framed, self.failures = True, 0
                    return jsonlib.loads(b"\n".join(data).decode())
        except TransportError:
            pass
        # The stream ended or failed: open it again (at once, if it had delivered anything).
        if not self._framed:
            self.failures += 1
        answer, self._answer, self._lines = self._answer, None, None
        if answer is not None:
            answer.close()
        return None


class Updates:
    """An iterator over a log's events (a user's, or with `poll` any other, such as a duel's) that
    long-polls from the last id it yielded.

    It survives server restarts and outages: on connection errors and 5xx it retries with
    exponential backoff and jitter (reset after an answer); on 429 and 503 it waits
    `Retry-After`; on 410 `events_expired` it calls `on_resync(new_last_event_id)` (the place to
    re-read the REST snapshot: queue, duel, submissions) and continues from that id. Polling
    also keeps a queued player present. `last_event_id` is always the id of the last event
    yielded. Iteration ends when `stop` is set (checked between polls and while waiting), or
    after yielding an event of type `end_after` (a log's known last event) when one is given.
    """

    def __init__(self, client: Client, last_event_id: int = 0, *, timeout: float = POLL_TIMEOUT_SECS,
                 on_resync: Callable[[int], object] | None = None, stop: threading.Event | None = None,
                 poll: PollFn | None = None, end_after: str | None = None):
        self.client = client
        self._poll: PollFn = poll or client.poll  # which log: the user's own by default
        self.end_after = end_after
        self.ended = False
        self.last_event_id = last_event_id
        self.timeout = timeout
        self.on_resync = on_resync
        self.stop = stop or threading.Event()
        self.failures = 0  # consecutive polls without an answer (for logs and tests)
        self._buffer: list[Event] = []

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self.ended:
            raise StopIteration
        while not self._buffer:
            if self.stop.is_set():
                raise StopIteration
            self._buffer = self._poll_once()
        event = self._buffer.pop(0)
        self.last_event_id = event["id"]
        if self.end_after is not None and event["type"] == self.end_after:
            self.ended = True
        return event

    def _poll_once(self) -> list[Event]:
        try:
            page = self._poll(self.last_event_id, self.timeout)
        except EventsExpired as exc:
            self.failures = 0
            if self.on_resync is not None:
                self.on_resync(exc.last_event_id)
            self.last_event_id = exc.last_event_id
            return []
        except (RateLimited, Unavailable) as exc:
            self.failures += 1
            self.stop.wait(exc.retry_after if exc.retry_after is not None else _backoff(self.failures))
            return []
        except (ConnectionFailed, ServerError):
            self.failures += 1
            self.stop.wait(_backoff(self.failures))
            return []
        self.failures = 0
        return list(page["events"])


def _segment(value: str) -> str:
    """A path segment from an id the server made (challenge ids are URL-safe; quoting keeps a bad one harmless)."""
    return quote(str(value), safe="")
