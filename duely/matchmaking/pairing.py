"""Who plays whom in a matchmaking round: a pure function of the waiting players and the time.

No database, no clock, no I/O: `matchmaking/rounds.py` reads the queue every second, calls
`pair_players(waiting, now)` and starts a duel per pair. The approach follows lichess's pool
pairing (lila `modules/pool/src/main/MatchMaking.scala`): one matching over everyone waiting,
not first come first served, where a rating gap costs and waiting earns a bonus.

The rules (every constant carries its unit):

* Allowance. A player who has waited `w` seconds accepts a rating gap of up to
  `max_gap(w) = min(100 + 20*w, 1000)` points. A pair is acceptable when its gap is within the
  allowance of the *longer waiter* of the two (the larger allowance). Not "of both": in a
  busy queue everyone near 2300 finds a closer partner within a second, so a lone 2700 would
  wait until someone 400 points away happens to sit unmatched for 15 s, which may be never.
  With the longer waiter's allowance nobody who has someone within 1000 points waits much
  longer than 45 s. The price: a newcomer may be given an opponent up to the other's
  allowance away; Elo makes that fair for ratings (the favourite gains little).
* Objective. As many pairs as possible; among matchings with that many pairs, the least total
  cost, where a pair costs `gap - bonus(a) - bonus(b)` and `bonus(w) = min(5*w, 300)` points.
  The bonus never makes a gap acceptable; it decides which players get the partners, so a
  long waiter is matched before a newcomer who could take the same partner.
* Uncertain ratings (Glicko RD, `Waiting.deviation`). A provisional player (RD >= 110,
  duely/rating.py) accepts a gap larger by its RD (`widening`), within the same 1000 cap: its
  rating may be that far off anyway, and it gets a duel sooner. A pair of two provisional
  players costs the lesser RD's excess over 110 more (`uncertain_pair_cost`, at most 400): a
  duel against a settled opponent teaches a newcomer about twice as much (Glicko's g(RD)^2 is
  0.97 against RD 45, 0.45 against RD 350), so among equally close partners newcomers meet
  settled players. With no provisional player waiting, both terms are zero and every rule
  below (and the exactness claim) is unchanged; bench/ratings.py measures the effect.
* No immediate rematch. Two players who just played each other (either one's
  `last_opponent_id` is the other) are paired only when neither of them has any other
  acceptable partner among everyone waiting (in particular when they are the only two).
* Determinism. The result depends only on the set of waiting players and `now`, not on
  their order in the input: ties are broken by (rating, joined_at, user_id).

Algorithm: sort once, then steps that are each linear in practice (95 ms for 10,000 players,
see bench/matchmaking.py). For costs `|r_a - r_b|` and one common allowance, an optimal
matching pairs neighbours in rating order, so a DP over the sorted list finds it.

1. Chain DP: each player may pair with any of the next `PAIR_REACH_PLAYERS` in the sorted
   list, the ones between staying unmatched (a newcomer between two long waiters must not
   block them). It maximises (pairs, -cost) exactly over such matchings. It is run again on
   whoever is left (a pair nested around a closer pair is found in the second pass) until a
   pass adds nothing, at most `MAX_PASSES` times.
2. Augment: u - v = w - x (u, x unmatched, v and w paired) becomes u = v, w = x, searched
   among nearby players: crossing pairs, which the DP cannot express.
3. Complete: any two players still unmatched who are acceptable are paired, so nobody is
   left waiting while an acceptable partner waits too (guaranteed, not best effort).
4. Improve: nearby exchanges that keep the number of pairs and lower the cost.

Exactness. When every player has the same allowance and bonus (they joined at the same
moment, or all have waited 60 s or more) and nobody's last opponent is waiting, the result is
optimal over *all* matchings: step 1 is then exact and steps 2 to 4 change nothing. With
different waiting times a pair's acceptability depends on both players, so this is
general-graph matching (an O(n^3) blossom is too slow at 10,000), and the result is a
heuristic: never worse than the plain neighbour DP, and on random pools of up to 12 players
(waits 0-60 s, some rematch pairs) it finds the largest possible number of pairs in about 99%
of rounds and the exact optimum in about 98% (tests/test_pairing.py measures both). A player
it misses waits one more round, with a larger allowance and bonus.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from duely.rating import PROVISIONAL_DEVIATION

BASE_GAP_RATING = 100  # allowance of a player who has just joined
GAP_GROWTH_RATING_PER_SEC = 20  # allowance grows this much per second waited ...
MAX_GAP_RATING = 1000  # ... up to this (reached after 45 s); no pair is ever further apart
WAIT_BONUS_RATING_PER_SEC = 5  # cost bonus per second waited: long waiters win contested partners
MAX_WAIT_BONUS_RATING = 300  # reached after 60 s
PAIR_REACH_PLAYERS = 4  # a player may pair with any of the next 4 in rating order within a pass
MAX_PASSES = 8  # bounds the worst case at O(8 n); passes after the second rarely add a pair
AUGMENT_REACH_PLAYERS = 4  # step 2 looks this many places either side in rating order
IMPROVE_REACH_PLAYERS = 4  # step 4 tries exchanges with the next 4 players in rating order ...
PROVISIONAL_WIDENING = 1.0  # a provisional player's allowance grows by this times its RD (points)
UNCERTAIN_PAIR_COST = 1.0  # cost per RD point the less uncertain of two provisional players has above PROVISIONAL_DEVIATION
MAX_UNCERTAIN_PAIR_COST_RATING = 400  # bound of that cost (an RD is at most 500)
IMPROVE_SWEEPS = 4  # ... over at most 4 sweeps (each change lowers the total cost, so it also ends by itself)


@dataclass(frozen=True, slots=True)
class Waiting:
    """One player in the queue: their rating and its deviation, when they joined, whom they played last."""

    user_id: int
    rating: int
    joined_at: datetime
    last_opponent_id: int | None = None
    deviation: float = 0.0  # Glicko RD (rating points); 0 = certain


def max_gap(wait_secs: float) -> int:
    """The largest rating gap (whole points) a player who has waited `wait_secs` seconds accepts."""
    # Whole points keep every comparison exact integer arithmetic (and the bisect in
    # _fresh_options consistent with the pair test in the DP).
    return min(BASE_GAP_RATING + int(GAP_GROWTH_RATING_PER_SEC * max(wait_secs, 0.0)), MAX_GAP_RATING)


def widening(deviation: float) -> int:
    """Extra allowance (whole points) of a player whose rating has this RD: its RD while provisional."""
    return int(PROVISIONAL_WIDENING * deviation) if deviation >= PROVISIONAL_DEVIATION else 0


def uncertain_pair_cost(dev_a: float, dev_b: float) -> int:
    """Extra cost (whole points) of pairing two provisional players: such a duel teaches little."""
    excess = min(dev_a, dev_b) - PROVISIONAL_DEVIATION
    return min(int(UNCERTAIN_PAIR_COST * excess), MAX_UNCERTAIN_PAIR_COST_RATING) if excess >= 0 else 0


def wait_bonus(wait_secs: float) -> int:
    """The cost bonus (whole rating points) a player who has waited `wait_secs` seconds brings to a pair."""
    return min(int(WAIT_BONUS_RATING_PER_SEC * max(wait_secs, 0.0)), MAX_WAIT_BONUS_RATING)


def waited_secs(player: Waiting, now: datetime) -> float:
    """Seconds `player` has been waiting at `now`; never negative (clocks of two servers may differ)."""
    return max((now - player.joined_at).total_seconds(), 0.0)


def pair_players(waiting: Sequence[Waiting], now: datetime) -> list[tuple[int, int]]:
    """Pairs of user ids to start duels for this round, following the module's rules.

    Every pair is acceptable (gap within the longer waiter's allowance, no avoidable rematch),
    no user appears twice, and the result is the same for any order of `waiting`. Pairs are
    listed in rating order, each as (lower rated, higher rated). Raises ValueError when a user
    id appears twice in `waiting`.
    """
    players = sorted(waiting, key=lambda p: (p.rating, p.joined_at, p.user_id))
    ids = [p.user_id for p in players]
    if len(set(ids)) != len(ids):
        raise ValueError("a user is waiting twice")
    if len(players) < 2:
        return []
    pool = _Pool(players, now)
    remaining = list(range(len(players)))
    for _ in range(MAX_PASSES):
        found = pool.best_chain_matching(remaining)
        if not found:
            break
        for a, b in found:
            pool.mate[a], pool.mate[b] = b, a
        remaining = [i for i in remaining if pool.mate[i] < 0]
        if len(remaining) < 2:
            break
    pool.augment()
    pool.complete()
    pool.improve()
    return [(ids[i], ids[j]) for i, j in enumerate(pool.mate) if i < j]


class _Pool:
    """The round's players in rating order (indices into that order), with what the DP needs."""

    def __init__(self, players: list[Waiting], now: datetime) -> None:
        waits = [waited_secs(p, now) for p in players]
        self.ratings = [p.rating for p in players]
        self.deviation = [p.deviation for p in players]
        self.any_provisional = any(d >= PROVISIONAL_DEVIATION for d in self.deviation)
        self.allowance = [max_gap(w) for w in waits]
        if self.any_provisional:  # (the common path of an established pool stays as fast as before)
            self.allowance = [min(a + widening(d), MAX_GAP_RATING) for a, d in zip(self.allowance, self.deviation, strict=True)]
            # chosen once per round: the DP calls it millions of times
            self.cost = self._cost_with_uncertainty  # type: ignore[method-assign]
        self.bonus = [wait_bonus(w) for w in waits]
        index = {p.user_id: i for i, p in enumerate(players)}
        # rematch[i]: the waiting players i must not be paired with while either has a choice.
        self.rematch: dict[int, set[int]] = {}
        for i, p in enumerate(players):
            j = index.get(p.last_opponent_id) if p.last_opponent_id is not None else None
            if j is not None and j != i:
                self.rematch.setdefault(i, set()).add(j)
                self.rematch.setdefault(j, set()).add(i)
        self.has_fresh_option = self._fresh_options()
        self.mate = [-1] * len(players)  # the partner's index, -1 while unmatched
        # One more pair must outweigh any saving in cost, so the score of a matching is
        # pairs * pair_value - total cost; a pair's cost lies in
        # [-2 * MAX_WAIT_BONUS_RATING, MAX_GAP_RATING + MAX_UNCERTAIN_PAIR_COST_RATING].
        self.pair_value = (MAX_GAP_RATING + MAX_UNCERTAIN_PAIR_COST_RATING + 2 * MAX_WAIT_BONUS_RATING) * (len(players) + 1) + 1

    def _fresh_options(self) -> dict[int, bool]:
        """For each player with a rematch partner waiting: is anyone else acceptable to them?"""
        ratings, allowance = self.ratings, self.allowance
        # j reaches i when |r_i - r_j| <= allowance[j]: count the intervals [r_j - a_j, r_j + a_j] containing r_i.
        starts = sorted(r - a for r, a in zip(ratings, allowance, strict=True))
        ends = sorted(r + a for r, a in zip(ratings, allowance, strict=True))
        result: dict[int, bool] = {}
        for i, partners in self.rematch.items():
            r, a = ratings[i], allowance[i]
            lo, hi = bisect.bisect_left(ratings, r - a), bisect.bisect_right(ratings, r + a)
            within_mine = hi - lo - 1 - sum(1 for j in partners if lo <= j < hi)
            reaching_me = bisect.bisect_right(starts, r) - bisect.bisect_left(ends, r) - 1
            reaching_me -= sum(1 for j in partners if abs(ratings[j] - r) <= allowance[j])
            result[i] = within_mine > 0 or reaching_me > 0
        return result

    def acceptable(self, i: int, j: int) -> bool:
        """May players i and j be paired?"""
        if abs(self.ratings[j] - self.ratings[i]) > max(self.allowance[i], self.allowance[j]):
            return False
        if j in self.rematch.get(i, ()):
            return not self.has_fresh_option[i] and not self.has_fresh_option[j]
        return True

    def best_chain_matching(self, order: list[int]) -> list[tuple[int, int]]:
        """The best matching of `order` (ascending rating) in which each player pairs with one of
        the next PAIR_REACH_PLAYERS players and everyone between them stays unmatched."""
        ratings, bonus, pair_value, dev = self.ratings, self.bonus, self.pair_value, self.deviation
        any_provisional = self.any_provisional
        size = len(order)
        best = [0] * (size + 1)  # best[k]: score of the best matching of order[:k]
        back_of = [0] * (size + 1)  # 0: order[k-1] unmatched; b: paired with order[k-1-b]
        for k in range(1, size + 1):
            j = order[k - 1]
            score, pick = best[k - 1], 0
            for back in range(1, min(PAIR_REACH_PLAYERS, k - 1) + 1):
                i = order[k - 1 - back]
                gap = ratings[j] - ratings[i]
                if gap > MAX_GAP_RATING:
                    break  # the list is sorted: everyone further back is further away
                if self.acceptable(i, j):
                    cost = gap - bonus[i] - bonus[j]
                    if any_provisional:
                        cost += uncertain_pair_cost(dev[i], dev[j])
                    candidate = best[k - 1 - back] + pair_value - cost
                    if candidate > score:
                        score, pick = candidate, back
            best[k], back_of[k] = score, pick
        found: list[tuple[int, int]] = []
        k = size
        while k > 0:
            back = back_of[k]
            if back:
                found.append((order[k - 1 - back], order[k - 1]))
                k -= back + 1
            else:
                k -= 1
        found.reverse()
        return found

    def cost(self, i: int, j: int) -> int:
        """The cost of pairing i and j: their gap less both waiting bonuses."""
        return abs(self.ratings[i] - self.ratings[j]) - self.bonus[i] - self.bonus[j]

    def _cost_with_uncertainty(self, i: int, j: int) -> int:
        """`cost` when someone waiting is provisional: plus the cost of pairing two uncertain players."""
        return (abs(self.ratings[i] - self.ratings[j]) - self.bonus[i] - self.bonus[j]
                + uncertain_pair_cost(self.deviation[i], self.deviation[j]))

    def augment(self) -> None:
        """Add pairs by turning u - v = w - x (u, x unmatched, v = w a pair) into u = v, w = x.

        This is the shortest augmenting path of matching theory, searched among the
        AUGMENT_REACH_PLAYERS nearest players on either side. It recovers what the chain DP
        cannot express: crossing pairs, and two players who may not meet again sitting
        side by side with their only other partners on the far side of each other.
        """
        mate, size, reach = self.mate, len(self.mate), AUGMENT_REACH_PLAYERS
        grew = True
        while grew:  # each change adds a pair, so this ends
            grew = False
            for u in [i for i in range(size) if mate[i] < 0]:
                if mate[u] >= 0:
                    continue  # paired by an augmentation earlier in this sweep
                best: tuple[int, int, int] | None = None  # (cost change, v, x)
                for v in range(max(u - reach, 0), min(u + reach + 1, size)):
                    w = mate[v]
                    if w < 0 or v == u or not self.acceptable(u, v):
                        continue
                    for x in range(max(w - reach, 0), min(w + reach + 1, size)):
                        if mate[x] >= 0 or x == u or x == w or not self.acceptable(w, x):
                            continue
                        change = self.cost(u, v) + self.cost(w, x) - self.cost(v, w)
                        if best is None or (change, v, x) < best:
                            best = (change, v, x)
                if best is not None:
                    _, v, x = best
                    w = mate[v]
                    mate[u], mate[v], mate[w], mate[x] = v, u, x, w
                    grew = True

    def complete(self) -> None:
        """Make the matching maximal: pair any two still-unmatched players who are acceptable.

        Nearest first in rating order. The DP and the augmenting step leave such pairs only in
        odd corners (beyond their reach, or after MAX_PASSES), but "nobody waits while an
        acceptable partner waits too" is worth guaranteeing outright.
        """
        mate, ratings = self.mate, self.ratings
        left = [i for i in range(len(mate)) if mate[i] < 0]
        for pos, u in enumerate(left):
            if mate[u] >= 0:
                continue
            for nxt in range(pos + 1, len(left)):
                x = left[nxt]
                if ratings[x] - ratings[u] > MAX_GAP_RATING:
                    break
                if mate[x] < 0 and self.acceptable(u, x):
                    mate[u], mate[x] = x, u
                    break

    def improve(self) -> None:
        """Lower the total cost without losing a pair, by exchanges between nearby players.

        For u and each x among the next IMPROVE_REACH_PLAYERS in rating order: two pairs
        (u, v), (x, y) may swap partners; an unmatched x may take u's place next to v (or an
        unmatched u take x's place), which is how a long waiter's bonus claims a partner the
        DP gave to a newcomer. A change is made only when it lowers the cost.
        """
        mate, size, cost = self.mate, len(self.mate), self.cost
        for _ in range(IMPROVE_SWEEPS):
            changed = False
            for u in range(size):
                for x in range(u + 1, min(u + IMPROVE_REACH_PLAYERS + 1, size)):
                    v, y = mate[u], mate[x]
                    if v == x or (v < 0 and y < 0):
                        continue  # complete() has already paired any acceptable unmatched two
                    options: tuple[tuple[int, int, int, int], ...]
                    if v >= 0 and y >= 0:
                        current = cost(u, v) + cost(x, y)
                        options = ((u, x, v, y), (u, y, v, x))
                    elif v >= 0:
                        current, options = cost(u, v), ((x, v, -1, -1),)
                    else:
                        current, options = cost(x, y), ((u, y, -1, -1),)
                    for a, b, c, d in options:
                        # the cost test first: it is cheap and almost always fails
                        if a == b or cost(a, b) + (cost(c, d) if c >= 0 else 0) >= current:
                            continue
                        if not self.acceptable(a, b) or (c >= 0 and not self.acceptable(c, d)):
                            continue
                        for z in (u, v, x, y):
                            if z >= 0:
                                mate[z] = -1
                        mate[a], mate[b] = b, a
                        if c >= 0:
                            mate[c], mate[d] = d, c
                        changed = True
                        break
            if not changed:
                break
