"""Benchmark of one matchmaking round (`duely.matchmaking.pairing.pair_players`).

Run: .venv/bin/python bench/matchmaking.py [--sizes 100,1000,10000] [--repeats 5] [--seed 1]

For each pool size: ratings ~ N(1500, 300), waiting times uniform in 0-60 s (optionally a
share of players whose last opponent is waiting too). Prints the round time (median and
worst of the repeats), the number of pairs, and the mean rating gap of those pairs against
the optimum for the same number of pairs: the least total gap of any P disjoint pairs,
ignoring allowances, waiting bonuses and rematches. That reference is computed here
independently of the module (on a line the best P pairs are P non-adjacent gaps between
rating neighbours; the classic exchange-heap algorithm picks them exactly), so a ratio of
1.00 is the floor and the excess is the price of the allowance, bonus and rematch rules.
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import random
import statistics
import sys
import time

from duely.matchmaking.pairing import Waiting, pair_players

NOW = dt.datetime(2026, 11, 22, 17, 0, tzinfo=dt.UTC)
RATING_MEAN, RATING_SD = 1500, 300
MAX_WAIT_SECS = 60.0


def random_pool(rng: random.Random, size: int, rematch_share: float) -> list[Waiting]:
    players = [
        Waiting(user_id=uid, rating=round(rng.gauss(RATING_MEAN, RATING_SD)),
                joined_at=NOW - dt.timedelta(seconds=rng.uniform(0, MAX_WAIT_SECS)), last_opponent_id=None)
        for uid in range(size)
    ]
    ids = list(range(size))
    rng.shuffle(ids)
    for a, b in zip(ids[0::2], ids[1::2], strict=False):
        if rng.random() < rematch_share:  # both came back from their duel: each names the other
            players[a] = Waiting(a, players[a].rating, players[a].joined_at, b)
            players[b] = Waiting(b, players[b].rating, players[b].joined_at, a)
    return players


def min_total_gap(ratings: list[int], pairs: int) -> int:
    """The least total |r_a - r_b| over any `pairs` disjoint pairs.

    An optimal choice pairs rating neighbours, so it is `pairs` non-adjacent entries of the
    gap list with the least sum. Greedy with regret: take the smallest gap g between a and b
    (its neighbours a, b in a linked list); replace the three by a - b + ... i.e. one node worth
    left + right - g, which taking later means "undo g, take both neighbours instead".
    """
    values = sorted(ratings)
    gaps = [b - a for a, b in zip(values, values[1:], strict=False)]
    if pairs > (len(gaps) + 1) // 2:
        raise ValueError("more pairs than players allow")
    inf = float("inf")
    value = [inf, *gaps, inf]  # sentinels at both ends
    left = list(range(-1, len(value) - 1))
    right = list(range(1, len(value) + 1))
    alive = [True] * len(value)
    heap = [(g, i) for i, g in enumerate(value) if 0 < i < len(value) - 1]
    heapq.heapify(heap)
    total = 0
    for _ in range(pairs):
        while True:
            g, i = heapq.heappop(heap)
            if alive[i] and g == value[i]:
                break
        total += g
        lo, hi = left[i], right[i]
        value[i] = value[lo] + value[hi] - g
        alive[lo] = alive[hi] = False
        left[i], right[i] = left[lo], right[hi]
        if left[i] >= 0:
            right[left[i]] = i
        if right[i] < len(value):
            left[right[i]] = i
        heapq.heappush(heap, (value[i], i))
    return int(total)


def bench(size: int, repeats: int, seed: int, rematch_share: float) -> None:
    rng = random.Random(seed + size)
    pool = random_pool(rng, size, rematch_share)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        pairs = pair_players(pool, NOW)
        times.append(time.perf_counter() - started)
    rating = {p.user_id: p.rating for p in pool}
    ours = sum(abs(rating[a] - rating[b]) for a, b in pairs)
    best = min_total_gap([p.rating for p in pool], len(pairs))
    mean_ours, mean_best = ours / max(len(pairs), 1), best / max(len(pairs), 1)
    print(f"{size:>6} waiting | round {statistics.median(times) * 1000:7.1f} ms median, {max(times) * 1000:7.1f} ms worst "
          f"| {len(pairs):>5} pairs ({2 * len(pairs) / size:.1%} matched) "
          f"| mean gap {mean_ours:7.3f} vs optimal {mean_best:7.3f} (x{mean_ours / mean_best if mean_best else 1.0:.4f}) "
          f"| max gap {max((abs(rating[a] - rating[b]) for a, b in pairs), default=0)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000,100")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rematch-share", type=float, default=0.0, help="share of players whose last opponent waits too")
    args = parser.parse_args(argv)
    print(f"ratings ~ N({RATING_MEAN}, {RATING_SD}), waits U(0, {MAX_WAIT_SECS:.0f}) s, "
          f"rematch share {args.rematch_share:.0%}, {args.repeats} repeats, Python {sys.version.split()[0]}")
    for size in (int(s) for s in args.sizes.split(",")):
        bench(size, args.repeats, args.seed, args.rematch_share)


if __name__ == "__main__":
    main()
