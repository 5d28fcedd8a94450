"""The batched reader's statements (duely/eventlog/reader.py): `store.read_sql` sent with
PostgreSQL's own placeholders gives the rows the named statement gives, for every kind of key
and every batch size, and a batch bigger than the largest statement still answers each poll."""

from __future__ import annotations

import psycopg
import pytest

from duely import auth
from duely.db import psycopg_url
from duely.eventlog import store
from duely.eventlog.reader import _BATCH_SIZES, BatchedReader, _positional_read_sql, _Read
from duely.eventlog.store import KeyKind, PollKey
from tests.fixtures.events import progress


@pytest.fixture
def logs(db, make_poller, append_event, duel_between, config):
    """Three users with 0, 2 and 4 events, a duel between the last two, and their keys."""
    users = [make_poller() for _ in range(3)]
    for user, count in zip(users, (0, 1, 3), strict=True):
        for _ in range(count):
            append_event(user.id, progress(f"user {user.id} ünïcode ✓"))
    duel_id = duel_between(users[1], users[2])  # a duel_started event each, and the duel's log
    hashes = [auth.hash_token(config.secret_key, u.token) for u in users]
    return users, hashes, duel_id


def keys_of(kind: KeyKind, users, hashes, duel_id) -> list:
    return {
        KeyKind.USER: [u.id for u in users] + [10**12],
        KeyKind.TOKEN: hashes + ["no-such-hash"],
        KeyKind.DUEL: [duel_id, 10**12],
        KeyKind.DUEL_AS: [(duel_id, hashes[0]), (10**12, hashes[1]), (duel_id, "no-such-hash")],
    }[kind]


@pytest.mark.parametrize("kind", list(KeyKind))
def test_the_positional_statement_reads_what_the_named_one_reads(db, logs, kind):
    keys = keys_of(kind, *logs)
    with psycopg.connect(psycopg_url(db.url), autocommit=True) as conn:
        for size in _BATCH_SIZES:
            chosen = [keys[j % len(keys)] for j in range(size)]
            afters, limits = [j % 2 for j in range(size)], [1 + j % 3 for j in range(size)]
            tokens = None
            if kind is KeyKind.DUEL_AS:
                chosen, tokens = [k[0] for k in chosen], [k[1] for k in chosen]
            params = store.read_params(chosen, afters, limits, tokens)
            named = sorted(conn.execute(store.read_sql(kind, size), params).fetchall())
            query, names = _positional_read_sql(kind, size)
            positional = sorted(psycopg.RawCursor(conn).execute(query, [params[n] for n in names]).fetchall())
            assert positional == named, (kind, size)
            assert len(named) >= 1 and len(names) == len(params)


def test_a_batch_larger_than_the_largest_statement_answers_every_poll(db, logs, config):
    users, hashes, duel_id = logs
    reader = BatchedReader(db.url, 1)
    batch = [_Read(PollKey.token(hashes[j % 3]) if j % 2 else PollKey.user(users[j % 3].id), 0, 100, False)
             for j in range(_BATCH_SIZES[-1] * 2 + 5)]
    batch.append(_Read(PollKey.duel(duel_id, hashes[0]), 0, 100, False))
    try:
        reader._run(batch)
    finally:
        reader.close()
    assert all(r.done.is_set() and r.error is None for r in batch)
    for j, request in enumerate(batch[:-1]):
        updates = store.updates_from_row(request.row, 0)
        assert request.row[1] == users[j % 3].id and updates.count == [0, 2, 4][j % 3]
    assert batch[-1].row[1] == duel_id and store.updates_from_row(batch[-1].row, 0).count >= 1
    assert reader.statements == 1 and reader.reads == len(batch)
