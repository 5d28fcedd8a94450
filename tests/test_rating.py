"""Glicko-2 (duely/rating.py): Glickman's worked example, Duely's bounds, stakes, carry-over."""

from __future__ import annotations

import itertools
import math

import pytest

from duely.rating import (
    MAX_DEVIATION,
    MIN_DEVIATION,
    NEWCOMER,
    PROVISIONAL_DEVIATION,
    Glicko,
    after_duel,
    carried_over_deviation,
    duel_update,
    shown_change,
    shown_rating,
    stakes,
    update,
)

SETTLED = Glicko(1500.0, MIN_DEVIATION, 0.09)


def test_glickmans_worked_example():
    # "Example of the Glicko-2 system" (Glickman, 2013), tau 0.5: rating 1500, RD 200,
    # sigma 0.06; beats 1400/30, loses to 1550/100 and 1700/300.
    player = Glicko(1500, 200, 0.06)
    results = [(Glicko(1400, 30, 0.06), 1.0), (Glicko(1550, 100, 0.06), 0.0), (Glicko(1700, 300, 0.06), 0.0)]
    after = update(player, results, tau=0.5)
    assert after.rating == pytest.approx(1464.06, abs=0.05)  # the paper rounds its intermediate steps
    assert after.deviation == pytest.approx(151.52, abs=0.01)
    assert after.volatility == pytest.approx(0.05999, abs=0.00001)


def test_a_period_without_duels_only_grows_the_deviation():
    after = update(Glicko(1500, 200, 0.06), [], periods=1.0)
    assert after.rating == 1500 and after.volatility == 0.06
    assert after.deviation == pytest.approx(math.hypot(200, 0.06 * 400 / math.log(10)))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        update(NEWCOMER, [(NEWCOMER, 1.5)])
    with pytest.raises(ValueError):
        update(Glicko(1500, 0, 0.09), [(NEWCOMER, 1.0)])


def test_newcomers_move_far_and_settled_players_little():
    win = after_duel(NEWCOMER, NEWCOMER, 1.0, None)
    assert 150 < win.rating - 1500 < 200 and win.deviation < NEWCOMER.deviation
    settled_win = after_duel(SETTLED, SETTLED, 1.0, 0.01)
    assert 3 < settled_win.rating - 1500 < 10
    # a newcomer's luck barely moves an established opponent, and moves the newcomer a lot
    established_loss = after_duel(SETTLED, NEWCOMER, 0.0, 0.01)
    newcomer_win = after_duel(NEWCOMER, SETTLED, 1.0, None)
    assert 0 < 1500 - established_loss.rating < 5
    assert newcomer_win.rating - 1500 > 150


def test_a_draw_between_equals_changes_nothing_but_the_deviation():
    for player in (NEWCOMER, SETTLED, Glicko(1800, 120, 0.09)):
        a, b = duel_update(player, player, 0.5, None, None)
        assert a.rating == pytest.approx(player.rating) == pytest.approx(b.rating)
        assert a.deviation <= player.deviation


def test_results_are_mirrored_between_the_two_players():
    for ra, rb in itertools.product((1200.0, 1500.0, 1910.0), repeat=2):
        for score in (0.0, 0.5, 1.0):
            a, b = Glicko(ra, 80, 0.09), Glicko(rb, 200, 0.09)
            a1, b1 = duel_update(a, b, score, 1.0, 2.0)
            b2, a2 = duel_update(b, a, 1.0 - score, 2.0, 1.0)
            assert (a1, b1) == (a2, b2)
            assert (a1.rating > ra) == (score > expected(a, b)) or score == 0.5


def expected(a: Glicko, b: Glicko) -> float:
    return 1 / (1 + 10 ** ((b.rating - a.rating) / 400))


def test_deviation_stays_within_bounds_and_inactivity_grows_it():
    player = SETTLED
    for _ in range(200):
        player = after_duel(player, SETTLED, 1.0, 0.0)
        assert player.deviation >= MIN_DEVIATION
    assert player.deviation == MIN_DEVIATION
    back_after_a_year = after_duel(SETTLED, SETTLED, 1.0, 365.0)
    back_next_day = after_duel(SETTLED, SETTLED, 1.0, 1.0)
    assert back_after_a_year.deviation > back_next_day.deviation
    assert back_after_a_year.rating - 1500 > back_next_day.rating - 1500  # an uncertain rating moves further
    forgotten = after_duel(Glicko(1500, 480, 0.2), NEWCOMER, 1.0, 100 * 365.0)
    assert forgotten.deviation <= MAX_DEVIATION


def test_shown_rating_and_provisional():
    assert shown_rating(1499.5) == 1500 and shown_rating(1499.49) == 1499 and shown_rating(1500.5) == 1501
    assert NEWCOMER.provisional and NEWCOMER.shown == 1500
    assert Glicko(1500, PROVISIONAL_DEVIATION, 0.09).provisional
    assert not Glicko(1500, PROVISIONAL_DEVIATION - 0.01, 0.09).provisional


def test_stakes_are_the_real_change_for_each_result():
    cases = [(NEWCOMER, NEWCOMER, None), (SETTLED, NEWCOMER, 3.0), (Glicko(1710.4, 95, 0.08), Glicko(1388.9, 60, 0.1), 40.0)]
    for player, opponent, idle in cases:
        table = stakes(player, opponent, idle)
        for outcome, score in (("win", 1.0), ("draw", 0.5), ("loss", 0.0)):
            assert table[outcome] == shown_change(player, after_duel(player, opponent, score, idle))
        assert table["win"] > 0 > table["loss"] and table["loss"] <= table["draw"] <= table["win"]
    favourite = stakes(Glicko(1900, 60, 0.09), Glicko(1500, 60, 0.09), 1.0)
    assert favourite["win"] < -favourite["loss"] and favourite["draw"] < 0  # little to win, more to lose


def test_carried_over_deviation_shrinks_with_duels_played():
    assert carried_over_deviation(0) == pytest.approx(350.0)
    values = [carried_over_deviation(n) for n in range(0, 200, 5)]
    assert values == sorted(values, reverse=True)
    assert carried_over_deviation(5) >= PROVISIONAL_DEVIATION > carried_over_deviation(15)
    assert carried_over_deviation(1000) == MIN_DEVIATION
