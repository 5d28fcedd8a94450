"""The Elo rating Duely used before Glicko-2 (duely/rating.py), kept for bench/ratings.py only.

The module as it was, unchanged, so the benchmark compares against the real old rule. The rules:

* Expected score: `1 / (1 + 10 ** ((r_b - r_a) / 400))`; the two players' expectations sum to 1.
* K-factor (how far one duel moves a rating): 40 while provisional (fewer than 10 finished
  duels, so a newcomer's 1500 moves quickly towards their level), then 20, and 10 for an
  established player rated 2400 or more (the top of the ladder moves slowly). The rating
  used is the current one: a player who falls below 2400 gets K=20 again.
* Delta: `K * (score - expected)`, rounded to the nearest whole point, halves away from zero,
  so with equal K the two deltas are exact opposites and the points in play are conserved
  (a provisional player against an established one moves further: not conserved).
* A draw between equal ratings changes nothing. A win always gains at least 1 point and a
  loss always costs at least 1: even a 2400 beating a 1500, whose raw change rounds to 0,
  sees the result counted (the loser gives that point, so equal K still conserves).
"""

from __future__ import annotations

import math

ELO_SCALE_RATING = 400  # a gap this size means 10:1 expected odds
PROVISIONAL_GAMES = 10  # fewer finished duels than this: provisional
PROVISIONAL_K = 40
STANDARD_K = 20
MASTER_K = 10
MASTER_RATING = 2400  # established players rated this or higher get MASTER_K
MIN_DECISIVE_CHANGE_RATING = 1  # a win gains, a loss costs, at least this much


def expected_score(r_a: int, r_b: int) -> float:
    """The score (1 win, 0.5 draw, 0 loss) a player rated r_a is expected to make against r_b."""
    return 1.0 / (1.0 + 10.0 ** ((r_b - r_a) / ELO_SCALE_RATING))


def k_factor(games_played: int, rating: int) -> int:
    """How many points one duel can move a player who has finished `games_played` duels before it.

    Raises ValueError for a negative count.
    """
    if games_played < 0:
        raise ValueError("games_played must not be negative")
    if games_played < PROVISIONAL_GAMES:
        return PROVISIONAL_K
    return MASTER_K if rating >= MASTER_RATING else STANDARD_K


def rating_changes(rating_a: int, played_a: int, rating_b: int, played_b: int, score_a: float) -> tuple[int, int]:
    """The whole-point rating changes (delta_a, delta_b) after a duel where A scored `score_a`.

    `score_a` is 1 for A's win, 0.5 for a draw, 0 for A's loss (B scores 1 - score_a);
    `played_*` count the duels each finished before this one. Raises ValueError for a score
    outside [0, 1].
    """
    if not 0.0 <= score_a <= 1.0:
        raise ValueError("score_a must be between 0 and 1")
    surprise = score_a - expected_score(rating_a, rating_b)
    delta_a = _round_half_away(k_factor(played_a, rating_a) * surprise)
    # -K_b * surprise rather than K_b * (score_b - expected_b): the very same float, negated,
    # so equal K gives exactly opposite deltas even at a rounding boundary.
    delta_b = _round_half_away(-k_factor(played_b, rating_b) * surprise)
    if score_a == 1.0:
        delta_a, delta_b = max(delta_a, MIN_DECISIVE_CHANGE_RATING), min(delta_b, -MIN_DECISIVE_CHANGE_RATING)
    elif score_a == 0.0:
        delta_a, delta_b = min(delta_a, -MIN_DECISIVE_CHANGE_RATING), max(delta_b, MIN_DECISIVE_CHANGE_RATING)
    return delta_a, delta_b


def _round_half_away(value: float) -> int:
    # Python's round() goes half to even, which would round +2.5 and -2.5 differently in
    # magnitude for the winner and the loser; halves away from zero treat both alike.
    return int(math.copysign(math.floor(abs(value) + 0.5), value))
