"""The per-user event log and long polling on it. See docs/events.md.

One concept, five modules, each with one reason to change:

- `types`: the event types (and, per type, its payload);
- `store`: the log itself, in SQL: `append` (the outbox write, in the caller's transaction),
  `lock_users`, the read statement, `prune`/`prune_job`;
- `poll`: the long poll (`poll`, by bearer token): hold, wait, re-read;
- `reader`: the batched reader, the poll's reads on a few plain connections per process;
- `listener`: the LISTEN connection that wakes held polls when their user gets an event;
- `presence`: when a user last polled, written by the polls themselves.

The listener and presence live here because they exist only for the poll: the listener wakes
held polls and nothing else, and presence is a by-product of polling (written by the reader's
batches and the listener's heartbeat); the matchmaking queue only reads it.

Writers import this package and call `eventlog.append` / `eventlog.lock_users`.
"""

from duely.eventlog.store import append, lock_users
from duely.eventlog.types import EVENT_TYPES

__all__ = ["EVENT_TYPES", "append", "lock_users"]
