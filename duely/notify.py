"""NOTIFY sent right after the commit, by a transaction of its own, instead of inside the writer's.

Why: PostgreSQL serialises every committing transaction that has NOTIFYs pending. It takes one
lock for the whole database (`AccessExclusiveLock` on "object 0 of class 1262", pg_locks'
`object` lock type) before its commit record and holds it through the WAL flush, until the
transaction has ended, so that notifications are queued in commit order. Every write of ours
wakes somebody (a poll, the dispatcher, matchmaking), so every commit queued there: in the
swarm benchmark at 100 submissions/s, 1.2 backends on average waited for that lock, and the
holder was often one that slept in its fsync and then waited for a CPU (README, "The latest
pass"). The row locks the writer held waited with it.

So a writer's statements do not call `pg_notify`: they record what to send in a session-level
setting of their connection (`queue_sql`, an SQL expression used where `pg_notify(...)` was).
The commit sends `COMMIT` and then `SEND_SQL` in one pipeline, one round trip as before
(`duely.db`: the commit hook of every engine, `execute_alone` for the statements run alone).
`SEND_SQL` runs as a transaction of its own that has no transaction id: it writes no WAL, so it
holds the notify lock for a moment and never across an fsync.

What stays as it was:
- nothing is sent for a transaction that rolls back, wholly or to a savepoint: a setting
  changed in a transaction is restored when it (or the savepoint) rolls back, as NOTIFY's
  pending notifications are dropped;
- a notification arrives after the writer's data is committed and visible;
- the channels and payloads are the same, and identical ones are sent once.
What differs: a notification now leaves after the commit rather than with it. Both are in
the same message to the server, so only the server's crash between the two could lose one,
and a crash loses undelivered notifications anyway (every listener treats a reconnection as
"something may have been missed": docs/events.md, "Missed notifications").
"""

from __future__ import annotations

# A custom setting (PostgreSQL keeps any `prefix.name` a session sets): the queued
# notifications, ",<channel> <payload>" each. Channels are our fixed names; payloads are
# user ids, "d:<id>", "o:<id>" or empty, so neither separator can occur inside one.
SETTING = "duely.notify_after_commit"


def queue_sql(channel_sql: str, payload_sql: str) -> str:
    """An SQL expression that queues `pg_notify(channel, payload)` for after this transaction's
    commit (sent by `SEND_SQL`); like `pg_notify`, use it once per row (`count(...)`)."""
    return (f"set_config('{SETTING}', coalesce(current_setting('{SETTING}', true), '') || ',' || ({channel_sql})"
            f" || ' ' || ({payload_sql}), false)")


# Sends what this session queued, once each, and clears it; run right after a COMMIT (or on a
# connection in autocommit), so it is a transaction of its own. The aggregate is computed
# before the outer row's set_config runs: the queue is read before it is cleared.
SEND_SQL = f"""
    SELECT sent.n, set_config('{SETTING}', '', false) AS cleared FROM (
        SELECT count(pg_notify(split_part(q, ' ', 1), substr(q, strpos(q, ' ') + 1))) AS n
        FROM (SELECT DISTINCT q FROM unnest(string_to_array(current_setting('{SETTING}', true), ',')) AS q
              WHERE q <> '') queued
    ) sent
    """
