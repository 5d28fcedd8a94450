"""The event logs (each user's personal log, each duel's public log) and long polling and
Server-Sent Events on them. See docs/events.md.

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

The duel log is the same machinery keyed by duel (`store.Log`): `append_duel`, its own types
(`types.DuelEventType`), the same reader, listener (wake key `d:<id>`), 400/410 and pruning.
`sse` streams either log as text/event-stream with the poll's own wait and read.

Writers import this package and call `eventlog.append` / `eventlog.append_duel` / `eventlog.lock_users`;
a writer of many events at once collects them in an `eventlog.EventBatch` (one statement per log).
"""

from duely.eventlog.store import EventBatch, append, append_duel, append_many, lock_users
from duely.eventlog.types import DUEL_EVENT_TYPES, EVENT_TYPES

__all__ = ["DUEL_EVENT_TYPES", "EVENT_TYPES", "EventBatch", "append", "append_duel", "append_many", "lock_users"]
