"""Server-Sent Events on a log: the same log as the long poll, over another transport.
See docs/events.md ("Server-Sent Events").

A stream is the long poll in a loop: `poll.hold` (wait without a database connection, woken by
the process's listener, read through the batched reader) -> write the events as frames -> hold
again from the last id written. A hold that times out after `heartbeat_secs` writes a comment
instead, so proxies and clients see the connection alive. The stream ends when the server shuts
down (the listener's shutdown wakes it), or when a read fails (database gone, token revoked,
events pruned under a stream that fell far behind): the client reconnects with Last-Event-ID
and then gets the error as JSON, before any stream starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator

from duely import errors
from duely.eventlog.listener import Listener
from duely.eventlog.poll import PollRequest, hold
from duely.eventlog.reader import BatchedReader, PollReadFailed
from duely.eventlog.store import Updates

log = logging.getLogger(__name__)

# The `retry:` hint sent first: how long a browser waits before reconnecting a dropped stream.
RETRY_MS = 2000
HEARTBEAT = ": heartbeat\n\n"


def frames(updates: Updates) -> str:
    """The events of a read as SSE frames: `id:`, `event:` (the type), `data:` (the event JSON, one line)."""
    out = []
    for event in json.loads(updates.events_json):
        data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        out.append(f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n")
    return "".join(out)


def stream(reader: BatchedReader, listener: Listener, request: PollRequest, owner_id: int, first: Updates,
           heartbeat_secs: float) -> Iterator[str]:
    """The body of an event stream, after its first read (`first`, done before the answer started
    so that its errors are JSON): the retry hint, `first`'s events, then every event as it is
    committed, with a heartbeat comment after `heartbeat_secs` without one."""
    yield f"retry: {RETRY_MS}\n\n"
    if first.count:
        yield frames(first)
    after_id = first.last_event_id
    while not listener.shutting_down:
        try:
            _, updates = hold(reader, listener, dataclasses.replace(request, after_id=after_id, timeout_secs=heartbeat_secs),
                              owner_id)
        except (errors.DuelyError, PollReadFailed) as exc:
            log.info("event stream ended: %s", exc)
            return
        if updates.count:
            after_id = updates.last_event_id
            yield frames(updates)
        elif not listener.shutting_down:
            yield HEARTBEAT
