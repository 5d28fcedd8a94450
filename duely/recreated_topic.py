"""A topic recreated under a running consumer: noticed by its topic id, read again from its start.

The development broker keeps everything in memory: when it restarts, its topics are gone and the
first client to come back creates Taski's topic again (duely/topics.py). On a real cluster an
operator may delete and recreate a topic. Either way the new topic's offsets start again at 0,
but kafka-python (pinned in requirements.txt) does not start over: it fetches by topic name, and
a rebalance keeps the fetch position of every partition assigned again
(`SubscriptionState.assign_from_subscribed`). A consumer that had read a partition up to offset N
then skips the new topic's first N records of it, or waits for record N while the verdicts before
it are never read. tests/test_consumer.py showed it with the development topic in several
partitions: after a broker restart the verdict sent again never arrived.

A recreated topic has a new id (KIP-516, in every metadata response of the brokers we use).
`TopicWatch.recreated` is called after each poll, before its records are applied: when the id in
the consumer's metadata is no longer the one its positions belong to, the poll's records are
dropped unapplied and every assigned partition is read again from its beginning (offsets
committed for the old topic say nothing about the new one). Reading again is safe: applying is
idempotent (seq).
"""

from __future__ import annotations

import logging
from typing import Any

from duely.logs import kv

log = logging.getLogger(__name__)


class TopicWatch:
    """The id of the topic a consumer's positions belong to (one consumer, one topic)."""

    def __init__(self, topic: str):
        self.topic = topic
        self.topic_id: Any = None  # unknown until the consumer's metadata names it

    def recreated(self, consumer: Any) -> bool:
        """True when `topic` was recreated since the last call: its assigned partitions are then
        sought to their beginning, and the caller drops the records of the poll just made."""
        # kafka-python's own metadata (a private attribute of the pinned version; tests/test_consumer.py
        # fails if an upgrade moves it). None while the topic is missing: nothing to compare yet.
        current = consumer._cluster.topic_id(self.topic)
        if current is None or current == self.topic_id:
            return False
        known, self.topic_id = self.topic_id, current
        if known is None:
            return False
        partitions = sorted(consumer.assignment())
        log.warning("topic recreated; reading it again from its start",
                    extra=kv(topic=self.topic, old_id=known, new_id=current, partitions=len(partitions)))
        if partitions:
            consumer.seek_to_beginning(*partitions)
        return True
