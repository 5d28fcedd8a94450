"""How fast ratings find a player's level: the old Elo against Glicko-2, in a simulated pool.

Run: .venv/bin/python bench/ratings.py [--players 1000] [--rounds 150] [--seeds 1,2,3]

Pure modules only (no database): `duely.matchmaking.pairing.pair_players` pairs the queue and
`duely.rating` (Glicko-2) or `bench/legacy_elo.py` (the Elo Duely used before) rates the duels.

The pool: `--players` players with hidden strengths ~ N(1500, 300) (the spread
bench/matchmaking.py assumes), everyone starting at 1500. Each round (one simulated hour)
every player queues with probability 0.3, having waited U(0, 30) s, and one pairing round is
run; a duel is won by A with the Elo curve's probability `1 / (1 + 10^((s_B - s_A) / 400))`
of the true strengths (no draws). At round `--rounds`/3 a second cohort of `--newcomers`
players joins, starting at 1500 in a pool that is already rated.

Printed per system (mean over the seeds, range in brackets):
* mean abs. error |shown rating - strength| after a player's 5th, 10th and 20th duel;
* settled: a player settles at duel n when after it the error is ≤ 100 and stays ≤ 150 after
  every later duel of the run; the share settled by the 15th duel, and the duels to settle
  (median, p90; "never" counts as infinite), for the first cohort and for the newcomers;
* spread ratio: standard deviation of the ratings after the 20th duel ÷ that of the strengths;
* Spearman rank correlation between ratings after the 20th duel and strengths.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import legacy_elo  # noqa: E402

from duely import rating  # noqa: E402
from duely.matchmaking.pairing import Waiting, pair_players  # noqa: E402

STRENGTH_MEAN, STRENGTH_SD = 1500.0, 300.0
QUEUE_SHARE = 0.3
MAX_WAIT_SECS = 30.0
ROUND = dt.timedelta(hours=1)
START = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
SETTLED_WITHIN, STAYS_WITHIN = 100, 150


@dataclass
class Player:
    user_id: int
    strength: float
    cohort: str
    elo: int = 1500
    played: int = 0
    glicko: rating.Glicko = field(default_factory=lambda: rating.NEWCOMER)
    rated_at: dt.datetime | None = None
    last_opponent: int | None = None
    shown_after: list[int] = field(default_factory=list)  # shown rating after each duel

    def shown(self, system: str) -> int:
        return self.elo if system == "elo" else self.glicko.shown


def play_duel(system: str, a: Player, b: Player, score_a: float, now: dt.datetime) -> None:
    if system == "elo":
        delta_a, delta_b = legacy_elo.rating_changes(a.elo, a.played, b.elo, b.played, score_a)
        a.elo, b.elo = a.elo + delta_a, b.elo + delta_b
    else:
        def idle(p: Player) -> float | None:
            return None if p.rated_at is None else (now - p.rated_at).total_seconds() / 86400

        a.glicko, b.glicko = rating.duel_update(a.glicko, b.glicko, score_a, idle(a), idle(b))
        a.rated_at = b.rated_at = now
    for p, other in ((a, b), (b, a)):
        p.played += 1
        p.last_opponent = other.user_id
        p.shown_after.append(p.shown(system))


def simulate(system: str, seed: int, players: int, newcomers: int, rounds: int) -> list[Player]:
    rng = random.Random(seed)  # the same pool, queue and dice for both systems
    pool = [Player(i, rng.gauss(STRENGTH_MEAN, STRENGTH_SD), "first") for i in range(players)]
    late = [Player(players + i, rng.gauss(STRENGTH_MEAN, STRENGTH_SD), "newcomer") for i in range(newcomers)]
    for r in range(rounds):
        if r == rounds // 3:
            pool += late
        now = START + r * ROUND
        queued = [p for p in pool if rng.random() < QUEUE_SHARE]
        waits = [rng.uniform(0, MAX_WAIT_SECS) for _ in queued]
        waiting = [
            Waiting(p.user_id, p.shown(system), now - dt.timedelta(seconds=w), p.last_opponent,
                    deviation=p.glicko.deviation if system == "glicko" else 0.0)
            for p, w in zip(queued, waits, strict=True)
        ]
        by_id = {p.user_id: p for p in queued}
        for x, y in pair_players(waiting, now):
            a, b = by_id[x], by_id[y]
            score_a = 1.0 if rng.random() < 1.0 / (1.0 + 10 ** ((b.strength - a.strength) / 400)) else 0.0
            play_duel(system, a, b, score_a, now)
    return pool


def settled_at(p: Player) -> float:
    """The duel count after which p's error is ≤ SETTLED_WITHIN and stays ≤ STAYS_WITHIN; inf if never."""
    errors = [abs(r - p.strength) for r in p.shown_after]
    settled = math.inf
    for n in range(len(errors), 0, -1):  # from the last duel back: the latest stretch within STAYS_WITHIN
        if errors[n - 1] > STAYS_WITHIN:
            break
        if errors[n - 1] <= SETTLED_WITHIN:
            settled = n
    return settled


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        for rank, i in enumerate(order):
            out[i] = float(rank)
        return out

    return statistics.correlation(ranks(xs), ranks(ys))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def metrics(pool: list[Player]) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in (5, 10, 20):
        reached = [p for p in pool if len(p.shown_after) >= n]
        out[f"mae{n}"] = statistics.fmean(abs(p.shown_after[n - 1] - p.strength) for p in reached)
    for cohort in ("first", "newcomer"):
        members = [p for p in pool if p.cohort == cohort and len(p.shown_after) >= 15]
        at = [settled_at(p) for p in members]
        out[f"settled15_{cohort}"] = sum(1 for n in at if n <= 15) / len(at)
        out[f"median_{cohort}"] = statistics.median(at)
        out[f"p90_{cohort}"] = percentile(at, 0.9)
    reached = [p for p in pool if len(p.shown_after) >= 20]
    ratings, strengths = [p.shown_after[19] for p in reached], [p.strength for p in reached]
    out["spread"] = statistics.pstdev(ratings) / statistics.pstdev(strengths)
    out["spearman"] = spearman(ratings, strengths)
    out["settled15_all"] = statistics.fmean([out["settled15_first"], out["settled15_newcomer"]])
    return out


ROWS = [  # (label, metric key, format, target description)
    ("mean abs. error after 5 duels", "mae5", "{:.0f}", ""),
    ("mean abs. error after 10 duels", "mae10", "{:.0f}", "<= 110"),
    ("mean abs. error after 20 duels", "mae20", "{:.0f}", "<= 70"),
    ("settled by 15th duel, first cohort", "settled15_first", "{:.0%}", ">= 80%"),
    ("settled by 15th duel, newcomers", "settled15_newcomer", "{:.0%}", ">= 80%"),
    ("duels to settle, first cohort: median", "median_first", "{:.0f}", ""),
    ("duels to settle, first cohort: p90", "p90_first", "{:.0f}", ""),
    ("duels to settle, newcomers: median", "median_newcomer", "{:.0f}", ""),
    ("duels to settle, newcomers: p90", "p90_newcomer", "{:.0f}", ""),
    ("spread of ratings / of strengths", "spread", "{:.2f}", "0.9 - 1.1"),
    ("Spearman after 20 duels", "spearman", "{:.3f}", ">= 0.96"),
]


def cell(fmt: str, values: list[float]) -> str:
    mean = statistics.fmean(values) if all(math.isfinite(v) for v in values) else math.inf
    lo, hi = min(values), max(values)
    if lo == hi or not math.isfinite(mean):
        return fmt.format(mean) if math.isfinite(mean) else "never"
    return f"{fmt.format(mean)} ({fmt.format(lo)}-{fmt.format(hi)})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--newcomers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    results = {system: [metrics(simulate(system, seed, args.players, args.newcomers, args.rounds)) for seed in seeds]
               for system in ("elo", "glicko")}
    elapsed = time.perf_counter() - started
    print(f"{args.players} players + {args.newcomers} newcomers at round {args.rounds // 3}, strengths "
          f"~ N({STRENGTH_MEAN:.0f}, {STRENGTH_SD:.0f}), {QUEUE_SHARE:.0%} queueing per round, {args.rounds} rounds, "
          f"seeds {args.seeds}; mean over seeds (range)")
    print(f"{'':42} | {'old Elo (K 40/20/10)':>24} | {'Glicko-2 (duely/rating.py)':>26} | target")
    for label, key, fmt, target in ROWS:
        print(f"{label:42} | {cell(fmt, [m[key] for m in results['elo']]):>24} | "
              f"{cell(fmt, [m[key] for m in results['glicko']]):>26} | {target}")
    print(f"({elapsed:.1f} s for {2 * len(seeds)} simulations)")


if __name__ == "__main__":
    main()
