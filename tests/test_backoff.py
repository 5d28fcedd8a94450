"""The one backoff policy (duely/backoff.py): growth, cap, jitter, reset, and the named policies
keeping the numbers their sites had."""

from __future__ import annotations

import random

import pytest

from duely import backoff, dispatch, taski
from duely.backoff import Backoff


def test_waits_grow_by_the_factor_up_to_the_cap():
    policy = Backoff(initial=0.5, cap=15.0)
    assert policy.delays(8) == (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0)
    assert Backoff(initial=0.2, cap=0.5, factor=2.5).delays(3) == (0.2, 0.5, 0.5)
    assert Backoff(initial=1.0, cap=1.0, factor=1.0).delays(3) == (1.0, 1.0, 1.0)


def test_a_failure_count_of_zero_or_less_waits_the_initial_delay_and_huge_counts_the_cap():
    policy = Backoff(initial=1.0, cap=60.0)
    assert policy.delay(0) == policy.delay(-3) == 1.0
    assert policy.delay(10_000) == 60.0  # no float overflow on a very long outage


def test_jitter_shortens_each_wait_by_at_most_its_fraction_and_varies():
    policy = Backoff(initial=1.0, cap=8.0, jitter=0.5)
    rng = random.Random(1)
    waits = [policy.delay(4, rng) for _ in range(200)]
    assert all(4.0 <= w <= 8.0 for w in waits)
    assert len(set(waits)) > 100
    assert min(waits) < 4.5 and max(waits) > 7.5  # the whole band is used


def test_a_retry_grows_with_failures_and_starts_over_after_a_reset():
    retry = Backoff(initial=0.1, cap=0.4).start()
    assert retry.last == 0.0
    assert [retry.next() for _ in range(4)] == [0.1, 0.2, 0.4, 0.4]
    assert (retry.failures, retry.last) == (4, 0.4)
    retry.reset()
    assert (retry.failures, retry.last) == (0, 0.0)
    assert retry.next() == 0.1


@pytest.mark.parametrize("args", [dict(initial=0, cap=1), dict(initial=2, cap=1), dict(initial=1, cap=2, factor=0.5),
                                  dict(initial=1, cap=2, jitter=1.5)])
def test_a_policy_that_makes_no_sense_is_refused(args):
    with pytest.raises(ValueError):
        Backoff(**args)


def test_the_named_policies_keep_their_sites_numbers():
    assert backoff.LISTEN_RECONNECT.delays(7) == (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0)
    assert backoff.DATABASE_OUTAGE.delays(6) == (0.5, 1.0, 2.0, 4.0, 8.0, 10.0)
    assert backoff.BROKER_RECONNECT.delays(6) == (0.5, 1.0, 2.0, 4.0, 8.0, 10.0)
    assert backoff.CHILD_RESTART.delays(7) == (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0)
    assert backoff.KAFKA_PUBLISH.delays(6) == (0.2, 0.4, 0.8, 1.6, 3.2, 5.0)
    assert taski.RETRY_DELAYS_SECS == (0.2, 0.5)
    assert [dispatch.backoff_secs(n) for n in (0, 1, 2, 3, 6, 7, 50)] == [1.0, 1.0, 2.0, 4.0, 32.0, 60.0, 60.0]
    # Retried transactions: jittered, short, capped.
    rng = random.Random(3)
    waits = [backoff.TRANSACTION_RETRY.delay(n, rng) for n in range(1, 30)]
    assert all(0.0 < w <= 0.2 for w in waits) and len(set(waits)) == len(waits)


def test_an_outage_log_paces_its_retries_by_its_policy_and_starts_over_when_the_database_answers():
    import logging

    import psycopg

    from duely.outage import OutageLog

    down = OutageLog(logging.getLogger("test"), Backoff(initial=0.5, cap=2.0))
    refused = psycopg.OperationalError("connection refused")  # no SQLSTATE: the server never answered
    waits = []
    for _ in range(4):
        assert down.failed(refused)
        waits.append(down.backoff_secs)
    assert waits == [0.5, 1.0, 2.0, 2.0] and down.failures == 4 and down.down
    assert not down.retry_due()
    assert not down.failed(ValueError("a bug, not an outage"))
    down.ok()
    assert (down.down, down.failures, down.retry_due()) == (False, 0, True)
    assert down.failed(refused) and down.backoff_secs == 0.5
