"""Glicko-2 ratings: one duel is one rating period for each of its two players.

Pure: no database, no clock, no I/O. `duels.py` computes every player's `stakes` with
`stakes()` when a duel starts and applies `after_duel()` in the transaction that finishes it;
both go through `duel_update`, so what a player was told is at stake is exactly what moves.
The algorithm is Glickman's ("Example of the Glicko-2 system", 2013; `update` reproduces its
worked example), with lichess's constants as the starting point (lila, chess.rating.glicko).

The rules (docs/ratings.md explains them for players):

* A rating is (rating, deviation RD, volatility) on the Glicko scale. Newcomers start at
  1500, RD `START_DEVIATION`, volatility `START_VOLATILITY`.
* A duel updates each player against the other's *pre-duel* rating: win 1, draw 0.5, loss 0.
  An opponent with a large RD counts for less (Glicko's g(φ)), so a newcomer's luck barely
  moves an established player, while the newcomer moves a lot.
* Inactivity: within the update the RD first grows as `sqrt(φ² + n·σ²)` where `n` is the number
  of rating periods since the player's previous rated duel (`RATING_PERIODS_PER_DAY` per day, as
  lichess), measured up to the *start* of this duel, so that the stakes shown at the start are
  exact. A newcomer's first duel uses n = 0.
* RD stays within [`MIN_DEVIATION`, `MAX_DEVIATION`]: the floor keeps ratings responsive to real
  progress, the ceiling bounds how far a long-absent player's first duel back can throw them.
* Shown rating: the rating rounded to a whole number, halves up. Provisional while
  RD ≥ `PROVISIONAL_DEVIATION` (shown as `1500?`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SCALE = 400.0 / math.log(10.0)  # 173.7178: Glicko rating points per unit of the Glicko-2 scale
START_RATING = 1500.0
START_DEVIATION = 350.0  # RD of a newcomer (rating points): ratings move fast at first
START_VOLATILITY = 0.09  # lichess's default volatility
TAU = 0.75  # how fast volatility itself may change (Glickman: 0.3 to 1.2; lichess 0.75)
MIN_DEVIATION = 45.0  # floor of the RD (lichess): a settled rating still moves ~±5 per duel
MAX_DEVIATION = 500.0  # ceiling of the RD, however long a player was away
PROVISIONAL_DEVIATION = 110.0  # RD at or above this: the rating is provisional (`1500?`)
RATING_PERIODS_PER_DAY = 0.21436  # lichess: RD 45 grows back to ~110 in about a year of absence
CONVERGENCE = 1e-6  # precision of the volatility iteration (Glickman's ε)


@dataclass(frozen=True, slots=True)
class Glicko:
    """A player's rating on the Glicko scale: rating and deviation in rating points."""

    rating: float
    deviation: float
    volatility: float

    @property
    def shown(self) -> int:
        """The whole-number rating players see."""
        return shown_rating(self.rating)

    @property
    def provisional(self) -> bool:
        return self.deviation >= PROVISIONAL_DEVIATION


NEWCOMER = Glicko(START_RATING, START_DEVIATION, START_VOLATILITY)


def shown_rating(rating: float) -> int:
    """`rating` rounded to a whole number, halves up (1499.5 shows as 1500)."""
    return math.floor(rating + 0.5)


def update(player: Glicko, results: Sequence[tuple[Glicko, float]], periods: float = 1.0, tau: float = TAU) -> Glicko:
    """Glickman's Glicko-2 step for one rating period, without Duely's RD bounds.

    `results` are (opponent before the period, score) pairs, score 1 win, 0.5 draw, 0 loss.
    `periods` is how many rating periods the RD grows over (Glickman: 1). Raises ValueError
    for a score outside [0, 1] or a non-positive deviation or volatility.
    """
    if player.deviation <= 0 or player.volatility <= 0:
        raise ValueError("deviation and volatility must be positive")
    mu, phi, sigma = (player.rating - START_RATING) / SCALE, player.deviation / SCALE, player.volatility
    if not results:
        return Glicko(player.rating, SCALE * math.sqrt(phi * phi + periods * sigma * sigma), sigma)
    info = 0.0  # 1 / v
    surprise = 0.0  # Σ g(φ_j) (s_j - E_j)
    for opponent, score in results:
        if not 0.0 <= score <= 1.0:
            raise ValueError("a score must be between 0 and 1")
        g = _g(opponent.deviation / SCALE)
        expected = 1.0 / (1.0 + math.exp(-g * (mu - (opponent.rating - START_RATING) / SCALE)))
        info += g * g * expected * (1.0 - expected)
        surprise += g * (score - expected)
    v = 1.0 / info
    sigma = _new_volatility(phi, sigma, v, v * surprise, tau)
    phi_star = math.sqrt(phi * phi + periods * sigma * sigma)
    phi = 1.0 / math.sqrt(1.0 / (phi_star * phi_star) + info)
    return Glicko(START_RATING + SCALE * (mu + phi * phi * surprise), SCALE * phi, sigma)


def _g(phi: float) -> float:
    return 1.0 / math.sqrt(1.0 + 3.0 * phi * phi / (math.pi * math.pi))


def _new_volatility(phi: float, sigma: float, v: float, delta: float, tau: float) -> float:
    """Glickman's step 5: the root of f by the Illinois variant of regula falsi."""
    a = math.log(sigma * sigma)
    d2, p2 = delta * delta, phi * phi

    def f(x: float) -> float:
        ex = math.exp(x)
        return ex * (d2 - p2 - v - ex) / (2.0 * (p2 + v + ex) ** 2) - (x - a) / (tau * tau)

    lo = a
    if d2 > p2 + v:
        hi = math.log(d2 - p2 - v)
    else:
        k = 1
        while f(a - k * tau) < 0:
            k += 1
        hi = a - k * tau
    f_lo, f_hi = f(lo), f(hi)
    while abs(hi - lo) > CONVERGENCE:
        c = lo + (lo - hi) * f_lo / (f_hi - f_lo)
        f_c = f(c)
        if f_c * f_hi <= 0:
            lo, f_lo = hi, f_hi
        else:
            f_lo /= 2.0
        hi, f_hi = c, f_c
    return math.exp(lo / 2.0)


def idle_periods(idle_days: float | None) -> float:
    """Rating periods for `idle_days` since the previous rated duel; None (first duel) is 0."""
    return 0.0 if idle_days is None else max(idle_days, 0.0) * RATING_PERIODS_PER_DAY


def after_duel(player: Glicko, opponent: Glicko, score: float, idle_days: float | None) -> Glicko:
    """`player`'s rating after one duel against `opponent` (both as they were before it).

    `idle_days`: days from the player's previous rated duel to the start of this one (None for
    a first duel). The RD is kept within [MIN_DEVIATION, MAX_DEVIATION].
    """
    # lila's way: the inactivity growth is step 6's φ* = sqrt(φ² + n·σ'²), n the idle periods
    # (Glickman's n = 1 would add ~15 points of RD per duel and keep every RD above ~90).
    new = update(player, [(opponent, score)], periods=idle_periods(idle_days))
    return Glicko(new.rating, min(max(new.deviation, MIN_DEVIATION), MAX_DEVIATION), new.volatility)


def duel_update(a: Glicko, b: Glicko, score_a: float, idle_days_a: float | None, idle_days_b: float | None) -> tuple[Glicko, Glicko]:
    """Both players' ratings after a duel in which A scored `score_a` (B scored 1 - score_a)."""
    return after_duel(a, b, score_a, idle_days_a), after_duel(b, a, 1.0 - score_a, idle_days_b)


def shown_change(before: Glicko, after: Glicko) -> int:
    """The change players see: the difference of the two shown ratings."""
    return after.shown - before.shown


def stakes(player: Glicko, opponent: Glicko, idle_days: float | None) -> dict[str, int]:
    """What `player` gains or loses (shown points) for a win, a draw and a loss against `opponent`."""
    return {
        outcome: shown_change(player, after_duel(player, opponent, score, idle_days))
        for outcome, score in (("win", 1.0), ("draw", 0.5), ("loss", 0.0))
    }


def carried_over_deviation(played: int) -> float:
    """The RD given to a player rated before Glicko-2 arrived, from how many duels they had played.

    As if each duel had been a 50/50 game against an established opponent (each adds the
    Fisher information of such a game), floored at MIN_DEVIATION: 0 duels -> 350, 10 -> ~106,
    50 -> ~49. Migration 0002 computes the same in SQL.
    """
    info = 1.0 / (START_DEVIATION / SCALE) ** 2 + max(played, 0) * _g(MIN_DEVIATION / SCALE) ** 2 * 0.25
    return max(SCALE / math.sqrt(info), MIN_DEVIATION)
