"""Through the consumer loop, a burst of many submissions published one submission at a time
(the instant judge's pattern) is applied with every event exactly once, in seq order, and every
offset committed after it."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import text

from duely.topics import admin_client, ensure_topic
from tests.fixtures.stack import start_duel
from tests.test_consumer import RunningConsumer, consumer_config, wait_until


def send(producer: KafkaProducer, topic: str, values: list[bytes], key: bytes = b"k") -> None:
    """One produce request: one submission's messages, as the instant judge sends them."""
    for value in values:
        producer.send(topic, key=key, value=value)
    producer.flush()


def test_a_burst_of_many_submissions_is_applied_once_each_and_committed(db, database_url, kafka_bootstrap):
    tag = uuid.uuid4().hex[:6]
    with db.transaction() as s:
        users = sorted(s.execute(text("INSERT INTO users (nickname, password_hash) SELECT :t || '-' || g, 'x' "
                                      "FROM generate_series(1, 40) g RETURNING id"), {"t": tag}).scalars())
    subs: list[tuple[str, int]] = []
    for pair in range(20):
        duel_id = start_duel(db, users[2 * pair], users[2 * pair + 1])
        with db.transaction() as s:
            for user in users[2 * pair:2 * pair + 2]:
                sid = str(uuid.uuid4())
                s.execute(text("INSERT INTO submissions (id, duel_id, user_id, language, solution, status) "
                               "VALUES (:i, :d, :u, 'python', 'print(1)', 'testing')"), {"i": sid, "d": duel_id, "u": user})
                subs.append((sid, user))
    config = consumer_config(database_url, kafka_bootstrap, f"t-{tag}")
    with admin_client(kafka_bootstrap) as admin:
        ensure_topic(admin, config.taski_topic, 1)  # one partition: the burst is read in the order sent
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    send(producer, config.taski_topic, [b"{}"])  # poison first: skipped
    running = RunningConsumer(db, config)
    try:
        ids = [sid for sid, _ in subs]

        def judged(some: list[str]) -> int:
            with db.transaction() as s:
                return s.execute(text("SELECT count(*) FROM submissions WHERE id = ANY(CAST(:ids AS uuid[])) "
                                      "AND verdict IS NOT NULL"), {"ids": some}).scalar_one()

        def publish(sid: str) -> None:
            send(producer, config.taski_topic, [
                f'{{"submission_id": "{sid}", "seq": 1, "type": "update", "status": "Test #1 passed"}}'.encode(),
                f'{{"submission_id": "{sid}", "seq": 2, "type": "update", "status": "Test #2 passed"}}'.encode(),
                f'{{"submission_id": "{sid}", "seq": 3, "type": "verdict", "verdict": "Wrong Answer on test #3"}}'.encode(),
            ], key=sid.encode())

        publish(ids[0])  # the consumer is up and has applied it: what follows comes while it runs
        assert wait_until(lambda: judged(ids[:1]) == 1, within_secs=60)
        for sid in ids[1:]:  # one submission at a time, a few ms apart: a busy stream
            publish(sid)
            time.sleep(0.002)
        assert wait_until(lambda: judged(ids) == len(ids), within_secs=60)
    finally:
        running.close()
        producer.close()
    with db.transaction() as s:
        events = s.execute(text("SELECT user_id, type, data->>'submission_id', coalesce(data->>'status', data->>'verdict') "
                                "FROM events WHERE data->>'submission_id' = ANY(:ids) ORDER BY id"), {"ids": ids}).all()
    for sid, user in subs:  # each message's event exactly once, in seq order
        assert [(u, t, status) for u, t, s, status in events if s == sid] == [
            (user, "submission_update", "Test #1 passed"), (user, "submission_update", "Test #2 passed"),
            (user, "submission_verdict", "Wrong Answer on test #3")]
    checker = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=config.duely_consumer_group, enable_auto_commit=False)
    try:  # every offset committed (the last ones at the stop), after the database: a restart reads nothing again
        assert checker.committed(TopicPartition(config.taski_topic, 0)) == 1 + 3 * len(subs)
    finally:
        checker.close()
