"""The logs themselves: append (the outbox write), read, prune. See docs/events.md.

A log is "events keyed by something": a user's personal log (`events`, keyed by user, ids from
`users.last_event_id`) or a duel's public log (`duel_events`, keyed by duel, ids from
`duels.last_event_id`). Both are the same machinery, described once by a `Log`.

This module owns every write to both tables: `append` (personal) and `append_duel` (public)
add an event inside the caller's transaction, so an event exists exactly when the change it
reports is committed. Ids are allocated under the owner's row lock, so for one log commit order
equals id order and a reader can never skip an id.

Reading is one statement (the newest id and a page of events, rendered by PostgreSQL as the
API's JSON); the long poll runs it in batches (duely/eventlog/reader.py). Retention is `prune`, run by the scheduler as `prune_job`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from duely import errors, notify
from duely.auth import live_token_sql
from duely.clock import isoformat, utcnow
from duely.db import driver_execute, driver_sql
from duely.eventlog.listener import NOTIFY_CHANNEL, duel_key, own_key
from duely.eventlog.types import DUEL_PAYLOADS, PAYLOADS, DuelPayload, Payload

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from duely.runtime import Runtime

POLL_LIMIT_DEFAULT = 100
# The scheduler prunes this often; deletes go in batches so no transaction runs long.
PRUNE_INTERVAL_SECS = 600.0
PRUNE_BATCH_SIZE = 5000


class KeyKind(StrEnum):
    USER = "user"
    TOKEN = "token"
    DUEL = "duel"  # a duel's public log, by duel id (tests and code that need not check who reads)
    DUEL_AS = "duel_as"  # a duel's public log for the holder of a bearer token (spectators' polls)


@dataclass(frozen=True, slots=True)
class Log:
    """One kind of log: its events table, the table of its owners (whose `last_event_id` column
    gives out the ids, under the owner's row lock) and the column naming the owner."""

    events: str
    owners: str
    owner_column: str


USER_LOG = Log("events", "users", "user_id")
DUEL_LOG = Log("duel_events", "duels", "duel_id")
LOGS = (USER_LOG, DUEL_LOG)


@dataclass(frozen=True, slots=True)
class PollKey:
    """Whose log a read is for: a user id (code that knows the user), or the hash of a bearer
    token (a poll, authenticated by the read itself; an unknown token matches no log); or a
    duel's log, by duel id, or by (duel id, token hash) for a spectator authenticated by the read."""

    kind: KeyKind
    value: int | str | tuple[int, str]

    @classmethod
    def user(cls, user_id: int) -> PollKey:
        return cls(KeyKind.USER, user_id)

    @classmethod
    def token(cls, token_hash: str) -> PollKey:
        return cls(KeyKind.TOKEN, token_hash)

    @classmethod
    def duel(cls, duel_id: int, token_hash: str | None = None) -> PollKey:
        if token_hash is None:
            return cls(KeyKind.DUEL, duel_id)
        return cls(KeyKind.DUEL_AS, (duel_id, token_hash))

    @property
    def is_duel(self) -> bool:
        return self.kind in (KeyKind.DUEL, KeyKind.DUEL_AS)


# FOR NO KEY UPDATE, the lock an UPDATE of the counter takes anyway: it serialises the writers
# of a log, but not a transaction inserting a row that names the user (its foreign key check takes
# KEY SHARE, which FOR UPDATE blocks). Held FOR UPDATE, a new user's first queue join deadlocked
# with the presence heartbeat inserting that user's presence row (docs/events.md). Every statement
# that locks users itself takes the same mode.
_LOCK_USERS = text("SELECT id FROM users WHERE id = ANY(:ids) ORDER BY id FOR NO KEY UPDATE")
# One statement per event (every writer pays it, the consumer once per message): the UPDATE
# bumps the owner's counter and holds the row lock to commit, the INSERT takes that id, and the
# NOTIFY is queued for after the commit (duely/notify.py). clock_timestamp(), not now(): taken under the row lock, so
# created_at grows with the id for one log and pruning by age can never cut a hole in a log.
_APPEND_SQL = """
    WITH next AS (
        UPDATE {owners} SET last_event_id = last_event_id + 1 WHERE id = :owner RETURNING last_event_id
    ), inserted AS (
        INSERT INTO {events} ({owner_column}, id, type, data, created_at)
        SELECT :owner, last_event_id, :type, CAST(:data AS jsonb), clock_timestamp() FROM next
        RETURNING id
    )
    SELECT id, """ + notify.queue_sql(":ch", ":wake_key") + """ FROM inserted
    """
_APPEND = text(_APPEND_SQL.format(events=USER_LOG.events, owners=USER_LOG.owners, owner_column=USER_LOG.owner_column))
_APPEND_DUEL = text(_APPEND_SQL.format(events=DUEL_LOG.events, owners=DUEL_LOG.owners, owner_column=DUEL_LOG.owner_column))
# Many events, of both kinds of log, in one statement (the consumer applies a poll batch at
# once). Per log, the caller gives each row its rank `k` among the rows of the same owner
# (1, 2, ...) and each owner's count; the UPDATE bumps every owner's counter once and the
# INSERT numbers the rows from the old value, so ids stay gapless and in the batch's order per
# log. One NOTIFY per owner. Unlike one-row appends, a multi-row UPDATE takes the owners' row
# locks in the plan's order: callers hold those locks already (`lock_users`, the duel row
# lock), so it never waits. Empty arrays leave a log untouched. The payloads come as one JSON
# array (a text[] parameter cost psycopg a regex escape of every quote of every payload).
_APPEND_MANY_CTES = """
    {p}bumped AS (
        UPDATE {owners} o SET last_event_id = o.last_event_id + c.n
        FROM unnest(CAST(:{p}owners AS bigint[]), CAST(:{p}counts AS integer[])) AS c(owner, n)
        WHERE o.id = c.owner
        RETURNING o.id, o.last_event_id - c.n AS base
    ), {p}inserted AS (
        INSERT INTO {events} ({owner_column}, id, type, data, created_at)
        SELECT b.owner, {p}bumped.base + b.k, b.type, CAST(:{p}datas AS jsonb) -> CAST(b.i - 1 AS integer), clock_timestamp()
        FROM unnest(CAST(:{p}row_owners AS bigint[]), CAST(:{p}ks AS integer[]), CAST(:{p}types AS text[]))
             WITH ORDINALITY AS b(owner, k, type, i)
        JOIN {p}bumped ON {p}bumped.id = b.owner
        ORDER BY b.owner, b.k
        RETURNING 1
    )"""
_APPENDED = "((SELECT count(*) FROM u_inserted) + (SELECT count(*) FROM d_inserted))"
_APPEND_MANY_SQL = (
    "WITH"
    + _APPEND_MANY_CTES.format(p="u_", events=USER_LOG.events, owners=USER_LOG.owners, owner_column=USER_LOG.owner_column)
    + ","
    + _APPEND_MANY_CTES.format(p="d_", events=DUEL_LOG.events, owners=DUEL_LOG.owners, owner_column=DUEL_LOG.owner_column)
    + "{also}"
    + """
    SELECT CAST(CASE WHEN """ + _APPENDED + """ = CAST(:expected AS bigint) THEN CAST(:expected AS text)
                     ELSE 'appended ' || """ + _APPENDED + """ || ' of ' || CAST(:expected AS text)
                          || ' events: unknown log owner' END AS bigint) AS n,
           {also_n} AS also_n, count(""" + notify.queue_sql(":ch", "w") + """) AS notified
    FROM unnest(CAST(:wake_keys AS text[])) AS w
    """
)
# The statement checks its own count, so that a caller need not wait for its answer (in a
# pipeline it is only queued, and the COMMIT queued behind it): an owner that does not exist
# would leave an event out, so the cast of the message fails the statement, and the transaction
# with it, rather than drop the event (SQL has no RAISE of its own; the error names the count).


# `append` in CTE form, for a hot write that folds its change and its event into ONE statement
# (driver parameter style: the queue join and leave, the submit). The same rules as `append`:
# the UPDATE bumps the owner's counter under its row lock, the INSERT takes that id with
# clock_timestamp() (taken under the lock), and the caller's statement NOTIFYs (`notify_sql`).
def append_ctes(name: str, source: str, log: Log, event_type: str, data_sql: str) -> str:
    """Two CTEs, `{name}_next` and `{name}`, appending one event of type `event_type` to the log
    of each row of `source` (a CTE with a column `owner`, at most one row per owner). `data_sql`
    is the event's data, a jsonb expression over `source`'s columns (alias `s`). `{name}` returns
    `owner` and `id` (the event's id) per event; the caller's statement must read it (a CTE
    nobody reads still runs, but this keeps the NOTIFY next to it) and NOTIFY per row."""
    if not event_type.replace("_", "").isalpha():
        raise ValueError(f"not an event type: {event_type!r}")
    return f"""{name}_next AS (
        UPDATE {log.owners} o SET last_event_id = o.last_event_id + 1 FROM {source} s WHERE o.id = s.owner
        RETURNING o.id AS owner, o.last_event_id AS id, {data_sql} AS data
    ), {name} AS (
        INSERT INTO {log.events} ({log.owner_column}, id, type, data, created_at)
        SELECT owner, id, '{event_type}', data, clock_timestamp() FROM {name}_next
        RETURNING {log.owner_column} AS owner, id
    )"""


def notify_sql(log: Log, owner_sql: str, own: bool = False) -> str:
    """The NOTIFY waking the polls of `owner_sql`'s log (what `append` sends), as an SQL expression;
    `own`: the event only echoes the owner's own request (`listener.own_key`)."""
    if log is DUEL_LOG:
        prefix = duel_key(0).removesuffix("0")  # a duel's key: "d:<id>"
    else:
        prefix = own_key(0).removesuffix("0") if own else ""
    return notify.queue_sql(f"'{NOTIFY_CHANNEL}'", f"'{prefix}' || CAST({owner_sql} AS text)")


def isoformat_sql(expr: str) -> str:
    """A timestamptz rendered as duely.clock.isoformat renders it (UTC, `Z`, microseconds only
    when not zero): for event data built by the database (driver parameter style: `%%`)."""
    return (f"to_char({expr} AT TIME ZONE 'UTC', CASE WHEN extract(microseconds FROM {expr})::bigint %% 1000000 = 0"
            """ THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END)""")


def payload_json(payload: Payload | DuelPayload) -> str:
    """A payload's data as `append` stores it (checked like `append` checks it)."""
    if isinstance(payload, Payload):
        _check_payload(payload)
    else:
        _check_duel_payload(payload)
    return _encode(payload)


@functools.cache
def _append_many_statement(also: str | None) -> str:
    """The batch append, with the caller's own write riding along as the CTE `also` (which must
    return a row per row it changed), for the driver (`db.driver_sql`): the consumer's batches and
    every duel start and finish run it, and SQLAlchemy's execution cost more CPU than psycopg's."""
    if also is None:
        return driver_sql(text(_APPEND_MANY_SQL.format(also="", also_n="NULL")))
    return driver_sql(text(_APPEND_MANY_SQL.format(also=f", also AS ({also})", also_n="(SELECT count(*) FROM also)")))


# A read is one statement, so one snapshot: the newest id and the events after the cursor agree.
# PostgreSQL renders the events as the API's JSON (keys in the contract's order, created_at as
# duely.clock.isoformat does), so the hot path neither decodes nor re-encodes them. One statement
# reads for a batch of polls, one VALUES row each, and answers one row per poll that matched
# (see duely/eventlog/reader.py). Scalar parameters in VALUES, not arrays: PostgreSQL spent about
# 130 us more per statement unnesting array parameters. Written in the driver's parameter style,
# so the same SQL also runs on a Session (the tests' `read_since`, tests/fixtures/events.py).
_READ_SQL = """
    SELECT q.i, u.id, u.last_event_id, e.first_id, e.last_id, e.n, e.list
    FROM (VALUES {values}) AS q({columns})
    {join_user}
    CROSS JOIN LATERAL (
        SELECT min(id) AS first_id, max(id) AS last_id, count(*) AS n,
               coalesce(json_agg(json_build_object(
                   'id', id, 'type', type,
                   'created_at', to_char(created_at AT TIME ZONE 'UTC',
                                         CASE WHEN extract(microseconds FROM created_at)::bigint %% 1000000 = 0
                                              THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END),
                   'data', data) ORDER BY id)::text, '[]') AS list
        FROM (SELECT id, type, data, created_at FROM {events}
              WHERE {owner_column} = u.id AND id > q.after_id ORDER BY id LIMIT q.lim) page
    ) e"""
_JOIN_USER = {
    KeyKind.USER: "JOIN users u ON u.id = q.key",
    # The bearer token is checked in the same statement (the rule of duely.auth.live_token_sql:
    # known hash, not revoked, not expired): a poll costs no round trip for authentication.
    KeyKind.TOKEN: f"JOIN auth_tokens t ON {live_token_sql('q.key', 't')} JOIN users u ON u.id = t.user_id",
    # A duel's public log: the owner row is the duel.
    KeyKind.DUEL: "JOIN duels u ON u.id = q.key",
    # ...read for a spectator: anyone signed in may, so the token is checked in the same
    # statement, as for a personal poll; an unknown duel is a row with a NULL duel (404), an
    # unknown token no row (401).
    KeyKind.DUEL_AS: f"JOIN auth_tokens t ON {live_token_sql('q.tok', 't')} LEFT JOIN duels u ON u.id = q.key",
}
_KEY_TYPE = {KeyKind.USER: "bigint", KeyKind.TOKEN: "text", KeyKind.DUEL: "bigint", KeyKind.DUEL_AS: "bigint"}


@functools.cache
def read_sql(kind: KeyKind, size: int) -> str:
    """The read statement for `size` polls keyed by user id, by token hash or by duel id (with a
    token hash for DUEL_AS: `read_params`' `tokens`)."""
    with_token = kind is KeyKind.DUEL_AS
    values = ", ".join(f"(CAST(%(k{j})s AS {_KEY_TYPE[kind]}), CAST(%(a{j})s AS bigint), CAST(%(l{j})s AS int), {j + 1}"
                       + (f", CAST(%(t{j})s AS text))" if with_token else ")")
                       for j in range(size))
    log = DUEL_LOG if kind in (KeyKind.DUEL, KeyKind.DUEL_AS) else USER_LOG
    return _READ_SQL.format(values=values, columns="key, after_id, lim, i" + (", tok" if with_token else ""),
                            join_user=_JOIN_USER[kind], events=log.events, owner_column=log.owner_column)


def read_params(keys: Sequence[int | str | None], afters: Sequence[int], limits: Sequence[int],
                tokens: Sequence[str | None] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for j, (key, after_id, limit) in enumerate(zip(keys, afters, limits, strict=True)):
        params[f"k{j}"], params[f"a{j}"], params[f"l{j}"] = key, after_id, limit
    for j, token in enumerate(tokens or ()):
        params[f"t{j}"] = token
    return params


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One event as read back from a log (what the API sends), not the `models.Event` row."""

    id: int
    type: str
    created_at: str  # ISO-8601 UTC, as the API renders it
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "created_at": self.created_at, "data": self.data}


@dataclass(frozen=True, slots=True)
class Updates:
    """The answer to a poll: the events in id order, and the id to continue from (the last
    event's, or the one given when there is nothing new).

    The events come as the JSON array the API sends (`events_json`, rendered by the database);
    `events` parses it for code that wants objects.
    """

    events_json: str
    last_event_id: int
    count: int = 0

    @classmethod
    def empty(cls, last_event_id: int) -> Updates:
        return cls("[]", last_event_id, 0)

    @property
    def events(self) -> list[LogEntry]:
        return [LogEntry(e["id"], e["type"], e["created_at"], e["data"]) for e in json.loads(self.events_json)]


def lock_users(session: Session, user_ids: Iterable[int]) -> None:
    """Take the row locks of several users in id order (one order everywhere: no deadlocks)."""
    ids = sorted(set(user_ids))
    if ids:
        session.execute(_LOCK_USERS, {"ids": ids})


def append(session: Session, user_id: int, payload: Payload, own: bool = False) -> int:
    """Append one event to `user_id`'s log in the caller's transaction; returns its id. `own`:
    the event only echoes `user_id`'s own request (their submit, queue join...), so it does not
    wake their polls that asked for that (`wake_on_own=false`, docs/api.md).

    The payload's class says the event's type (duely/eventlog/types.py); its `data()` is stored.

    The id comes from bumping `users.last_event_id`, which row-locks the user until the caller
    commits: a concurrent writer for the same user waits, so ids commit in order and without
    gaps (a rolled-back id is given out again). The NOTIFY is transactional too: it is sent
    only if and when the caller commits, right after (duely/notify.py).
    """
    _check_payload(payload)
    data = _encode(payload)
    event_id: int = session.execute(_APPEND, {"owner": user_id, "wake_key": own_key(user_id) if own else str(user_id),
                                              "type": payload.type.value,
                                              "data": data, "ch": NOTIFY_CHANNEL}).scalar_one()
    return event_id


def append_duel(session: Session, duel_id: int, payload: DuelPayload) -> int:
    """Append one event to duel `duel_id`'s public log in the caller's transaction; returns its id.

    The same rules as `append`: the id comes from bumping `duels.last_event_id`, which takes the
    duel row's lock until the caller commits, so ids commit in order and without gaps; the
    NOTIFY ("d:<duel id>" on the one channel) is sent after the commit. Callers take the duel row
    lock before any user row lock (docs/lifecycle.md, lock order), so this never waits while
    holding a user's lock.
    """
    _check_duel_payload(payload)
    data = _encode(payload)
    event_id: int = session.execute(_APPEND_DUEL, {"owner": duel_id, "wake_key": duel_key(duel_id), "type": payload.type.value,
                                                   "data": data, "ch": NOTIFY_CHANNEL}).scalar_one()
    return event_id


def _encode(payload: Payload | DuelPayload) -> str:
    return json.dumps(payload.data(), separators=(",", ":"))


def _check_payload(payload: Payload) -> None:
    if not isinstance(payload, Payload) or PAYLOADS.get(payload.type) is not type(payload):
        raise ValueError(f"not an event payload: {payload!r}")


def _check_duel_payload(payload: DuelPayload) -> None:
    if not isinstance(payload, DuelPayload) or DUEL_PAYLOADS.get(payload.type) is not type(payload):
        raise ValueError(f"not a duel-log payload: {payload!r}")


class EventBatch:
    """Events for personal and duel logs, collected in order and appended by `flush` with one
    statement, whatever their number (`append` costs one statement per event).

    The same rules as `append`/`append_duel`: in the caller's transaction, ids gapless and in
    the order the events were added (per log), NOTIFY after the commit. The caller must already hold
    the row locks of every user (`lock_users`) and duel it adds events for (see _APPEND_MANY_CTES).
    """

    __slots__ = ("_duel", "_user")

    def __init__(self) -> None:
        self._user: list[tuple[int, str, dict[str, Any]]] = []
        self._duel: list[tuple[int, str, dict[str, Any]]] = []

    def user(self, user_id: int, payload: Payload) -> None:
        _check_payload(payload)
        self._user.append((user_id, payload.type.value, payload.data()))

    def duel(self, duel_id: int, payload: DuelPayload) -> None:
        _check_duel_payload(payload)
        self._duel.append((duel_id, payload.type.value, payload.data()))

    def __len__(self) -> int:
        return len(self._user) + len(self._duel)

    def flush(self, session: Session, also: str | None = None, also_params: dict[str, Any] | None = None) -> int | None:
        """Append the collected events (one statement) and start empty again.

        `also`: another data-modifying statement of the caller (a constant string, with
        `RETURNING` one row per row it changes) run in the same statement, to save a round trip;
        returns how many rows it changed. It runs even with no events. Its parameters
        (`also_params`) must not clash with the append's (`u_*`, `d_*`, `ch`, `wake_keys`, `expected`).

        Without `also` it returns None and does not wait for the answer: the statement fails by
        itself if an event's owner does not exist (`_APPEND_MANY_SQL`), so in a pipeline
        (`db.pipelined`) it is only queued, and the transaction's COMMIT can go in the same round trip.
        """
        if not self._user and not self._duel and also is None:
            return None
        params: dict[str, Any] = {**(also_params or {}), "ch": NOTIFY_CHANNEL, "wake_keys": []}
        for prefix, rows, wake_key in (("u_", self._user, str), ("d_", self._duel, duel_key)):
            counts: dict[int, int] = {}
            ks: list[int] = []
            for owner, _, _ in rows:
                counts[owner] = k = counts.get(owner, 0) + 1
                ks.append(k)
            owners = sorted(counts)
            params |= {f"{prefix}owners": owners, f"{prefix}counts": [counts[o] for o in owners],
                       f"{prefix}row_owners": [r[0] for r in rows], f"{prefix}ks": ks,
                       f"{prefix}types": [r[1] for r in rows],
                       f"{prefix}datas": json.dumps([r[2] for r in rows], separators=(",", ":"))}
            params["wake_keys"] += [wake_key(o) for o in owners]
        params["expected"] = len(self)
        cursor = driver_execute(session, _append_many_statement(also), params, named=True)
        self._user, self._duel = [], []
        return None if also is None else int(cursor.fetchone().also_n)


def append_many(session: Session, events: Iterable[tuple[int, Payload]]) -> None:
    """Append (user id, payload) events to personal logs in order, in one statement (`EventBatch`)."""
    batch = EventBatch()
    for user_id, payload in events:
        batch.user(user_id, payload)
    batch.flush(session)


def updates_from_row(row: Sequence[Any], after_id: int) -> Updates:
    """The row of a read (index, owner id, newest id, first/last id, count, events JSON) -> Updates:
    at most the read's limit of events with ids above `after_id`, oldest first.

    Raises BadRequest when `after_id` is ahead of the log, and EventsExpired (410, carrying the
    newest id as `last_event_id`) when the event right after `after_id` was pruned.
    """
    _, _, newest, first_id, last_id, count, events_json = row
    if after_id > newest:
        raise errors.BadRequest(f"last_event_id {after_id} is ahead of the log's newest event ({newest}).")
    if after_id < newest and first_id != after_id + 1:
        raise errors.EventsExpired(
            f"Events after {after_id} are no longer kept; resync from the REST snapshot and continue from {newest}.",
            extra={"last_event_id": newest},
        )
    return Updates(events_json, last_id, count) if count else Updates.empty(after_id)


def prune(session: Session, older_than: dt.datetime, batch_size: int = PRUNE_BATCH_SIZE, log: Log = USER_LOG) -> int:
    """Delete up to `batch_size` events of `log` created before `older_than`; returns how many.

    A poll from an id whose successor is gone then gets 410 (see `updates_from_row`).
    """
    return session.connection().execute(
        text(
            f"DELETE FROM {log.events} WHERE ctid IN (SELECT ctid FROM {log.events} WHERE created_at < :cutoff LIMIT :batch)"
        ),
        {"cutoff": older_than, "batch": batch_size},
    ).rowcount


def prune_job(runtime: Runtime) -> int:
    """Scheduler job: delete events (personal and duel logs) older than EVENT_RETENTION, batch by batch."""
    db = runtime.db
    cutoff = utcnow() - dt.timedelta(seconds=runtime.config.event_retention)
    total = 0
    for log_ in LOGS:
        while True:
            deleted = db.run(lambda s: prune(s, cutoff, log=log_))  # noqa: B023 (run at once)
            total += deleted
            if deleted < PRUNE_BATCH_SIZE:
                break
    if total:
        log.info("pruned %d events older than %s", total, isoformat(cutoff))
    return total

