"""Ratings through the API and the database: provisional, stakes, history, migration 0002."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, make_url, text

from duely import rating
from duely.db import sqlalchemy_url
from duely.migrate import upgrade


def set_rating(db, user_id: int, value: float, deviation: float, idle_days: float | None,
               establishing: bool = False) -> None:
    with db.transaction() as s:
        s.execute(text(
            "UPDATE users SET rating = :shown, rating_exact = :r, rating_deviation = :d, establishing = :e, "
            "rated_at = CASE WHEN CAST(:idle AS double precision) IS NULL THEN NULL "
            "ELSE now() - make_interval(secs => CAST(:idle AS double precision) * 86400) END WHERE id = :u"
        ), {"shown": rating.shown_rating(value), "r": value, "d": deviation, "idle": idle_days, "u": user_id,
          "e": establishing})


def user_row(db, user_id: int, columns: str):
    """One user's row, with just these columns, as the database has it now."""
    with db.transaction() as s:
        return s.execute(text(f"SELECT {columns} FROM users WHERE id = :u"), {"u": user_id}).one()


@pytest.fixture
def finished_duel(duel_between):
    """A duel between a and b that `loser` resigned (the other wins), through the API."""
    def factory(a, b, loser) -> int:
        duel_id = duel_between(a, b)
        assert loser.post(f"/api/duels/{duel_id}/resign").status_code == 202
        return duel_id

    return factory


@contextmanager
def scratch_database(database_url: str, name: str) -> Iterator[str]:
    """The URL of a new, empty database `name` on the test server, dropped afterwards (to migrate an old schema in)."""
    admin = create_engine(sqlalchemy_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        c.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_a_newcomer_is_provisional_at_1500(make_user):
    me = make_user("alice").get("/api/users/me").get_json()
    assert (me["rating"], me["rating_deviation"], me["provisional"]) == (1500, 350, True)


def test_stakes_announced_at_the_start_are_the_change_applied(make_user, duel_between, db):
    alice, bob = make_user("alice"), make_user("bob")
    set_rating(db, alice.id, 1712.4, 80.0, idle_days=30.0)  # established, back after a month
    duel_id = duel_between(alice, bob)
    duel = alice.get(f"/api/duels/{duel_id}").get_json()
    stakes = duel["stakes"]
    assert set(stakes) == {str(alice.id), str(bob.id)}
    assert 0 < stakes[str(alice.id)]["win"] < -stakes[str(alice.id)]["loss"]  # the favourite risks more
    assert stakes[str(bob.id)]["win"] > 100  # the newcomer moves a lot
    with db.transaction() as s:
        started = s.execute(text("SELECT data FROM events WHERE user_id = :u AND type = 'duel_started'"),
                            {"u": bob.id}).scalar_one()
    assert started["stakes"] == stakes
    assert started["opponent"]["provisional"] is False

    assert bob.post(f"/api/duels/{duel_id}/resign").status_code == 202  # alice wins
    finished = alice.get(f"/api/duels/{duel_id}").get_json()
    assert finished["stakes"] == stakes  # still shown once finished
    assert finished["rating_changes"] == {str(alice.id): stakes[str(alice.id)]["win"],
                                          str(bob.id): stakes[str(bob.id)]["loss"]}
    me, other = alice.get("/api/users/me").get_json(), bob.get("/api/users/me").get_json()
    assert me["rating"] == 1712 + stakes[str(alice.id)]["win"]
    assert other["rating"] == 1500 + stakes[str(bob.id)]["loss"] and other["provisional"]
    assert me["rating_deviation"] < 80 + 10  # a month away grew it a little, the duel shrank it
    row = user_row(db, alice.id, "rating_exact, rating_deviation, rating_volatility, rated_at, now() AS now")
    expected = rating.after_duel(rating.Glicko(1712.4, 80.0, rating.START_VOLATILITY),
                                 rating.NEWCOMER, 1.0, 30.0)
    assert row.rating_exact == pytest.approx(expected.rating, abs=0.01)  # idle measured to the duel start
    assert row.rating_deviation == pytest.approx(expected.deviation, abs=0.01)
    assert row.rated_at is not None and abs((row.now - row.rated_at).total_seconds()) < 60


def test_a_newcomer_is_rated_from_all_their_duels_and_stakes_stay_exact(make_user, duel_between, finished_duel, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    set_rating(db, carol.id, 1650.0, 60.0, idle_days=1.0)
    finished_duel(alice, bob, loser=bob)  # alice beat bob, both newcomers
    set_rating(db, bob.id, 1900.0, 50.0, idle_days=1.0, establishing=False)  # bob turns out strong
    second = duel_between(alice, carol)
    stakes = alice.get(f"/api/duels/{second}").get_json()["stakes"][str(alice.id)]
    now_alice = user_row(db, alice.id, "rating_exact").rating_exact
    bob_now, carol_now = rating.Glicko(1900.0, 50.0, 0.09), rating.Glicko(1650.0, 60.0, 0.09)
    expected = rating.establishing_rating([(bob_now, 1.0), (carol_now, 0.0)])
    assert rating.shown_rating(now_alice) + stakes["loss"] == expected.shown  # the first win counts at bob's 1900 now
    set_rating(db, bob.id, 1200.0, 50.0, idle_days=1.0)  # bob's rating moves during the duel ...
    assert alice.post(f"/api/duels/{second}/resign").status_code == 202
    finished = alice.get(f"/api/duels/{second}").get_json()
    assert finished["rating_changes"][str(alice.id)] == stakes["loss"]  # ... the announced change still applies
    row = user_row(db, alice.id, "rating_exact, rating_deviation, establishing")
    assert row.rating_exact == pytest.approx(expected.rating) and row.rating_deviation == pytest.approx(expected.deviation)
    assert row.establishing


def test_rating_history_pages_newest_first_and_is_public(make_user, duel_between, finished_duel):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    for opponent, loser in ((bob, bob), (carol, alice), (bob, bob)):
        finished_duel(alice, opponent, loser)
    active = duel_between(alice, carol)  # not finished: no point yet

    first = carol.get(f"/api/users/{alice.id}/rating-history?limit=2")  # anyone signed in may look
    assert first.status_code == 200
    page = first.get_json()
    assert [p["duel_id"] for p in page["points"]] == [3, 2] and page["next_before_id"] == 2
    rest = carol.get(f"/api/users/{alice.id}/rating-history?limit=2&before_id=2").get_json()
    assert [p["duel_id"] for p in rest["points"]] == [1] and rest["next_before_id"] is None
    points = list(reversed(page["points"] + rest["points"]))  # oldest first
    assert points[0]["rating_before"] == 1500
    for earlier, later in zip(points, points[1:], strict=False):
        assert later["rating_before"] == earlier["rating"]
        assert later["rating_deviation"] < earlier["rating_deviation"]
    assert points[-1]["rating"] == alice.get("/api/users/me").get_json()["rating"]
    assert [p["rating"] > p["rating_before"] for p in points] == [True, False, True]
    assert all(p["provisional"] and p["finished_at"] for p in points)
    assert active not in {p["duel_id"] for p in points}


def test_rating_history_refuses_bad_requests_with_json(make_user, client):
    alice = make_user("alice")
    missing = alice.get("/api/users/999999/rating-history")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    for query in ("limit=0", "limit=101", "before_id=0", "limit=x"):
        resp = alice.get(f"/api/users/{alice.id}/rating-history?{query}")
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "validation_error", query
    assert client.get(f"/api/users/{alice.id}/rating-history").status_code == 401
    assert alice.get(f"/api/users/{alice.id}/rating-history").get_json() == {"points": [], "next_before_id": None}


def test_migration_0003_marks_who_is_establishing(database_url):
    with scratch_database(database_url, "duely_migration_0003_test") as url:
        upgrade(url, "0002")
        engine = create_engine(sqlalchemy_url(url))
        with engine.begin() as c:
            c.execute(text("INSERT INTO users (id, nickname, password_hash, played) VALUES "
                           "(1, 'elo-era', 'x', 1), (2, 'glicko-era', 'x', 1), (3, 'veteran', 'x', 30), (4, 'new', 'x', 0)"))
            c.execute(text("INSERT INTO duels (id, status, task_id, task, deadline, finished_at, outcome, winner_id, reason) "
                           "VALUES (1, 'finished', '1', '{}', now(), now(), 'win', 1, 'accepted'), "
                           "(2, 'finished', '1', '{}', now(), now(), 'win', 2, 'accepted')"))
            c.execute(text("INSERT INTO duel_players (duel_id, user_id, rating_before, rating_after, deviation_after, is_active) "
                           "VALUES (1, 1, 1500, 1510, NULL, false), (1, 3, 1500, 1490, NULL, false), "
                           "(2, 2, 1500, 1662, 290, false), (2, 4, 1500, 1338, 290, false)"))
        upgrade(url)
        with engine.begin() as c:
            flags = {r.id: r.establishing for r in c.execute(text("SELECT id, establishing FROM users"))}
        engine.dispose()
        assert flags == {1: False, 2: True, 3: False, 4: True}


def test_migration_0002_carries_existing_players_over(database_url):
    with scratch_database(database_url, "duely_migration_0002_test") as url:
        upgrade(url, "0001")
        engine = create_engine(sqlalchemy_url(url))
        finished_at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        with engine.begin() as c:
            c.execute(text("INSERT INTO users (id, nickname, password_hash, rating, played) VALUES "
                           "(1, 'veteran', 'x', 1830, 60), (2, 'regular', 'x', 1420, 10), (3, 'new', 'x', 1500, 0)"))
            c.execute(text("INSERT INTO duels (id, status, task_id, task, deadline, finished_at, outcome, winner_id, reason) "
                           "VALUES (1, 'finished', '1', '{}', :t, :t, 'win', 1, 'accepted')"), {"t": finished_at})
            c.execute(text("INSERT INTO duel_players (duel_id, user_id, rating_before, rating_after, is_active) VALUES "
                           "(1, 1, 1820, 1830, false), (1, 2, 1430, 1420, false)"))
        upgrade(url)
        with engine.begin() as c:
            rows = {r.id: r for r in c.execute(text(
                "SELECT id, rating, rating_exact, rating_deviation, rating_volatility, rated_at FROM users"))}
        engine.dispose()
        for uid, played in ((1, 60), (2, 10), (3, 0)):
            assert rows[uid].rating_exact == rows[uid].rating  # the rating is kept
            assert rows[uid].rating_deviation == pytest.approx(rating.carried_over_deviation(played), rel=1e-9)
            assert rows[uid].rating_volatility == rating.START_VOLATILITY
        assert rows[1].rated_at == rows[2].rated_at == finished_at and rows[3].rated_at is None
        assert rows[3].rating_deviation == pytest.approx(350.0)


def test_an_establishing_players_next_duel_reads_its_rated_history(make_user, finished_duel, db):
    """The start of a duel reads what an establishing player's rating is made of (duels._OPEN's
    history: each earlier rated result, oldest first, against the opponent as rated now)."""
    from duely import duels

    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    first = finished_duel(alice, bob, loser=bob)
    second = finished_duel(carol, bob, loser=carol)  # bob's rating moves again after the duel with alice
    third = finished_duel(alice, carol, loser=alice)
    bob_now = list(user_row(db, bob.id, "rating_exact, rating_deviation, rating_volatility"))
    carol_now = list(user_row(db, carol.id, "rating_exact, rating_deviation, rating_volatility"))
    with db.transaction() as s:
        _, rows = duels.open_duel(s, (alice.id, bob.id), {"id": "t1", "title": "T"}, 600.0)
        history = {row.id: row.history for row in rows}
        s.rollback()
    assert first < second < third
    # [outcome, winner, the opponent's rating, deviation and volatility as they are now], by duel
    assert history[alice.id] == [["win", alice.id, *bob_now], ["win", carol.id, *carol_now]]
