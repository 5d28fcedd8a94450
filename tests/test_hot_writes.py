"""The hot writes' one-statement paths (duely/matchmaking/queue.py `join_alone`, `leave_alone`,
duely/submissions.py `submit_as`):
they do the common case exactly as the full path does, change nothing in every other case (the
full path then decides), and never act on a snapshot older than a lock they waited for."""

from __future__ import annotations

import datetime as dt
import threading
import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from duely import auth, challenges, duels, errors, eventlog, submissions
from duely.clock import isoformat
from duely.db import driver_execute, psycopg_url
from duely.dispatch import DISPATCH_CHANNEL
from duely.eventlog.listener import NOTIFY_CHANNEL, duel_key, own_key
from duely.eventlog.store import isoformat_sql
from duely.eventlog.types import DuelLogSubmission, SubmissionCreated
from duely.matchmaking import queue
from tests.conftest import TEST_SECRET_KEY
from tests.fixtures.stack import SAMPLE_TASK, event_types, last_event_id, start_duel


def token_hash(user) -> str:
    return auth.hash_token(TEST_SECRET_KEY, user.token)


def state(db, user_id: int) -> dict:
    """Everything a join or leave may change for a user."""
    with db.transaction() as s:
        return dict(s.execute(text(
            "SELECT (SELECT joined_at FROM queue_entries WHERE user_id = :u) AS joined_at,"
            " (SELECT last_seen_at FROM presence WHERE user_id = :u) AS seen,"
            " (SELECT last_event_id FROM users WHERE id = :u) AS last_event_id,"
            " (SELECT count(*) FROM events WHERE user_id = :u) AS events,"
            " (SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM challenges) AS challenges"),
            {"u": user_id}).one()._mapping)


def wait_until_blocked_on_a_lock(db, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with db.transaction() as s:
            waiting = s.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )).scalar_one()
        if waiting >= count:
            return
        time.sleep(0.01)
    raise AssertionError("nobody waited for the lock")


def in_thread(fn):
    """Run `fn()` in a thread; returns a function that joins it and gives its result (or raises)."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except Exception as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()

    def result():
        thread.join(15)
        assert not thread.is_alive()
        if "error" in out:
            raise out["error"]
        return out["value"]

    return result


def test_isoformat_sql_renders_times_as_the_api_does(db):
    times = [dt.datetime(2026, 12, 3, 15, 9, 11, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=dt.UTC),
             dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=5)))]
    with db.transaction() as s:
        # isoformat_sql is written for the driver's parameter style (`%%`): run it as the driver does
        cursor = s.connection().connection.driver_connection.execute(
            f"SELECT {isoformat_sql('t')} FROM unnest(CAST(%(ts)s AS timestamptz[])) WITH ORDINALITY AS x(t, i) ORDER BY i",
            {"ts": times})
        assert [r[0] for r in cursor.fetchall()] == [isoformat(t) for t in times]


def test_a_plain_join_is_one_statement_with_the_event_presence_and_both_wake_ups(make_user, db):
    alice = make_user("alice")
    with psycopg.connect(psycopg_url(db.url), autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        listener.execute(f"LISTEN {queue.MATCHMAKING_CHANNEL}")
        user_id, since = db.run_alone(lambda s: queue.join_alone(s, token_hash(alice)))
        heard = sorted((n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=2))
    assert user_id == alice.id and since is not None
    assert heard == sorted([(NOTIFY_CHANNEL, own_key(alice.id)), (queue.MATCHMAKING_CHANNEL, "")])
    after = state(db, alice.id)
    assert after["joined_at"] == since and after["seen"] is not None
    with db.transaction() as s:
        row = s.execute(text("SELECT id, type, data FROM events WHERE user_id = :u"), {"u": alice.id}).one()
    assert (row.id, row.type, row.data) == (after["last_event_id"], "queue_joined", {"since": isoformat(since)})
    assert alice.get("/api/queue").get_json()["since"] == isoformat(since)
    # Again: already waiting, so the same `since`, no event, only the presence touched.
    with db.transaction() as s:
        s.execute(text("UPDATE presence SET last_seen_at = now() - interval '1 hour' WHERE user_id = :u"), {"u": alice.id})
    assert db.run_alone(lambda s: queue.join_alone(s, token_hash(alice))) == (alice.id, since)
    again = state(db, alice.id)
    assert again["seen"] > after["seen"] and {**again, "seen": None} == {**after, "seen": None}
    second = alice.post("/api/queue")
    assert second.status_code == 202 and second.get_json()["since"] == isoformat(since)
    assert event_types(db, alice.id) == ["queue_joined"]


def test_the_join_statement_changes_nothing_in_a_duel_and_the_api_answers_409(make_user, db, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    duel_between(alice, bob)
    before = state(db, alice.id)
    assert db.run_alone(lambda s: queue.join_alone(s, token_hash(alice))) == (alice.id, None)
    assert state(db, alice.id) == before
    resp = alice.post("/api/queue")
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "already_in_duel"
    assert state(db, alice.id) == before


@pytest.mark.parametrize("offered_by", ["joiner", "other"])
@pytest.mark.parametrize("due", [False, True], ids=["pending", "past_its_expiry"])
def test_a_join_with_a_rematch_offer_either_way_still_ends_it_in_both_logs(make_user, db, config, offered_by, due):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = start_duel(db, alice.id, bob.id)
    assert bob.post(f"/api/duels/{duel_id}/resign").status_code == 202
    offerer = alice if offered_by == "joiner" else bob
    offer = db.run(lambda s: challenges.offer_rematch(s, config, offerer.id, duel_id)).challenge
    if due:  # its time is up but the expiry job has not run: still pending, the join ends it
        with db.transaction() as s:
            s.execute(text("UPDATE challenges SET expires_at = now() - interval '1 second' WHERE id = :i"), {"i": offer.id})
    before = {u.id: last_event_id(db, u.id) for u in (alice, bob)}
    untouched = state(db, alice.id)
    assert db.run_alone(lambda s: queue.join_alone(s, token_hash(alice))) == (alice.id, None)
    assert state(db, alice.id) == untouched
    assert alice.post("/api/queue").status_code == 202
    assert event_types(db, alice.id, before[alice.id]) == ["challenge_expired", "queue_joined"]
    assert event_types(db, bob.id, before[bob.id]) == ["challenge_expired"]
    with db.transaction() as s:
        assert s.execute(text("SELECT status FROM challenges WHERE id = :i"), {"i": offer.id}).scalar_one() == "expired"


def test_an_expired_or_revoked_token_changes_nothing(make_user, client, db):
    alice, bob = make_user("alice"), make_user("bob")
    assert bob.post("/api/queue").status_code == 202
    with db.transaction() as s:
        s.execute(text("UPDATE auth_tokens SET expires_at = now() - interval '1 second' WHERE user_id = :u"), {"u": alice.id})
        s.execute(text("UPDATE auth_tokens SET revoked_at = now() WHERE user_id = :u"), {"u": bob.id})
    for user in (alice, bob):
        before = state(db, user.id)
        for method in ("POST", "DELETE"):
            resp = client.open("/api/queue", method=method, headers=user.headers)
            assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthorized"
        assert state(db, user.id) == before


def test_a_join_that_waited_for_a_duel_start_does_not_queue_a_player(make_user, db):
    """The statement's snapshot predates the duel; the lock it waited for shows the change."""
    alice, bob = make_user("alice"), make_user("bob")
    with db.transaction() as s:
        eventlog.lock_users(s, [alice.id, bob.id])
        result = in_thread(lambda: db.run_alone(lambda x: queue.join_alone(x, token_hash(alice))))
        wait_until_blocked_on_a_lock(db)
        duel_id = duels.create_duel(s, (alice.id, bob.id), SAMPLE_TASK, 1800)
    assert result() == (alice.id, None)
    before = state(db, alice.id)
    assert before["joined_at"] is None and event_types(db, alice.id) == ["duel_started"]
    resp = alice.post("/api/queue")
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "already_in_duel"
    assert alice.get("/api/queue").get_json()["duel_id"] == duel_id
    assert state(db, alice.id) == before


def test_concurrent_joins_of_one_user_give_one_entry_and_one_event(make_user, app, db):
    alice = make_user("alice")
    # A held lock lines them all up behind it, each with its snapshot already taken.
    with db.transaction() as s:
        eventlog.lock_users(s, [alice.id])
        results = [in_thread(lambda: app.test_client().post("/api/queue", headers=alice.headers)) for _ in range(4)]
        wait_until_blocked_on_a_lock(db, 4)
    answers = [r() for r in results]
    assert [a.status_code for a in answers] == [202] * 4
    assert len({a.get_json()["since"] for a in answers}) == 1
    assert event_types(db, alice.id) == ["queue_joined"]
    with db.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM queue_entries WHERE user_id = :u"), {"u": alice.id}).scalar_one() == 1


def test_leave_when_not_waiting_is_a_no_op_without_an_event(make_user, db):
    alice = make_user("alice")
    before = state(db, alice.id)
    assert db.run_alone(lambda s: queue.leave_alone(s, token_hash(alice))) == (alice.id, False)
    assert alice.delete("/api/queue").status_code == 204
    assert state(db, alice.id) == before
    assert alice.post("/api/queue").status_code == 202
    assert db.run_alone(lambda s: queue.leave_alone(s, token_hash(alice))) == (alice.id, True)
    with db.transaction() as s:
        rows = s.execute(text("SELECT type, data FROM events WHERE user_id = :u ORDER BY id"), {"u": alice.id}).all()
    assert [tuple(r) for r in rows][1:] == [("queue_left", {"reason": "left"})]
    assert state(db, alice.id)["joined_at"] is None


def test_a_leave_that_waited_for_a_join_takes_the_player_out(make_user, app, db):
    """The join committed after the leave's snapshot: the leave must not answer 'not waiting'."""
    alice = make_user("alice")
    with db.transaction() as s:
        eventlog.lock_users(s, [alice.id])
        result = in_thread(lambda: db.run_alone(lambda x: queue.leave_alone(x, token_hash(alice))))
        wait_until_blocked_on_a_lock(db)
        queue.join(s, alice.id)  # the full path, holding the lock
    assert result() == (alice.id, None)  # changed since its snapshot: the full path decides
    assert state(db, alice.id)["joined_at"] is not None
    with db.transaction() as s:
        eventlog.lock_users(s, [alice.id])
        answer = in_thread(lambda: app.test_client().delete("/api/queue", headers=alice.headers))
        wait_until_blocked_on_a_lock(db)
        queue.leave(s, alice.id)
        queue.join(s, alice.id)
    assert answer().status_code == 204
    assert event_types(db, alice.id) == ["queue_joined", "queue_left", "queue_joined", "queue_left"]
    assert state(db, alice.id)["joined_at"] is None


# -- the submit: one statement ------------------------------------------------------------------

POLICY = submissions.SubmitPolicy(max_solution_bytes=65536, rate_limit=100, rate_window_secs=60)


def test_a_submit_is_one_statement_with_both_events_as_the_payloads_write_them_and_three_wake_ups(
        make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    with psycopg.connect(psycopg_url(db.url), autocommit=True) as listener:
        for channel in (NOTIFY_CHANNEL, DISPATCH_CHANNEL):
            listener.execute(f"LISTEN {channel}")
        user_id, submission_id, created = db.run_alone(lambda s: submissions.submit_as(
            s, token_hash(alice), duel_id, "python", "print(1)", "ctid-1", POLICY))
        heard = sorted((n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=3))
    assert (user_id, created) == (alice.id, True)
    assert heard == sorted([(NOTIFY_CHANNEL, own_key(alice.id)), (NOTIFY_CHANNEL, duel_key(duel_id)), (DISPATCH_CHANNEL, "")])
    with db.transaction() as s:
        submitted_at = s.execute(text("SELECT submitted_at FROM submissions WHERE id = :i"),
                                 {"i": submission_id}).scalar_one()
        mine = s.execute(text("SELECT type, data FROM events WHERE user_id = :u ORDER BY id DESC LIMIT 1"),
                         {"u": alice.id}).one()
        public = s.execute(text("SELECT type, data FROM duel_events WHERE duel_id = :d ORDER BY id DESC LIMIT 1"),
                           {"d": duel_id}).one()
    assert tuple(mine) == ("submission_created", SubmissionCreated(
        duel_id=duel_id, submission_id=str(submission_id), client_temp_id="ctid-1", language="python",
        submitted_at=submitted_at).data())
    assert tuple(public) == ("submission", DuelLogSubmission(
        submission_id=str(submission_id), user_id=alice.id, language="python", submitted_at=submitted_at,
        state="pending", status="pending", verdict=None).data())


def test_a_submit_that_waited_for_a_duplicate_answers_its_id_and_adds_nothing(make_user, duel_between, db):
    """The duplicate committed after the statement's snapshot: the insert meets it, and the answer
    is the first submission's id, with one submission and one event in all."""
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    with db.transaction() as s:
        first, _ = submissions.do_submit(s, alice.id, duel_id, "python", "print(1)", "same", POLICY)  # holds the duel row
        result = in_thread(lambda: db.run_alone(lambda x: submissions.submit_as(
            x, token_hash(alice), duel_id, "python", "print(2)", "same", POLICY)))
        wait_until_blocked_on_a_lock(db)
    assert result() == (alice.id, first, False)
    assert event_types(db, alice.id).count("submission_created") == 1
    with db.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM submissions")).scalar_one() == 1
        assert s.execute(text("SELECT count(*) FROM duel_events WHERE type = 'submission'")).scalar_one() == 1


def test_a_refused_submit_changes_nothing_and_wakes_nobody(make_user, duel_between, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    duel_id = duel_between(alice, bob)
    tight = submissions.SubmitPolicy(max_solution_bytes=10, rate_limit=1, rate_window_secs=60)
    assert db.run_alone(lambda s: submissions.submit_as(s, token_hash(alice), duel_id, "python", "print(1)", None,
                                                        tight))[2]
    before = [state(db, u.id) for u in (alice, bob, carol)]
    refusals = [(alice, "python", "print(2)", errors.RateLimited), (alice, "cobol", "x", errors.ValidationFailed),
                (alice, "python", "print(123456789)", errors.PayloadTooLarge), (carol, "python", "x", errors.Forbidden)]
    with psycopg.connect(psycopg_url(db.url), autocommit=True) as listener:
        for channel in (NOTIFY_CHANNEL, DISPATCH_CHANNEL):
            listener.execute(f"LISTEN {channel}")
        for user, language, solution, refusal in refusals:
            with pytest.raises(refusal):
                db.run_alone(lambda s, u=user, la=language, so=solution: submissions.submit_as(
                    s, token_hash(u), duel_id, la, so, None, tight))
        assert list(listener.notifies(timeout=0.3)) == []
    assert [state(db, u.id) for u in (alice, bob, carol)] == before
    with db.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM submissions")).scalar_one() == 1


def test_lock_with_rematch_partners_locks_the_other_players_of_pending_offers_in_one_statement(make_user, db, config):
    alice, bob, carol, dave = (make_user(n) for n in ("alice", "bob", "carol", "dave"))
    duel_id = start_duel(db, alice.id, bob.id)
    assert bob.post(f"/api/duels/{duel_id}/resign").status_code == 202
    db.run(lambda s: challenges.offer_rematch(s, config, alice.id, duel_id))  # to bob
    other = start_duel(db, carol.id, dave.id)
    assert dave.post(f"/api/duels/{other}/resign").status_code == 202
    db.run(lambda s: challenges.offer_rematch(s, config, carol.id, other))  # to dave: not bob's

    def locked(ids: list[int]) -> list[int]:
        with db.transaction() as s:
            return [uid for uid in ids if s.execute(text(
                "SELECT id FROM users WHERE id = :u FOR UPDATE SKIP LOCKED"), {"u": uid}).scalar() is None]

    with db.transaction() as s:
        challenges.lock_with_rematch_partners(s, [bob.id])
        assert locked([alice.id, bob.id, carol.id, dave.id]) == [alice.id, bob.id]
    with db.transaction() as s:
        challenges.lock_with_rematch_partners(s, [alice.id, dave.id])
        assert locked([alice.id, bob.id, carol.id, dave.id]) == [alice.id, bob.id, carol.id, dave.id]


def test_run_alone_retries_a_statement_aborted_by_a_deadlock(make_user, db):
    alice, bob = make_user("alice"), make_user("bob")
    calls: list[int] = []

    def lock_both(connection) -> list[int]:
        calls.append(1)
        return [r[0] for r in driver_execute(connection, "SELECT id FROM users WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE",
                                             {"ids": [alice.id, bob.id]}).fetchall()]

    with psycopg.connect(psycopg_url(db.url)) as other:
        other.execute("SET deadlock_timeout = '30s'")  # so the statement's backend is the one to find the deadlock
        other.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (bob.id,))
        result = in_thread(lambda: db.run_alone(lock_both))
        wait_until_blocked_on_a_lock(db)  # it holds alice and waits for bob
        other.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (alice.id,))  # waits until it is aborted
        other.commit()
    assert result() == [alice.id, bob.id]
    assert len(calls) == 2


def test_run_alone_raises_an_error_that_is_no_conflict_at_once(db):
    calls: list[int] = []

    def fail(connection) -> None:
        calls.append(1)
        driver_execute(connection, "SELECT 1 / 0")

    with pytest.raises(DBAPIError):
        db.run_alone(fail)
    assert calls == [1]
