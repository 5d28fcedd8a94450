"""Challenges, invite links and rematch offers on the real database and the dev Taski
(docs/challenges.md): every endpoint's answers and errors, the events in both players' logs,
expiry by the job, races, blocks, the challenges switch, rate limits and unrated duels."""

from __future__ import annotations

import threading

import pytest
from marshmallow import ValidationError
from sqlalchemy import text

from duely import challenges, errors
from duely.config import Config
from duely.eventlog.types import PAYLOADS, ChallengeView, EventType, payload_schema
from duely.jobs import challenge_expiry_job, scheduled_jobs
from duely.matchmaking import rounds
from duely.taski import TaskiClient
from tests.conftest import TEST_SECRET_KEY
from tests.fixtures.stack import event_types, last_event_id

CHALLENGE_EVENT_TYPES = frozenset({
    "challenge_created", "challenge_received", "rematch_offered", "challenge_accepted",
    "challenge_declined", "challenge_canceled", "challenge_expired",
})


@pytest.fixture
def config(database_url, devtaski) -> Config:
    """The app's config, with the dev Taski to pick tasks from (accepting starts a duel)."""
    return Config(database_url=database_url, secret_key=TEST_SECRET_KEY, taski_url=devtaski.url)


@pytest.fixture
def taski(devtaski) -> TaskiClient:
    return TaskiClient(devtaski.url, timeout_secs=5, retry_delays_secs=(0.05,))


def events(db, user_id: int, after_id: int = 0) -> list[tuple[str, dict]]:
    with db.transaction() as s:
        return [(r.type, r.data) for r in s.execute(text(
            "SELECT type, data FROM events WHERE user_id = :u AND id > :a ORDER BY id"), {"u": user_id, "a": after_id})]


def challenge(user, to, **body):
    return user.post("/api/challenges", json={"to": to.nickname if hasattr(to, "nickname") else to, **body})


def ok(resp, status=201) -> dict:
    assert resp.status_code == status, resp.get_json()
    return resp.get_json()


def error_code(resp, status: int) -> str:
    assert resp.status_code == status, resp.get_json()
    body = resp.get_json()
    assert set(body) == {"error"} and body["error"]["message"]
    return body["error"]["code"]


def check_view(obj: dict) -> None:
    """The REST object is exactly the events' `challenge` (one definition)."""
    payload_schema(ChallengeView)().load(obj)


def active_duels(db) -> dict[int, int]:
    with db.transaction() as s:
        return {r.user_id: r.duel_id for r in s.execute(text("SELECT user_id, duel_id FROM duel_players WHERE is_active"))}


def status_of(db, challenge_id: str) -> str:
    with db.transaction() as s:
        return s.execute(text("SELECT status FROM challenges WHERE id = :i"), {"i": challenge_id}).scalar_one()


def make_due(db, challenge_id: str) -> None:
    """Move a challenge's expiry into the past (instead of waiting for its TTL)."""
    with db.transaction() as s:
        s.execute(text("UPDATE challenges SET expires_at = now() - interval '1 second' WHERE id = :i"), {"i": challenge_id})


def play_and_resign(db, a, b, **body) -> int:
    """A challenge from `a` accepted by `b`, then `a` resigns: a finished duel between them."""
    created = ok(challenge(a, b, **body))
    duel = ok(b.post(f"/api/challenges/{created['id']}/accept"))["duel"]
    ok(a.post(f"/api/duels/{duel['id']}/resign"), 202)
    return duel["id"]


# -- named challenges ----------------------------------------------------------------------------

def test_a_named_challenge_accepted_starts_a_duel_with_events_for_both(make_user, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    created = ok(challenge(alice, bob))
    check_view(created)
    assert len(created["id"]) == 16 and created["kind"] == "challenge" and created["status"] == "pending"
    assert created["challenger"] == {"user_id": alice.id, "nickname": "alice", "rating": 1500, "provisional": True}
    assert created["to"]["user_id"] == bob.id and created["invite_url"] is None
    assert (created["rated"], created["duration_secs"], created["rematch_of"], created["duel_id"]) == (True, 1800, None, None)
    assert events(db, alice.id) == [("challenge_created", {"challenge": created})]
    assert events(db, bob.id) == [("challenge_received", {"challenge": created})]
    assert ok(alice.get("/api/challenges"), 200) == {"incoming": [], "outgoing": [created]}
    assert ok(bob.get("/api/challenges"), 200) == {"incoming": [created], "outgoing": []}
    assert ok(bob.get(f"/api/challenges/{created['id']}"), 200) == created
    assert ok(carol.get("/api/challenges"), 200) == {"incoming": [], "outgoing": []}

    accepted = ok(bob.post(f"/api/challenges/{created['id']}/accept"))
    check_view(accepted["challenge"])
    duel = accepted["duel"]
    assert accepted["challenge"]["status"] == "accepted" and accepted["challenge"]["duel_id"] == duel["id"]
    assert accepted["challenge"]["accepted_by"]["user_id"] == bob.id
    assert duel["status"] == "active" and duel["rated"] is True and set(duel["stakes"]) == {str(alice.id), str(bob.id)}
    assert {p["user_id"] for p in duel["players"]} == {alice.id, bob.id}
    assert active_duels(db) == {alice.id: duel["id"], bob.id: duel["id"]}
    for me, first in ((alice, "challenge_created"), (bob, "challenge_received")):
        log = events(db, me.id)
        assert [t for t, _ in log] == [first, "challenge_accepted", "duel_started"]
        assert log[1][1] == {"challenge": accepted["challenge"], "duel_id": duel["id"]}
        assert log[2][1]["duel_id"] == duel["id"] and log[2][1]["rated"] is True
    assert ok(bob.get("/api/challenges"), 200) == {"incoming": [], "outgoing": []}  # nothing pending any more
    assert ok(alice.get(f"/api/challenges/{created['id']}"), 200)["status"] == "accepted"


def test_accepting_takes_queued_players_out_of_the_queue_first(make_user, db):
    alice, bob = make_user("alice"), make_user("bob")
    created = ok(challenge(alice, bob))
    assert bob.post("/api/queue").status_code == 202
    ok(bob.post(f"/api/challenges/{created['id']}/accept"))
    assert event_types(db, bob.id) == ["challenge_received", "queue_joined", "challenge_accepted", "queue_left", "duel_started"]
    assert events(db, bob.id)[3][1] == {"reason": "matched"}
    assert bob.get("/api/queue").get_json()["status"] == "in_duel"


def test_the_duel_avoids_tasks_either_player_has_had(make_user, db, devtaski):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    from tests.fixtures.stack import start_duel

    seen = set()
    for task_id, (a, b) in zip((1, 2, 3), ((alice, carol), (alice, carol), (bob, carol)), strict=True):
        duel_id = start_duel(db, a.id, b.id, task=devtaski.get(f"/api/tasks/{task_id}").json())
        a.post(f"/api/duels/{duel_id}/resign")
        seen.add(task_id)
    duel = ok(bob.post(f"/api/challenges/{ok(challenge(alice, bob))['id']}/accept"))["duel"]
    assert duel["task"]["id"] not in seen


def test_decline_with_a_reason_tells_both(make_user, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    created = ok(challenge(alice, bob))
    assert error_code(bob.post(f"/api/challenges/{created['id']}/decline", json={"reason": "sometimes"}), 400) == "validation_error"
    assert error_code(alice.post(f"/api/challenges/{created['id']}/decline"), 403) == "forbidden"
    assert error_code(carol.post(f"/api/challenges/{created['id']}/decline"), 404) == "not_found"
    declined = ok(bob.post(f"/api/challenges/{created['id']}/decline", json={"reason": "later"}), 200)
    check_view(declined)
    assert (declined["status"], declined["decline_reason"]) == ("declined", "later") and declined["closed_at"]
    assert events(db, alice.id)[-1] == ("challenge_declined", {"challenge": declined})
    assert events(db, bob.id)[-1] == ("challenge_declined", {"challenge": declined})
    for path in ("accept", "decline", "cancel"):
        who = alice if path == "cancel" else bob
        assert error_code(who.post(f"/api/challenges/{created['id']}/{path}"), 409) == "challenge_closed"
    assert active_duels(db) == {}


def test_decline_without_a_body_has_the_generic_reason(make_user, db):
    alice, bob = make_user("alice"), make_user("bob")
    created = ok(challenge(alice, bob))
    assert ok(bob.post(f"/api/challenges/{created['id']}/decline"), 200)["decline_reason"] == "generic"


def test_cancel_by_the_challenger_tells_both(make_user, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    created = ok(challenge(alice, bob))
    assert error_code(bob.post(f"/api/challenges/{created['id']}/cancel"), 403) == "forbidden"
    assert error_code(carol.post(f"/api/challenges/{created['id']}/cancel"), 404) == "not_found"
    canceled = ok(alice.post(f"/api/challenges/{created['id']}/cancel"), 200)
    assert canceled["status"] == "canceled"
    assert event_types(db, alice.id) == ["challenge_created", "challenge_canceled"]
    assert event_types(db, bob.id) == ["challenge_received", "challenge_canceled"]
    assert error_code(bob.post(f"/api/challenges/{created['id']}/accept"), 409) == "challenge_closed"
    assert error_code(alice.post(f"/api/challenges/{created['id']}/cancel"), 409) == "challenge_closed"


# -- open challenges (invite links) ----------------------------------------------------------

def test_an_open_challenge_is_accepted_by_whoever_has_the_link(make_user, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    created = ok(challenge(alice, None, rated=False, duration=600))
    check_view(created)
    assert created["to"] is None and created["invite_url"] == f"/?challenge={created['id']}"
    assert (created["rated"], created["duration_secs"]) == (False, 600)
    assert event_types(db, alice.id) == ["challenge_created"]
    assert ok(carol.get(f"/api/challenges/{created['id']}"), 200) == created  # anyone with the link sees it
    assert ok(carol.get("/api/challenges"), 200) == {"incoming": [], "outgoing": []}  # but it is not "incoming"
    assert error_code(carol.post(f"/api/challenges/{created['id']}/decline"), 400) == "cannot_decline_open"
    assert error_code(carol.post(f"/api/challenges/{created['id']}/cancel"), 403) == "forbidden"
    assert error_code(alice.post(f"/api/challenges/{created['id']}/accept"), 400) == "cannot_accept_own"
    assert [event_types(db, u.id) for u in (bob, carol)] == [[], []]  # nobody else heard of it

    accepted = ok(carol.post(f"/api/challenges/{created['id']}/accept"))
    assert accepted["challenge"]["accepted_by"]["user_id"] == carol.id and accepted["challenge"]["to"] is None
    assert accepted["duel"]["rated"] is False and accepted["duel"]["task"]["statement"]
    assert event_types(db, carol.id) == ["challenge_accepted", "duel_started"]
    assert event_types(db, alice.id) == ["challenge_created", "challenge_accepted", "duel_started"]
    assert error_code(bob.post(f"/api/challenges/{created['id']}/accept"), 409) == "challenge_closed"
    assert ok(bob.get(f"/api/challenges/{created['id']}"), 200)["status"] == "accepted"


def test_an_open_challenge_canceled_tells_only_the_challenger(make_user, db):
    alice, bob = make_user("alice"), make_user("bob")
    created = ok(challenge(alice, None))
    ok(alice.post(f"/api/challenges/{created['id']}/cancel"), 200)
    assert event_types(db, alice.id) == ["challenge_created", "challenge_canceled"]
    assert event_types(db, bob.id) == []


def test_two_players_racing_for_one_open_challenge_get_exactly_one_duel(make_user, db, taski):
    from duely.matchmaking import start

    alice = make_user("alice")
    racers = [make_user(f"racer{i}") for i in range(4)]
    created = ok(challenge(alice, None))
    # Each racer reads, gets a task from Taski, then all run the accepting transaction at once.
    plans = {}
    for r in racers:
        with db.transaction() as s:
            plans[r.id] = challenges.plan_accept(s, r.id, created["id"])
    tasks = {r.id: start.pick_task(db, taski, plans[r.id].pair, plans[r.id].rating) for r in racers}
    barrier = threading.Barrier(len(racers))
    outcomes: dict[int, object] = {}

    def accept(racer):
        barrier.wait()
        try:
            outcomes[racer.id] = db.run(lambda s: challenges.accept_with_task(s, racer.id, plans[racer.id], tasks[racer.id]))
        except BaseException as exc:  # collected and asserted below
            outcomes[racer.id] = exc

    threads = [threading.Thread(target=accept, args=(r,)) for r in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == len(racers)
    winners = [uid for uid, o in outcomes.items() if isinstance(o, tuple)]
    assert len(winners) == 1
    assert all(isinstance(o, errors.ChallengeClosed) for uid, o in outcomes.items() if uid not in winners)
    duels = active_duels(db)
    assert set(duels) == {alice.id, winners[0]} and len(set(duels.values())) == 1
    assert event_types(db, alice.id) == ["challenge_created", "challenge_accepted", "duel_started"]
    for r in racers:
        assert event_types(db, r.id) == (["challenge_accepted", "duel_started"] if r.id in winners else [])


def test_two_accepters_over_http_at_once_start_one_duel(app, make_user, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    created = ok(challenge(alice, None))
    barrier = threading.Barrier(2)
    answers = {}

    def accept(user):
        client = app.test_client()  # one client per thread
        barrier.wait()
        answers[user.nickname] = client.post(f"/api/challenges/{created['id']}/accept", headers=user.headers)

    threads = [threading.Thread(target=accept, args=(u,)) for u in (bob, carol)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in answers.values()) == [201, 409]
    loser = next(r for r in answers.values() if r.status_code == 409)
    assert loser.get_json()["error"]["code"] == "challenge_closed"
    assert len(active_duels(db)) == 2


# -- rules: who may challenge whom ---------------------------------------------------------------

def test_bad_requests_are_refused_and_change_nothing(make_user, db):
    alice, bob = make_user("alice"), make_user("bob")
    assert error_code(challenge(alice, alice), 400) == "cannot_challenge_self"
    assert error_code(challenge(alice, "ALICE"), 400) == "cannot_challenge_self"  # nicknames are case-insensitive
    assert error_code(challenge(alice, "nobody"), 404) == "not_found"
    bad_bodies = [{}, {"to": bob.nickname, "rated": "yes"}, {"to": bob.nickname, "duration": 59},
                  {"to": bob.nickname, "duration": 7201}, {"to": bob.nickname, "duration": "600"}, {"to": 7},
                  {"to": ""}, {"to": "bo\x00b"}]
    for body in bad_bodies:
        assert error_code(alice.post("/api/challenges", json=body), 400) == "validation_error", body
    assert error_code(alice.post("/api/challenges", data="to=bob"), 400) == "bad_request"
    with db.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM challenges")).scalar_one() == 0
    assert last_event_id(db, alice.id) == last_event_id(db, bob.id) == 0


def test_no_challenge_while_either_is_in_a_duel(make_user, db, duel_between):
    alice, bob, carol, dave = (make_user(n) for n in ("alice", "bob", "carol", "dave"))
    duel_between(carol, dave)
    assert error_code(challenge(carol, alice), 409) == "already_in_duel"
    assert error_code(challenge(carol, None), 409) == "already_in_duel"
    assert error_code(challenge(alice, carol), 409) == "opponent_busy"
    # a pending one cannot be accepted while either plays
    to_bob = ok(challenge(alice, bob))
    to_carol = ok(challenge(alice, None))
    assert error_code(carol.post(f"/api/challenges/{to_carol['id']}/accept"), 409) == "already_in_duel"
    duel_between(alice, make_user("erin"))
    assert error_code(bob.post(f"/api/challenges/{to_bob['id']}/accept"), 409) == "opponent_busy"
    assert status_of(db, to_bob["id"]) == status_of(db, to_carol["id"]) == "pending"  # still pending, unchanged


def test_challenges_turned_off(make_user, db):
    alice, bob = make_user("alice"), make_user("bob")
    assert ok(bob.get("/api/users/me/settings"), 200) == {"accept_challenges": True}
    assert error_code(bob.client.patch("/api/users/me/settings", json={"accept_challenges": "no"}, headers=bob.headers),
                      400) == "validation_error"
    assert ok(bob.client.patch("/api/users/me/settings", json={"accept_challenges": False}, headers=bob.headers),
              200) == {"accept_challenges": False}
    assert ok(bob.client.patch("/api/users/me/settings", json={}, headers=bob.headers), 200) == {"accept_challenges": False}
    assert ok(bob.get("/api/users/me/settings"), 200) == {"accept_challenges": False}
    assert error_code(challenge(alice, bob), 403) == "challenges_disabled"
    ok(challenge(bob, alice))  # bob may still challenge others
    ok(challenge(alice, None))  # and open challenges are for anyone
    ok(bob.client.patch("/api/users/me/settings", json={"accept_challenges": True}, headers=bob.headers), 200)
    ok(challenge(alice, bob))


def test_blocked_players_cannot_challenge_each_other_either_way(make_user, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    pending = [ok(challenge(alice, bob)), ok(challenge(bob, alice))]
    other = ok(challenge(alice, carol))
    open_one = ok(challenge(bob, None))
    assert alice.client.put(f"/api/users/me/blocks/{bob.id}", headers=alice.headers).status_code == 204
    assert alice.client.put(f"/api/users/me/blocks/{bob.id}", headers=alice.headers).status_code == 204  # idempotent
    # blocking canceled what was pending between them, with events for both
    for c in pending:
        assert status_of(db, c["id"]) == "canceled"
    assert status_of(db, other["id"]) == status_of(db, open_one["id"]) == "pending"
    assert event_types(db, alice.id)[-2:] == event_types(db, bob.id)[-2:] == ["challenge_canceled", "challenge_canceled"]
    assert ok(alice.get("/api/users/me/blocks"), 200) == {"users": [{"user_id": bob.id, "nickname": "bob"}]}
    assert ok(bob.get("/api/users/me/blocks"), 200) == {"users": []}
    # the same answer whoever blocked whom
    refused = [challenge(alice, bob), challenge(bob, alice)]
    assert [error_code(r, 403) for r in refused] == ["blocked", "blocked"]
    assert refused[0].get_json() == refused[1].get_json()
    assert error_code(alice.post(f"/api/challenges/{open_one['id']}/accept"), 403) == "blocked"
    assert alice.client.delete(f"/api/users/me/blocks/{bob.id}", headers=alice.headers).status_code == 204
    assert alice.client.delete(f"/api/users/me/blocks/{bob.id}", headers=alice.headers).status_code == 204
    ok(challenge(bob, alice))


def test_block_errors(make_user, db):
    alice = make_user("alice")
    assert error_code(alice.client.put(f"/api/users/me/blocks/{alice.id}", headers=alice.headers), 400) == "cannot_block_self"
    assert error_code(alice.client.put("/api/users/me/blocks/999999", headers=alice.headers), 404) == "not_found"
    assert error_code(alice.client.put("/api/users/me/blocks/abc", headers=alice.headers), 404) == "not_found"
    assert error_code(alice.client.put("/api/users/me/blocks/1"), 401) == "unauthorized"


def test_rate_limits_answer_429_with_retry_after(make_user, db):
    alice, bob = make_user("alice"), make_user("bob")
    made = [ok(challenge(alice, None)) for _ in range(5)]  # CHALLENGE_MAX_PENDING
    refused = challenge(alice, bob)
    assert error_code(refused, 429) == "rate_limited"
    retry = int(refused.headers["Retry-After"])
    assert refused.get_json()["error"]["retry_after"] == retry and 86000 < retry <= 86400  # the oldest open one's expiry
    for c in made:
        ok(alice.post(f"/api/challenges/{c['id']}/cancel"), 200)
    for _ in range(15):  # 20 created in the hour: CHALLENGE_MAX_PER_HOUR
        ok(alice.post(f"/api/challenges/{ok(challenge(alice, None))['id']}/cancel"), 200)
    refused = challenge(alice, bob)
    assert error_code(refused, 429) == "rate_limited"
    assert 3500 < int(refused.headers["Retry-After"]) <= 3600
    ok(challenge(bob, alice))  # per player


def test_rematch_offers_share_the_hourly_budget(make_user, db, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    ok(alice.post(f"/api/duels/{duel_id}/resign"), 202)
    for _ in range(19):  # offer, cancel, offer again...: 19 offers and 1 challenge make the hour's 20
        ok(alice.post(f"/api/challenges/{ok(alice.post(f'/api/duels/{duel_id}/rematch'))['id']}/cancel"), 200)
    ok(alice.post(f"/api/challenges/{ok(challenge(alice, None))['id']}/cancel"), 200)
    assert error_code(alice.post(f"/api/duels/{duel_id}/rematch"), 429) == "rate_limited"
    assert error_code(challenge(alice, None), 429) == "rate_limited"
    assert event_types(db, bob.id).count("rematch_offered") == 19
    ok(bob.post(f"/api/duels/{duel_id}/rematch"))  # bob's own budget


# -- expiry ----------------------------------------------------------------------------------------

def test_expiry_named_open_and_rematch(make_user, db, runtime):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    named, open_one = ok(challenge(alice, bob)), ok(challenge(carol, None))
    duel_id = play_and_resign(db, bob, carol)
    offer = ok(bob.post(f"/api/duels/{duel_id}/rematch"))
    lifetimes = {}
    with db.transaction() as s:
        for c in (named, open_one, offer):
            lifetimes[c["id"]] = s.execute(text("SELECT extract(epoch FROM expires_at - created_at) FROM challenges WHERE id = :i"),
                                           {"i": c["id"]}).scalar_one()
    assert [float(lifetimes[c["id"]]) for c in (named, open_one, offer)] == [600.0, 86400.0, 60.0]
    assert ("challenge_expiry", challenge_expiry_job, 1.0) in scheduled_jobs()
    assert challenge_expiry_job(runtime) == 0  # nothing due yet
    before = {u.id: last_event_id(db, u.id) for u in (alice, bob, carol)}
    for c in (named, open_one, offer):
        make_due(db, c["id"])
    # past its time but not swept yet: it cannot be accepted any more
    assert error_code(bob.post(f"/api/challenges/{named['id']}/accept"), 409) == "challenge_closed"
    assert ok(bob.get("/api/challenges"), 200) == {"incoming": [], "outgoing": []}
    assert challenge_expiry_job(runtime) == 3
    assert challenge_expiry_job(runtime) == 0
    assert [status_of(db, c["id"]) for c in (named, open_one, offer)] == ["expired"] * 3
    assert event_types(db, alice.id, before[alice.id]) == ["challenge_expired"]  # named: both
    assert event_types(db, bob.id, before[bob.id]) == ["challenge_expired", "challenge_expired"]  # named + own offer
    assert event_types(db, carol.id, before[carol.id]) == ["challenge_expired", "challenge_expired"]  # open + offer to her
    expired = events(db, alice.id)[-1][1]["challenge"]
    assert expired["id"] == named["id"] and expired["status"] == "expired" and expired["closed_at"]


# -- rematch ---------------------------------------------------------------------------------------

def test_rematch_offered_then_accepted_starts_a_new_task_with_the_same_ratedness(make_user, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    duel_id = play_and_resign(db, alice, bob, rated=False, duration=900)
    previous = ok(alice.get(f"/api/duels/{duel_id}"), 200)
    assert error_code(carol.post(f"/api/duels/{duel_id}/rematch"), 403) == "forbidden"
    assert error_code(carol.post("/api/duels/999999/rematch"), 404) == "not_found"
    before = {u.id: last_event_id(db, u.id) for u in (alice, bob)}
    offer = ok(alice.post(f"/api/duels/{duel_id}/rematch"))
    check_view(offer)
    assert (offer["kind"], offer["rematch_of"], offer["rated"], offer["duration_secs"]) == ("rematch", duel_id, False, 900)
    assert offer["to"]["user_id"] == bob.id and offer["invite_url"] is None
    assert events(db, bob.id, before[bob.id]) == [("rematch_offered", {"challenge": offer})]
    assert events(db, alice.id, before[alice.id]) == [("challenge_created", {"challenge": offer})]
    assert ok(alice.post(f"/api/duels/{duel_id}/rematch"), 200) == offer  # one pending offer per player and duel
    assert ok(bob.get("/api/challenges"), 200)["incoming"] == [offer]  # in the snapshot
    assert error_code(carol.get(f"/api/challenges/{offer['id']}"), 404) == "not_found"

    accepted = ok(bob.post(f"/api/duels/{duel_id}/rematch"))  # bob offers too: that accepts alice's
    assert accepted["id"] == offer["id"] and accepted["status"] == "accepted" and accepted["duel_id"]
    new_duel = ok(alice.get(f"/api/duels/{accepted['duel_id']}"), 200)
    assert new_duel["status"] == "active" and new_duel["rated"] is False and new_duel["stakes"] == {}
    assert new_duel["task"]["id"] != previous["task"]["id"]
    assert dt_secs(new_duel) == 900
    for me in (alice, bob):
        assert event_types(db, me.id, before[me.id])[-2:] == ["challenge_accepted", "duel_started"]


def dt_secs(duel: dict) -> float:
    import datetime as dt

    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(duel["deadline"]) - parse(duel["started_at"])).total_seconds()


def test_rematch_accepted_through_the_challenge_endpoint_and_its_refusals(make_user, db, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    active = ok(challenge(alice, bob))
    duel = ok(bob.post(f"/api/challenges/{active['id']}/accept"))["duel"]
    assert error_code(alice.post(f"/api/duels/{duel['id']}/rematch"), 409) == "duel_active"
    ok(alice.post(f"/api/duels/{duel['id']}/resign"), 202)
    offer = ok(bob.post(f"/api/duels/{duel['id']}/rematch"))
    assert error_code(bob.post(f"/api/challenges/{offer['id']}/accept"), 400) == "cannot_accept_own"
    accepted = ok(alice.post(f"/api/challenges/{offer['id']}/accept"))
    assert accepted["duel"]["rated"] is True and accepted["duel"]["task"]["id"] != duel["task"]["id"]
    ok(bob.post(f"/api/duels/{accepted['duel']['id']}/resign"), 202)
    # blocked players get no rematch; nor does a player who is busy elsewhere
    alice.client.put(f"/api/users/me/blocks/{bob.id}", headers=alice.headers)
    assert error_code(bob.post(f"/api/duels/{accepted['duel']['id']}/rematch"), 403) == "blocked"
    alice.client.delete(f"/api/users/me/blocks/{bob.id}", headers=alice.headers)
    duel_between(alice, make_user("carol"))
    assert error_code(bob.post(f"/api/duels/{accepted['duel']['id']}/rematch"), 409) == "opponent_busy"
    assert error_code(alice.post(f"/api/duels/{accepted['duel']['id']}/rematch"), 409) == "already_in_duel"


def test_a_rematch_offer_ends_when_either_player_joins_the_queue(make_user, db):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = play_and_resign(db, alice, bob)
    for joiner in (bob, alice):
        offer = ok(alice.post(f"/api/duels/{duel_id}/rematch"))
        before = {u.id: last_event_id(db, u.id) for u in (alice, bob)}
        assert joiner.post("/api/queue").status_code == 202
        assert status_of(db, offer["id"]) == "expired"
        other = alice if joiner is bob else bob
        assert event_types(db, joiner.id, before[joiner.id]) == ["challenge_expired", "queue_joined"]
        assert event_types(db, other.id, before[other.id]) == ["challenge_expired"]
        assert events(db, other.id)[-1][1]["challenge"]["status"] == "expired"
        joiner.delete("/api/queue")


def test_a_rematch_offer_ends_when_either_player_starts_another_duel(make_user, db, config, taski):
    alice, bob, carol, dave = (make_user(n) for n in ("alice", "bob", "carol", "dave"))
    duel_id = play_and_resign(db, alice, bob)
    # by a challenge: alice accepts carol's
    offer = ok(bob.post(f"/api/duels/{duel_id}/rematch"))
    before = last_event_id(db, bob.id)
    ok(alice.post(f"/api/challenges/{ok(challenge(carol, alice))['id']}/accept"))
    assert status_of(db, offer["id"]) == "expired"
    assert event_types(db, bob.id, before) == ["challenge_expired"]
    assert event_types(db, alice.id)[-4:] == ["challenge_received", "challenge_accepted", "challenge_expired", "duel_started"]
    # by matchmaking: dave offers bob a rematch while bob waits in the queue; bob is matched with erin
    duel2 = play_and_resign(db, dave, bob)
    assert bob.post("/api/queue").status_code == 202
    offer = ok(dave.post(f"/api/duels/{duel2}/rematch"))  # made while bob waits in the queue
    erin = make_user("erin")
    assert erin.post("/api/queue").status_code == 202
    before = last_event_id(db, dave.id)
    assert rounds.run_round(db, config, taski) == 1
    assert status_of(db, offer["id"]) == "expired"
    assert event_types(db, dave.id, before) == ["challenge_expired"]
    assert event_types(db, bob.id)[-3:] == ["challenge_expired", "queue_left", "duel_started"]


# -- unrated duels ---------------------------------------------------------------------------------

def test_an_unrated_duel_changes_no_rating(make_user, db):
    alice, bob = make_user("alice"), make_user("bob")
    before = {u.id: ok(u.get("/api/users/me"), 200) for u in (alice, bob)}
    created = ok(challenge(alice, bob, rated=False))
    duel = ok(bob.post(f"/api/challenges/{created['id']}/accept"))["duel"]
    assert duel["rated"] is False and duel["stakes"] == {}
    started = events(db, alice.id)[-1]
    assert started[0] == "duel_started" and started[1]["rated"] is False and started[1]["stakes"] == {}
    finished = ok(alice.post(f"/api/duels/{duel['id']}/resign"), 202)
    assert finished["result"]["winner_id"] == bob.id
    assert finished["rating_changes"] == {str(alice.id): 0, str(bob.id): 0}
    assert events(db, bob.id)[-1] == ("duel_finished", {"duel_id": duel["id"], "outcome": "win", "winner_id": bob.id,
                                                         "reason": "resign", "rating_changes": {str(alice.id): 0, str(bob.id): 0}})
    for u in (alice, bob):
        assert ok(u.get("/api/users/me"), 200) == before[u.id]  # rating, RD, records: all unchanged
        assert ok(u.get(f"/api/users/{u.id}/rating-history"), 200)["points"] == []
    # a rated one afterwards moves ratings as for newcomers who never played
    rated = ok(bob.post(f"/api/challenges/{ok(challenge(alice, bob))['id']}/accept"))["duel"]
    assert rated["stakes"][str(alice.id)] == {"win": 164, "draw": 0, "loss": -164}


# -- access, Taski trouble, payloads ---------------------------------------------------------------

def test_nobody_sees_or_changes_a_named_challenge_that_is_not_theirs(make_user, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    created = ok(challenge(alice, bob))
    for resp in (carol.get(f"/api/challenges/{created['id']}"), carol.post(f"/api/challenges/{created['id']}/accept"),
                 carol.post(f"/api/challenges/{created['id']}/decline"), carol.post(f"/api/challenges/{created['id']}/cancel")):
        assert error_code(resp, 404) == "not_found"
    for bad in ("nosuchchallenge1", "a" * 65, "bad.id"):
        assert error_code(alice.get(f"/api/challenges/{bad}"), 404) == "not_found"
    assert error_code(alice.client.get(f"/api/challenges/{created['id']}"), 401) == "unauthorized"
    assert error_code(alice.client.get("/api/challenges"), 401) == "unauthorized"
    assert status_of(db, created["id"]) == "pending" and event_types(db, carol.id) == []


def test_taski_down_answers_503_and_leaves_the_challenge_pending(make_user, db, config, database_url):
    from duely.api import create_app
    from duely.infra import free_port
    from duely.runtime import Runtime

    alice, bob = make_user("alice"), make_user("bob")
    created = ok(challenge(alice, bob))
    down = config.replace(taski_url=f"http://127.0.0.1:{free_port()}", taski_timeout=1.0)
    runtime = Runtime(down, db)
    try:
        client = create_app(down, db, runtime).test_client()
        resp = client.post(f"/api/challenges/{created['id']}/accept", headers=bob.headers)
        assert error_code(resp, 503) == "unavailable" and int(resp.headers["Retry-After"]) >= 1
    finally:
        runtime.close()
    assert status_of(db, created["id"]) == "pending" and active_duels(db) == {}
    assert event_types(db, bob.id) == ["challenge_received"]


def test_every_challenge_event_matches_its_payload_definition(make_user, db, runtime):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    ok(bob.post(f"/api/challenges/{ok(challenge(alice, bob))['id']}/decline"), 200)
    ok(alice.post(f"/api/challenges/{ok(challenge(alice, None))['id']}/cancel"), 200)
    make_due(db, ok(challenge(alice, carol))["id"])
    challenge_expiry_job(runtime)
    duel_id = play_and_resign(db, alice, bob)
    ok(bob.post(f"/api/duels/{duel_id}/rematch"))
    seen = set()
    for user in (alice, bob, carol):
        for kind, data in events(db, user.id):
            try:
                payload_schema(PAYLOADS[EventType(kind)])().load(data)
            except ValidationError as exc:
                pytest.fail(f"{user.nickname}'s {kind} does not match its payload: {exc.messages}\n{data}")
            seen.add(kind)
    assert CHALLENGE_EVENT_TYPES <= seen
