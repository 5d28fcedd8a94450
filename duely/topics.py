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

# Partitions of a topic created here (by the consumer or the dev Taski; in production Taski's
# team creates it, with any number: docs/taski-topic.md). Eight, not one, for the development
# tansu: its memory store reads a partition by walking every batch in it, so each fetch that
# returns messages costs CPU in proportion to the batches the partition holds. One partition
# grew from ~1.6 to ~8.3 ms of broker CPU per produce-and-fetch between 1,000 and 10,000
# batches; eight (messages keyed by submission, spread over them) 1.1 to 2.0 ms, idle no dearer
# (bench-like script, 2026-12-04). Over a 5-minute swarm the broker's CPU per submission had
# tripled (0.5 -> 1.5 ms) with one.
CREATED_PARTITIONS = 8


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


def ensure_topic(admin: Any, topic: str, partitions: int = CREATED_PARTITIONS) -> bool:
    """Create `topic` (replication factor 1) unless it exists; True when it was created here."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        return False
    log.info("topic created", extra=kv(topic=topic, partitions=partitions))
    return True
