"""The long poll: answer at once when there are events, else hold the request until one is
committed or the timeout passes. See docs/events.md ("Waiting and wake-up").

A held poll holds no database connection: it waits on its `Waiter`, woken by the process's
LISTEN connection (duely/eventlog/listener.py); its reads go through the batched reader
(duely/eventlog/reader.py). This module changes when the waiting rules change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from duely import errors
from duely.auth import bad_token
from duely.eventlog.listener import Listener, WakeKey, duel_key
from duely.eventlog.reader import BatchedReader
from duely.eventlog.store import POLL_LIMIT_DEFAULT, KeyKind, PollKey, Updates, updates_from_row

POLL_TIMEOUT_DEFAULT_SECS = 25.0
POLL_TIMEOUT_MAX_SECS = 60.0
POLL_LIMIT_MAX = 100

if TYPE_CHECKING:
    from duely.runtime import Runtime


@dataclass(frozen=True, slots=True)
class PollRequest:
    """One long poll: whose log, from where, how long to hold it, how many events at most."""

    key: PollKey
    after_id: int
    timeout_secs: float
    limit: int = POLL_LIMIT_DEFAULT
    refresh_presence: bool = True  # the first read marks the user as present (duely/eventlog/presence.py)
    wake_on_own: bool = True  # False: a held poll sleeps through the echoes of its user's own requests


def poll(runtime: Runtime, token_hash: str, after_id: int, timeout_secs: float,
         limit: int = POLL_LIMIT_DEFAULT, wake_on_own: bool = True) -> tuple[int, Updates]:
    """One long poll for the holder of a bearer token (by its `auth.hash_token` hash): the events
    after `after_id` at once if there are any, else the first ones committed within
    `timeout_secs`, else none. Returns (user id, updates).

    No database connection is held while waiting: each read is one short statement, which
    authenticates too, and the wake-up comes from the runtime's listener. The first read also
    refreshes the user's presence (throttled, see duely/eventlog/presence.py). When the server is
    shutting down the poll is answered at once. With `wake_on_own` False a held poll is not
    answered early for the events that only echo the user's own requests (`listener.own_key`):
    they come with the next other event, or at the timeout. Raises Unauthorized for a missing,
    expired or revoked token, else what `store.updates_from_row` raises (400, 410)."""
    request = PollRequest(PollKey.token(token_hash), after_id, timeout_secs, limit, wake_on_own=wake_on_own)
    user_id, updates = hold(runtime.reader(), runtime.listener(), request, runtime.token_users.get(token_hash))
    runtime.remember_token(token_hash, user_id)
    return user_id, updates


def poll_duel(runtime: Runtime, duel_id: int, token_hash: str, after_id: int, timeout_secs: float,
              limit: int = POLL_LIMIT_DEFAULT) -> Updates:
    """One long poll on duel `duel_id`'s public log for the holder of a bearer token (anyone
    signed in may watch): the same rules as `poll` (the token checked by the read itself, 400
    ahead of the log, 410 pruned, no connection held while waiting); Unauthorized for a bad
    token, then NotFound for an unknown duel. Writes no presence."""
    request = PollRequest(PollKey.duel(duel_id, token_hash), after_id, timeout_secs, limit, refresh_presence=False)
    return hold(runtime.reader(), runtime.listener(), request, duel_id)[1]


def wake_key(key: PollKey, owner_id: int) -> WakeKey:
    """What a poll on `key`'s log subscribes to, once its owner (user or duel id) is known."""
    return duel_key(owner_id) if key.is_duel else owner_id


def hold(reader: BatchedReader, listener: Listener, request: PollRequest, user_id: int | None) -> tuple[int, Updates]:
    """The poll loop, for a key of any kind (the API polls by token or duel id, tests also by
    user id); `user_id` is the owner the key is thought to belong to (a user id, or the duel id
    for a duel log; None: unknown yet). Returns (owner id, updates)."""
    after_id, timeout_secs = request.after_id, request.timeout_secs
    deadline = time.monotonic() + timeout_secs
    # Subscribed before the read: an event committed between the read and the wait still sets
    # the flag, so it is never slept through.
    waiter = (listener.subscribe(wake_key(request.key, user_id), request.wake_on_own)
              if timeout_secs > 0 and user_id is not None else None)
    try:
        first = True
        while True:
            if waiter is not None:
                waiter.clear()  # a wake-up arriving during the read below triggers one more read
            row = reader.read(request.key, after_id, request.limit, presence=first and request.refresh_presence)
            if row is None:
                if request.key.kind in (KeyKind.TOKEN, KeyKind.DUEL_AS):
                    raise bad_token()
                if request.key.kind is KeyKind.DUEL:
                    raise errors.NotFound("No such duel.")
                raise errors.NotFound("No such user.")
            if row[1] is None:  # DUEL_AS: the token is good, the duel unknown
                raise errors.NotFound("No such duel.")
            user_id = row[1]
            first = False
            updates = updates_from_row(row, after_id)
            remaining = deadline - time.monotonic()
            if updates.count or timeout_secs <= 0 or remaining <= 0 or listener.shutting_down:
                return user_id, updates
            if waiter is None or waiter.user_id != wake_key(request.key, user_id):
                # Subscribed only now that the owner is known: read once more before waiting.
                if waiter is not None:
                    listener.unsubscribe(waiter)
                waiter = listener.subscribe(wake_key(request.key, user_id), request.wake_on_own)
                continue
            # Woken or not, loop and read again: at the end of the timeout that re-read covers a
            # notification lost while the listener was reconnecting.
            waiter.wait(remaining)
            if listener.shutting_down:
                return user_id, Updates.empty(after_id)
    finally:
        if waiter is not None:
            listener.unsubscribe(waiter)
