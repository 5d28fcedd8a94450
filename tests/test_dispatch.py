"""Dispatch to the dev Taski: hand-over, 429 pauses, 5xx/down backoff, 400 → Rejected,
re-sending stuck submissions, and no submission sent by two dispatchers at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from duely import dispatch
from duely.infra import free_port
from duely.taski import TaskiClient
from tests.fixtures.stack import event_types
from tests.test_submissions import submit


@pytest.fixture
def taski(devtaski) -> TaskiClient:
    return TaskiClient(devtaski.url, timeout_secs=5, retry_delays_secs=(0.05, 0.05))


@pytest.fixture
def pending(make_user, duel_between, devtaski):
    """Two players in a duel on dev Taski task 1, alice with one pending submission."""
    alice, bob = make_user("alice"), make_user("bob")
    task = devtaski.get("/api/tasks/1").json()
    duel_id = duel_between(alice, bob, task=task)
    sid = submit(alice, duel_id).get_json()["submission_id"]
    return alice, bob, duel_id, sid


def row(db, sid):
    with db.transaction() as s:
        return s.execute(text("SELECT status, verdict, send_attempts, sent_at, next_attempt_at FROM submissions WHERE id = :i"),
                         {"i": sid}).one()


def test_pending_submission_is_handed_to_taski_once(db, config, taski, devtaski, pending):
    *_, sid = pending
    assert dispatch.run_round(db, config, taski) == 1
    r = row(db, sid)
    assert r.status == "testing" and r.send_attempts == 1 and r.sent_at is not None
    assert devtaski.state(sid)["submission_id"] == sid
    assert dispatch.run_round(db, config, taski) == 0  # testing, not yet silent for JUDGE_TIMEOUT


def test_rate_limit_pauses_every_call_then_resumes(db, config, taski, devtaski, pending):
    *_, sid = pending
    devtaski.set_faults({"rate_limit": {"count": 1, "retry_after": 1}})
    assert dispatch.run_round(db, config, taski) == 0
    assert 0 < taski.paused_for() <= 1
    assert dispatch.run_round(db, config, taski) == 0  # still paused: no call made at all
    with pytest.raises(Exception, match="pause"):
        taski.pick_task(1500)                          # every call of the process waits, not just dispatch
    r = row(db, sid)
    assert r.status == "pending" and r.send_attempts == 0  # a 429 is not a failed attempt
    time.sleep(taski.paused_for() + 0.05)
    assert dispatch.run_round(db, config, taski) == 1
    assert row(db, sid).status == "testing"


def test_server_errors_back_off_then_succeed(db, config, taski, devtaski, pending):
    *_, sid = pending
    devtaski.set_faults({"server_error": {"count": 3}})  # more than the client's in-call retries
    assert dispatch.run_round(db, config, taski) == 0
    r = row(db, sid)
    assert r.status == "pending" and r.send_attempts == 1 and r.next_attempt_at is not None
    assert dispatch.run_round(db, config, taski) == 0  # backing off: not due yet
    with db.transaction() as s:
        s.execute(text("UPDATE submissions SET next_attempt_at = now() WHERE id = :i"), {"i": sid})
    assert dispatch.run_round(db, config, taski) == 1
    assert row(db, sid).status == "testing"


def test_taski_down_loses_nothing(db, config, pending):
    *_, sid = pending
    dead = TaskiClient(f"http://127.0.0.1:{free_port()}", timeout_secs=1, retry_delays_secs=(0.05,))
    assert dispatch.run_round(db, config, dead) == 0
    r = row(db, sid)
    assert r.status == "pending" and r.next_attempt_at is not None


def test_taski_400_gives_rejected_verdict_to_both_logs(db, config, taski, make_user, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob, task={"id": 987654, "title": "gone", "statement": "no such task in Taski"})
    sid = submit(alice, duel_id).get_json()["submission_id"]
    assert dispatch.run_round(db, config, taski) == 1
    r = row(db, sid)
    assert r.status == "judged" and r.verdict.startswith("Rejected: ")
    assert event_types(db, alice.id)[-1] == "submission_verdict"
    assert event_types(db, bob.id)[-1] == "opponent_verdict"


def test_resend_selection(db, config, pending, make_user, duel_between):
    """What is stuck (testing and silent past JUDGE_TIMEOUT) is due; what is not, is not."""
    alice, bob, duel_id, fresh_pending = pending
    ids = {name: submit(alice, duel_id, client_temp_id=name).get_json()["submission_id"]
           for name in ("stuck", "recent", "talking", "judged", "backing_off", "stuck_backing_off")}
    with db.transaction() as s:
        def set_(name, sql):
            s.execute(text(f"UPDATE submissions SET {sql} WHERE id = :i"), {"i": ids[name]})
        set_("stuck", "status = 'testing', sent_at = now() - interval '200 seconds'")
        set_("recent", "status = 'testing', sent_at = now() - interval '5 seconds'")
        set_("talking", "status = 'testing', sent_at = now() - interval '500 seconds', last_message_at = now()")
        set_("judged", "status = 'judged', verdict = 'Accepted', sent_at = now() - interval '500 seconds'")
        set_("backing_off", "next_attempt_at = now() + interval '30 seconds'")
        set_("stuck_backing_off", "status = 'testing', sent_at = now() - interval '500 seconds', "
                                  "next_attempt_at = now() + interval '30 seconds'")
        due = {str(i) for i in dispatch.due_submission_ids(s, judge_timeout_secs=120)}
    assert due == {fresh_pending, ids["stuck"]}


def test_stuck_submission_is_resent_and_logged(db, config, taski, devtaski, pending, caplog):
    *_, sid = pending
    dispatch.run_round(db, config, taski)
    with db.transaction() as s:
        s.execute(text("UPDATE submissions SET sent_at = now() - interval '300 seconds', last_message_at = NULL WHERE id = :i"),
                  {"i": sid})
    caplog.set_level("INFO")
    assert dispatch.run_round(db, config, taski) == 1
    assert row(db, sid).send_attempts == 2
    resent = [r for r in caplog.records if r.getMessage() == "re-sent a stuck submission"]
    assert resent and resent[0].fields["submission_id"] and resent[0].fields["waited_secs"] >= 299


def test_two_dispatchers_never_send_one_submission_twice(db, config, devtaski, make_user, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob, task=devtaski.get("/api/tasks/1").json())
    for i in range(8):
        submit(alice if i % 2 else bob, duel_id, client_temp_id=f"s{i}")
    devtaski.set_faults({"slow": {"delay_ms": 150}})  # sends overlap in time
    barrier = threading.Barrier(3)

    def dispatcher():
        barrier.wait()
        dispatch.run_round(db, config, TaskiClient(devtaski.url, timeout_secs=5))

    threads = [threading.Thread(target=dispatcher) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.transaction() as s:
        attempts = s.execute(text("SELECT send_attempts FROM submissions WHERE duel_id = :d"), {"d": duel_id}).scalars().all()
    assert sorted(attempts) == [1] * 8


def test_a_paused_process_resends_nothing_until_the_pause_ends(db, config, taski, devtaski, pending):
    *_, sid = pending
    dispatch.run_round(db, config, taski)
    with db.transaction() as s:
        s.execute(text("UPDATE submissions SET sent_at = now() - interval '300 seconds' WHERE id = :i"), {"i": sid})
        assert [str(i) for i in dispatch.due_submission_ids(s, config.judge_timeout)] == [sid]  # stuck: due
    taski.pause(0.5)  # as after a 429 on any call of this process
    assert dispatch.run_round(db, config, taski) == 0
    assert row(db, sid).send_attempts == 1
    time.sleep(0.6)
    assert dispatch.run_round(db, config, taski) == 1
    assert row(db, sid).send_attempts == 2


def _wait(predicate, within_secs: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + within_secs
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not met within {within_secs}s"
        time.sleep(0.02)


def _dispatch_loop(db, config, taski, sweep_secs: float, senders=None, min_gap_secs: float = 0.0):
    from duely.wakeup import WokenLoop

    loop = WokenLoop(config.database_url, dispatch.DISPATCH_CHANNEL, lambda: dispatch.run_round(db, config, taski, senders),
                     sweep_secs, "dispatch-test", min_gap_secs=min_gap_secs).start()
    _wait(lambda: loop.runs >= 1, what="the loop's first run")
    time.sleep(0.3)  # that first run is over: from now on only a notification can start one
    return loop


def test_a_submit_wakes_the_dispatcher(db, config, taski, devtaski, make_user, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob, task=devtaski.get("/api/tasks/1").json())
    loop = _dispatch_loop(db, config, taski, sweep_secs=3600)  # the sweep never comes in this test
    try:
        sid = submit(alice, duel_id).get_json()["submission_id"]
        _wait(lambda: row(db, sid).status != "pending", what="the submission sent")
        assert loop.woken_runs >= 1
        assert row(db, sid).send_attempts == 1 and devtaski.state(sid)["judgings"] <= 1
    finally:
        loop.stop()


def test_woken_parallel_dispatchers_never_send_one_submission_twice(db, config, devtaski, make_user, duel_between):
    players = [make_user(f"player{i}") for i in range(6)]
    duels = [duel_between(players[i], players[i + 1], task=devtaski.get("/api/tasks/1").json()) for i in (0, 2, 4)]
    devtaski.set_faults({"slow": {"delay_ms": 50}})  # sends overlap in time, within a process and across
    pools = [ThreadPoolExecutor(dispatch.SENDS_IN_FLIGHT) for _ in range(2)]  # parallel sends within each process too
    loops = [_dispatch_loop(db, config, TaskiClient(devtaski.url, timeout_secs=5), sweep_secs=0.2, senders=pool)
             for pool in pools]
    try:
        sids = []
        for n in range(4):
            for i, duel_id in enumerate(duels):
                for player in (players[2 * i], players[2 * i + 1]):
                    sids.append(submit(player, duel_id, client_temp_id=f"{n}").get_json()["submission_id"])

        def all_sent():
            with db.transaction() as s:
                return s.execute(text("SELECT count(*) FROM submissions WHERE status = 'pending'")).scalar_one() == 0

        _wait(all_sent, within_secs=60, what="every submission sent")
    finally:
        for loop in loops:
            loop.stop()
        for pool in pools:
            pool.shutdown()
    with db.transaction() as s:
        attempts = s.execute(text("SELECT send_attempts FROM submissions")).scalars().all()
    assert sorted(attempts) == [1] * len(sids) == [1] * 24
    assert sum(loop.runs for loop in loops) > 2


def test_a_burst_of_submits_is_sent_in_a_few_rounds_each_once_and_a_lone_one_waits_for_no_gap(
        db, config, devtaski, make_user, duel_between):
    """The dispatch loop as the scheduler runs it (a minimum gap between woken rounds, here a long
    one): a lone submission after a quiet spell starts a round at once; a burst of 20, each
    committed on its own with its NOTIFY, is claimed by a few rounds instead of one per submit,
    and every submission is handed to Taski exactly once."""
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob, task=devtaski.get("/api/tasks/1").json())
    gap = 1.0
    pool = ThreadPoolExecutor(dispatch.SENDS_IN_FLIGHT)
    loop = _dispatch_loop(db, config, TaskiClient(devtaski.url, timeout_secs=5), sweep_secs=3600, senders=pool,
                          min_gap_secs=gap)
    try:
        time.sleep(gap)  # a quiet spell longer than the gap since the loop's first run
        lone = submit(alice, duel_id).get_json()["submission_id"]
        _wait(lambda: row(db, lone).status != "pending", what="the lone submission sent")
        assert loop.woken_runs == 1 and loop.gap_waits == 0  # its round did not wait for the gap

        def one_submit(n: int, session) -> None:  # what the submit writes, past its per-user rate limit
            session.execute(text(
                "INSERT INTO submissions (id, duel_id, user_id, language, solution, submitted_at)"
                " VALUES (gen_random_uuid(), :d, :u, 'python', 'print(1)', clock_timestamp())"),
                {"d": duel_id, "u": (alice.id, bob.id)[n % 2]})
            dispatch.wake_dispatcher(session)

        for n in range(20):
            db.run(lambda session, n=n: one_submit(n, session))

        def all_sent():
            with db.transaction() as s:
                return s.execute(text("SELECT count(*) FROM submissions WHERE status = 'pending'")).scalar_one() == 0

        _wait(all_sent, what="the burst sent")
        burst_runs = loop.woken_runs - 1
        assert 1 <= burst_runs < 20 / 2 and loop.gap_waits >= 1, (burst_runs, loop.gap_waits)
    finally:
        loop.stop()
        pool.shutdown()
    with db.transaction() as s:
        sids = [str(i) for i in s.execute(text("SELECT id FROM submissions WHERE send_attempts = 1")).scalars()]
        assert s.execute(text("SELECT count(*) FROM submissions")).scalar_one() == len(sids) == 21
    # Taski queues what it was handed: on a loaded box some are not started yet when all are sent
    _wait(lambda: all(devtaski.state(sid)["verdict"] is not None for sid in sids), within_secs=60,
          what="every submission judged")
    assert all(devtaski.state(sid)["judgings"] == 1 for sid in sids)


def _pending_rows(db, duel_id: int, user_ids: tuple[int, int], count: int) -> list[str]:
    """`count` pending submissions written straight into the table (past the per-user rate limit)."""
    with db.transaction() as s:
        return [str(i) for i in s.execute(text(
            "INSERT INTO submissions (id, duel_id, user_id, language, solution, submitted_at) "
            "SELECT gen_random_uuid(), :d, CASE WHEN g % 2 = 0 THEN :a ELSE :b END, 'python', 'print(1)', "
            "clock_timestamp() FROM generate_series(1, :n) g RETURNING id"
        ), {"d": duel_id, "a": user_ids[0], "b": user_ids[1], "n": count}).scalars()]


def test_dispatchers_claiming_batches_never_send_one_submission_twice(db, config, devtaski, make_user, duel_between):
    """More than two claim batches of due rows, three dispatchers each sending in parallel: every
    submission is handed over exactly once (a claimed row is skipped by the others, a sent one is
    no longer due), and the rounds together report each once."""
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob, task=devtaski.get("/api/tasks/1").json())
    sids = _pending_rows(db, duel_id, (alice.id, bob.id), 2 * dispatch.CLAIM_SIZE + 7)
    devtaski.set_faults({"slow": {"delay_ms": 20}})  # sends overlap in time
    pools = [ThreadPoolExecutor(dispatch.SENDS_IN_FLIGHT) for _ in range(3)]
    barrier = threading.Barrier(3)
    handed: list[int] = []

    def dispatcher(pool):
        barrier.wait()
        handed.append(dispatch.run_round(db, config, TaskiClient(devtaski.url, timeout_secs=5), pool))

    threads = [threading.Thread(target=dispatcher, args=(pool,)) for pool in pools]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for pool in pools:
            pool.shutdown()
    with db.transaction() as s:
        rows = s.execute(text("SELECT status, send_attempts FROM submissions WHERE id = ANY(CAST(:ids AS uuid[]))"),
                         {"ids": sids}).all()
    assert len(rows) == len(sids)
    assert all(r.status == "testing" and r.send_attempts == 1 for r in rows)
    assert sum(handed) == len(sids)


def test_a_429_within_a_batch_leaves_the_unsent_rows_untouched(db, config, taski, devtaski, make_user, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob, task=devtaski.get("/api/tasks/1").json())
    sids = _pending_rows(db, duel_id, (alice.id, bob.id), 5)
    devtaski.set_faults({"rate_limit": {"count": 1, "retry_after": 1}})
    assert dispatch.run_round(db, config, taski) == 0  # one by one: the first call is refused, the rest not tried
    assert all(row(db, sid).status == "pending" and row(db, sid).send_attempts == 0 for sid in sids)
    time.sleep(taski.paused_for() + 0.05)
    assert dispatch.run_round(db, config, taski) == 5
    assert all(row(db, sid).status == "testing" and row(db, sid).send_attempts == 1 for sid in sids)
