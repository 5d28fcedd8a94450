"""The consumer loop against the real broker: applies, skips poison, commits offsets only
after the database commit, reconnects by itself when the broker restarts empty, and reads a
recreated topic from its start."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from kafka import KafkaProducer
from sqlalchemy import text

from duely import verdicts
from duely.config import Config
from duely.infra import free_port, start_broker
from duely.topics import admin_client, ensure_topic
from tests.test_submissions import submit


def produce(bootstrap: str, topic: str, messages: list, partition: int | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for m in messages:
        value = m if isinstance(m, bytes) else json.dumps(m).encode()
        producer.send(topic, key=b"k", value=value, partition=partition)
    producer.flush()
    producer.close()


def verdict_of(db, sid):
    with db.transaction() as s:
        return s.execute(text("SELECT verdict FROM submissions WHERE id = :i"), {"i": sid}).scalar()


def wait_until(predicate, within_secs=30.0):
    deadline = time.monotonic() + within_secs
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


class RunningConsumer:
    def __init__(self, db, config):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=verdicts.consume, args=(db, config, self.stop), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(20)
        assert not self.thread.is_alive()


@pytest.fixture
def two_submissions(make_user, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    return [submit(alice, duel_id, client_temp_id=f"c{i}").get_json()["submission_id"] for i in range(2)]


def consumer_config(database_url, bootstrap, topic) -> Config:
    return Config(database_url=database_url, kafka_bootstrap_servers=bootstrap, taski_topic=topic,
                  duely_consumer_group=f"g-{uuid.uuid4().hex[:6]}")


def verdict_msg(sid, seq, verdict):
    return {"submission_id": sid, "seq": seq, "type": "verdict", "verdict": verdict, "at": "2026-11-23T00:00:00Z"}


def test_consumer_applies_messages_and_skips_poison(db, database_url, kafka_bootstrap, two_submissions):
    first, second = two_submissions
    config = consumer_config(database_url, kafka_bootstrap, f"t-{uuid.uuid4().hex[:6]}")
    consumer = RunningConsumer(db, config)
    try:
        produce(kafka_bootstrap, config.taski_topic, [
            b"not json at all",
            {"submission_id": str(uuid.uuid4()), "seq": 1, "type": "verdict", "verdict": "Accepted"},
            verdict_msg(first, 1, "Wrong Answer on test #1"),
            verdict_msg(second, 1, "Compilation Error"),
        ])
        assert wait_until(lambda: verdict_of(db, second) == "Compilation Error"), "the partition got stuck on poison"
        assert verdict_of(db, first) == "Wrong Answer on test #1"
    finally:
        consumer.close()


def test_offsets_are_committed_so_a_new_consumer_starts_after_them(db, database_url, kafka_bootstrap, two_submissions):
    first, second = two_submissions
    config = consumer_config(database_url, kafka_bootstrap, f"t-{uuid.uuid4().hex[:6]}")
    produce(kafka_bootstrap, config.taski_topic, [verdict_msg(first, 1, "Wrong Answer on test #1")])
    consumer = RunningConsumer(db, config)
    assert wait_until(lambda: verdict_of(db, first) is not None)
    time.sleep(0.5)
    consumer.close()
    with db.transaction() as s:  # if offsets were not committed, a restart would re-apply this
        s.execute(text("UPDATE submissions SET status = 'testing', verdict = NULL, last_seq = 0 WHERE id = :i"), {"i": first})
    produce(kafka_bootstrap, config.taski_topic, [verdict_msg(second, 1, "Accepted")])
    consumer = RunningConsumer(db, config)
    try:
        assert wait_until(lambda: verdict_of(db, second) == "Accepted")
        assert verdict_of(db, first) is None
    finally:
        consumer.close()


def test_consumer_survives_a_broker_restart_with_empty_storage(db, database_url, tmp_path, two_submissions):
    first, second = two_submissions
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_broker(port, tmp_path / "broker1.log")
    config = consumer_config(database_url, bootstrap, "taski.restart")
    with admin_client(bootstrap) as admin:  # two partitions, one after the restart: the group rebalances
        ensure_topic(admin, config.taski_topic, 2)
    consumer = RunningConsumer(db, config)
    try:
        produce(bootstrap, config.taski_topic, [verdict_msg(first, 1, "Wrong Answer on test #2")], partition=0)
        assert wait_until(lambda: verdict_of(db, first) is not None)
        broker.kill()
        broker.wait()
        time.sleep(1)
        broker = start_broker(port, tmp_path / "broker2.log")  # memory-only: no topic, no offsets
        with admin_client(bootstrap) as admin:
            ensure_topic(admin, config.taski_topic)
        # Offset 0 of the new topic: a consumer that kept its position (1) would never read it.
        produce(bootstrap, config.taski_topic, [verdict_msg(second, 1, "Accepted")], partition=0)
        assert wait_until(lambda: verdict_of(db, second) == "Accepted", within_secs=60), "consumer did not come back"
    finally:
        consumer.close()
        broker.kill()
        broker.wait()


def update_msg(sid, seq):
    return {"submission_id": sid, "seq": seq, "type": "update", "status": f"Running on test #{seq}",
            "at": "2026-11-23T00:00:00Z"}


def last_seq_of(db, sid):
    with db.transaction() as s:
        return s.execute(text("SELECT last_seq FROM submissions WHERE id = :i"), {"i": sid}).scalar()


def test_consumer_reads_a_recreated_topic_from_its_start(db, database_url, kafka_bootstrap, two_submissions):
    """The topic deleted and created again under a running consumer: the new topic's offsets start
    at 0, and the consumer reads them all, though it had read the old one up to offset 3."""
    first, second = two_submissions
    config = consumer_config(database_url, kafka_bootstrap, f"t-{uuid.uuid4().hex[:6]}")
    with admin_client(kafka_bootstrap) as admin:
        ensure_topic(admin, config.taski_topic)
    consumer = RunningConsumer(db, config)
    try:
        produce(kafka_bootstrap, config.taski_topic, [update_msg(first, seq) for seq in (1, 2, 3)])
        assert wait_until(lambda: last_seq_of(db, first) == 3)
        with admin_client(kafka_bootstrap) as admin:
            admin.delete_topics([config.taski_topic])
            assert ensure_topic(admin, config.taski_topic)
        # Offsets 0..3 of the new topic; a consumer still at position 3 would read only the last.
        produce(kafka_bootstrap, config.taski_topic,
                [verdict_msg(second, 1, "Accepted")] + [update_msg(first, seq) for seq in (4, 5, 6)])
        assert wait_until(lambda: last_seq_of(db, first) == 6)
        assert wait_until(lambda: verdict_of(db, second) == "Accepted", within_secs=10), "offset 0 was skipped"
    finally:
        consumer.close()
