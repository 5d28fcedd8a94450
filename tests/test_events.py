"""The event log: append, ordering under concurrency, read_since's 400/410, wait_for, prune,
the listener's reconnect path, presence."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import multiprocessing
import re
import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from duely import auth, errors, eventlog
from duely.clock import isoformat, utcnow
from duely.config import Config
from duely.db import Database, psycopg_url
from duely.eventlog import presence, store
from duely.eventlog.listener import Listener
from duely.eventlog.reader import BatchedReader, PollReadFailed
from duely.eventlog.store import PollKey
from duely.eventlog.types import DuelFinished, Payload, QueueJoined, QueueLeft, QueueLeftReason
from duely.runtime import Runtime
from tests.fixtures.events import (
    is_present,
    last_seen,
    progress,
    read_since,
    refresh,
    seen_since,
    seen_within,
    wait_for,
    write_with_late_commits,
)

ROOT = Path(__file__).resolve().parent.parent
# SQL or ORM that writes the events table (threading.Event and the model's own class are fine).
_WRITES_EVENTS = re.compile(
    r"(?i)insert\s+into\s+events\b|update\s+events\b|delete\s+from\s+events\b"
    r"|\b(?:insert|update|delete)\(\s*(?:models\.)?Event\b|(?<![.\w])Event\(\s*user_id"
)


def ids_of(db: Database, user_id: int) -> list[int]:
    with db.transaction() as s:
        return list(s.execute(text("SELECT id FROM events WHERE user_id = :u ORDER BY id"), {"u": user_id}).scalars())


def drain(db: Database, user_id: int, after_id: int = 0, limit: int = 100) -> list[int]:
    seen: list[int] = []
    while True:
        with db.transaction() as s:
            batch = read_since(s, user_id, after_id, limit)
        if not batch.events:
            return seen
        seen += [e.id for e in batch.events]
        after_id = batch.last_event_id


# -- append --------------------------------------------------------------------------------

def test_append_numbers_each_users_log_from_one(db, make_poller, append_event):
    alice, bob = make_poller(), make_poller()
    assert [append_event(alice.id) for _ in range(3)] == [1, 2, 3]
    assert [append_event(bob.id) for _ in range(2)] == [1, 2]
    with db.transaction() as s:
        assert s.execute(text("SELECT last_event_id FROM users WHERE id = :u"), {"u": alice.id}).scalar() == 3


def test_append_rejects_unknown_types(db, make_poller):
    alice = make_poller()
    @dataclasses.dataclass(frozen=True)
    class NoSuchType(Payload):  # made after the registry: not an event type
        type = "no_such_type"

    with pytest.raises(ValueError), db.transaction() as s:
        eventlog.append(s, alice.id, NoSuchType())


def test_a_rolled_back_append_leaves_no_event_and_no_gap(db, make_poller, append_event):
    alice = make_poller()
    append_event(alice.id)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.transaction() as s:
        assert eventlog.append(s, alice.id, QueueLeft(reason=QueueLeftReason.LEFT)) == 2
        raise Boom
    assert append_event(alice.id) == 2  # the id is given out again: no gap
    with db.transaction() as s:
        got = read_since(s, alice.id, 0, 100).events
    assert [(e.id, e.type) for e in got] == [(1, "submission_update"), (2, "submission_update")]


def test_nothing_but_events_append_writes_the_events_table():
    """Every writer (web, scheduler, consumer) goes through eventlog.append."""
    offenders = []
    for path in (ROOT / "duely").rglob("*.py"):
        if path.name == "store.py" and path.parent.name == "eventlog":
            continue
        source = path.read_text()
        if re.search(_WRITES_EVENTS, source):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# -- ordering under concurrency ------------------------------------------------------------

def test_concurrent_writers_never_leave_a_gap(db, make_poller):
    """8 threads write 30 events each for one user, committing at random moments, while a
    reader follows the log: it sees 1..240 in order, each once, and never a hole (a hole would
    make read_since raise 410)."""
    alice = make_poller()
    writers_n, per_writer = 8, 30
    barrier = threading.Barrier(writers_n + 1)
    writers = [threading.Thread(target=write_with_late_commits, args=(db, alice.id, per_writer, i, barrier))
               for i in range(writers_n)]
    for w in writers:
        w.start()
    seen: list[int] = []
    after = 0
    barrier.wait()
    while len(seen) < writers_n * per_writer:
        with db.transaction() as s:
            batch = read_since(s, alice.id, after, 7)
        seen += [e.id for e in batch.events]
        after = batch.last_event_id
    for w in writers:
        w.join()
    assert seen == list(range(1, writers_n * per_writer + 1))


def test_a_later_transaction_cannot_commit_its_event_before_an_earlier_one(db, make_poller):
    """T1 appends and holds its transaction open; T2 appends meanwhile and wants to commit
    first. T2 waits on the user's row lock, so T2's event gets id 2 and is visible only after
    T1's id 1."""
    alice = make_poller()
    t1_appended, t2_done = threading.Event(), threading.Event()
    order: list[tuple[str, int]] = []

    def t1():
        with db.transaction() as s:
            order.append(("t1", eventlog.append(s, alice.id, QueueJoined(since=utcnow()))))
            t1_appended.set()
            assert not t2_done.wait(0.5), "T2 must be blocked while T1 is open"

    def t2():
        t1_appended.wait()
        with db.transaction() as s:
            order.append(("t2", eventlog.append(s, alice.id, QueueLeft(reason=QueueLeftReason.LEFT))))
        t2_done.set()

    threads = [threading.Thread(target=t1), threading.Thread(target=t2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order == [("t1", 1), ("t2", 2)]
    assert drain(db, alice.id) == [1, 2]


def _process_writer(database_url: str, user_id: int, count: int, seed: int) -> None:
    db = Database(database_url, pool_size=1, max_overflow=0)
    try:
        write_with_late_commits(db, user_id, count, seed, None)
    finally:
        db.dispose()


def test_writer_processes_and_a_long_poller_see_every_id_once_in_order(db, make_poller, updates_listener, runtime):
    """4 writer processes (truly parallel commits) and a reader using wait_for, as the API does."""
    alice = make_poller()
    procs_n, per_proc = 4, 40
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(db.url, alice.id, per_proc, i)) for i in range(procs_n)]
    for p in procs:
        p.start()
    seen: list[int] = []
    after = 0
    deadline = time.monotonic() + 120
    while len(seen) < procs_n * per_proc and time.monotonic() < deadline:
        got = wait_for(runtime, alice.id, after, 5, limit=13)
        seen += [e.id for e in got.events]
        after = got.last_event_id
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert seen == list(range(1, procs_n * per_proc + 1))


# -- read_since ----------------------------------------------------------------------------

def test_read_since_pages_by_limit(db, make_poller, append_event):
    alice = make_poller()
    for _ in range(5):
        append_event(alice.id)
    with db.transaction() as s:
        first = read_since(s, alice.id, 0, 2)
        rest = read_since(s, alice.id, first.last_event_id, 100)
        none = read_since(s, alice.id, 5, 100)
    assert [e.id for e in first.events] == [1, 2] and first.last_event_id == 2
    assert [e.id for e in rest.events] == [3, 4, 5] and rest.last_event_id == 5
    assert none.events == [] and none.last_event_id == 5


def test_read_since_an_id_ahead_of_the_log_is_bad_request(db, make_poller, append_event):
    alice = make_poller()
    append_event(alice.id)
    with pytest.raises(errors.BadRequest), db.transaction() as s:
        read_since(s, alice.id, 2, 100)


def test_event_json_shape(db, make_poller):
    alice = make_poller()
    with db.transaction() as s:
        eventlog.append(s, alice.id, QueueJoined(since=utcnow()))
    with db.transaction() as s:
        (event,) = read_since(s, alice.id, 0, 100).events
    body = event.as_json()
    assert list(body) == ["id", "type", "created_at", "data"]
    assert body["id"] == 1 and body["type"] == "queue_joined"
    assert body["created_at"].endswith("Z") and body["data"]["since"].endswith("Z")


def test_created_at_is_rendered_like_every_other_time_in_the_api(db, make_poller, append_event):
    alice = make_poller()
    append_event(alice.id)
    append_event(alice.id)
    with db.transaction() as s:
        s.execute(text("UPDATE events SET created_at = '2026-11-22T17:00:00Z' WHERE id = 2"))
        stored = dict(s.execute(text("SELECT id, created_at FROM events ORDER BY id")).all())
        rendered = {e.id: e.created_at for e in read_since(s, alice.id, 0, 100).events}
    assert rendered == {i: isoformat(t) for i, t in stored.items()}
    assert rendered[2] == "2026-11-22T17:00:00Z"


def test_events_json_is_the_api_rendering_of_events(db, make_poller):
    alice = make_poller()
    with db.transaction() as s:
        # Not a real reason or change: characters JSON must escape, and a float.
        eventlog.append(s, alice.id, DuelFinished(duel_id=3, outcome="win", winner_id=None,
                                                  rating_changes={"1": 12.5}, reason="résumé \"x\""))  # type: ignore[arg-type]
    with db.transaction() as s:
        got = read_since(s, alice.id, 0, 100)
    assert got.count == 1 and got.last_event_id == 1
    assert json.loads(got.events_json) == [e.as_json() for e in got.events]
    assert got.events[0].data == {"duel_id": 3, "outcome": "win", "winner_id": None, "rating_changes": {"1": 12.5},
                                  "reason": "résumé \"x\""}


# -- prune and 410 -------------------------------------------------------------------------

def _age_events(db: Database, user_id: int, up_to_id: int, days: float) -> None:
    with db.transaction() as s:
        s.execute(text("UPDATE events SET created_at = created_at - make_interval(days => :d) WHERE user_id = :u AND id <= :i"),
                  {"d": days, "u": user_id, "i": up_to_id})


def test_prune_deletes_old_events_and_then_old_cursors_get_410(db, make_poller, append_event):
    alice, bob = make_poller(), make_poller()
    for _ in range(5):
        append_event(alice.id)
    append_event(bob.id)
    _age_events(db, alice.id, 3, days=8)
    with db.transaction() as s:
        assert store.prune(s, utcnow() - dt.timedelta(days=7)) == 3
    assert ids_of(db, alice.id) == [4, 5] and ids_of(db, bob.id) == [1]
    for cursor in (0, 1, 2):
        with pytest.raises(errors.EventsExpired) as info, db.transaction() as s:
            read_since(s, alice.id, cursor, 100)
        assert info.value.status == 410 and info.value.extra == {"last_event_id": 5}
    with db.transaction() as s:
        assert [e.id for e in read_since(s, alice.id, 3, 100).events] == [4, 5]
        assert read_since(s, alice.id, 5, 100).events == []


def test_a_caught_up_client_is_fine_after_its_whole_log_was_pruned(db, make_poller, append_event):
    alice = make_poller()
    append_event(alice.id)
    append_event(alice.id)
    _age_events(db, alice.id, 2, days=30)
    with db.transaction() as s:
        store.prune(s, utcnow() - dt.timedelta(days=7))
        assert read_since(s, alice.id, 2, 100) == store.Updates.empty(2)
    with pytest.raises(errors.EventsExpired), db.transaction() as s:
        read_since(s, alice.id, 0, 100)


def test_prune_job_honours_event_retention_and_works_in_batches(db, make_poller, append_event, monkeypatch):
    alice = make_poller()
    for _ in range(7):
        append_event(alice.id)
    _age_events(db, alice.id, 6, days=2)
    monkeypatch.setattr(store, "PRUNE_BATCH_SIZE", 4)
    config = Config(database_url=db.url, event_retention=86400.0)
    assert store.prune_job(Runtime(config, db)) == 6
    assert ids_of(db, alice.id) == [7]
    assert store.prune_job(Runtime(config, db)) == 0


def test_prune_job_is_scheduled():
    from duely.jobs import scheduled_jobs

    assert any(job is store.prune_job for _, job, _ in scheduled_jobs())


# -- wait_for ------------------------------------------------------------------------------

def test_wait_for_answers_at_once_when_events_exist(db, make_poller, append_event, updates_listener, runtime):
    alice = make_poller()
    append_event(alice.id)
    started = time.monotonic()
    got = wait_for(runtime, alice.id, 0, 30)
    assert [e.id for e in got.events] == [1] and time.monotonic() - started < 5


def test_wait_for_is_woken_by_the_commit(db, make_poller, append_event, updates_listener, runtime):
    alice = make_poller()
    before = updates_listener.notifications
    timer = threading.Timer(0.3, append_event, args=(alice.id,))
    timer.start()
    started = time.monotonic()
    got = wait_for(runtime, alice.id, 0, 30)
    elapsed = time.monotonic() - started
    assert [e.id for e in got.events] == [1]
    assert elapsed < 10  # far below the 30 s timeout: woken by the notification
    assert updates_listener.notifications > before


def test_wait_for_returns_nothing_after_its_timeout(db, make_poller, updates_listener, runtime):
    alice = make_poller()
    started = time.monotonic()
    got = wait_for(runtime, alice.id, 0, 0.5)
    elapsed = time.monotonic() - started
    assert got == store.Updates.empty(0)
    assert 0.5 <= elapsed < 5


def test_wait_for_holds_no_database_connection_while_waiting(db, make_poller, updates_listener, runtime):
    alice = make_poller()
    pool, reads = db.engine.pool, runtime.reader()
    result: list = []
    thread = threading.Thread(target=lambda: result.append(wait_for(runtime, alice.id, 0, 2)))
    checked_out_before = pool.checkedout()
    thread.start()
    deadline = time.monotonic() + 5
    while updates_listener.waiter_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    # The held poll has given its connection back.
    assert updates_listener.waiter_count() == 1 and reads.in_use == 0 and pool.checkedout() == checked_out_before
    thread.join()
    assert result == [store.Updates.empty(0)]


def test_wait_for_ignores_other_users_notifications(db, make_poller, append_event, updates_listener, runtime):
    alice, bob = make_poller(), make_poller()
    threading.Timer(0.2, append_event, args=(bob.id,)).start()
    got = wait_for(runtime, alice.id, 0, 1)
    assert got.events == []


def test_shutdown_answers_held_waits_at_once(db, make_poller, runtime):
    alice = make_poller()
    lst = Listener(db.url).start()
    try:
        assert lst.wait_connected(10)
        result: list = []
        thread = threading.Thread(target=lambda: result.append(wait_for(runtime, alice.id, 0, 30, listener=lst)))
        thread.start()
        deadline = time.monotonic() + 5
        while lst.waiter_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        assert lst.shutdown() == 1
        thread.join(10)
        assert time.monotonic() - started < 5 and result == [store.Updates.empty(0)]
        # New polls do not wait either.
        started = time.monotonic()
        assert wait_for(runtime, alice.id, 0, 30, listener=lst) == store.Updates.empty(0)
        assert time.monotonic() - started < 5
    finally:
        lst.stop()


class SlowReconnectListener(Listener):
    """Takes a while to come back after losing its connection, so that a commit lands in the gap."""

    reconnect_delay_secs = 1.0

    def _connect(self) -> psycopg.Connection:
        if self.connections:
            time.sleep(self.reconnect_delay_secs)
        return super()._connect()


def test_an_event_committed_while_the_listener_reconnects_is_not_lost(db, make_poller, append_event, runtime):
    alice = make_poller()
    lst = SlowReconnectListener(db.url).start()
    try:
        assert lst.wait_connected(10)
        result: list = []
        thread = threading.Thread(target=lambda: result.append(wait_for(runtime, alice.id, 0, 30, listener=lst)))
        thread.start()
        time.sleep(0.2)
        with psycopg.connect(psycopg_url(db.url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [lst.backend_pid])
        deadline = time.monotonic() + 5
        while lst.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        append_event(alice.id)  # nobody is listening now: this notification is lost
        started = time.monotonic()
        thread.join(20)
        assert [e.id for e in result[0].events] == [1]
        assert time.monotonic() - started < 10  # woken by the reconnect, not by the 30 s timeout
        assert lst.connections == 2
    finally:
        lst.stop()


def test_a_waiter_rechecks_at_the_end_of_its_timeout_even_without_a_listener(db, make_poller, append_event, runtime):
    alice = make_poller()
    deaf = Listener("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")  # never started: never wakes anyone
    threading.Timer(0.2, append_event, args=(alice.id,)).start()
    got = wait_for(runtime, alice.id, 0, 1, listener=deaf)
    assert [e.id for e in got.events] == [1]


# -- batched reads -------------------------------------------------------------------------

def test_concurrent_reads_share_statements_and_each_gets_its_own_answer(db, make_poller, append_event, config):
    users = [make_poller() for _ in range(12)]
    for i, u in enumerate(users):
        for _ in range(i % 4):
            append_event(u.id, progress(f"user {u.id}"))
    reader = BatchedReader(db.url, 1)  # one connection: reads queue up and get batched
    barrier = threading.Barrier(len(users) * 2)
    answers: dict[tuple[str, int], tuple] = {}

    def read(u, by: str) -> None:
        key = PollKey.token(auth.hash_token(config.secret_key, u.token)) if by == "token" else PollKey.user(u.id)
        barrier.wait()
        answers[(by, u.id)] = reader.read(key, 0, 100)

    threads = [threading.Thread(target=read, args=(u, by)) for u in users for by in ("token", "user")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader.close()
    for i, u in enumerate(users):
        for by in ("token", "user"):
            updates = store.updates_from_row(answers[(by, u.id)], 0)
            assert answers[(by, u.id)][1] == u.id
            assert [e.id for e in updates.events] == list(range(1, i % 4 + 1))
            assert all(e.data == progress(f"user {u.id}").data() for e in updates.events)
    assert reader.reads == 24 and reader.statements < 24


def test_an_unknown_token_reads_as_none_in_a_batch(db, make_poller):
    alice = make_poller()
    reader = BatchedReader(db.url, 1)
    assert reader.read(PollKey.token("no-such-hash"), 0, 100) is None
    assert reader.read(PollKey.user(alice.id), 0, 100)[1] == alice.id
    reader.close()


def test_a_failed_batch_fails_its_polls_instead_of_answering_401():
    reader = BatchedReader("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", 1)
    with pytest.raises(PollReadFailed):
        reader.read(PollKey.token("whatever"), 0, 100)


# -- presence ------------------------------------------------------------------------------

def test_refresh_writes_presence_then_throttles(db, make_poller):
    alice = make_poller()
    throttle = presence.PresenceThrottle()
    with db.transaction() as s:
        assert last_seen(s, alice.id) is None
        assert refresh(s, throttle, alice.id) is True
        first = last_seen(s, alice.id)
        assert first is not None
    with db.transaction() as s:
        assert refresh(s, throttle, alice.id) is False  # within PRESENCE_THROTTLE_SECS
        assert refresh(s, throttle, alice.id, throttle_secs=0) is True
    with db.transaction() as s:
        assert last_seen(s, alice.id) > first


def test_the_heartbeat_writes_only_the_users_not_written_lately(db, make_poller):
    """The held-polls heartbeat skips users this process wrote within the throttle (their polls
    did), counts as a write for the polls' throttle, and does not wait for the WAL flush."""
    alice, bob = make_poller(), make_poller()
    throttle = presence.PresenceThrottle()
    assert throttle.claim_write(alice.id)  # alice's own poll has just written her presence
    with db.transaction() as s:
        assert throttle.touch_many(s, [alice.id, bob.id, bob.id]) == [bob.id]
        assert s.execute(text("SHOW synchronous_commit")).scalar_one() == "off"
    with db.transaction() as s:
        assert last_seen(s, bob.id) is not None and last_seen(s, alice.id) is None
        assert s.execute(text("SHOW synchronous_commit")).scalar_one() == "on"  # SET LOCAL: that transaction only
    assert throttle.claim_write(bob.id) is False  # the heartbeat's write counts for bob's polls
    with db.transaction() as s:  # once the throttle window has passed, every held user is written
        assert throttle.touch_many(s, [bob.id, alice.id], throttle_secs=0) == [alice.id, bob.id]
    with db.transaction() as s:
        assert throttle.touch_many(s, [alice.id, bob.id]) == []  # nothing due: no statement at all
        assert last_seen(s, alice.id) is not None


def test_seen_since_and_is_present(db, make_poller):
    alice, bob = make_poller(), make_poller()
    with db.transaction() as s:
        presence.touch(s, alice.id)
    with db.transaction() as s:
        s.execute(text("INSERT INTO presence (user_id, last_seen_at) VALUES (:u, now() - interval '1 hour')"), {"u": bob.id})
    with db.transaction() as s:
        assert seen_since(s, [alice.id, bob.id], utcnow() - dt.timedelta(minutes=1)) == {alice.id}
        assert seen_within(s, [alice.id, bob.id], 60) == {alice.id}
        assert is_present(s, alice.id, 30) and not is_present(s, bob.id, 30)


def test_a_poll_refreshes_presence(db, make_poller, updates_listener, runtime):
    alice = make_poller()
    wait_for(runtime, alice.id, 0, 0)
    with db.transaction() as s:
        assert is_present(s, alice.id, 5)


def test_held_polls_keep_their_users_present(db, make_poller, runtime):
    """A poll held longer than QUEUE_TTL must not make its user look gone: the listener's
    heartbeat refreshes the presence of every user with a held poll."""
    alice = make_poller()
    lst = Listener(db.url, heartbeat=lambda ids: db.run(lambda s: presence.write(s, ids)), heartbeat_secs=0.2).start()
    try:
        thread = threading.Thread(target=wait_for, args=(runtime, alice.id, 0, 1.5), kwargs={"listener": lst})
        thread.start()
        time.sleep(0.3)
        with db.transaction() as s:
            s.execute(text("UPDATE presence SET last_seen_at = now() - interval '1 hour'"))
        time.sleep(0.8)
        with db.transaction() as s:
            assert is_present(s, alice.id, 5)
        thread.join()
    finally:
        lst.stop()
