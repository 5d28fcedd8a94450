"""Verdict intake: Taski's Kafka messages applied to submissions (run by consumer.py).

`apply_message` is idempotent: a message whose `seq` is not newer than the stored one
changes nothing, an update never overrides a verdict, a verdict is final. A poll's batch is
applied in one transaction with a constant number of statements (`apply_messages`), its
events included (and the finish of each duel whose result becomes certain); Kafka offsets are
committed only after that commit. Malformed messages and unknown submissions are logged and skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from duely import duels, eventlog, outage, outcome, undecodable
from duely.backoff import BROKER_RECONNECT
from duely.config import Config
from duely.db import CONSUMER_POOL, Database, driver_execute
from duely.eventlog.types import DuelLogSubmission, OpponentVerdict, SubmissionUpdate, SubmissionVerdict
from duely.gcfreeze import freeze_startup_heap
from duely.logs import kv
from duely.recreated_topic import TopicWatch
from duely.runtime import Runtime
from duely.statuses import DuelStatus, SubmissionState
from duely.topics import admin_client, ensure_topic

log = logging.getLogger(__name__)


class PoisonMessage(ValueError):
    """A message that can never be applied (malformed, or about an unknown submission)."""


@dataclass(frozen=True)
class TaskiMessage:
    submission_id: uuid.UUID
    seq: int | None  # None: Duely's own verdict (`record_verdict`), applied whatever the stored seq
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
    """Apply one Taski message; returns True if it changed anything. PoisonMessage when the
    submission is unknown."""
    applied = apply_messages(session, [message])[0]
    if applied is None:
        raise PoisonMessage(f"unknown submission {message.submission_id}")
    return applied


def record_verdict(session: Session, submission_id: uuid.UUID, verdict: str, seq: int | None = None) -> bool:
    """Give a submission its final verdict (once), tell both players, and finish the duel if
    that is now certain. `seq=None` is Duely's own verdict (e.g. `Rejected: ...`)."""
    return apply_message(session, TaskiMessage(submission_id, seq, "verdict", verdict))


@dataclass(slots=True)
class _Submission:
    """A submission's row as the batch sees it while it applies messages in order."""

    id: uuid.UUID
    duel_id: int
    user_id: int
    language: str
    submitted_at: dt.datetime
    status: str
    progress: str | None
    verdict: str | None
    last_seq: int
    touched: bool = False  # a progress message applied: last_message_at is set
    judged: bool = False  # the verdict applied here: judged_at is set


# Lock order: duels (in id order, so consumers with overlapping batches never deadlock), users,
# submissions (docs/lifecycle.md). Every duel a message of the batch is about, with its players.
# Both locking reads run on the driver (`db.driver_execute`): SQLAlchemy's execution machinery
# cost as much client CPU as the statements' round trips (the batch's fixed cost is paid per
# submission when the stream is quiet).
_LOCK_DUELS = """
    SELECT d.id, d.status, d.deadline, d.rated, d.started_at,
           ARRAY(SELECT p.user_id FROM duel_players p WHERE p.duel_id = d.id ORDER BY p.user_id) AS players
    FROM duels d
    WHERE d.id IN (SELECT duel_id FROM submissions WHERE id = ANY(%(ids)s))
    ORDER BY d.id
    FOR UPDATE OF d
    """
# Then the players' user rows, locked in id order, and with them every submission of those duels
# (the finishing rule needs all of them): one statement, read after the duel locks are held, so
# nobody else judges them meanwhile. At least one row per player (for the clock).
_LOCK_USERS_LOAD_SUBMISSIONS = """
    SELECT clock_timestamp() AS now, s.id, s.duel_id, s.user_id, s.language, s.submitted_at, s.status, s.progress,
           s.verdict, s.last_seq
    FROM users u LEFT JOIN submissions s ON s.user_id = u.id AND s.duel_id = ANY(%(duels)s)
    WHERE u.id = ANY(%(players)s)
    ORDER BY u.id
    FOR NO KEY UPDATE OF u
    """
# The newest state of each submission the batch changed (run as a CTE of the events' statement).
# The status guard is a safety net: under the duel locks no other transaction judges these submissions.
_WRITE_SUBMISSIONS = (
    f"""
    UPDATE submissions s SET status = v.status, progress = v.progress, verdict = v.verdict, last_seq = v.last_seq,
           last_message_at = CASE WHEN v.touched THEN clock_timestamp() ELSE s.last_message_at END,
           judged_at = CASE WHEN v.judged THEN clock_timestamp() ELSE s.judged_at END
    FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:progresses AS text[]), CAST(:verdicts AS text[]),
                CAST(:seqs AS integer[]), CAST(:toucheds AS boolean[]), CAST(:judgeds AS boolean[]))
         AS v(id, status, progress, verdict, last_seq, touched, judged)
    WHERE s.id = v.id AND s.status <> {SubmissionState.JUDGED.sql}
    RETURNING 1
    """
)


def apply_messages(session: Session, messages: Sequence[TaskiMessage]) -> list[bool | None]:
    """Apply messages in order with a constant number of statements; for each: True when applied,
    False when it changes nothing (a seq not newer than the stored one, or the submission already
    has its verdict), None when its submission is unknown (nothing written for it).

    The rules are those of one message at a time, applied to the batch's state in memory: every
    progress message applied gets its `submission_update` event (even when a newer one follows
    in the batch), a verdict is final, and after each verdict the duel is finished when that is
    now certain (`duely.outcome.decide`, written by `duels.finish`). The events are appended in
    the messages' order (`eventlog.EventBatch`) with the submissions' newest state in the same
    statement: three statements in all, plus two per duel finished.
    """
    if not messages:
        return []
    locked = driver_execute(session, _LOCK_DUELS, {"ids": list({m.submission_id for m in messages})}, named=True).fetchall()
    if not locked:
        return [None] * len(messages)
    duel_of = {r.id: duels.LockedDuel(r.id, r.status, r.deadline, r.rated, r.started_at) for r in locked}
    players_of = {r.id: list(r.players) for r in locked}
    rows = driver_execute(session, _LOCK_USERS_LOAD_SUBMISSIONS, {
        "duels": list(duel_of), "players": sorted({p for r in locked for p in r.players})}, named=True).fetchall()
    now = max(r.now for r in rows)
    subs = {r.id: _Submission(r.id, r.duel_id, r.user_id, r.language, r.submitted_at, r.status, r.progress, r.verdict,
                              r.last_seq) for r in rows if r.id is not None}
    of_duel: dict[int, list[_Submission]] = {}
    for row in subs.values():
        of_duel.setdefault(row.duel_id, []).append(row)
    events = eventlog.EventBatch()
    changed: dict[uuid.UUID, _Submission] = {}
    results: list[bool | None] = []
    for m in messages:
        sub = subs.get(m.submission_id)
        if sub is None:
            results.append(None)
            continue
        if sub.status == SubmissionState.JUDGED or (m.seq is not None and m.seq <= sub.last_seq):
            results.append(False)  # a duplicate, a stale seq, or after the verdict (final)
            continue
        if m.seq is not None:
            sub.last_seq = m.seq
        changed[sub.id] = sub
        results.append(True)
        if m.type == "update":
            _apply_progress(events, sub, m)
        else:
            _apply_verdict(session, events, sub, m, duel_of[sub.duel_id], players_of[sub.duel_id], of_duel[sub.duel_id], now)
    if not changed:  # nothing applied, so no events either
        return results
    # the events, then the submissions' newest state, in one statement
    written = events.flush(session, also=_WRITE_SUBMISSIONS, also_params={
        "ids": list(changed), "statuses": [s.status for s in changed.values()],
        "progresses": [s.progress for s in changed.values()], "verdicts": [s.verdict for s in changed.values()],
        "seqs": [s.last_seq for s in changed.values()], "toucheds": [s.touched for s in changed.values()],
        "judgeds": [s.judged for s in changed.values()],
    })
    if written != len(changed):  # cannot happen under the duel locks; never write half a batch
        raise RuntimeError(f"wrote {written} of {len(changed)} submissions: judged meanwhile")
    return results


def _apply_progress(events: eventlog.EventBatch, sub: _Submission, m: TaskiMessage) -> None:
    sub.status, sub.progress, sub.touched = SubmissionState.TESTING, m.text, True
    events.user(sub.user_id, SubmissionUpdate(duel_id=sub.duel_id, submission_id=str(sub.id), status=m.text))
    events.duel(sub.duel_id, DuelLogSubmission(
        submission_id=str(sub.id), user_id=sub.user_id, language=sub.language, submitted_at=sub.submitted_at,
        state=SubmissionState.TESTING, status=m.text, verdict=None))
    # DEBUG, not INFO: a judge sends one per test passed (a dozen per Accepted), which made most
    # of the consumer's log; the stored, sent, judged lines follow a submission end to end.
    if log.isEnabledFor(logging.DEBUG):
        log.debug("submission progress", extra=kv(submission_id=sub.id, seq=m.seq, status=repr(m.text)))


def _apply_verdict(session: Session, events: eventlog.EventBatch, sub: _Submission, m: TaskiMessage,
                   duel: duels.LockedDuel, players: list[int], of_duel: list[_Submission], now: dt.datetime) -> None:
    sub.status, sub.verdict, sub.judged = SubmissionState.JUDGED, m.text, True
    events.user(sub.user_id, SubmissionVerdict(duel_id=duel.id, submission_id=str(sub.id), verdict=m.text))
    events.duel(duel.id, DuelLogSubmission(
        submission_id=str(sub.id), user_id=sub.user_id, language=sub.language, submitted_at=sub.submitted_at,
        state=SubmissionState.JUDGED, status=SubmissionState.JUDGED, verdict=m.text))
    for opponent in players:
        if opponent != sub.user_id:
            events.user(opponent, OpponentVerdict(duel_id=duel.id, verdict=m.text, submitted_at=sub.submitted_at))
    log.info("submission judged", extra=kv(submission_id=sub.id, duel_id=duel.id, verdict=repr(m.text)))
    if duel.status != DuelStatus.ACTIVE:
        return
    decision = outcome.decide([outcome.SubmissionView(s.user_id, s.submitted_at, s.verdict) for s in of_duel],
                              now=now, deadline=duel.deadline, player_ids=tuple(players))
    if decision is not None:
        duels.finish(session, duel, players, decision, now, events)  # its events go after this verdict's


def apply_batch(session: Session, records: list[tuple[bytes, str]]) -> int:
    """Apply a poll's worth of records in the caller's transaction (one commit for the batch),
    with a constant number of statements (`apply_messages`) plus a few per duel it finishes.

    Every progress message is applied and gets its `submission_update` event, even when a newer
    one about the same submission is in the same batch: the contract promises an event per
    progress message (docs/api.md), and a client may show each step.
    A poison message (malformed, or about an unknown submission) is skipped alone: nothing is
    written for it. Any other error propagates and the whole batch is retried or re-read (its
    offsets are not committed).
    `records` are (value, where) pairs; `where` names topic/partition@offset for the logs.
    """
    parsed: list[tuple[TaskiMessage, str]] = []
    for value, where in records:
        try:
            parsed.append((parse_message(value), where))
        except PoisonMessage as exc:
            log.warning("skipping message", extra=kv(at=where, problem=repr(str(exc))))
    results = apply_messages(session, [message for message, _ in parsed])
    for (message, where), applied in zip(parsed, results, strict=True):
        if applied is None:
            log.warning("skipping message", extra=kv(at=where, problem=repr(f"unknown submission {message.submission_id}")))
    return sum(1 for applied in results if applied)


# -- the consumer process --

CONSUMER_SESSION_TIMEOUT_MS = 6000  # joins the group in ~3 s (the default makes it ~23 s)


def _make_consumer(config: Config):
    from kafka import KafkaConsumer

    with admin_client(config.required("kafka_bootstrap_servers")) as admin:  # a fresh memory-only broker knows none
        ensure_topic(admin, config.taski_topic)
    consumer = KafkaConsumer(
        bootstrap_servers=config.required("kafka_bootstrap_servers").split(","),
        group_id=config.duely_consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=CONSUMER_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=1000,
        metadata_max_age_ms=5000,  # notice a recreated topic quickly
        reconnect_backoff_max_ms=2000,  # a restarted broker is found within seconds (default: up to 30 s)
        max_poll_records=POLL_MAX_RECORDS,
        fetch_max_wait_ms=50,  # a verdict is waited for: do not let the broker hold a fetch for 500 ms
    )
    consumer.subscribe([config.taski_topic])
    return consumer


POLL_MAX_RECORDS = 200
# Offsets are committed after the database commit, but while messages keep coming at most every
# COMMIT_EVERY_SECS (at once when a poll comes back empty, and at a stop): a synchronous commit per
# batch cost ~0.7 ms of the consumer's ~6.5 ms per submission at 25/s (bench/verdicts.py --rate 25).
# A consumer that dies re-reads at most that much, which changes nothing (seq).
COMMIT_EVERY_SECS = 0.2
# No client-side gathering of polls into larger batches: polling again for a few ms when the stream
# was busy (tried: 10 ms when the previous batch came < 100 ms before) gave ~1.45 instead of ~1.27
# submissions per batch at 25/s, but its extra polls cost more CPU than the batches saved
# (6.9-7.5 vs 6.0-6.7 ms/submission, bench/verdicts.py --rate 25) and added ~8 ms to p50.
# A larger fetch_max_wait_ms batches for free on the client but the broker then holds every
# fetch: at 500 ms, 5 submissions per batch and 2 ms/submission, but p50 ~140 ms.


def poll_items(consumer) -> list[tuple[bytes, str]]:
    """One poll's records as (value, "topic/partition@offset"), in order; [] when none came."""
    batch = consumer.poll(timeout_ms=500, max_records=POLL_MAX_RECORDS)
    return [(r.value, f"{r.topic}/{r.partition}@{r.offset}") for records in batch.values() for r in records]


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
    reconnect = BROKER_RECONNECT.start()
    database_outage = outage.OutageLog(log)
    while not stop.is_set():
        consumer = None
        try:
            consumer = _make_consumer(config)
            log.info("consumer connected", extra=kv(topic=config.taski_topic, group=config.duely_consumer_group))
            reconnect.reset()
            uncommitted, committed_at = False, time.monotonic()
            topic = TopicWatch(config.taski_topic)
            while not stop.is_set():
                try:
                    items = poll_items(consumer)
                except Exception as exc:  # a batch that can never be read is skipped, not retried forever
                    if undecodable.skip_undecodable_batch(consumer, exc):
                        continue
                    raise
                if topic.recreated(consumer):  # the records may come from positions in the old topic
                    uncommitted = False  # what was applied was the old topic's: nothing to commit in the new
                    continue
                if items:
                    if not apply_until_done(db, items, stop, database_outage):
                        uncommitted = False  # the position is past a batch not applied: commit nothing
                        break
                    uncommitted = True
                if uncommitted and (not items or time.monotonic() - committed_at >= COMMIT_EVERY_SECS):
                    consumer.commit()  # only after the batches are committed in the database
                    uncommitted, committed_at = False, time.monotonic()
            if uncommitted:  # stopped between batches: what was applied is not read again
                consumer.commit()
        except Exception:  # broker gone, group trouble, database down: start over from committed offsets
            delay = reconnect.next()
            log.exception("consumer loop failed; reconnecting", extra=kv(in_secs=delay))
            stop.wait(delay)
        finally:
            if consumer is not None:
                try:
                    consumer.close(autocommit=False)
                except Exception:  # closing a consumer of a dead broker may fail; nothing to keep
                    log.debug("consumer close failed", exc_info=True)


def run_consumer(config: Config) -> None:
    db = Runtime(config, Database(config.required("database_url"), *CONSUMER_POOL, application_name="duely-consumer"),
                 process="consumer").db
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    freeze_startup_heap()
    consume(db, config, stop)
    db.dispose()
    log.info("consumer stopped")


