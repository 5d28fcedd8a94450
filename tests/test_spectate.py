"""Spectating: a duel's public log (GET /api/duels/{id}/updates), GET /api/duels, and what a
spectator or the opponent may see during a duel (never code)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from duely import duels, submissions, verdicts
from duely.clock import utcnow
from duely.eventlog import store
from duely.eventlog.types import DUEL_PAYLOADS, DuelEventType, payload_schema
from tests.fixtures.stack import start_duel

SECRET_CODE = "print('the secret solution 4242')"


def submit(db, user_id: int, duel_id: int, code: str = SECRET_CODE, key: str | None = None) -> uuid.UUID:
    submission_id, _ = db.run(lambda s: submissions.do_submit(
        s, user_id, duel_id, "python", code, key, max_solution_bytes=65536, rate_limit=1000, rate_window_secs=60))
    return submission_id


def message(submission_id, seq: int, kind: str, value: str) -> verdicts.TaskiMessage:
    return verdicts.TaskiMessage(submission_id, seq, kind, value)


def apply(db, msg: verdicts.TaskiMessage) -> bool:
    return db.run(lambda s: verdicts.apply_message(s, msg))


def duel_log(client, viewer, duel_id: int, after: int = 0, **params):
    return client.get(f"/api/duels/{duel_id}/updates", query_string={"last_event_id": after, "timeout": 0, **params},
                      headers=viewer.headers)


def duel_log_rows(db, duel_id: int) -> list[tuple[int, str]]:
    with db.transaction() as s:
        return [tuple(r) for r in s.execute(text("SELECT id, type FROM duel_events WHERE duel_id = :d ORDER BY id"),
                                            {"d": duel_id})]


@pytest.fixture
def players(make_poller):
    return make_poller("alice"), make_poller("bob"), make_poller("carol")  # carol only watches


def test_a_spectator_sees_the_whole_duel_in_order_and_never_code(client, db, players):
    alice, bob, carol = players
    duel_id = start_duel(db, alice.id, bob.id)
    sid = submit(db, alice.id, duel_id)
    apply(db, message(sid, 1, "update", "Test #1 passed"))
    apply(db, message(sid, 2, "verdict", "Accepted"))  # finishes the duel in the same transaction

    resp = duel_log(client, carol, duel_id)
    assert resp.status_code == 200
    assert SECRET_CODE not in resp.get_data(as_text=True) and "solution" not in resp.get_data(as_text=True)
    body = resp.get_json()
    events = body["events"]
    assert [e["id"] for e in events] == [1, 2, 3, 4, 5] and body["last_event_id"] == 5
    assert [e["type"] for e in events] == ["duel_started", "submission", "submission", "submission", "duel_finished"]
    for e in events:  # every payload is exactly its type's definition (no extra field can carry code)
        payload_schema(DUEL_PAYLOADS[DuelEventType(e["type"])])().load(e["data"])
    started = events[0]["data"]
    assert [p["user_id"] for p in started["players"]] == sorted([alice.id, bob.id])
    assert started["duel_id"] == duel_id and started["rated"] is True
    assert [(e["data"]["state"], e["data"]["status"], e["data"]["verdict"]) for e in events[1:4]] == [
        ("pending", "pending", None), ("testing", "Test #1 passed", None), ("judged", "judged", "Accepted")]
    assert {e["data"]["submission_id"] for e in events[1:4]} == {str(sid)}
    assert all(e["data"]["user_id"] == alice.id for e in events[1:4])
    finished = events[4]["data"]
    assert finished["winner_id"] == alice.id and finished["reason"] == "accepted"
    assert set(finished["rating_changes"]) == {str(alice.id), str(bob.id)}
    # Paging: from the middle, limit 2.
    assert [e["id"] for e in duel_log(client, carol, duel_id, after=2, limit=2).get_json()["events"]] == [3, 4]


def test_code_is_never_visible_to_a_spectator_or_the_opponent_during_the_duel(client, db, players):
    alice, bob, carol = players
    duel_id = start_duel(db, alice.id, bob.id)
    submit(db, alice.id, duel_id)
    for viewer in (bob, carol):
        resp = client.get(f"/api/duels/{duel_id}/submissions", headers=viewer.headers)
        assert resp.status_code == 200 and resp.get_json()["submissions"] == []
        assert SECRET_CODE not in duel_log(client, viewer, duel_id).get_data(as_text=True)
    with db.transaction() as s:  # not in any stored duel-log event either
        assert s.execute(text("SELECT count(*) FROM duel_events WHERE data::text LIKE '%secret solution%'")).scalar_one() == 0
    own = client.get(f"/api/duels/{duel_id}/submissions", headers=alice.headers).get_json()["submissions"]
    assert [s["solution"] for s in own] == [SECRET_CODE]


def test_a_rolled_back_change_leaves_no_duel_event(db, players):
    alice, bob, _ = players
    duel_id = start_duel(db, alice.id, bob.id)

    class Abort(Exception):
        pass

    with pytest.raises(Abort), db.transaction() as s:
        submissions.do_submit(s, alice.id, duel_id, "python", SECRET_CODE, None, max_solution_bytes=65536,
                              rate_limit=100, rate_window_secs=60)
        assert s.execute(text("SELECT count(*) FROM duel_events WHERE duel_id = :d"), {"d": duel_id}).scalar_one() == 2
        raise Abort
    assert duel_log_rows(db, duel_id) == [(1, "duel_started")]
    with db.transaction() as s:
        assert s.execute(text("SELECT last_event_id FROM duels WHERE id = :d"), {"d": duel_id}).scalar_one() == 1
    submit(db, alice.id, duel_id)  # the rolled-back id is given out again: no gap
    assert duel_log_rows(db, duel_id) == [(1, "duel_started"), (2, "submission")]


def test_duel_log_ids_stay_gapless_under_concurrent_verdicts_of_both_players(db, players):
    """Both players' submissions judged at once, from two threads, while a spectator reads:
    the reader never skips an id (commit order = id order) and the log ends up 1..N."""
    alice, bob, _ = players
    duel_id = start_duel(db, alice.id, bob.id)
    per_player = 12
    subs = {uid: [submit(db, uid, duel_id, key=f"k{i}") for i in range(per_player)] for uid in (alice.id, bob.id)}
    written_before = 1 + 2 * per_player
    done = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def judge(uid: int) -> None:
        for sid in subs[uid]:
            apply(db, message(sid, 1, "update", "Test #1 passed"))
            apply(db, message(sid, 2, "verdict", "Wrong Answer on test #2"))

    def spectate() -> None:
        after = 0
        while True:
            finished = done.is_set()
            with db.transaction() as s:
                row = s.connection().exec_driver_sql(store.read_sql(store.KeyKind.DUEL, 1),
                                                     store.read_params([duel_id], [after], [1000])).first()
            updates = store.updates_from_row(row, after)
            for e in updates.events:
                if e.id != after + 1:
                    problems.append(f"after {after} came {e.id}")
                after = e.id
                seen.append(e.id)
            if finished:
                return

    reader = threading.Thread(target=spectate)
    reader.start()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(judge, [alice.id, bob.id]))
    done.set()
    reader.join(30)
    total = written_before + 4 * per_player
    assert problems == []
    assert seen == list(range(1, total + 1))
    rows = duel_log_rows(db, duel_id)
    assert [i for i, _ in rows] == list(range(1, total + 1))


def test_a_spectators_long_poll_is_woken_by_a_verdict(client, db, players, updates_listener):
    alice, bob, carol = players
    duel_id = start_duel(db, alice.id, bob.id)
    sid = submit(db, alice.id, duel_id)
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        held = pool.submit(lambda: client.get(f"/api/duels/{duel_id}/updates", query_string={"last_event_id": 2, "timeout": 30},
                                              headers=carol.headers))
        time.sleep(0.3)  # let it start waiting (a wake-up before the wait is not lost anyway)
        apply(db, message(sid, 1, "verdict", "Wrong Answer on test #1"))
        resp = held.result(40)
    assert time.monotonic() - started < 20  # well below the poll's 30 s: it was woken
    events = resp.get_json()["events"]
    assert [(e["id"], e["type"], e["data"]["verdict"]) for e in events] == [(3, "submission", "Wrong Answer on test #1")]


def test_duel_log_errors(client, db, players, make_poller):
    alice, bob, carol = players
    duel_id = start_duel(db, alice.id, bob.id)
    ahead = duel_log(client, carol, duel_id, after=5)
    assert ahead.status_code == 400 and ahead.get_json()["error"]["code"] == "bad_request"
    unknown = duel_log(client, carol, duel_id + 1000)
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "not_found"
    anonymous = client.get(f"/api/duels/{duel_id}/updates")
    assert anonymous.status_code == 401
    # The token is checked by the read itself, and first: a bad token learns nothing about duels or the query.
    stranger = {"Authorization": "Bearer not-a-token"}
    for path in (f"/api/duels/{duel_id}/updates", f"/api/duels/{duel_id + 1000}/updates",
                 f"/api/duels/{duel_id}/updates?limit=0"):
        resp = client.get(path, headers=stranger)
        assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthorized", path
    bad = duel_log(client, carol, duel_id, limit=0)
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "validation_error"
    # 410 once the events after the cursor are pruned (EVENT_RETENTION), with the id to continue from.
    submit(db, alice.id, duel_id)
    with db.transaction() as s:
        s.execute(text("UPDATE duel_events SET created_at = created_at - interval '30 days' WHERE duel_id = :d AND id = 1"),
                  {"d": duel_id})
        pruned = store.prune(s, utcnow() - dt.timedelta(days=7), log=store.DUEL_LOG)
    assert pruned == 1
    gone = duel_log(client, carol, duel_id, after=0)
    assert gone.status_code == 410
    assert gone.get_json()["error"]["code"] == "events_expired" and gone.get_json()["error"]["last_event_id"] == 2
    assert [e["id"] for e in duel_log(client, carol, duel_id, after=1).get_json()["events"]] == [2]


def test_list_duels_by_status_newest_first_with_paging(client, db, make_poller):
    users = [make_poller() for _ in range(8)]
    ids = [start_duel(db, users[2 * i].id, users[2 * i + 1].id) for i in range(4)]
    db.run(lambda s: duels.resign(s, users[0].id, ids[0]))
    viewer = make_poller()

    def page(**params):
        resp = client.get("/api/duels", query_string=params, headers=viewer.headers)
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()

    first = page(status="active", limit=2)
    assert [d["id"] for d in first["duels"]] == [ids[3], ids[2]] and first["next_before_id"] == ids[2]
    assert all(d["status"] == "active" for d in first["duels"])
    second = page(status="active", limit=2, before_id=first["next_before_id"])
    assert [d["id"] for d in second["duels"]] == [ids[1]] and second["next_before_id"] is None
    assert [d["id"] for d in page()["duels"]] == [ids[3], ids[2], ids[1]]  # active is the default
    assert [d["id"] for d in page(status="finished")["duels"]] == [ids[0]]
    bad = client.get("/api/duels", query_string={"status": "paused"}, headers=viewer.headers)
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "validation_error"
    assert client.get("/api/duels").status_code == 401


def test_spectators_hold_no_connection_write_no_presence_and_one_notification_wakes_them_all(client, db, players, runtime,
                                                                                              updates_listener, make_poller):
    alice, bob, _ = players
    duel_id = start_duel(db, alice.id, bob.id)
    sid = submit(db, alice.id, duel_id)
    watchers = [make_poller() for _ in range(20)]
    reads_before = runtime.reader().reads
    with ThreadPoolExecutor(len(watchers)) as pool:
        started = time.monotonic()
        held = [pool.submit(lambda w=w: client.get(f"/api/duels/{duel_id}/updates",
                                                   query_string={"last_event_id": 2, "timeout": 30}, headers=w.headers))
                for w in watchers]
        reader = runtime.reader()

        def all_held() -> bool:  # every poll has had its first read and waits
            return updates_listener.waiter_count() == len(watchers) and reader.reads >= reads_before + len(watchers) \
                and reader.in_use == 0

        deadline = time.monotonic() + 15
        while not all_held() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert updates_listener.waiter_count() == len(watchers)  # one waiter each, on the one listener
        assert reader.in_use == 0  # held without a database connection
        assert updates_listener.waiting_user_ids() == []  # spectators are nobody's presence
        notifications = updates_listener.notifications
        apply(db, message(sid, 1, "verdict", "Accepted"))
        answers = [f.result(40) for f in held]
    assert time.monotonic() - started < 20  # well below the polls' 30 s: woken
    assert all([e["type"] for e in a.get_json()["events"]][:1] == ["submission"] for a in answers)
    assert updates_listener.notifications - notifications <= 4  # the commit's NOTIFYs, not one per spectator
    with db.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM presence WHERE user_id = ANY(:ids)"),
                         {"ids": [w.id for w in watchers]}).scalar_one() == 0
