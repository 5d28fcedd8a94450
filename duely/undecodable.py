"""Record batches the consumer cannot decode: found, logged, counted and skipped.

A batch may be impossible to read: compressed with a codec whose library is missing, a
corrupt compressed payload, a failed CRC. kafka-python then raises from `poll()` every time
it reaches that batch, without saying where it is, and the consumer would spin on it (or, as
before, reconnect forever) while every later verdict waits behind it. `skip_undecodable_batch`
finds the batch, logs it loudly, counts it and seeks the partition past it, so the rest of the
topic keeps flowing. The verdicts it held are not lost for good: their submissions stay
`testing`, are sent to Taski again after JUDGE_TIMEOUT, and Taski publishes them again.
See docs/taski-topic.md.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from duely.logs import kv

log = logging.getLogger(__name__)

# Counters of this process, for the logs and tests.
skipped_batches = 0


@dataclass(frozen=True)
class BadBatch:
    topic: str
    partition: int
    next_offset: int | None  # just past the batch kafka-python was reading, if it got that far


def find_bad_batch(exc: BaseException) -> BadBatch | None:
    """Where kafka-python failed to read a fetched batch, or None if `exc` is not that.

    kafka-python (pinned in requirements.txt) reads fetched batches in its fetcher's
    `PartitionRecords._unpack_records` generator: decompression, CRC checks and record parsing
    happen there, and an error raised there means the batch cannot be read. Its exceptions
    carry no partition or offset, so they are taken from that frame's locals (`self` is the
    partition's records, `batch` the batch being read). tests/test_kafka_codecs.py fails if a
    kafka-python upgrade changes this.
    """
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_name != "_unpack_records":
            continue
        tp = getattr(frame.f_locals.get("self"), "topic_partition", None)
        if tp is None:
            continue
        batch = frame.f_locals.get("batch")
        return BadBatch(tp.topic, tp.partition, getattr(batch, "next_offset", None))
    return None


def skip_undecodable_batch(consumer, exc: BaseException) -> bool:
    """If `exc` (raised by `consumer.poll`) is an unreadable batch, log and count it, seek its
    partition past it and commit that position; returns False for any other error.

    Committing here is safe: the loop applies and commits every poll's records before polling
    again, so nothing before the bad batch is left unapplied on that partition.
    """
    global skipped_batches
    from kafka import OffsetAndMetadata, TopicPartition

    bad = find_bad_batch(exc)
    if bad is None:
        return False
    tp = TopicPartition(bad.topic, bad.partition)
    if tp not in consumer.assignment():  # rebalanced away meanwhile: its new owner meets it
        return False
    position = consumer.position(tp)
    # Past the whole batch when its end is known and ahead; otherwise one offset at a time
    # (a batch whose header itself is unreadable): always forward, so never a spin.
    target = bad.next_offset if bad.next_offset is not None and bad.next_offset > position else position + 1
    consumer.seek(tp, target)
    consumer.commit({tp: OffsetAndMetadata(target, "", -1)})
    skipped_batches += 1
    problem = str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
    log.error(
        "undecodable record batch skipped; its messages are lost until Taski sends them again",
        extra=kv(topic=bad.topic, partition=bad.partition, offsets=f"{position}..{target - 1}", next_offset=target,
                 error=repr(problem), skipped_batches_total=skipped_batches),
    )
    return True
