"""Resigning (`duels.resign_as`, four statements): who may, what it writes, what it answers, and
how it meets a concurrent resignation or verdict (one winner, one `duel_finished` per log)."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy
from sqlalchemy import text

from duely import auth, duels, errors
from duely.db import driver_execute, psycopg_url
from tests.conftest import TEST_SECRET_KEY
from tests.test_hot_writes import in_thread, wait_until_blocked_on_a_lock
from tests.test_submissions import submit
from tests.test_verdicts import apply, msg


def everything(db, duel_id: int) -> dict:
    """Every row a resignation may change: the duel, its players, the users, all events."""
    with db.transaction() as s:
        def rows(sql: str) -> list:
            return [tuple(r) for r in s.execute(text(sql), {"d": duel_id})]

        return {
            "duel": rows("SELECT * FROM duels WHERE id = :d"),
            "players": rows("SELECT * FROM duel_players WHERE duel_id = :d ORDER BY user_id"),
            "users": rows("SELECT * FROM users ORDER BY id"),
            "events": rows("SELECT user_id, id, type, data FROM events ORDER BY user_id, id"),
            "duel_events": rows("SELECT duel_id, id, type, data FROM duel_events ORDER BY duel_id, id"),
        }


def finished_events(db, duel_id: int) -> dict:
    """The `duel_finished` events of the duel, per log ("d" for the duel's public log)."""
    with db.transaction() as s:
        mine = s.execute(text("SELECT user_id, data FROM events WHERE type = 'duel_finished'")).all()
        public = s.execute(text("SELECT data FROM duel_events WHERE duel_id = :d AND type = 'duel_finished'"),
                           {"d": duel_id}).scalars().all()
    out: dict = {}
    for user_id, data in mine:
        out.setdefault(user_id, []).append(data)
    out["d"] = list(public)
    return out


def records(db, *users) -> dict:
    with db.transaction() as s:
        return {u.id: tuple(s.execute(text("SELECT rating, played, won, lost, drawn FROM users WHERE id = :u"),
                                      {"u": u.id}).one()) for u in users}


def test_the_answer_is_the_duel_as_read_afterwards_and_every_log_has_one_duel_finished(make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    submit(alice, duel_id)  # still being judged: the resignation does not wait for it
    resp = alice.post(f"/api/duels/{duel_id}/resign")
    assert resp.status_code == 202
    answer = resp.get_json()
    assert answer == bob.get(f"/api/duels/{duel_id}").get_json()
    assert answer["status"] == "finished" and answer["finished_at"] is not None
    assert answer["result"] == {"outcome": "win", "winner_id": bob.id, "reason": "resign"}
    changes = answer["rating_changes"]
    assert changes[str(bob.id)] == answer["stakes"][str(bob.id)]["win"] > 0
    assert changes[str(alice.id)] == answer["stakes"][str(alice.id)]["loss"] < 0
    assert records(db, alice, bob) == {alice.id: (1500 + changes[str(alice.id)], 1, 0, 1, 0),
                                       bob.id: (1500 + changes[str(bob.id)], 1, 1, 0, 0)}
    expected = {"duel_id": duel_id, "outcome": "win", "winner_id": bob.id, "reason": "resign", "rating_changes": changes}
    assert finished_events(db, duel_id) == {alice.id: [expected], bob.id: [expected], "d": [expected]}
    assert alice.post("/api/queue").status_code == 202  # free to play again


def test_an_unrated_duel_changes_no_rating_and_no_record(make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    with db.transaction() as s:  # the fixture starts rated duels: make this one casual, as create_duel does
        s.execute(text("UPDATE duels SET rated = false WHERE id = :d"), {"d": duel_id})
        s.execute(text("UPDATE duel_players SET stakes = NULL, outcomes = NULL WHERE duel_id = :d"), {"d": duel_id})
    answer = bob.post(f"/api/duels/{duel_id}/resign").get_json()
    assert answer["result"] == {"outcome": "win", "winner_id": alice.id, "reason": "resign"}
    assert answer["rating_changes"] == {str(alice.id): 0, str(bob.id): 0} and answer["stakes"] == {}
    assert answer == alice.get(f"/api/duels/{duel_id}").get_json()
    assert records(db, alice, bob) == {alice.id: (1500, 0, 0, 0, 0), bob.id: (1500, 0, 0, 0, 0)}


def test_who_may_not_resign_changes_nothing_in_the_contracts_order_of_errors(make_user, duel_between, client, db):
    alice, bob, eve = make_user("alice"), make_user("bob"), make_user("eve")
    duel_id = duel_between(alice, bob)
    before = everything(db, duel_id)

    def error(resp, status: int) -> str:
        assert resp.status_code == status, resp.get_json()
        return resp.get_json()["error"]["code"]

    assert error(eve.post(f"/api/duels/{duel_id}/resign"), 403) == "forbidden"
    assert error(eve.post(f"/api/duels/{duel_id + 1000}/resign"), 404) == "not_found"
    assert error(client.post(f"/api/duels/{duel_id}/resign"), 401) == "unauthorized"
    bad = {"Authorization": "Bearer not-a-token"}
    assert error(client.post(f"/api/duels/{duel_id}/resign", headers=bad), 401) == "unauthorized"
    assert error(client.post(f"/api/duels/{duel_id + 1000}/resign", headers=bad), 401) == "unauthorized"
    with db.transaction() as s:  # a revoked token of a player is no player
        s.execute(text("UPDATE auth_tokens SET revoked_at = now() WHERE user_id = :u"), {"u": alice.id})
    assert error(alice.post(f"/api/duels/{duel_id}/resign"), 401) == "unauthorized"
    assert everything(db, duel_id) == before


def test_a_second_resignation_and_one_after_a_verdict_finished_the_duel_are_409_and_change_nothing(
        make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    assert alice.post(f"/api/duels/{duel_id}/resign").status_code == 202
    after = everything(db, duel_id)
    for user in (alice, bob):
        again = user.post(f"/api/duels/{duel_id}/resign")
        assert again.status_code == 409 and again.get_json()["error"]["code"] == "duel_finished"
    assert everything(db, duel_id) == after

    other = duel_between(alice, bob)
    sid = submit(bob, other).get_json()["submission_id"]
    apply(db, msg(sid, 1, "verdict", "Accepted"))
    finished = everything(db, other)
    assert alice.post(f"/api/duels/{other}/resign").status_code == 409
    assert everything(db, other) == finished
    assert finished_events(db, other)["d"][0]["reason"] == "accepted"


def test_a_refused_resignation_takes_no_players_row_lock(make_user, duel_between, db):
    """The players' rows are locked by a statement sent before the first one's answer is known
    (db.pipelined): a stranger's resignation, or one of a finished duel, must neither wait for
    those locks nor take them (a player's own writes would queue behind a refusal)."""
    alice, bob, eve = make_user("alice"), make_user("bob"), make_user("eve")
    carol, dave = make_user("carol"), make_user("dave")
    duel_id, over = duel_between(alice, bob), duel_between(carol, dave)
    assert carol.post(f"/api/duels/{over}/resign").status_code == 202
    holder = psycopg.connect(psycopg_url(db.url))
    holder.execute("SELECT 1 FROM users WHERE id = ANY(%s) FOR UPDATE", ([alice.id, bob.id, carol.id, dave.id],))
    try:
        with pytest.raises(errors.Forbidden):
            resign_later(db, eve, duel_id)()  # answered while alice's and bob's rows are held
        with pytest.raises(errors.DuelFinished):
            resign_later(db, dave, over)()
    finally:
        holder.rollback()
        holder.close()
    assert alice.post(f"/api/duels/{duel_id}/resign").status_code == 202


def test_a_result_already_certain_stands(make_user, duel_between, db):
    """Alice's Accepted is recorded (the finish not yet run): her resignation does not take her win;
    past the deadline with everything judged, a resignation finds the draw."""
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    submit(alice, duel_id)
    with db.transaction() as s:
        s.execute(text("UPDATE submissions SET verdict = 'Accepted' WHERE duel_id = :d"), {"d": duel_id})
    answer = alice.post(f"/api/duels/{duel_id}/resign").get_json()
    assert answer["result"] == {"outcome": "win", "winner_id": alice.id, "reason": "accepted"}

    other = duel_between(alice, bob)
    submit(bob, other)
    with db.transaction() as s:
        s.execute(text("UPDATE submissions SET verdict = 'Wrong answer' WHERE duel_id = :d"), {"d": other})
        s.execute(text("UPDATE duels SET deadline = now() WHERE id = :d"), {"d": other})
    answer = bob.post(f"/api/duels/{other}/resign").get_json()
    assert answer["result"] == {"outcome": "draw", "winner_id": None, "reason": "timeout"}
    assert finished_events(db, other)["d"][0]["reason"] == "timeout"


def hold_duel_lock(db, duel_id: int) -> psycopg.Connection:
    conn = psycopg.connect(psycopg_url(db.url))
    conn.execute("SELECT 1 FROM duels WHERE id = %s FOR UPDATE", (duel_id,))
    return conn


def resign_later(db, user, duel_id: int):
    """A resignation in a thread, through the same function as the API's; its result or error."""
    hashed = auth.hash_token(TEST_SECRET_KEY, user.token)
    return in_thread(lambda: db.run(lambda s: duels.resign_as(s, hashed, duel_id)))


def test_a_resignation_that_waited_for_the_duel_sees_the_verdict_committed_meanwhile(make_user, duel_between, db):
    """Bob's earlier submission is Accepted by the transaction holding the duel; bob resigns
    meanwhile. Decided on the state after that commit, bob keeps the win (alice's later one cannot
    overtake it); decided on a snapshot from before it, alice would win by resignation."""
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    early = submit(bob, duel_id).get_json()["submission_id"]
    submit(alice, duel_id)
    holder = hold_duel_lock(db, duel_id)
    result = resign_later(db, bob, duel_id)
    wait_until_blocked_on_a_lock(db)
    holder.execute("UPDATE submissions SET verdict = 'Accepted' WHERE id = %s", (early,))
    holder.commit()
    holder.close()
    user_id, answer = result()
    assert user_id == bob.id
    assert answer["result"] == {"outcome": "win", "winner_id": bob.id, "reason": "accepted"}


def test_both_players_resigning_at_once_finish_the_duel_once(make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    holder = hold_duel_lock(db, duel_id)
    results = {alice.id: resign_later(db, alice, duel_id), bob.id: resign_later(db, bob, duel_id)}
    wait_until_blocked_on_a_lock(db, count=2)
    holder.rollback()
    holder.close()
    outcomes = {}
    for uid, result in results.items():
        try:
            outcomes[uid] = result()[1]["result"]
        except errors.DuelFinished:
            outcomes[uid] = "409"
    assert sorted(map(str, outcomes.values())).count("409") == 1
    (resigner,) = [uid for uid, o in outcomes.items() if o != "409"]
    winner = bob.id if resigner == alice.id else alice.id
    assert outcomes[resigner] == {"outcome": "win", "winner_id": winner, "reason": "resign"}
    events = finished_events(db, duel_id)
    assert [len(events[k]) for k in (alice.id, bob.id, "d")] == [1, 1, 1]
    assert events["d"][0]["winner_id"] == winner
    assert sorted(r[2:] for r in records(db, alice, bob).values()) == [(0, 1, 0), (1, 0, 0)]


@pytest.mark.parametrize("attempt", range(3))
def test_a_resignation_racing_the_resigners_accepted_verdict_gives_one_winner(make_user, duel_between, db, attempt):
    """Alice resigns while her Accepted verdict arrives: whichever takes the duel first decides
    (bob by resignation, or alice by her verdict and the resignation is 409), never both."""
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    sid = submit(alice, duel_id).get_json()["submission_id"]
    holder = hold_duel_lock(db, duel_id)
    resigned = resign_later(db, alice, duel_id)
    judged = in_thread(lambda: apply(db, msg(sid, 1, "verdict", "Accepted")))
    wait_until_blocked_on_a_lock(db, count=2)
    holder.rollback()
    holder.close()
    judged()
    try:
        by_resign = resigned()[1]["result"]
    except errors.DuelFinished:
        by_resign = None
    events = finished_events(db, duel_id)
    assert [len(events[k]) for k in (alice.id, bob.id, "d")] == [1, 1, 1]
    result = {k: events["d"][0][k] for k in ("outcome", "winner_id", "reason")}
    if by_resign is None:
        assert result == {"outcome": "win", "winner_id": alice.id, "reason": "accepted"}
    else:
        assert by_resign == result == {"outcome": "win", "winner_id": bob.id, "reason": "resign"}
    won = {uid: r[2] for uid, r in records(db, alice, bob).items()}
    assert won == {alice.id: int(by_resign is None), bob.id: int(by_resign is not None)}


def round_trips(trace: str) -> list[list[str]]:
    """The messages the client sent, per wait for the server, from a libpq trace: a run of
    frontend (F) lines ends when backend (B) lines are read."""
    trips: list[list[str]] = []
    previous = None
    for line in trace.splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or fields[0] not in ("F", "B"):
            continue  # the continuation of a multi-line statement
        if fields[0] == "F":
            if previous != "F":
                trips.append([])
            trips[-1].append(fields[2])
        previous = fields[0]
    return trips


def test_a_resignation_waits_for_the_server_twice(make_user, duel_between, db, tmp_path):
    """BEGIN and the two locking reads go together; then the write, its events, COMMIT and the
    notifications' send (docs/lifecycle.md, "Resign"): two waits for the server, the duel's lock
    held across one. Counted from libpq's own trace of the messages on the connection."""
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    hashed = auth.hash_token(TEST_SECRET_KEY, alice.token)
    trace_path = tmp_path / "libpq.trace"
    traced = []

    with open(trace_path, "w") as trace:
        def checked_out(dbapi_connection, record, proxy):  # before the transaction's first message
            dbapi_connection.pgconn.trace(trace.fileno())
            dbapi_connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            traced.append(dbapi_connection)

        sqlalchemy.event.listen(db.engine, "checkout", checked_out)
        try:
            _, answer = db.run(lambda s: duels.resign_as(s, hashed, duel_id), pipeline=True)
        finally:
            sqlalchemy.event.remove(db.engine, "checkout", checked_out)
            for driver in traced:
                driver.pgconn.untrace()
    assert len(traced) == 1
    assert answer["result"] == {"outcome": "win", "winner_id": bob.id, "reason": "resign"}
    trips = round_trips(trace_path.read_text())
    executes = [trip.count("Execute") for trip in trips]
    assert executes == [3, 4], trips  # BEGIN and the two reads; the write, the events, COMMIT, the send
    assert finished_events(db, duel_id)["d"][0]["winner_id"] == bob.id  # committed


def test_a_refused_resignation_in_a_pipeline_leaves_its_connection_as_it_found_it(make_user, duel_between, db):
    """The pipelined resignation runs its transaction on a connection in autocommit (db.pipelined);
    one that ends early (409, 403) or fails must roll back and give the connection back to the
    pool out of autocommit, or the next transaction on it would commit statement by statement."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    duel_id = duel_between(alice, bob)
    used = []

    def run(fn):
        def traced(s):
            used.append(s.connection().connection.driver_connection)
            return fn(s)
        return db.run(traced, pipeline=True)

    run(lambda s: duels.resign_as(s, auth.hash_token(TEST_SECRET_KEY, alice.token), duel_id))
    for user, error in ((bob, errors.DuelFinished), (carol, errors.Forbidden)):
        with pytest.raises(error):
            run(lambda s, token=user.token: duels.resign_as(s, auth.hash_token(TEST_SECRET_KEY, token), duel_id))
    with pytest.raises(sqlalchemy.exc.DataError):  # a driver error inside the pipeline
        run(lambda s: driver_execute(s, "SELECT CAST('x' AS int)").fetchone())
    assert len(used) == 4
    for driver in used:
        assert not driver.autocommit
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with db.transaction() as s:  # and a transaction on the pool is one: its statements share a snapshot
        assert s.execute(text("SELECT txid_current() = txid_current()")).scalar()
        assert not s.connection().connection.driver_connection.autocommit
