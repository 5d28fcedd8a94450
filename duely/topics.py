"""Making sure a Kafka topic exists: the one place Duely, its dev Taski and the tests create one.

A memory-only broker (the development tansu) starts, and restarts, knowing no topic, and does
not create one on first use; so whoever reads or writes Taski's topic creates it first.
kafka-python is imported on use: the web workers never talk to Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from duely.logs import kv

log = logging.getLogger(__name__)

BROKER_TIMEOUT_MS = 5000
# The partitions of a topic created here: only ever the development broker's (in production
# Taski's team creates the topic). Eight, not one: the development broker (tansu, memory storage)
# lists a whole partition on every fetch that returns data, so its CPU per record grows with the
# partition (bench/broker.py: 1.17 -> 3.34 ms per record as one partition grows 4,000 -> 10,000
# records, 1.10 -> 1.78 ms over eight); a submission's messages share a key, so one partition.
DEV_TOPIC_PARTITIONS = 8


@contextmanager
def admin_client(bootstrap_servers: str, **options: Any) -> Iterator[Any]:
    """A KafkaAdminClient for `bootstrap_servers` ("host:port[,...]"), closed afterwards."""
    from kafka.admin import KafkaAdminClient

    options.setdefault("request_timeout_ms", BROKER_TIMEOUT_MS)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), **options)
    try:
        yield admin
    finally:
        admin.close()


def ensure_topic(admin: Any, topic: str, partitions: int = DEV_TOPIC_PARTITIONS) -> bool:
    """Create `topic` (replication factor 1) unless it exists; True when it was created here."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        return False
    log.info("topic created", extra=kv(topic=topic, partitions=partitions))
    return True
