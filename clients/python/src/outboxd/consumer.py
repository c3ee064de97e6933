"""Exactly-once processing of outboxd's at-least-once Kafka records.

``IdempotentConsumer`` reads envelopes with confluent-kafka and runs the handler inside one
database transaction that first records the event id in a processed_events table (primary key
consumer group + event id). A duplicate finds its id there and is skipped; the Kafka offset is
committed, synchronously, only after the database committed. So, whatever crashes when:

- before the database commit: nothing of the event is stored and the offset is not committed;
  the record is delivered again and processed then;
- between the database commit and the offset commit: the record is delivered again, finds its
  id, and is skipped (counted in ``duplicates``);
- a duplicate produced by outboxd after a fault: skipped the same way.

Retry semantics: a handler exception rolls the transaction back (processed_events included), the
offset is not committed, and the consumer seeks back to the failed record so that the next poll
delivers it again. ``run()`` retries it with exponential backoff (0.5 s doubling to 30 s by
default), forever unless ``raise_on_error`` is set: records behind a failing one on the same
partition wait, in order. ``poll_once()`` raises ``HandlerFailed`` and leaves retrying to the
caller. Make the handler's own effects on other systems idempotent too, or do them only through
the session.
"""

from __future__ import annotations

import enum
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from sqlalchemy import BigInteger, Column, DateTime, Engine, Integer, MetaData, Table, Text, func, text
from sqlalchemy.dialects.postgresql import UUID, insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from outboxd import schema as _ddl
from outboxd.envelope import Event, UndecodableRecord, decode

__all__ = ["ConsumerStats", "HandlerFailed", "IdempotentConsumer", "Outcome"]

log = logging.getLogger("outboxd.consumer")

Handler = Callable[[Session, Event], None]
SessionFactory = Union[Callable[[], Session], Engine]


class Outcome(enum.Enum):
    """What ``poll_once`` did with a record."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    UNDECODABLE = "undecodable"  # handed to on_undecodable, offset committed


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
    commit_errors: int = 0   # Kafka offset commits that failed after the database commit


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
        config: more confluent-kafka consumer properties. ``enable.auto.commit`` cannot be set
            to true: offsets are committed only after the database commit.
        on_undecodable: called with a record that is not an envelope; when it returns, the
            offset is committed (e.g. after copying the record to a dead-letter topic). Without
            it, ``poll_once`` raises ``UndecodableRecord`` and the record stays uncommitted.
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
        on_undecodable: Callable[[Message, UndecodableRecord], None] | None = None,
        retry_backoff: float = 0.5,
        max_retry_backoff: float = 30.0,
    ) -> None:
        if not topics:
            raise ValueError("IdempotentConsumer: topics must not be empty")
        if not group_id:
            raise ValueError("IdempotentConsumer: group_id must not be empty")
        self.group_id = group_id
        self.topics = list(topics)
        self._handler = handler
        self._session_factory: Callable[[], Session] = (
            sessionmaker(bind=session_factory) if isinstance(session_factory, Engine) else session_factory)
        self.processed_table_name = processed_table
        self.schema = schema
        self._processed = processed_events_table(MetaData(), processed_table, schema)
        self._on_undecodable = on_undecodable
        self._retry_backoff = retry_backoff
        self._max_retry_backoff = max_retry_backoff
        self._lock = threading.Lock()
        self._stats = ConsumerStats()

        properties: dict[str, Any] = {
            "auto.offset.reset": "earliest",
            **dict(config or {}),
        }
        auto_commit = str(properties.get("enable.auto.commit", "false")).lower()
        if auto_commit not in ("false", "0"):
            raise ValueError("IdempotentConsumer: enable.auto.commit must stay false; offsets are committed "
                             "after the database commit")
        properties.update({
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            # Offsets are committed explicitly, per record; nothing is stored behind our back.
            "enable.auto.offset.store": False,
        })
        self._consumer = Consumer(properties)
        self._consumer.subscribe(self.topics)
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
        """Waits up to ``timeout`` seconds for one record and processes it.

        Returns what was done, or None when no record arrived.

        Raises:
            HandlerFailed: the handler or the database commit failed (rolled back, offset not
                committed, the record will be delivered again).
            UndecodableRecord: the record is not an envelope and there is no on_undecodable.
            KafkaException: a fatal consumer error.
        """
        msg = self._consumer.poll(timeout)
        if msg is None:
            return None
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return None
            if err.fatal():
                raise KafkaException(err)
            # Transient (broker down, rebalance in progress): librdkafka retries by itself.
            log.warning("kafka consumer: %s", err.str())
            return None

        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:  # only events lack them
            log.warning("kafka consumer: a message without topic, partition or offset: ignored")
            return None
        try:
            event = decode(msg.value(), topic=topic, partition=partition, offset=offset)
        except UndecodableRecord as e:
            self._count(undecodable=1)
            if self._on_undecodable is None:
                self._seek_back(topic, partition, offset)
                raise
            self._on_undecodable(msg, e)
            self._commit(topic, partition, offset)
            return Outcome.UNDECODABLE

        try:
            duplicate = self._process(event)
        except Exception as e:
            self._count(failures=1)
            self._seek_back(topic, partition, offset)
            raise HandlerFailed(event, e) from e
        if duplicate:
            self._count(duplicates=1)
        else:
            self._count(processed=1)
        self._commit(topic, partition, offset)
        return Outcome.DUPLICATE if duplicate else Outcome.PROCESSED

    def run(self, stop: threading.Event | None = None, *, raise_on_error: bool = False,
            poll_timeout: float = 0.5) -> None:
        """Consumes until ``stop`` is set (or forever), retrying failed records with backoff.

        With ``raise_on_error``, the first ``HandlerFailed`` is raised instead of retried. The
        consumer stays open: call ``close()`` (or use it as a context manager) when done.
        """
        stop = stop or threading.Event()
        backoff = self._retry_backoff
        while not stop.is_set():
            try:
                outcome = self.poll_once(poll_timeout)
            except HandlerFailed as e:
                if raise_on_error:
                    raise
                log.error("%s; retrying in %.1f s", e, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self._max_retry_backoff)
                continue
            if outcome is not None:
                backoff = self._retry_backoff

    def close(self) -> None:
        """Leaves the group. Offsets were committed record by record; nothing is committed here."""
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> IdempotentConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _process(self, event: Event) -> bool:
        """Runs the handler in one transaction; returns True for a duplicate (handler not run)."""
        claim = (
            pg_insert(self._processed)
            .values(consumer_group=self.group_id, event_id=event.id, kafka_topic=event.topic,
                    kafka_partition=event.partition, kafka_offset=event.offset)
            .on_conflict_do_nothing(index_elements=["consumer_group", "event_id"])
            .returning(self._processed.c.event_id)
        )
        with self._session_factory() as session:
            with session.begin():
                # A concurrent transaction claiming the same id (after a rebalance) makes this
                # insert wait for it; then it finds the row, or takes over if that one rolled back.
                if session.execute(claim).first() is None:
                    log.debug("skipping duplicate event %s at %s[%d]@%d", event.id, event.topic,
                              event.partition, event.offset)
                    return True
                self._handler(session, event)
            return False

    def _commit(self, topic: str, partition: int, offset: int) -> None:
        try:
            self._consumer.commit(offsets=[TopicPartition(topic, partition, offset + 1)], asynchronous=False)
        except KafkaException as e:
            # The database has the event: when the record comes again it is a duplicate, skipped.
            self._count(commit_errors=1)
            log.warning("committing offset %d of %s[%d] failed (%s); the event is recorded, so a redelivery "
                        "will be skipped as a duplicate", offset + 1, topic, partition, e)

    def _seek_back(self, topic: str, partition: int, offset: int) -> None:
        try:
            self._consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as e:
            # Typically the partition was revoked meanwhile: its next owner starts from the
            # committed offset, which is before this record.
            log.warning("could not seek %s[%d] back to %d (%s); it resumes from the committed offset",
                        topic, partition, offset, e)
