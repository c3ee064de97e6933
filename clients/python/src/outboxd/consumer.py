"""Exactly-once processing of outboxd's Kafka records, in either of outboxd's delivery modes.

``IdempotentConsumer`` reads envelopes with confluent-kafka and runs the handler inside a
database transaction that first records the event id in a processed_events table (primary key
consumer group + event id). A duplicate finds its id there and is skipped.

Batches: the records of one poll (up to ``max_batch``) share one transaction: one multi-row
insert claims their ids, the handler runs for each claimed event, one commit. Kafka offsets are
committed later, periodically (``commit_every`` records or ``commit_interval`` seconds, and on
partition revocation and ``close()``), and only ever up to records whose transaction committed.
The once-per-event guarantee rests on the database alone; the offset only says where to resume.
So, whatever crashes when:

- before the database commit: nothing of the batch is stored and its offsets are not committed;
  the records are delivered again and processed then;
- after the database commit but before the offset commit (up to ``commit_interval`` of work):
  the records are delivered again, find their ids, and are skipped (``duplicates``);
- a duplicate produced by outboxd after a fault (at-least-once mode): skipped the same way.

outboxd in exactly-once mode (``[sink] delivery = "exactly_once"``) writes in Kafka
transactions and leaves no duplicate on the topic for a ``read_committed`` reader (the default
``isolation_level``; ``read_uncommitted`` would also see records of aborted transactions, which
outboxd publishes again). The consumer still needs its processed_events table: Kafka
transactions cover outboxd's writes, not this consumer's database and offsets, so the second
case above (a crash after the database commit, before the offset commit) replays records in
either mode. In exactly-once mode ``duplicates`` counts only such replays of the consumer's own.

Retry semantics: a handler exception rolls the batch's transaction back (processed_events
included); the batch is then run again one record per transaction, so that the records before
the failing one are kept; at the failing record the consumer seeks back (it and everything
after it on its partition are delivered again) and raises ``HandlerFailed``. ``run()`` retries
with exponential backoff (0.5 s doubling to 30 s by default), forever unless
``raise_on_error`` is set: records behind a failing one on the same partition wait, in order.
Make the handler's own effects on other systems idempotent too, or do them only through the
session: a handler may run more than once for an event whose transaction did not commit.

Records that are not outboxd envelopes are routed (``dead_letter_topic`` and/or
``on_undecodable``), counted in ``stats.undecodable``, logged (the first at WARNING, the rest at
DEBUG), and skipped: one bad record does not stop the partition.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Union

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from sqlalchemy import BigInteger, Column, DateTime, Engine, Integer, MetaData, Table, Text, func, text
from sqlalchemy.dialects.postgresql import UUID, insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from outboxd import schema as _ddl
from outboxd.envelope import Event, UndecodableRecord, decode

__all__ = ["ConsumerStats", "DeadLetterFailed", "HandlerFailed", "IdempotentConsumer", "Outcome"]

log = logging.getLogger("outboxd.consumer")

Handler = Callable[[Session, Event], None]
SessionFactory = Union[Callable[[], Session], Engine]


class Outcome(enum.Enum):
    """What ``poll_once`` did with a record."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    UNDECODABLE = "undecodable"  # not an envelope: routed (dead-letter topic / on_undecodable), skipped


class DeadLetterFailed(Exception):
    """An undecodable record could not be routed (dead-letter produce or ``on_undecodable``
    failed): its offset is not committed and the consumer sought back to it."""


class HandlerFailed(Exception):
    """The handler (or the database commit) failed: rolled back, offset not committed.

    The consumer has sought back to the record, so the next poll delivers it again.
    """

    def __init__(self, event: Event, cause: BaseException) -> None:
        super().__init__(
            f"handling event {event.id} ({event.event_type}) from {event.topic}[{event.partition}]@{event.offset} "
            f"failed: {type(cause).__name__}: {cause}; rolled back, offset not committed, it will be delivered again")
        self.event = event
        self.cause = cause


@dataclass(frozen=True)
class ConsumerStats:
    """Counters since the consumer was created."""

    processed: int = 0       # handler ran and the transaction committed
    duplicates: int = 0      # skipped: the event id was already in processed_events
    failures: int = 0        # handler or database commit raised; rolled back, retried
    undecodable: int = 0     # records that are not outboxd envelopes
    commit_errors: int = 0   # Kafka offset commits that failed (retried at the next commit)
    batches: int = 0         # database transactions that committed a batch
    offset_commits: int = 0  # Kafka offset commits that succeeded


def processed_events_table(metadata: MetaData, name: str = "processed_events", schema: str = "public") -> Table:
    """The processed_events table (see ``outboxd.schema.processed_events_ddl``) as a SQLAlchemy Table."""
    return Table(
        name,
        metadata,
        Column("consumer_group", Text, primary_key=True),
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("kafka_topic", Text, nullable=False),
        Column("kafka_partition", Integer, nullable=False),
        Column("kafka_offset", BigInteger, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        schema=schema,
    )


class IdempotentConsumer:
    """Consumes outboxd envelopes and runs ``handler(session, event)`` once per event id.

    Args:
        bootstrap_servers: Kafka brokers, ``host:port,...``.
        group_id: the consumer group; also part of the de-duplication key, so two groups (two
            services) sharing one database each process every event once.
        topics: topics to subscribe to (e.g. ``["outbox.event.order"]``); a name starting with
            ``^`` is a regular expression.
        handler: called with an open session (inside the transaction) and the decoded event. It
            must not commit or roll back the session itself; raising rolls everything back.
        session_factory: a callable returning a new ``Session`` (a ``sessionmaker``), or an
            ``Engine`` to make one from.
        processed_table, schema: where event ids are recorded (``create_schema()`` creates it).
        config: more confluent-kafka consumer properties. ``enable.auto.commit`` and
            ``enable.auto.offset.store`` cannot be set to true: offsets are committed only for
            records whose transaction committed.
        isolation_level: ``"read_committed"`` (the default, librdkafka's too) or
            ``"read_uncommitted"``; also accepted as ``config["isolation.level"]``. With outboxd in
            at-least-once mode (not transactional) both see the same records at the same time.
            With outboxd in exactly-once mode (Kafka transactions) read_committed shows a record
            once its transaction committed and hides aborted ones; read_uncommitted would see
            the records of an aborted transaction and their re-publication, i.e. duplicates.
            Keep read_committed. It does not make this consumer's own processing exactly once:
            processed_events still absorbs the records replayed after a consumer crash.
        on_undecodable: called with a record that is not an envelope and the error; when it
            returns (after the dead-letter produce, if any) the record is skipped.
        dead_letter_topic: a topic where records that are not envelopes are copied (same key,
            value and headers, plus ``outboxd.dlq.topic``, ``.partition``, ``.offset`` and
            ``.error`` headers), acknowledged by Kafka before the record is skipped.
        max_batch: records taken per poll and per database transaction.
        commit_every, commit_interval: the offsets of committed transactions are committed to
            Kafka once ``commit_every`` records or ``commit_interval`` seconds have passed since
            the last offset commit (and on revocation and ``close()``). A crash replays at most
            that much, skipped as duplicates.
        retry_backoff, max_retry_backoff: seconds ``run()`` waits before retrying a failed
            record, doubling up to the maximum.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        session_factory: SessionFactory,
        processed_table: str = "processed_events",
        schema: str = "public",
        config: Mapping[str, Any] | None = None,
        isolation_level: str | None = None,
        on_undecodable: Callable[[Message, UndecodableRecord], None] | None = None,
        dead_letter_topic: str | None = None,
        max_batch: int = 500,
        commit_every: int = 5000,
        commit_interval: float = 1.0,
        retry_backoff: float = 0.5,
        max_retry_backoff: float = 30.0,
    ) -> None:
        if not topics:
            raise ValueError("IdempotentConsumer: topics must not be empty")
        if not group_id:
            raise ValueError("IdempotentConsumer: group_id must not be empty")
        if max_batch < 1 or commit_every < 1 or commit_interval < 0:
            raise ValueError("IdempotentConsumer: max_batch and commit_every must be >= 1, commit_interval >= 0")
        self.group_id = group_id
        self.topics = list(topics)
        self._handler = handler
        self._session_factory: Callable[[], Session] = (
            sessionmaker(bind=session_factory) if isinstance(session_factory, Engine) else session_factory)
        self.processed_table_name = processed_table
        self.schema = schema
        self._processed = processed_events_table(MetaData(), processed_table, schema)
        self._claim = (pg_insert(self._processed)
                       .on_conflict_do_nothing(index_elements=["consumer_group", "event_id"])
                       .returning(self._processed.c.event_id))
        self._on_undecodable = on_undecodable
        self.dead_letter_topic = dead_letter_topic
        self._max_batch = max_batch
        self._commit_every = commit_every
        self._commit_interval = commit_interval
        self._retry_backoff = retry_backoff
        self._max_retry_backoff = max_retry_backoff
        self._lock = threading.Lock()
        self._stats = ConsumerStats()
        # Next offset to commit per partition: only records whose transaction committed.
        self._pending: dict[tuple[str, int], int] = {}
        self._uncommitted_records = 0
        self._last_commit = time.monotonic()
        self._logged_undecodable = False

        properties: dict[str, Any] = {
            "auto.offset.reset": "earliest",
            **dict(config or {}),
        }
        for key in ("enable.auto.commit", "enable.auto.offset.store"):
            if str(properties.get(key, "false")).lower() not in ("false", "0"):
                raise ValueError(f"IdempotentConsumer: {key} must stay false; offsets are committed "
                                 "after the database commit")
        configured = properties.get("isolation.level")
        if isolation_level is not None and configured is not None and configured != isolation_level:
            raise ValueError(f"IdempotentConsumer: isolation_level={isolation_level!r} contradicts "
                             f"config isolation.level={configured!r}")
        level = isolation_level or configured or "read_committed"
        if level not in ("read_committed", "read_uncommitted"):
            raise ValueError(f"IdempotentConsumer: isolation_level must be read_committed or read_uncommitted, "
                             f"got {level!r}")
        properties.update({
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "isolation.level": level,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        })
        self.isolation_level: str = level
        self._producer_config = {"bootstrap.servers": bootstrap_servers, "acks": "all",
                                 "enable.idempotence": True}
        self._producer: Producer | None = None
        self._consumer = Consumer(properties)
        self._consumer.subscribe(self.topics, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._closed = False

    # -- counters -----------------------------------------------------------------------------

    @property
    def stats(self) -> ConsumerStats:
        """A snapshot of the counters."""
        with self._lock:
            return self._stats

    @property
    def processed(self) -> int:
        """Events handled and committed."""
        return self.stats.processed

    @property
    def duplicates(self) -> int:
        """Records skipped because their event id was already processed by this group."""
        return self.stats.duplicates

    @property
    def failures(self) -> int:
        """Handler or database failures (each rolled back and retried)."""
        return self.stats.failures

    def _count(self, **increments: int) -> None:
        with self._lock:
            values = {name: getattr(self._stats, name) + increments.get(name, 0)
                      for name in ConsumerStats.__dataclass_fields__}
            self._stats = ConsumerStats(**values)

    # -- schema -------------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Creates the processed_events table if missing (or use ``outboxd.migrations``)."""
        with self._session_factory() as session, session.begin():
            for statement in _ddl.processed_events_ddl(self.processed_table_name, self.schema):
                session.execute(text(statement))

    def is_processed(self, event_id: uuid.UUID) -> bool:
        """Whether this consumer group has processed ``event_id``."""
        with self._session_factory() as session:
            row = session.execute(
                self._processed.select().where(self._processed.c.consumer_group == self.group_id,
                                               self._processed.c.event_id == event_id)).first()
            return row is not None

    # -- consuming ----------------------------------------------------------------------------

    def poll_once(self, timeout: float = 1.0) -> Outcome | None:
        """Waits up to ``timeout`` seconds for one record and processes it (``poll_batch`` of one).

        Returns what was done, or None when no record arrived.
        """
        outcomes = self.poll_batch(timeout, max_records=1)
        return outcomes[0] if outcomes else None

    def poll_batch(self, timeout: float = 1.0, max_records: int | None = None) -> list[Outcome]:
        """Waits up to ``timeout`` seconds for records (up to ``max_records``, default
        ``max_batch``) and processes them in one transaction; returns an outcome per record.

        Offsets are committed when due (see ``commit_every``); ``commit()`` forces it.

        Raises:
            HandlerFailed: the handler or the database commit failed for a record: the records
                before it are kept, it and the rest were sought back and come again.
            DeadLetterFailed: an undecodable record could not be routed (sought back).
            KafkaException: a fatal consumer error.
        """
        messages = self._consumer.consume(max_records or self._max_batch, timeout)
        outcomes: list[Outcome] = []
        run: list[Event] = []  # decoded records awaiting their transaction, in order
        for index, msg in enumerate(messages):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                # Transient (broker down, rebalance in progress): librdkafka retries by itself.
                log.warning("kafka consumer: %s", err.str())
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is None or partition is None or offset is None:  # only events lack them
                log.warning("kafka consumer: a message without topic, partition or offset: ignored")
                continue
            try:
                run.append(decode(msg.value(), topic=topic, partition=partition, offset=offset))
            except UndecodableRecord as e:
                # The records before it first, so that offsets advance in order.
                outcomes += self._handle(run, messages[index:])
                run = []
                self._route(msg, e, messages[index:])
                self._store(topic, partition, offset)
                outcomes.append(Outcome.UNDECODABLE)
        outcomes += self._handle(run, [])
        self._maybe_commit()
        return outcomes

    def run(self, stop: threading.Event | None = None, *, raise_on_error: bool = False,
            poll_timeout: float = 0.5) -> None:
        """Consumes until ``stop`` is set (or forever), retrying failed records with backoff.

        With ``raise_on_error``, the first ``HandlerFailed`` is raised instead of retried. The
        consumer stays open: call ``close()`` (or use it as a context manager) when done; the
        offsets of what was processed are committed then at the latest.
        """
        stop = stop or threading.Event()
        backoff = self._retry_backoff
        while not stop.is_set():
            try:
                outcomes = self.poll_batch(poll_timeout)
            except (HandlerFailed, DeadLetterFailed) as e:
                if raise_on_error:
                    raise
                log.error("%s; retrying in %.1f s", e, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self._max_retry_backoff)
                continue
            if outcomes:
                backoff = self._retry_backoff
        self.commit()

    def commit(self) -> bool:
        """Commits the offsets of every record processed so far (synchronously); returns False
        when Kafka refused (counted in ``stats.commit_errors``, retried at the next commit)."""
        if not self._pending:
            return True
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self._pending.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            # The database has the events: if their records come again they are duplicates, skipped.
            self._count(commit_errors=1)
            log.warning("committing offsets %s failed (%s); the events are recorded, so a redelivery "
                        "will be skipped as duplicates", _describe(offsets), e)
            return False
        for tp in offsets:
            if self._pending.get((tp.topic, tp.partition)) == tp.offset:
                del self._pending[(tp.topic, tp.partition)]
        self._uncommitted_records = 0
        self._last_commit = time.monotonic()
        self._count(offset_commits=1)
        return True

    def close(self) -> None:
        """Commits the offsets of what was processed and leaves the group."""
        if not self._closed:
            self._closed = True
            try:
                self.commit()
            finally:
                self._consumer.close()
                if self._producer is not None:
                    self._producer.flush(10)

    def __enter__(self) -> IdempotentConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _handle(self, events: list[Event], rest: Sequence[Message]) -> list[Outcome]:
        """Processes ``events`` in one transaction, or one by one after a failure of the batch.

        ``rest``: the records polled after these (not processed yet), to seek back on failure.
        """
        if not events:
            return []
        try:
            duplicates = self._process(events)
        except Exception as e:
            if len(events) == 1:
                self._fail(events[0], e, events, rest)
            # Which record failed? Each alone, in its own transaction: the ones before the
            # failing record are kept; it and everything after it are sought back.
            log.debug("batch of %d records failed (%s: %s); retrying them one by one", len(events),
                      type(e).__name__, e)
            outcomes: list[Outcome] = []
            for index, event in enumerate(events):
                try:
                    (duplicate,) = self._process([event])
                except Exception as single:
                    self._fail(event, single, events[index:], rest)
                outcomes.append(self._done(event, duplicate))
            return outcomes
        skipped = sum(duplicates)
        self._count(processed=len(events) - skipped, duplicates=skipped)
        for event in events:  # in order: the last offset per partition stays
            self._pending[(event.topic, event.partition)] = event.offset + 1
        self._uncommitted_records += len(events)
        return [Outcome.DUPLICATE if duplicate else Outcome.PROCESSED for duplicate in duplicates]

    def _done(self, event: Event, duplicate: bool) -> Outcome:
        self._count(**({"duplicates": 1} if duplicate else {"processed": 1}))
        self._store(event.topic, event.partition, event.offset)
        return Outcome.DUPLICATE if duplicate else Outcome.PROCESSED

    def _fail(self, event: Event, cause: Exception, unprocessed: list[Event], rest: Sequence[Message]) -> NoReturn:
        self._count(failures=1)
        self._seek_back([(e.topic, e.partition, e.offset) for e in unprocessed] +
                        [(m.topic(), m.partition(), m.offset()) for m in rest if m.error() is None])
        raise HandlerFailed(event, cause) from cause

    def _process(self, events: list[Event]) -> list[bool]:
        """Runs the handler for each new event in one transaction; returns, per event, whether it
        was a duplicate (handler not run)."""
        first: dict[uuid.UUID, Event] = {}
        for event in events:
            first.setdefault(event.id, event)
        rows = [{"consumer_group": self.group_id, "event_id": e.id, "kafka_topic": e.topic,
                 "kafka_partition": e.partition, "kafka_offset": e.offset} for e in first.values()]
        with self._session_factory() as session:
            with session.begin():
                # One statement for the batch (SQLAlchemy's insertmanyvalues; the statement is
                # compiled once and cached). A concurrent transaction claiming the same id (after a
                # rebalance) makes this insert wait for it; then it finds the row, or takes over
                # if that one rolled back.
                claimed = {row[0] for row in session.execute(self._claim, rows)}
                outcome: list[bool] = []
                for event in events:
                    new = event.id in claimed and first[event.id] is event
                    if new:
                        self._handler(session, event)
                    else:
                        log.debug("skipping duplicate event %s at %s[%d]@%d", event.id, event.topic,
                                  event.partition, event.offset)
                    outcome.append(not new)
        self._count(batches=1)
        return outcome

    def _route(self, msg: Message, error: UndecodableRecord, rest: Sequence[Message]) -> None:
        """Hands an undecodable record to the dead-letter topic and/or ``on_undecodable``."""
        self._count(undecodable=1)
        if not self._logged_undecodable:
            self._logged_undecodable = True
            log.warning("%s; skipped%s (further undecodable records are logged at DEBUG and counted in "
                        "stats.undecodable)", error,
                        f" after copying it to {self.dead_letter_topic}" if self.dead_letter_topic else "")
        else:
            log.debug("%s; skipped", error)
        try:
            if self.dead_letter_topic is not None:
                self._dead_letter(self.dead_letter_topic, msg, error)
            if self._on_undecodable is not None:
                self._on_undecodable(msg, error)
        except Exception as e:
            self._seek_back([(m.topic(), m.partition(), m.offset()) for m in rest if m.error() is None])
            raise DeadLetterFailed(f"routing undecodable record {error} failed: {type(e).__name__}: {e}; "
                                   "sought back, it will come again") from e

    def _dead_letter(self, topic: str, msg: Message, error: UndecodableRecord) -> None:
        if self._producer is None:
            self._producer = Producer(self._producer_config)
        delivered: list[KafkaError | None] = []
        original = msg.headers() or []  # a consumed message has a list; the type also allows a dict
        headers: list[tuple[str, str | bytes | None]] = list(original.items()) if isinstance(original, dict) \
            else list(original)
        headers += [
            ("outboxd.dlq.topic", str(msg.topic()).encode()),
            ("outboxd.dlq.partition", str(msg.partition()).encode()),
            ("outboxd.dlq.offset", str(msg.offset()).encode()),
            ("outboxd.dlq.error", str(error).encode()),
        ]
        self._producer.produce(topic, value=msg.value(), key=msg.key(), headers=headers,
                               on_delivery=lambda err, _msg: delivered.append(err))
        deadline = time.monotonic() + 30
        while not delivered and time.monotonic() < deadline:
            self._producer.poll(0.1)
        if not delivered:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        if delivered[0] is not None:
            raise KafkaException(delivered[0])

    def _store(self, topic: str, partition: int, offset: int) -> None:
        self._pending[(topic, partition)] = offset + 1
        self._uncommitted_records += 1

    def _maybe_commit(self) -> None:
        if self._pending and (self._uncommitted_records >= self._commit_every
                              or time.monotonic() - self._last_commit >= self._commit_interval):
            self.commit()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The next owner resumes from the committed offset: give it everything we processed.
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._pending.items() if (t, p) in revoked]
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                self._count(offset_commits=1)
            except KafkaException as e:
                self._count(commit_errors=1)
                log.warning("committing offsets %s on revocation failed (%s); the next owner will skip "
                            "the redelivered events as duplicates", _describe(offsets), e)
        for key in revoked:
            self._pending.pop(key, None)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: the group has moved on, a commit would be refused.
        for tp in partitions:
            self._pending.pop((tp.topic, tp.partition), None)

    def _seek_back(self, positions: list[tuple[str | None, int | None, int | None]]) -> None:
        """Seeks every partition in ``positions`` back to its earliest offset there."""
        earliest: dict[tuple[str, int], int] = {}
        for topic, partition, offset in positions:
            if topic is not None and partition is not None and offset is not None:
                key = (topic, partition)
                earliest[key] = min(offset, earliest.get(key, offset))
        for (topic, partition), offset in earliest.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as e:
                # Typically the partition was revoked meanwhile: its next owner starts from the
                # committed offset, which is before this record.
                log.warning("could not seek %s[%d] back to %d (%s); it resumes from the committed offset",
                            topic, partition, offset, e)


def _describe(offsets: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in offsets)
