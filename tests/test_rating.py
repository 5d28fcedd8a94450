"""Elo (duely/rating.py): expectations, K-factor thresholds, whole-point deltas."""

from __future__ import annotations

import itertools

import pytest

from duely.rating import expected_score, k_factor, rating_changes

ESTABLISHED = 50  # duels finished: past the provisional period
NEWCOMER = 0


def test_expected_scores_of_both_players_sum_to_one_and_favour_the_stronger():
    assert expected_score(1500, 1500) == 0.5
    assert expected_score(1900, 1500) == pytest.approx(10 / 11)  # 400 points: 10:1
    for a, b in itertools.product(range(800, 2800, 170), repeat=2):
        assert expected_score(a, b) + expected_score(b, a) == pytest.approx(1.0)
        assert (expected_score(a, b) > 0.5) == (a > b) or a == b


def test_k_factor_thresholds():
    assert k_factor(0, 1500) == k_factor(9, 1500) == 40  # provisional: fewer than 10 duels
    assert k_factor(9, 2600) == 40  # provisional wins over the master rule
    assert k_factor(10, 1500) == k_factor(500, 2399) == 20
    assert k_factor(10, 2400) == k_factor(500, 2800) == 10
    with pytest.raises(ValueError):
        k_factor(-1, 1500)


def test_a_draw_between_equals_changes_nothing():
    for played_a, played_b in [(NEWCOMER, NEWCOMER), (NEWCOMER, ESTABLISHED), (ESTABLISHED, ESTABLISHED)]:
        assert rating_changes(1500, played_a, 1500, played_b, 0.5) == (0, 0)


def test_a_win_between_equals():
    assert rating_changes(1500, ESTABLISHED, 1500, ESTABLISHED, 1.0) == (10, -10)
    assert rating_changes(1500, ESTABLISHED, 1500, ESTABLISHED, 0.0) == (-10, 10)


def test_equal_k_is_symmetric_and_conserves_points():
    for a, b in itertools.product(range(900, 2400, 37), range(1000, 2400, 53)):
        for score in (0.0, 0.5, 1.0):
            delta_a, delta_b = rating_changes(a, ESTABLISHED, b, ESTABLISHED, score)
            assert delta_a + delta_b == 0
            # swapping the players mirrors the result
            assert rating_changes(b, ESTABLISHED, a, ESTABLISHED, 1.0 - score) == (delta_b, delta_a)


def test_provisional_players_move_further():
    newcomer, _ = rating_changes(1500, NEWCOMER, 1500, ESTABLISHED, 1.0)
    regular, _ = rating_changes(1500, ESTABLISHED, 1500, ESTABLISHED, 1.0)
    assert newcomer == 20 and regular == 10
    # ... and their opponent moves by its own K: not conserved when K differs
    assert rating_changes(1500, NEWCOMER, 1500, ESTABLISHED, 0.0) == (-20, 10)


def test_masters_move_slower():
    master, _ = rating_changes(2400, ESTABLISHED, 2400, ESTABLISHED, 1.0)
    assert master == 5


def test_upsets_pay_more_than_expected_wins():
    upset, _ = rating_changes(1300, ESTABLISHED, 1700, ESTABLISHED, 1.0)
    expected_win, _ = rating_changes(1700, ESTABLISHED, 1300, ESTABLISHED, 1.0)
    assert upset == 18 and expected_win == 2


def test_a_win_always_gains_and_a_loss_always_costs_at_least_one_point():
    # 2400 vs 1400 at K=10: the raw change is 0.03 of a point
    assert rating_changes(2400, ESTABLISHED, 1400, ESTABLISHED, 1.0) == (1, -1)
    assert rating_changes(1400, ESTABLISHED, 2400, ESTABLISHED, 0.0) == (-1, 1)
    for a, b in itertools.product(range(800, 3000, 200), repeat=2):
        win_a, loss_b = rating_changes(a, ESTABLISHED, b, NEWCOMER, 1.0)
        assert win_a >= 1 and loss_b <= -1


def test_a_draw_moves_the_lower_rated_up():
    low, high = rating_changes(1400, ESTABLISHED, 1600, ESTABLISHED, 0.5)
    assert low == 5 and high == -5


def test_score_must_be_between_zero_and_one():
    with pytest.raises(ValueError):
        rating_changes(1500, 0, 1500, 0, 1.5)
