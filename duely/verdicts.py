"""Verdict intake: Taski's Kafka messages applied to submissions (run by consumer.py).

`apply_message` is idempotent: a message whose `seq` is not newer than the stored one
changes nothing, an update never overrides a verdict, a verdict is final. Each message is
applied in its own transaction together with its events (and, for a verdict, the duel's
finish when that becomes certain); Kafka offsets are committed only after that commit.
Malformed messages and unknown submissions are logged and skipped.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import uuid
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from duely import duels, eventlog, outage, undecodable
from duely.config import Config
from duely.db import CONSUMER_POOL, Database
from duely.eventlog.types import DuelLogSubmission, OpponentVerdict, SubmissionUpdate, SubmissionVerdict
from duely.logs import kv
from duely.models import Duel, Submission
from duely.runtime import Runtime
from duely.statuses import SubmissionState

log = logging.getLogger(__name__)


class PoisonMessage(ValueError):
    """A message that can never be applied (malformed, or about an unknown submission)."""


@dataclass(frozen=True)
class TaskiMessage:
    submission_id: uuid.UUID
    seq: int
    type: str  # update | verdict
    text: str  # the progress status, or the verdict


def parse_message(raw: bytes | str | dict) -> TaskiMessage:
    try:
        body = raw if isinstance(raw, dict) else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PoisonMessage(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise PoisonMessage("not a JSON object")
    try:
        submission_id = uuid.UUID(str(body["submission_id"]))
        seq = body["seq"]
        kind = body["type"]
    except (KeyError, ValueError) as exc:
        raise PoisonMessage(f"bad or missing field: {exc}") from None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise PoisonMessage(f"bad seq {seq!r}")
    field = {"update": "status", "verdict": "verdict"}.get(kind)
    if field is None:
        raise PoisonMessage(f"unknown type {kind!r}")
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise PoisonMessage(f"missing {field}")
    return TaskiMessage(submission_id, seq, kind, value.strip()[:200])


def apply_message(session: Session, message: TaskiMessage) -> bool:
    """Apply one Taski message; returns True if it changed anything."""
    if message.type == "update":
        return apply_update(session, message.submission_id, message.seq, message.text)
    return record_verdict(session, message.submission_id, message.text, message.seq)


def apply_update(session: Session, submission_id: uuid.UUID, seq: int, status_text: str) -> bool:
    # The duel row is locked first (lock order: duel, users, submission), in the same statement:
    # the duel log's append below bumps it.
    row = session.execute(text(
        f"""
        WITH duel AS (SELECT d.id FROM duels d JOIN submissions s ON s.duel_id = d.id WHERE s.id = :id FOR UPDATE OF d)
        UPDATE submissions SET status = {SubmissionState.TESTING.sql}, progress = :p, last_seq = :seq, last_message_at = clock_timestamp()
        FROM duel
        WHERE submissions.id = :id AND submissions.duel_id = duel.id
          AND status <> {SubmissionState.JUDGED.sql} AND last_seq < :seq
        RETURNING user_id, duel_id, language, submitted_at
        """
    ), {"id": submission_id, "p": status_text, "seq": seq}).first()
    if row is None:
        _ensure_known(session, submission_id)
        return False
    eventlog.append(session, row.user_id, SubmissionUpdate(duel_id=row.duel_id, submission_id=str(submission_id), status=status_text))
    eventlog.append_duel(session, row.duel_id, DuelLogSubmission(
        submission_id=str(submission_id), user_id=row.user_id, language=row.language, submitted_at=row.submitted_at,
        state=SubmissionState.TESTING, status=status_text, verdict=None))
    log.info("submission progress", extra=kv(submission_id=submission_id, seq=seq, status=repr(status_text)))
    return True


def record_verdict(session: Session, submission_id: uuid.UUID, verdict: str, seq: int | None = None) -> bool:
    """Give a submission its final verdict (once), tell both players, and finish the duel if
    that is now certain. `seq=None` is Duely's own verdict (e.g. `Rejected: ...`)."""
    # Lock order: duel, users, submission (docs/lifecycle.md).
    duel = session.execute(
        select(Duel).join(Submission, Submission.duel_id == Duel.id).where(Submission.id == submission_id).with_for_update(of=Duel)
    ).scalar_one_or_none()
    if duel is None:
        raise PoisonMessage(f"unknown submission {submission_id}")
    players = duels.player_ids(session, duel.id)
    eventlog.lock_users(session, players)
    judged = session.execute(text(
        f"""
        UPDATE submissions SET status = {SubmissionState.JUDGED.sql}, verdict = :verdict, judged_at = clock_timestamp(),
               last_seq = coalesce(CAST(:seq AS integer), last_seq)
        WHERE id = :id AND status <> {SubmissionState.JUDGED.sql} AND (CAST(:seq AS integer) IS NULL OR last_seq < :seq)
        RETURNING user_id, submitted_at, language
        """
    ), {"id": submission_id, "verdict": verdict, "seq": seq}).first()
    if judged is None:  # already judged (a verdict is final), or a stale seq
        return False
    eventlog.append(session, judged.user_id, SubmissionVerdict(duel_id=duel.id, submission_id=str(submission_id), verdict=verdict))
    eventlog.append_duel(session, duel.id, DuelLogSubmission(
        submission_id=str(submission_id), user_id=judged.user_id, language=judged.language, submitted_at=judged.submitted_at,
        state=SubmissionState.JUDGED, status=SubmissionState.JUDGED, verdict=verdict))
    for opponent in players:
        if opponent != judged.user_id:
            eventlog.append(session, opponent, OpponentVerdict(duel_id=duel.id, verdict=verdict, submitted_at=judged.submitted_at))
    log.info("submission judged", extra=kv(submission_id=submission_id, duel_id=duel.id, verdict=repr(verdict)))
    duels.finish_if_certain(session, duel, players)
    return True


def _ensure_known(session: Session, submission_id: uuid.UUID) -> None:
    if session.execute(select(Submission.id).where(Submission.id == submission_id)).first() is None:
        raise PoisonMessage(f"unknown submission {submission_id}")


def apply_batch(session: Session, records: list[tuple[bytes, str]]) -> int:
    """Apply a poll's worth of records in the caller's transaction (one commit for the batch).

    A progress update already superseded within the batch (a newer seq about the same
    submission follows it: a later update, or the verdict) is skipped: applied in order it would
    be overwritten in the same commit, so no reader could ever see it; only its event would be
    written, and under load that is most of the batch's work.
    A poison message fails alone: PoisonMessage is always raised before the message wrote
    anything, so no savepoint is needed. Any other error propagates and the whole batch is
    retried or re-read (its offsets are not committed).
    `records` are (value, where) pairs; `where` names topic/partition@offset for the logs.
    """
    parsed: list[tuple[TaskiMessage, str]] = []
    for value, where in records:
        try:
            parsed.append((parse_message(value), where))
        except PoisonMessage as exc:
            log.warning("skipping message", extra=kv(at=where, problem=repr(str(exc))))
    newest: dict[uuid.UUID, int] = {}
    for message, _ in parsed:
        newest[message.submission_id] = max(newest.get(message.submission_id, -1), message.seq)
    applied = 0
    for message, where in parsed:
        if message.type == "update" and message.seq < newest[message.submission_id]:
            continue
        try:
            applied += apply_message(session, message)
        except PoisonMessage as exc:
            log.warning("skipping message", extra=kv(at=where, problem=repr(str(exc))))
    return applied


# -- the consumer process --

CONSUMER_SESSION_TIMEOUT_MS = 6000  # joins the group in ~3 s (the default makes it ~23 s)
RECONNECT_BACKOFF_MAX_SECS = 10.0


def _make_consumer(config: Config):
    from kafka import KafkaConsumer

    _ensure_topic(config)
    consumer = KafkaConsumer(
        bootstrap_servers=config.required("kafka_bootstrap_servers").split(","),
        group_id=config.duely_consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=CONSUMER_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=1000,
        metadata_max_age_ms=5000,  # notice a recreated topic quickly
        reconnect_backoff_max_ms=2000,  # a restarted broker is found within seconds (default: up to 30 s)
        max_poll_records=200,
        fetch_max_wait_ms=50,  # a verdict is waited for: do not let the broker hold a fetch for 500 ms
    )
    consumer.subscribe([config.taski_topic])
    return consumer


def _ensure_topic(config: Config) -> None:
    """Create the topic if missing: a fresh memory-only broker knows none."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=config.required("kafka_bootstrap_servers").split(","), request_timeout_ms=5000)
    try:
        if config.taski_topic not in admin.list_topics():
            admin.create_topics([NewTopic(config.taski_topic, num_partitions=1, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def apply_until_done(db: Database, items: list[tuple[bytes, str]], stop: threading.Event,
                     database_outage: outage.OutageLog) -> bool:
    """Apply a batch, waiting out a database outage (logged once, retried with capped backoff)
    with the batch in hand. False when stopped first (nothing applied; its offsets stay
    uncommitted, so it is read again). Any other error propagates."""
    while True:
        try:
            db.run(lambda s: apply_batch(s, items))
        except Exception as exc:
            if not database_outage.failed(exc):
                raise
        else:
            database_outage.ok()
            return True
        if stop.wait(database_outage.backoff_secs):
            return False


def consume(db: Database, config: Config, stop: threading.Event) -> None:
    """Poll, apply, commit offsets; on any broker trouble reconnect with backoff until `stop`.

    A database outage does not drop the broker connection: the batch in hand is retried until
    the database answers (kafka-python heartbeats from its own thread meanwhile; an outage longer
    than the consumer's max_poll_interval costs a group rejoin and a re-read, which is idempotent)."""
    backoff = 0.5
    database_outage = outage.OutageLog(log)
    while not stop.is_set():
        consumer = None
        try:
            consumer = _make_consumer(config)
            log.info("consumer connected", extra=kv(topic=config.taski_topic, group=config.duely_consumer_group))
            backoff = 0.5
            while not stop.is_set():
                try:
                    batch = consumer.poll(timeout_ms=500, max_records=200)
                except Exception as exc:  # a batch that can never be read is skipped, not retried forever
                    if undecodable.skip_undecodable_batch(consumer, exc):
                        continue
                    raise
                items = [(r.value, f"{r.topic}/{r.partition}@{r.offset}") for records in batch.values() for r in records]
                if items:
                    if not apply_until_done(db, items, stop, database_outage):
                        break
                    consumer.commit()  # only after the batch is committed in the database
        except Exception:  # broker gone, group trouble, database down: start over from committed offsets
            log.exception("consumer loop failed; reconnecting", extra=kv(in_secs=backoff))
            stop.wait(backoff)
            backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_SECS)
        finally:
            if consumer is not None:
                try:
                    consumer.close(autocommit=False)
                except Exception:  # closing a consumer of a dead broker may fail; nothing to keep
                    log.debug("consumer close failed", exc_info=True)


def run_consumer(config: Config) -> None:
    db = Runtime(config, Database(config.required("database_url"), *CONSUMER_POOL), process="consumer").db
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    consume(db, config, stop)
    db.dispose()
    log.info("consumer stopped")


