"""Publishing judging progress to Kafka, surviving the broker.

One thread sends the messages in the order they were published (so one submission's messages
keep their order), in batches of what has queued up meanwhile and within BATCH_LINGER_SECS: a
batch is sent in order over one connection with one request in flight, and every message of it
is acknowledged by the broker (acks=all) before the next batch. (One message at a time, with
its ack and topic check, capped the instant judge at a few dozen messages a second on a loaded
box: the swarm benchmark then measured this queue, not Duely.) A batch that fails is sent again
whole: a message sent twice is harmless, Duely's intake ignores a `seq` it has seen. Any failure -
broker down, restarted empty (the development tansu keeps nothing, the topic is gone), a
producer gone stale - drops the producer; the thread then re-creates the topic and a producer
and sends the same message again, with a growing pause, until it goes through. `publish` never
blocks and never raises: judging does not wait for Kafka.

A trap: tansu restarted empty acknowledges writes to the topic it no longer has, and drops
them. So the messages sent are kept until the topic's existence has been checked after them (one
metadata call, ~0.8 ms of CPU: at most every VERIFY_EVERY_SECS while messages keep coming, not
per batch); a missing topic counts as a failed send of all of them, sent again whole.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from duely import logs
from duely.backoff import KAFKA_PUBLISH
from duely.devtaski.faults import Faults
from duely.topics import ensure_topic

log = logging.getLogger(__name__)

BROKER_TIMEOUT_MS = 5000
SEND_TIMEOUT_SECS = 15
PUBLISH_BATCH_MAX = 500
# After the first message of a batch, wait this long for more before sending, as a real judge's
# producer does (librdkafka's default linger.ms is 5): under load one produce request, and on
# Duely's side one consumer batch and transaction, carries several submissions' messages instead
# of one each. A lone submission's verdict is this much later.
BATCH_LINGER_SECS = 0.005
LINGER_MS = 1000  # never waited for: every batch ends with flush()
VERIFY_EVERY_SECS = 0.2  # sent messages are checked against a broker restarted empty this often, not per batch
_STOP = object()


class TopicMissing(RuntimeError):
    pass


def topic_exists(admin: KafkaAdminClient, topic: str) -> bool:
    described = admin.describe_topics([topic])
    return bool(described) and described[0]["error_code"] == 0 and bool(described[0]["partitions"])


class Publisher:
    def __init__(self, bootstrap_servers: str, topic: str, faults: Faults):
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.faults = faults
        self._queue: queue.Queue = queue.Queue()
        self._held: dict[str, list[dict]] = {}  # kafka_reorder: a submission's messages until its verdict
        self._queued = 0  # messages queued, not yet sent (under _held_lock)
        self._held_lock = threading.Lock()
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._give_up_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="kafka-publisher", daemon=True)
        self.sent = 0

    def start(self) -> None:
        self._thread.start()

    def publish(self, message: dict) -> None:
        """Queue `message` (keyed by its submission_id) for sending, applying the Kafka fault switches."""
        self.publish_many([message])

    def publish_many(self, messages: list[dict]) -> None:
        """Queue `messages` in order, as one item (one wake-up of the sending thread, and so one
        produce request: the instant judge's messages of a submission go together)."""
        out: list[dict] = []
        for message in messages:
            faults = self.faults.kafka()
            sid = message["submission_id"]
            with self._held_lock:
                batch = self._held.pop(sid, [])
                batch.append(message)
                if faults.reorder:
                    if message["type"] != "verdict":
                        self._held[sid] = batch
                        continue
                    batch.reverse()
            for item in batch:
                out.append(item)
                if faults.duplicate:
                    out.append(item)
        if out:
            with self._held_lock:
                self._queued += len(out)
            self._queue.put(out)

    def backlog(self) -> int:
        """Messages queued and not yet sent."""
        with self._held_lock:
            return self._queued

    def stop(self, timeout_secs: float) -> None:
        """Send what is queued for up to `timeout_secs`, then drop the rest (they are re-sent on request)."""
        self._give_up_at = time.monotonic() + timeout_secs
        self._queue.put(_STOP)
        self._thread.join(timeout_secs + 1)
        self._drop_producer()

    def _run(self) -> None:
        self._connect_at_start()
        unverified: list[dict] = []  # sent and acknowledged, the topic not yet seen to exist since
        verify_at = 0.0
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, verify_at - time.monotonic()) if unverified else None)
            except queue.Empty:
                item = None  # time to verify
            messages: list[dict] = []
            send_at = time.monotonic() + BATCH_LINGER_SECS
            while item is not None and item is not _STOP:
                messages += item
                if len(messages) >= PUBLISH_BATCH_MAX:
                    break
                try:
                    item = self._queue.get(timeout=max(0.0, send_at - time.monotonic()))
                except queue.Empty:
                    item = None
            if messages:
                self._deliver(messages, sent=False)
                with self._held_lock:
                    self._queued -= len(messages)
                if not unverified:
                    verify_at = time.monotonic() + VERIFY_EVERY_SECS
                unverified += messages
            if unverified and (item is _STOP or time.monotonic() >= verify_at or len(unverified) >= PUBLISH_BATCH_MAX):
                self._deliver(unverified, sent=True)  # re-sent whole if the topic is gone
                unverified = []
            if item is _STOP:
                return

    def _deliver(self, messages: list[dict], sent: bool) -> None:
        """Send `messages` as one produce request and wait for their acks (`sent=False`), or check
        that the topic of messages already sent still exists (`sent=True`); on any failure, or a
        missing topic, reconnect and send them all again until it goes through."""
        message = messages[0]  # named in the logs
        sid = message["submission_id"]
        encoded = [(m["submission_id"].encode(), json.dumps(m, separators=(",", ":")).encode()) for m in messages]
        retry = KAFKA_PUBLISH.start()
        while True:
            try:
                producer = self._producer or self._connect()
                if not sent:
                    futures = [producer.send(self.topic, key=key, value=value) for key, value in encoded]
                    producer.flush(SEND_TIMEOUT_SECS)  # the batch goes now, as one produce request (linger_ms held it)
                    for future in futures:
                        future.get(timeout=SEND_TIMEOUT_SECS)
                    self.sent += len(messages)
                    return
                if not topic_exists(self._admin, self.topic):
                    raise TopicMissing(self.topic)  # the broker restarted empty: those writes went nowhere
                return
            except Exception as exc:  # any broker trouble: start over with a fresh topic and producer
                sent = False
                delay = retry.next()
                log.warning("publishing failed; retrying", extra=logs.kv(submission_id=sid, seq=message["seq"],
                                                                         error=type(exc).__name__, in_secs=delay))
                self._drop_producer()
            if self._give_up_at is not None and time.monotonic() + delay > self._give_up_at:
                log.warning("stopping: message dropped", extra=logs.kv(submission_id=sid, seq=message["seq"],
                                                                        messages=len(messages)))
                return
            time.sleep(delay)

    def _connect_at_start(self) -> None:
        """Create the topic and producer before the first message, so readers can subscribe at once."""
        retry = KAFKA_PUBLISH.start()
        while self._give_up_at is None and self._queue.empty():
            try:
                self._connect()
                return
            except Exception as exc:  # the broker may well start after us; messages will retry anyway
                delay = retry.next()
                log.info("Kafka not reachable yet", extra=logs.kv(error=type(exc).__name__, in_secs=delay))
                self._drop_producer()
            time.sleep(delay)

    def _connect(self) -> KafkaProducer:
        self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=BROKER_TIMEOUT_MS,
                                       client_id="devtaski-admin")
        ensure_topic(self._admin, self.topic)  # topics.DEV_TOPIC_PARTITIONS, as the consumer's
        self._producer = KafkaProducer(
            bootstrap_servers=self.bootstrap_servers, client_id="devtaski", acks="all",
            # sends are held (not sent one by one as they are queued) until `flush` sends the whole batch at once
            linger_ms=LINGER_MS,
            max_in_flight_requests_per_connection=1, retries=2,
            # our own retry loop resends after a broker restart; producer ids would not survive it
            enable_idempotence=False, allow_auto_create_topics=False,
            max_block_ms=BROKER_TIMEOUT_MS, request_timeout_ms=BROKER_TIMEOUT_MS, delivery_timeout_ms=2 * BROKER_TIMEOUT_MS,
        )
        log.info("connected to Kafka", extra=logs.kv(bootstrap_servers=self.bootstrap_servers, topic=self.topic))
        return self._producer

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            _close_quietly(lambda: producer.close(timeout=0))
        if admin is not None:
            _close_quietly(admin.close)


def _close_quietly(close) -> None:
    try:
        close()
    except Exception:  # a broken client may fail to close; it is discarded either way
        pass
