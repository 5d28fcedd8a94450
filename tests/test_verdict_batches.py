"""A poll batch applied at once (verdicts.apply_batch) gives exactly what applying its messages
one at a time gives: one event per fresh message, in order, every log gapless; duplicates,
stale seqs and updates after the verdict ignored; the duel finished at the verdict that makes
its result certain; and two consumers applying overlapping batches at once give each event once."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy
from sqlalchemy import text

from duely import eventlog, verdicts
from duely.eventlog.types import DuelLogSubmission, QueueJoined
from tests.fixtures.stack import start_duel

UPDATES = 4  # progress messages per submission before its verdict (seq 1..4, verdict seq 5)


@dataclass
class World:
    """Three duels of fresh players; in each, submissions a0 (player a), b0 (b), a1 (a), in that order."""

    users: list[int]  # a0, b0, a1, b1, a2, b2 (players of duel 0, 1, 2)
    duels: list[int]
    subs: list[list[str]]  # per duel: [a0, b0, a1]


def make_worlds(db, count: int) -> list[World]:
    """`count` identical worlds; submissions made round-robin so every world has the same order."""
    tag = uuid.uuid4().hex[:6]
    worlds = []
    for w in range(count):
        with db.transaction() as s:
            users = list(s.execute(text(
                "INSERT INTO users (nickname, password_hash) SELECT :t || '-' || g, 'x' FROM generate_series(1, 6) g "
                "RETURNING id"), {"t": f"{tag}{w}"}).scalars())
        users.sort()
        worlds.append(World(users, [start_duel(db, users[2 * i], users[2 * i + 1]) for i in range(3)], [[], [], []]))
    for i in range(3):
        for who in (0, 1, 0):  # a0, b0, a1: a0 is each duel's earliest submission
            for world in worlds:
                sid = str(uuid.uuid4())
                with db.transaction() as s:
                    s.execute(text("INSERT INTO submissions (id, duel_id, user_id, language, solution, status, submitted_at) "
                                   "VALUES (:i, :d, :u, 'python', 'print(1)', 'testing', clock_timestamp())"),
                              {"i": sid, "d": world.duels[i], "u": world.users[2 * i + who]})
                world.subs[i].append(sid)
    return worlds


# Per (duel, submission index): the verdict. Duel 0: a0 Accepted, the earliest, so it finishes
# the duel at once while b0 and a1 still get progress. Duel 1: nothing Accepted (stays active).
# Duel 2: b0 Accepted but a0, earlier, is still testing; a0's Wrong Answer later finishes it.
VERDICTS = {(0, 0): "Accepted", (0, 1): "Wrong Answer on test #2", (0, 2): "Wrong Answer on test #1",
            (1, 0): "Wrong Answer on test #3", (1, 1): "Runtime Error on test #1", (1, 2): "Wrong Answer on test #4",
            (2, 0): "Wrong Answer on test #1", (2, 1): "Accepted", (2, 2): "Wrong Answer on test #2"}


def script(seed: int = 13) -> list[tuple[int, int, int, str, str]]:
    """(duel, submission index, seq, type, text) in a shuffled interleaving of the nine streams,
    each in seq order, with duplicates, stale seqs and an update after the verdict mixed in."""
    rng = random.Random(seed)
    streams = {}
    for (d, k), verdict in VERDICTS.items():
        stream = [(d, k, seq, "update", f"Test #{seq} passed") for seq in range(1, UPDATES + 1)]
        stream.append((d, k, UPDATES + 1, "verdict", verdict))
        stream.insert(2, stream[1])  # a duplicate, right after the original
        stream.insert(5, (d, k, 1, "update", "Test #1 passed (stale)"))  # a stale seq
        stream.append(stream[-1])  # the verdict twice
        stream.append((d, k, UPDATES + 2, "update", "after the verdict"))  # newer seq, but the verdict is final
        streams[(d, k)] = stream
    # duel 2: a0's verdict (Wrong Answer) comes last, after b0's (Accepted): the duel finishes then
    late = streams[(2, 0)][-3:]
    streams[(2, 0)] = streams[(2, 0)][:-3]
    order: list[tuple[int, int, int, str, str]] = []
    while any(streams.values()):
        key = rng.choice([k for k, s in streams.items() if s])
        order.append(streams[key].pop(0))
    return order + late


def raw(world: World, step) -> bytes:
    d, k, seq, kind, value = step
    field = "status" if kind == "update" else "verdict"
    return json.dumps({"submission_id": world.subs[d][k], "seq": seq, "type": kind, field: value}).encode()


def records(world: World, steps) -> list[tuple[bytes, str]]:
    return [(raw(world, step), f"t/0@{i}") for i, step in enumerate(steps)]


def fresh_messages(steps) -> list:
    """The messages the rules apply, applied one at a time in this order (the reference)."""
    last: dict = {}
    judged: set = set()
    out = []
    for step in steps:
        d, k, seq, kind, _ = step
        if (d, k) in judged or seq <= last.get((d, k), 0):
            continue
        last[(d, k)] = seq
        if kind == "verdict":
            judged.add((d, k))
        out.append(step)
    return out


def logs(db, world: World):
    """Every user's and duel's log, as (id, type, data with ids replaced by their place in the world)."""
    places = {**{sid: f"s{d}.{k}" for d, ks in enumerate(world.subs) for k, sid in enumerate(ks)},
              **{uid: f"u{i}" for i, uid in enumerate(world.users)}}
    duel_places = {did: f"d{i}" for i, did in enumerate(world.duels)}

    def plain(data: dict) -> dict:
        out = {}
        for key, value in data.items():
            if key == "submitted_at":
                continue
            if key == "duel_id":
                value = duel_places[value]
            elif key in ("submission_id", "user_id", "winner_id") and value is not None:
                value = places[value]
            elif key == "rating_changes":
                value = {places[int(uid)]: change for uid, change in value.items()}
            elif key in ("players", "opponent", "task", "deadline", "started_at", "stakes"):
                continue  # duel_started: made before the script
            out[key] = value
        return out

    with db.transaction() as s:
        users = {places[u]: [(r.id, r.type, plain(r.data)) for r in s.execute(text(
            "SELECT id, type, data FROM events WHERE user_id = :u ORDER BY id"), {"u": u})] for u in world.users}
        duels = {duel_places[d]: [(r.id, r.type, plain(r.data)) for r in s.execute(text(
            "SELECT id, type, data FROM duel_events WHERE duel_id = :d ORDER BY id"), {"d": d})] for d in world.duels}
        newest = {places[r.id]: r.last_event_id for r in s.execute(text(
            "SELECT id, last_event_id FROM users WHERE id = ANY(:u)"), {"u": world.users})}
        newest |= {duel_places[r.id]: r.last_event_id for r in s.execute(text(
            "SELECT id, last_event_id FROM duels WHERE id = ANY(:d)"), {"d": world.duels})}
    return users, duels, newest


def outcome_of(db, world: World):
    with db.transaction() as s:
        subs = [tuple(s.execute(text("SELECT status, progress, verdict, last_seq FROM submissions WHERE id = :i"),
                                {"i": sid}).one()) for ks in world.subs for sid in ks]
        duels = [tuple(s.execute(text("SELECT status, outcome, reason, (SELECT array_position(:u, winner_id)) FROM duels "
                                      "WHERE id = :d"), {"d": d, "u": world.users}).one()) for d in world.duels]
        ratings = [tuple(s.execute(text("SELECT rating, played, won, lost, drawn FROM users WHERE id = :u"),
                                   {"u": u}).one()) for u in world.users]
    return subs, duels, ratings


def without_ids(log):
    return [(kind, data) for _, kind, data in log]


def assert_gapless(users, duels, newest):
    for owner, log in {**users, **duels}.items():
        assert [event_id for event_id, _, _ in log] == list(range(1, newest[owner] + 1)), owner


def test_a_batch_gives_what_one_message_at_a_time_gives(db):
    batched, single = make_worlds(db, 2)
    steps = script()
    applied = db.run(lambda s: verdicts.apply_batch(s, records(batched, steps)))
    for rec in records(single, steps):
        db.run(lambda s, rec=rec: verdicts.apply_batch(s, [rec]))

    fresh = fresh_messages(steps)
    assert applied == len(fresh) < len(steps)  # duplicates, stale seqs and updates after verdicts changed nothing
    users, duels, newest = logs(db, batched)
    assert_gapless(users, duels, newest)
    one_users, one_duels, _ = logs(db, single)
    assert {u: without_ids(log) for u, log in users.items()} == {u: without_ids(log) for u, log in one_users.items()}
    assert {d: without_ids(log) for d, log in duels.items()} == {d: without_ids(log) for d, log in one_duels.items()}
    assert outcome_of(db, batched) == outcome_of(db, single)

    # ...and that is the contract, not just the same mistake twice: one event per fresh message,
    # in the batch's order, the finish right after the verdict that made it certain.
    for d in range(3):
        a, b = f"u{2 * d}", f"u{2 * d + 1}"
        mine = {a: [], b: []}
        duel_log = []
        finished = False
        for dd, k, _, kind, value in fresh:
            if dd != d:
                continue
            owner, other = (b, a) if k == 1 else (a, b)
            sid = f"s{d}.{k}"
            if kind == "update":
                mine[owner].append(("submission_update", {"duel_id": f"d{d}", "submission_id": sid, "status": value}))
                duel_log.append(("submission", value))
                continue
            mine[owner].append(("submission_verdict", {"duel_id": f"d{d}", "submission_id": sid, "verdict": value}))
            mine[other].append(("opponent_verdict", {"duel_id": f"d{d}", "verdict": value}))
            duel_log.append(("submission", "judged"))
            certain = (d == 0 and k == 0) or (d == 2 and k == 0)  # see VERDICTS
            if certain and not finished:
                finished = True
                mine[a].append(("duel_finished", None))
                mine[b].append(("duel_finished", None))
                duel_log.append(("duel_finished", None))
        for user in (a, b):
            got = [(kind, None if kind == "duel_finished" else data) for kind, data in without_ids(users[user])[1:]]
            assert got == mine[user], user  # [0] is duel_started
        assert [(kind, data.get("status")) for kind, data in without_ids(duels[f"d{d}"])[1:]] == duel_log
    subs, results, _ = outcome_of(db, batched)
    assert results == [("finished", "win", "accepted", 1), ("active", None, None, None), ("finished", "win", "accepted", 6)]
    assert [v for _, _, v, _ in subs] == list(VERDICTS.values())
    assert all(seq == UPDATES + 1 and status == "judged" for status, _, _, seq in subs)


def test_a_batch_split_anywhere_gives_the_same_logs(db):
    """Where the poll happens to cut the stream changes nothing (batches of 1..n messages)."""
    whole, cut = make_worlds(db, 2)
    steps = script(seed=7)
    db.run(lambda s: verdicts.apply_batch(s, records(whole, steps)))
    rng = random.Random(7)
    rest = records(cut, steps)
    while rest:
        n = rng.randint(1, 9)
        db.run(lambda s, part=rest[:n]: verdicts.apply_batch(s, part))
        rest = rest[n:]
    users, duels, newest = logs(db, cut)
    assert_gapless(users, duels, newest)
    whole_users, whole_duels, _ = logs(db, whole)
    assert {u: without_ids(log) for u, log in users.items()} == {u: without_ids(log) for u, log in whole_users.items()}
    assert {d: without_ids(log) for d, log in duels.items()} == {d: without_ids(log) for d, log in whole_duels.items()}
    assert outcome_of(db, cut) == outcome_of(db, whole)


def test_unknown_and_malformed_messages_in_a_batch_are_skipped_alone(db, caplog):
    (world,) = make_worlds(db, 1)
    sid = world.subs[1][0]
    batch = [(json.dumps({"submission_id": sid, "seq": 1, "type": "update", "status": "Test #1 passed"}).encode(), "t/0@0"),
             (json.dumps({"submission_id": str(uuid.uuid4()), "seq": 1, "type": "verdict", "verdict": "Accepted"}).encode(),
              "t/0@1"),
             (b"garbage", "t/0@2"),
             (json.dumps({"submission_id": sid, "seq": 2, "type": "verdict", "verdict": "Wrong Answer"}).encode(), "t/0@3")]
    assert db.run(lambda s: verdicts.apply_batch(s, batch)) == 2
    skipped = [r.fields for r in caplog.records if r.getMessage() == "skipping message"]
    assert [f["at"] for f in skipped] == ["t/0@2", "t/0@1"]  # garbage when parsed, the unknown one when applied
    assert "unknown submission" in skipped[1]["problem"]
    users, duels, newest = logs(db, world)
    assert_gapless(users, duels, newest)
    assert [kind for _, kind, _ in users["u2"]] == ["duel_started", "submission_update", "submission_verdict"]
    assert [kind for _, kind, _ in users["u3"]] == ["duel_started", "opponent_verdict"]
    # only unknown submissions: nothing locked, nothing written
    assert db.run(lambda s: verdicts.apply_batch(s, batch[1:3])) == 0


def test_two_consumers_applying_overlapping_batches_at_once_give_each_event_once(db):
    """Both consumers get the whole stream (a rebalance re-delivers), cut into different batches,
    and apply them at the same time: every fresh message gives exactly one event."""
    (world,) = make_worlds(db, 1)
    steps = script(seed=5)
    all_records = records(world, steps)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def consumer(size: int) -> None:
        try:
            start.wait()
            for i in range(0, len(all_records), size):
                db.run(lambda s, part=all_records[i:i + size]: verdicts.apply_batch(s, part))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=consumer, args=(size,)) for size in (5, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    users, duels, newest = logs(db, world)
    assert_gapless(users, duels, newest)
    for d, ks in enumerate(world.subs):
        for k, _ in enumerate(ks):
            sid = f"s{d}.{k}"
            owner = f"u{2 * d + (1 if k == 1 else 0)}"
            mine = [(kind, data) for _, kind, data in users[owner] if data.get("submission_id") == sid]
            statuses = [data["status"] for kind, data in mine if kind == "submission_update"]
            assert len(statuses) == len(set(statuses))  # no progress message applied twice
            assert [kind for kind, _ in mine].count("submission_verdict") == 1
            assert mine[-1][0] == "submission_verdict"  # nothing after the verdict
            assert "after the verdict" not in statuses and not any("stale" in st for st in statuses)
    for d in (0, 2):
        assert [kind for _, kind, _ in duels[f"d{d}"]].count("duel_finished") == 1
        for user in (f"u{2 * d}", f"u{2 * d + 1}"):
            assert [kind for _, kind, _ in users[user]].count("duel_finished") == 1
    subs, results, _ = outcome_of(db, world)
    assert results == [("finished", "win", "accepted", 1), ("active", None, None, None), ("finished", "win", "accepted", 6)]
    assert [v for _, _, v, _ in subs] == list(VERDICTS.values())


def test_an_event_batch_appends_in_order_per_log_and_refuses_an_unknown_owner(db):
    (world,) = make_worlds(db, 1)
    u0, u1 = world.users[0], world.users[1]
    d0 = world.duels[0]
    at = [dt.datetime(2026, 1, 1, 0, 0, i, tzinfo=dt.UTC) for i in range(5)]

    def act(s):
        eventlog.lock_users(s, (u0, u1))
        batch = eventlog.EventBatch()
        for i, uid in enumerate((u0, u1, u0, u0, u1)):
            batch.user(uid, QueueJoined(since=at[i]))
        batch.duel(d0, DuelLogSubmission(submission_id=world.subs[0][0], user_id=u0, language="python",
                                         submitted_at=at[0], state="testing", status="Test #9 passed", verdict=None))
        batch.flush(s)
        assert len(batch) == 0

    db.run(act)
    users, duels, newest = logs(db, world)
    assert_gapless(users, duels, newest)
    assert [data["since"] for _, kind, data in users["u0"] if kind == "queue_joined"] == [
        "2026-01-01T00:00:00Z", "2026-01-01T00:00:02Z", "2026-01-01T00:00:03Z"]
    assert [data["since"] for _, kind, data in users["u1"] if kind == "queue_joined"] == [
        "2026-01-01T00:00:01Z", "2026-01-01T00:00:04Z"]
    assert duels["d0"][-1][2]["status"] == "Test #9 passed"

    def unknown(s):
        batch = eventlog.EventBatch()
        batch.user(u0, QueueJoined(since=at[0]))
        batch.user(10**12, QueueJoined(since=at[0]))
        batch.flush(s)

    with pytest.raises(sqlalchemy.exc.DataError, match="appended 1 of 2 events: unknown log owner"):  # by the statement
        db.run(unknown)
    assert logs(db, world)[0]["u0"] == users["u0"]  # nothing written
    with pytest.raises(ValueError, match="not an event payload"):
        eventlog.EventBatch().user(u0, DuelLogSubmission(submission_id="x", user_id=u0, language="python",
                                                         submitted_at=at[0], state="testing", status="x", verdict=None))
