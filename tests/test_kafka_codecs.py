"""Taski's messages from a producer that is not kafka-python (librdkafka, via confluent-kafka):
every compression codec, an idempotent producer and record headers, on the real broker, end
to end into the players' event logs; and a batch that cannot be decoded (its codec library
missing in the consumer process) is logged, counted and skipped without stalling the rest."""

from __future__ import annotations

import json
import re
import sys
import time
import uuid

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

from duely.topics import admin_client, ensure_topic
from tests.fixtures.stack import ROOT, Process
from tests.test_consumer import RunningConsumer, consumer_config, verdict_of, wait_until
from tests.test_submissions import submit

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
HEADERS = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("producer", b"taski-java"),
           ("empty", b"")]


def taski_message(sid: str, seq: int, kind: str, text: str) -> bytes:
    field = "status" if kind == "update" else "verdict"
    return json.dumps({"submission_id": sid, "seq": seq, "type": kind, field: text, "at": "2026-11-23T00:00:00Z"}).encode()


def foreign_produce(bootstrap: str, topic: str, codec: str, messages: list[tuple[str, bytes]], partition: int | None = None) -> None:
    """Send `(key, value)` messages as one batch the way a Java or librdkafka Taski would:
    compressed with `codec`, idempotent (producer id, epoch and sequence numbers in the batch),
    each record with headers."""
    failures, fatal = [], []
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 200,  # one batch per call
                         # idempotence the broker cannot honour is a fatal producer error
                         "error_cb": lambda err: fatal.append(err) if err.fatal() else None})
    for key, value in messages:
        extra = {} if partition is None else {"partition": partition}
        producer.produce(topic, key=key.encode(), value=value, headers=HEADERS,
                         on_delivery=lambda err, _msg: failures.append(err) if err else None, **extra)
    assert producer.flush(30) == 0, f"{codec}: messages not delivered"
    assert failures == [] and fatal == [], f"{codec}: the broker refused the batch: {failures} {fatal}"


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    with admin_client(bootstrap) as admin:
        assert ensure_topic(admin, topic, partitions)


def event_log(user) -> list[dict]:
    resp = user.get("/api/updates", query_string={"last_event_id": 0, "timeout": 0})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["events"]


def test_every_codec_from_an_idempotent_librdkafka_producer_with_headers_reaches_the_players(
        db, database_url, kafka_bootstrap, make_user, duel_between):
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    sids = {codec: submit(alice, duel_id, client_temp_id=codec).get_json()["submission_id"] for codec in CODECS}
    config = consumer_config(database_url, kafka_bootstrap, f"t-{uuid.uuid4().hex[:6]}")
    create_topic(kafka_bootstrap, config.taski_topic, 1)
    for n, codec in enumerate(CODECS, start=1):  # Taski's usual burst per submission: progress, then the verdict
        sid = sids[codec]
        foreign_produce(kafka_bootstrap, config.taski_topic, codec, [
            (sid, taski_message(sid, 1, "update", "Test #1 passed")),
            (sid, taski_message(sid, 2, "update", "Test #2 passed")),
            (sid, taski_message(sid, 3, "verdict", f"Wrong Answer on test #{n}")),
        ])
    consumer = RunningConsumer(db, config)
    try:
        assert wait_until(lambda: all(verdict_of(db, sid) for sid in sids.values()), within_secs=60), \
            {codec: verdict_of(db, sid) for codec, sid in sids.items()}
    finally:
        consumer.close()

    mine = event_log(alice)
    for n, codec in enumerate(CODECS, start=1):
        about = [e for e in mine if e["data"].get("submission_id") == sids[codec]]
        assert [e["type"] for e in about] == ["submission_created", "submission_update", "submission_update",
                                              "submission_verdict"], codec
        assert about[-1]["data"]["verdict"] == f"Wrong Answer on test #{n}", codec
    theirs = [e["data"]["verdict"] for e in event_log(bob) if e["type"] == "opponent_verdict"]
    assert theirs == [f"Wrong Answer on test #{n}" for n in range(1, len(CODECS) + 1)]


BLOCKED_CODEC_LIBRARIES = {"zstandard.py": "zstd", "snappy.py": "snappy", "lz4/__init__.py": "lz4"}


@pytest.fixture
def consumer_without_codec_libraries(database_url, kafka_bootstrap, tmp_path):
    """consumer.py as a real process in which zstandard, python-snappy and lz4 cannot be
    imported (as on a host where they were never installed)."""
    blocked = tmp_path / "blocked"
    for path in BLOCKED_CODEC_LIBRARIES:
        (blocked / path).parent.mkdir(parents=True, exist_ok=True)
        (blocked / path).write_text("raise ImportError('not installed on this host (test)')\n")
    topic, group = f"t-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(blocked), "DATABASE_URL": database_url,
           "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TASKI_TOPIC": topic, "DUELY_CONSUMER_GROUP": group,
           "SECRET_KEY": "test", "LOG_LEVEL": "INFO"}
    create_topic(kafka_bootstrap, topic, 3)
    process = Process("consumer", [sys.executable, str(ROOT / "consumer.py")], env, tmp_path)
    process.start()
    yield process
    process.stop()


def test_a_batch_that_cannot_be_decoded_is_logged_counted_and_skipped(
        db, kafka_bootstrap, make_user, duel_between, consumer_without_codec_libraries):
    consumer = consumer_without_codec_libraries
    topic = consumer.env["TASKI_TOPIC"]
    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    sid = [submit(alice, duel_id, client_temp_id=f"c{i}").get_json()["submission_id"] for i in range(6)]
    lost = {0: ("zstd", sid[0]), 1: ("lz4", sid[1]), 2: ("snappy", sid[2])}
    # On each partition: a readable batch, one this consumer cannot decode, then another readable one.
    for partition, (codec, bad_sid) in lost.items():
        good_sid = sid[3 + partition]
        foreign_produce(kafka_bootstrap, topic, "gzip" if partition == 0 else "none",
                        [(good_sid, taski_message(good_sid, 1, "update", "Test #1 passed"))], partition)
        foreign_produce(kafka_bootstrap, topic, codec,
                        [(bad_sid, taski_message(bad_sid, n, "update", f"Test #{n} passed")) for n in (1, 2)]
                        + [(bad_sid, taski_message(bad_sid, 3, "verdict", "Accepted"))], partition)
        foreign_produce(kafka_bootstrap, topic, "none",
                        [(good_sid, taski_message(good_sid, 2, "verdict", "Time Limit Exceeded on test #2"))], partition)

    assert wait_until(lambda: all(verdict_of(db, s) for s in sid[3:]), within_secs=60), consumer.log()[-4000:]
    assert [verdict_of(db, s) for s in sid[3:]] == ["Time Limit Exceeded on test #2"] * 3
    assert [verdict_of(db, s) for s in sid[:3]] == [None, None, None]  # the undecodable batches changed nothing
    assert [e["type"] for e in event_log(alice) if e["data"].get("submission_id") == sid[0]] == ["submission_created"]

    # Each bad batch was reported once, with where it was and why; then the consumer went on
    # (no spin, no reconnect loop), and it is still running.
    assert wait_until(lambda: consumer.log().count("undecodable record batch skipped") >= 3)
    time.sleep(2)
    log = consumer.log()
    skips = [line for line in log.splitlines() if "undecodable record batch skipped" in line]
    assert len(skips) == 3, log[-4000:]
    for partition, (codec, _) in lost.items():
        [line] = [s for s in skips if f" partition={partition} " in s]
        assert "ERROR" in line and f"topic={topic}" in line and "offsets=1..3 next_offset=4" in line, line
        assert f"Libraries for {codec} compression codec not found" in line, line
    assert sorted(int(re.search(r"skipped_batches_total=(\d+)", s).group(1)) for s in skips) == [1, 2, 3]
    assert "reconnecting" not in log, log[-4000:]
    assert consumer.proc.poll() is None

    # Offsets are committed past the bad batches: a restarted consumer does not meet them again.
    group = consumer.env["DUELY_CONSUMER_GROUP"]
    assert wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == {0: 5, 1: 5, 2: 5}), \
        committed_offsets(kafka_bootstrap, group, topic)

    # Nothing is lost for good: Taski publishes the verdict again (re-send after
    # JUDGE_TIMEOUT), readable this time, and it is applied.
    foreign_produce(kafka_bootstrap, topic, "gzip", [(sid[0], taski_message(sid[0], 3, "verdict", "Accepted"))], 0)
    assert wait_until(lambda: verdict_of(db, sid[0]) == "Accepted", within_secs=30), consumer.log()[-4000:]


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int = 3) -> dict[int, int]:
    probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: probe.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        probe.close()


def test_a_corrupt_compressed_batch_is_skipped_and_the_partition_goes_on(
        db, database_url, kafka_bootstrap, make_user, duel_between, monkeypatch, caplog):
    """A producer that writes a gzip batch whose payload is not gzip (CRC valid, so the broker
    stores it): the consumer's decompression fails inside kafka-python."""
    import kafka.record.default_records as records
    from kafka import KafkaProducer

    from duely import undecodable

    alice, bob = make_user("alice"), make_user("bob")
    duel_id = duel_between(alice, bob)
    bad_sid, good_sid = (submit(alice, duel_id, client_temp_id=f"c{i}").get_json()["submission_id"] for i in range(2))
    config = consumer_config(database_url, kafka_bootstrap, f"t-{uuid.uuid4().hex[:6]}")
    create_topic(kafka_bootstrap, config.taski_topic, 1)

    skipped_before = undecodable.skipped_batches
    consumer = RunningConsumer(db, config)
    try:
        monkeypatch.setattr(records, "gzip_encode", lambda data: b"\x1f\x8b\x08\x00 this is not deflate data " + data[:8])
        broken = KafkaProducer(bootstrap_servers=kafka_bootstrap, compression_type="gzip")
        broken.send(config.taski_topic, key=bad_sid.encode(), value=taski_message(bad_sid, 1, "verdict", "Accepted")).get(30)
        broken.close()
        monkeypatch.undo()
        assert wait_until(lambda: undecodable.skipped_batches > skipped_before), caplog.text[-4000:]
        # Committed at once, even with nothing after it: a restarted consumer does not meet it again.
        assert wait_until(lambda: committed_offsets(kafka_bootstrap, config.duely_consumer_group, config.taski_topic, 1) == {0: 1})
        foreign_produce(kafka_bootstrap, config.taski_topic, "gzip",
                        [(good_sid, taski_message(good_sid, 1, "verdict", "Wrong Answer on test #4"))])
        assert wait_until(lambda: verdict_of(db, good_sid) is not None), caplog.text[-4000:]
    finally:
        consumer.close()
    assert verdict_of(db, good_sid) == "Wrong Answer on test #4"
    assert verdict_of(db, bad_sid) is None
    assert undecodable.skipped_batches == skipped_before + 1
    [skip] = [r for r in caplog.records if r.getMessage().startswith("undecodable record batch skipped")]
    assert skip.levelname == "ERROR"
    assert skip.fields["partition"] == 0 and skip.fields["offsets"] == "0..0" and skip.fields["next_offset"] == 1
    assert "reconnecting" not in caplog.text
