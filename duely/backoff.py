"""How long to wait before trying again: one policy type, and every policy Duely uses, named here.

A `Backoff` is a frozen policy: the first wait is `initial`, each further failure multiplies it
by `factor`, never beyond `cap`; `jitter` (0..1) shortens each wait by a random fraction of up to
that much, so that many retriers (web workers, schedulers) do not come back in step. A loop
keeps its own `Retry` (`policy.start()`): `next()` is the wait after one more failure, `reset()`
after a success starts over from `initial`.

Pure (no clock, no sleeping, no logging): callers wait the way they must (an Event, a timer, a
restart time), and tests pass their own `random.Random`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    initial: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.cap):
            raise ValueError(f"need 0 < initial <= cap, got {self.initial} and {self.cap}")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1, got {self.factor}")
        if not (0 <= self.jitter <= 1):
            raise ValueError(f"jitter must be within 0..1, got {self.jitter}")

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait after `failures` failures in a row (1 = the first failure; less counts as 1)."""
        steps = max(0, failures - 1)
        # Compared in logarithms: factor ** steps overflows a float long before `steps` is absurd.
        if steps and self.factor > 1 and steps * math.log(self.factor) >= math.log(self.cap / self.initial):
            base = self.cap
        else:
            base = min(self.cap, self.initial * self.factor ** steps)
        if not self.jitter:
            return base
        return base * (1.0 - self.jitter * (rng or random).random())

    def delays(self, count: int, rng: random.Random | None = None) -> tuple[float, ...]:
        """The waits after the first `count` failures."""
        return tuple(self.delay(n, rng) for n in range(1, count + 1))

    def start(self, rng: random.Random | None = None) -> Retry:
        return Retry(self, rng)


class Retry:
    """One retry loop's state under a `Backoff` policy."""

    __slots__ = ("policy", "failures", "last", "_rng")

    def __init__(self, policy: Backoff, rng: random.Random | None = None):
        self.policy = policy
        self.failures = 0  # in a row, since the start or the last reset
        self.last = 0.0  # the wait `next` gave last (0 before any failure)
        self._rng = rng

    def next(self) -> float:
        """Count a failure; the wait before the next attempt."""
        self.failures += 1
        self.last = self.policy.delay(self.failures, self._rng)
        return self.last

    def reset(self) -> None:
        """A success: the next failure waits `initial` again."""
        self.failures = 0
        self.last = 0.0


# -- every retry policy of Duely and its dev Taski, named once ------------------------------------

# A LISTEN connection (held polls' wake-up, duely/eventlog/listener.py; woken jobs, duely/wakeup.py)
# lost or refused: come back fast, a missed notification costs latency.
LISTEN_RECONNECT = Backoff(initial=0.1, cap=5.0)
# A background loop (scheduler jobs, verdict intake) waiting out a database outage (duely/outage.py).
DATABASE_OUTAGE = Backoff(initial=0.5, cap=10.0)
# The verdict consumer rebuilding its Kafka consumer after any broker trouble (duely/verdicts.py).
BROKER_RECONNECT = Backoff(initial=0.5, cap=10.0)
# `make run`'s supervisor restarting a child that exited (duely/run.py; reset after a healthy spell).
CHILD_RESTART = Backoff(initial=0.5, cap=15.0)
# Between the attempts of one Taski call on 5xx or network errors: 0.2 s, then 0.5 s (duely/taski.py).
TASKI_CALL = Backoff(initial=0.2, cap=0.5, factor=2.5)
TASKI_CALL_RETRIES = 2
# A submission whose hand-over to Taski failed waits this long before the next round sends it
# (by its count of failed sends, duely/dispatch.py): 1, 2, 4 ... 60 s.
SUBMISSION_SEND = Backoff(initial=1.0, cap=60.0)
# The dev Taski re-sending a message to Kafka until it goes through (duely/devtaski/publisher.py).
KAFKA_PUBLISH = Backoff(initial=0.2, cap=5.0)
# A request's (or job's) transaction retried after a deadlock or serialization failure
# (duely/db.py): short, since the other transaction has usually just finished; jittered, so the
# two that collided do not collide again.
TRANSACTION_RETRY = Backoff(initial=0.01, cap=0.2, jitter=0.5)
