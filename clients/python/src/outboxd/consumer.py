"""Exactly-once processing of outboxd's Kafka records, in either of outboxd's delivery modes.

``IdempotentConsumer`` reads envelopes with confluent-kafka and hands each poll's records to
``outboxd._processing.Processor``: one database transaction per poll that claims the event ids
in processed_events (primary key consumer group + event id; a duplicate finds its id there and
is skipped) and runs each new event's handler in a savepoint. Kafka offsets are committed later,
periodically (``commit_every`` records or ``commit_interval`` seconds, and on partition
revocation and ``close()``), and only ever up to records that are done. The once-per-event
guarantee rests on the database alone; the offset only says where to resume. Whatever crashes
when:

- before the database commit: nothing of the batch is stored and its offsets are not committed;
  the records are delivered again and processed then;
- after the database commit but before the offset commit (up to ``commit_interval`` of work):
  the records are delivered again, find their ids, and are skipped (``duplicates``); their
  ``after_commit`` callbacks that had not run (or not been recorded as run) run then;
- a duplicate produced by outboxd after a fault (at-least-once mode): skipped the same way.

A handler that raises: its savepoint rolls back, the events before it commit (their handlers are
never run again), and the consumer seeks back to it. It is retried with backoff (``run()``), its
handler once per attempt, and after ``max_attempts`` failed attempts it is copied to
``dead_letter_topic`` (``outboxd.dlq.reason = handler_error``, the exception's type and message in
headers) and skipped, so the partition moves on. ``is_transient`` failures (the database
unreachable, a serialization failure, ...) never count as attempts: they are retried until they
pass. Records that are not outboxd envelopes are dead-lettered (reason ``undecodable``) at once.

outboxd in exactly-once mode (``[sink] delivery = "exactly_once"``) writes in Kafka
transactions and leaves no duplicate on the topic for a ``read_committed`` reader (the default
``isolation_level``). The consumer still needs its processed_events table: Kafka transactions
cover outboxd's writes, not this consumer's database and offsets.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from sqlalchemy import MetaData, select, text
from sqlalchemy.orm import Session

from outboxd import schema as _ddl
from outboxd._processing import (Attempts, Failure, Handler, Outcome, Processor, SessionFactory, after_commit,
                                 is_transient, processed_events_table)
from outboxd.deadletter import DeadLetterProducer, producer_config
from outboxd.envelope import Event, UndecodableRecord, decode
from outboxd.observability import Instruments

__all__ = ["ConsumerStats", "DeadLetterFailed", "HandlerFailed", "IdempotentConsumer", "Outcome", "after_commit",
           "is_transient", "processed_events_table"]

log = logging.getLogger("outboxd.consumer")

_MAX_HEADER_TEXT = 1000  # bytes of an exception message copied into a dead letter's header


class DeadLetterFailed(Exception):
    """A record could not be routed to the dead-letter topic (or ``on_undecodable`` failed): its
    offset is not committed and the consumer sought back to it."""


class HandlerFailed(Exception):
    """The handler, an ``after_commit`` callback, or the database failed for an event: its
    savepoint rolled back, its offset not committed; the consumer has sought back to it, so the
    next poll delivers it again.

    ``attempt``: failed attempts of this record so far (0 for a transient failure, which does not
    count); ``transient``: ``is_transient(cause)``.
    """

    def __init__(self, event: Event, cause: BaseException, *, stage: str = "handler", attempt: int = 0,
                 transient: bool = False) -> None:
        what = "an after_commit callback of" if stage == "after_commit" else "handling"
        super().__init__(
            f"{what} event {event.id} ({event.event_type}) from {event.topic}[{event.partition}]@{event.offset} "
            f"failed: {type(cause).__name__}: {cause}; "
            + ("transient, retried without counting an attempt" if transient else f"attempt {attempt}")
            + "; its offset is not committed, it will be delivered again")
        self.event = event
        self.cause = cause
        self.stage = stage
        self.attempt = attempt
        self.transient = transient


@dataclass(frozen=True)
class ConsumerStats:
    """Counters since the consumer was created."""

    processed: int = 0       # handler ran and the transaction committed
    duplicates: int = 0      # skipped: the event id was already in processed_events
    failures: int = 0        # failed attempts (handler, after_commit callback, database), each retried
    undecodable: int = 0     # records that are not outboxd envelopes
    dead_lettered: int = 0   # events copied to the dead-letter topic after max_attempts, then skipped
    handler_reruns: int = 0  # handler runs for an event whose handler had already run uncommitted
    handler_calls: int = 0   # handler runs, re-runs included
    after_commit_calls: int = 0  # after_commit callbacks run
    commit_errors: int = 0   # Kafka offset commits that failed (retried at the next commit)
    batches: int = 0         # database transactions that committed
    offset_commits: int = 0  # Kafka offset commits that succeeded


class IdempotentConsumer:
    """Consumes outboxd envelopes and commits ``handler(session, event)``'s effects once per event id.

    Args:
        bootstrap_servers: Kafka brokers, ``host:port,...``.
        group_id: the consumer group; also part of the de-duplication key, so two groups (two
            services) sharing one database each process every event once.
        topics: topics to subscribe to (e.g. ``["outbox.event.order"]``); a name starting with
            ``^`` is a regular expression.
        handler: called with an open session (inside the transaction, in a savepoint) and the
            decoded event. It must not commit or roll back the session itself; raising rolls back
            its own effects only. Effects outside the database: ``outboxd.after_commit``.
        session_factory: a callable returning a new ``Session`` (a ``sessionmaker``), or an
            ``Engine`` to make one from.
        processed_table, schema: where event ids are recorded (``create_schema()`` creates it).
        config: more confluent-kafka consumer properties (security, ``client.id``, ...). The
            dead-letter producer inherits them (all but consumer-only ones). ``enable.auto.commit``
            and ``enable.auto.offset.store`` cannot be set to true. ``auto.offset.reset`` is
            ``earliest`` unless set here: a new group starts at the beginning of the topic, not at
            its end, so no event published before the group first joined is skipped.
        group_instance_id: Kafka static membership (``group.instance.id``): a consumer restarted
            with the same id (e.g. the pod name of a StatefulSet) takes its partitions back at
            once, without the rebalance that waits ``session.timeout.ms`` (45 s) for the dead
            member. Unique per running consumer of the group.
        isolation_level: ``"read_committed"`` (the default) or ``"read_uncommitted"``; also
            accepted as ``config["isolation.level"]``. Keep read_committed: outboxd's exactly-once
            mode relies on it.
        on_undecodable: called with a record that is not an envelope and the error; when it
            returns (after the dead-letter produce, if any) the record is skipped.
        dead_letter_topic: where undecodable records and events that failed ``max_attempts``
            times are copied (same key, value and headers, plus ``outboxd.dlq.*`` headers),
            acknowledged by Kafka before the record is skipped.
        dead_letter_config: properties for the dead-letter producer on top of the inherited ones.
        max_attempts: failed attempts of an event before it is dead-lettered (default 5); None
            retries forever (records behind it on its partition wait). Without a dead-letter topic
            an event is never skipped: it is retried forever, with an error logged.
        is_transient: which failures are retried without counting an attempt (default
            ``outboxd.is_transient``: database connection, serialization failure, deadlock, ...).
        max_batch: records taken per poll and per database transaction.
        commit_every, commit_interval: the offsets of done records are committed to Kafka once
            ``commit_every`` records or ``commit_interval`` seconds have passed since the last
            offset commit (and on revocation and ``close()``). A crash replays at most that much,
            skipped as duplicates. Each offset commit logs a line with counts.
        retry_backoff, max_retry_backoff: seconds ``run()`` waits before retrying a failed
            record, doubling up to the maximum.
        tracer_provider: the OpenTelemetry TracerProvider for the per-event spans (default: the
            global one); ignored without opentelemetry-api.
        prometheus_registry, metrics: where the ``outboxd_consumer_*`` counters go (default the
            global registry), and whether to count at all; ignored without prometheus_client.
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
        group_instance_id: str | None = None,
        isolation_level: str | None = None,
        on_undecodable: Callable[[Message, UndecodableRecord], None] | None = None,
        dead_letter_topic: str | None = None,
        dead_letter_config: Mapping[str, Any] | None = None,
        max_attempts: int | None = 5,
        is_transient: Callable[[BaseException], bool] = is_transient,
        max_batch: int = 500,
        commit_every: int = 5000,
        commit_interval: float = 1.0,
        retry_backoff: float = 0.5,
        max_retry_backoff: float = 30.0,
        tracer_provider: Any = None,
        prometheus_registry: Any = None,
        metrics: bool = True,
    ) -> None:
        if not topics:
            raise ValueError("IdempotentConsumer: topics must not be empty")
        if not group_id:
            raise ValueError("IdempotentConsumer: group_id must not be empty")
        if max_batch < 1 or commit_every < 1 or commit_interval < 0:
            raise ValueError("IdempotentConsumer: max_batch and commit_every must be >= 1, commit_interval >= 0")
        self.group_id = group_id
        self.topics = list(topics)
        self.processed_table_name = processed_table
        self.schema = schema
        self._processed = processed_events_table(MetaData(), processed_table, schema)
        self._instruments = Instruments(group_id, tracer_provider=tracer_provider,
                                        prometheus_registry=prometheus_registry, metrics=metrics)
        self._processor = Processor(group_id=group_id, handler=handler, session_factory=session_factory,
                                    table=self._processed, instruments=self._instruments)
        self._attempts = Attempts(max_attempts)
        self._is_transient = is_transient
        self._on_undecodable = on_undecodable
        self.dead_letter_topic = dead_letter_topic
        self._max_batch = max_batch
        self._commit_every = commit_every
        self._commit_interval = commit_interval
        self._retry_backoff = retry_backoff
        self._max_retry_backoff = max_retry_backoff
        self._lock = threading.Lock()
        self._stats = ConsumerStats()
        self._logged_stats = ConsumerStats()
        # Next offset to commit per partition: only records that are done.
        self._pending: dict[tuple[str, int], int] = {}
        self._uncommitted_records = 0
        self._last_commit = time.monotonic()
        self._logged_undecodable = False
        self._warned_no_dead_letter: set[tuple[str, int, int]] = set()

        properties: dict[str, Any] = {"auto.offset.reset": "earliest", **dict(config or {})}
        for key in ("enable.auto.commit", "enable.auto.offset.store"):
            if str(properties.get(key, "false")).lower() not in ("false", "0"):
                raise ValueError(f"IdempotentConsumer: {key} must stay false; offsets are committed "
                                 "after the database commit")
        level = _one_of("isolation_level", isolation_level, properties.get("isolation.level")) or "read_committed"
        if level not in ("read_committed", "read_uncommitted"):
            raise ValueError(f"IdempotentConsumer: isolation_level must be read_committed or read_uncommitted, "
                             f"got {level!r}")
        instance = _one_of("group_instance_id", group_instance_id, properties.get("group.instance.id"))
        properties.update({
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "isolation.level": level,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        })
        if instance:
            properties["group.instance.id"] = instance
        self.isolation_level: str = level
        self.group_instance_id: str | None = instance or None
        self._dead_letters = DeadLetterProducer(producer_config(properties, dead_letter_config))
        self._consumer = Consumer(properties)
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        self._closed = False
        log.info("consumer group %s starting: topics %s, %s, max_attempts %s, dead letters %s, isolation %s",
                 group_id, ", ".join(self.topics),
                 f"static member {instance}" if instance else "dynamic member (no group.instance.id)",
                 max_attempts if max_attempts is not None else "unlimited",
                 f"to {dead_letter_topic}" if dead_letter_topic else "off", level)

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
        """Failed attempts (each rolled back and retried)."""
        return self.stats.failures

    def _count(self, **increments: int) -> None:
        with self._lock:
            self._stats = replace(self._stats, **{k: getattr(self._stats, k) + v for k, v in increments.items()})

    # -- schema -------------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Creates the processed_events table if missing, or adds what an older one lacks (or use
        ``outboxd.migrations``)."""
        with self._processor.session() as session, session.begin():
            for statement in _ddl.processed_events_ddl(self.processed_table_name, self.schema):
                session.execute(text(statement))

    def is_processed(self, event_id: uuid.UUID) -> bool:
        """Whether this consumer group has processed ``event_id``."""
        t = self._processed
        with self._processor.session() as session:
            row = session.execute(select(t.c.event_id).where(t.c.consumer_group == self.group_id,
                                                             t.c.event_id == event_id)).first()
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
            HandlerFailed: an event failed (not yet ``max_attempts`` times, or no dead-letter
                topic): the records before it are done, it and the rest were sought back.
            DeadLetterFailed: a record could not be dead-lettered (sought back).
            KafkaException: a fatal consumer error.
        """
        messages = self._consumer.consume(max_records or self._max_batch, timeout)
        outcomes: list[Outcome] = []
        run: list[tuple[Event, Message]] = []  # decoded records awaiting their transaction, in order
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
                run.append((decode(msg.value(), topic=topic, partition=partition, offset=offset), msg))
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

        Returns within ``poll_timeout`` plus the batch in progress once ``stop`` is set (a backoff
        wait is cut short). With ``raise_on_error``, the first ``HandlerFailed`` is raised instead
        of retried. The consumer stays open: call ``close()`` (or use it as a context manager)
        when done; the offsets of what was processed are committed then at the latest.
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
        """Commits the offsets of every record done so far (synchronously) and logs a line with the
        counts since the last one; returns False when Kafka refused (counted in
        ``stats.commit_errors``, retried at the next commit)."""
        if not self._pending:
            return True
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self._pending.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            # The database has the events: if their records come again they are duplicates, skipped.
            self._count(commit_errors=1)
            self._instruments.count("offset_commits", result="error")
            log.warning("committing offsets %s failed (%s); the events are recorded, so a redelivery "
                        "will be skipped as duplicates", _describe(offsets), e)
            return False
        for tp in offsets:
            if self._pending.get((tp.topic, tp.partition)) == tp.offset:
                del self._pending[(tp.topic, tp.partition)]
        now = time.monotonic()
        self._count(offset_commits=1)
        self._instruments.count("offset_commits", result="ok")
        self._log_interval(f"committed offsets {_describe(offsets)}", now - self._last_commit)
        self._uncommitted_records = 0
        self._last_commit = now
        return True

    def close(self, timeout: float = 30.0) -> bool:
        """Commits the offsets of what was processed, leaves the group (a static member does not
        leave: its partitions wait ``session.timeout.ms`` for it to come back) and flushes the
        dead-letter producer, within ``timeout`` seconds. Returns False if that did not finish in
        time (Kafka unreachable): the offsets not committed mean replays, skipped as duplicates."""
        if self._closed:
            return True
        self._closed = True
        finished = threading.Event()

        def shut() -> None:
            try:
                self.commit()
            except Exception as e:  # a fatal consumer state: the group moves on without these offsets
                log.warning("final offset commit failed: %s", e)
            finally:
                self._consumer.close()
                self._dead_letters.flush(max(1.0, deadline - time.monotonic()))
                finished.set()

        deadline = time.monotonic() + timeout
        closer = threading.Thread(target=shut, name=f"outboxd-close-{self.group_id}", daemon=True)
        closer.start()
        closer.join(timeout)
        s = self.stats
        if not finished.is_set():
            log.warning("consumer group %s: closing did not finish within %.0f s (Kafka unreachable?); giving up "
                        "(records since the last offset commit will come again and be skipped as duplicates)",
                        self.group_id, timeout)
            return False
        log.info("consumer group %s stopped: %d processed, %d duplicates, %d dead-lettered, %d undecodable, "
                 "%d failed attempts, %d handler re-runs", self.group_id, s.processed, s.duplicates, s.dead_lettered,
                 s.undecodable, s.failures, s.handler_reruns)
        return True

    def __enter__(self) -> IdempotentConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _handle(self, run: list[tuple[Event, Message]], rest: Sequence[Message]) -> list[Outcome]:
        """Processes the decoded records ``run`` in order; a failing one is retried or dead-lettered.

        ``rest``: the records polled after these (not processed yet), to seek back on failure.
        """
        outcomes: list[Outcome] = []
        while run:
            events = [event for event, _ in run]
            result = self._processor.process(events)
            done = result.outcomes
            self._count(processed=done.count(Outcome.PROCESSED), duplicates=done.count(Outcome.DUPLICATE),
                        handler_calls=result.handler_calls, handler_reruns=result.handler_reruns,
                        after_commit_calls=result.after_commit_calls, batches=result.transactions)
            self._instruments.count("records", done.count(Outcome.PROCESSED), outcome="processed")
            self._instruments.count("records", done.count(Outcome.DUPLICATE), outcome="duplicate")
            self._instruments.count("reruns", result.handler_reruns)
            self._instruments.count("after_commit", result.after_commit_calls)
            for event in events[:len(done)]:
                self._store(event.topic, event.partition, event.offset)
                self._attempts.forget(event)
            outcomes += done
            if result.failure is None:
                break
            event, msg = run[len(done)]
            self._dead_letter_or_raise(event, msg, result.failure, run[len(done):], rest)
            outcomes.append(Outcome.DEAD_LETTERED)
            run = run[len(done) + 1:]
        return outcomes

    def _dead_letter_or_raise(self, event: Event, msg: Message, failure: Failure,
                              unprocessed: Sequence[tuple[Event, Message]], rest: Sequence[Message]) -> None:
        """Counts a failed attempt; dead-letters ``event`` if it has had ``max_attempts``, else
        seeks back and raises HandlerFailed."""
        cause = failure.cause
        self._count(failures=1)
        self._instruments.count("failures", stage=failure.stage)
        transient = self._is_transient(cause)
        attempt = 0 if transient else self._attempts.failed(event)
        where = (event.topic, event.partition, event.offset)
        if not transient and self._attempts.exhausted(attempt):
            if self.dead_letter_topic is not None:
                reason = "after_commit_error" if failure.stage == "after_commit" else "handler_error"
                self._send_dead_letter(msg, reason, cause, attempt, unprocessed, rest)
                log.error("event %s (%s) at %s[%d]@%d failed %d times (last: %s: %s); dead-lettered to %s as %s, "
                          "the partition moves on", event.id, event.event_type, *where, attempt,
                          type(cause).__qualname__, cause, self.dead_letter_topic, reason)
                if failure.stage == "after_commit":
                    self._processor.clear_after_commit(event)
                self._processor.forget(event)
                self._attempts.forget(event)
                self._store(*where)
                self._count(dead_lettered=1)
                self._instruments.count("records", outcome="dead_lettered")
                return
            if where not in self._warned_no_dead_letter:
                self._warned_no_dead_letter.add(where)
                log.error("event %s at %s[%d]@%d failed %d times, but no dead_letter_topic is configured: it "
                          "cannot be set aside, so it is retried forever and its partition waits", event.id,
                          *where, attempt)
        self._seek_back([(e.topic, e.partition, e.offset) for e, _ in unprocessed] +
                        [(m.topic(), m.partition(), m.offset()) for m in rest if m.error() is None])
        raise HandlerFailed(event, cause, stage=failure.stage, attempt=attempt, transient=transient) from cause

    def _route(self, msg: Message, error: UndecodableRecord, rest: Sequence[Message]) -> None:
        """Hands an undecodable record to the dead-letter topic and/or ``on_undecodable``."""
        self._count(undecodable=1)
        self._instruments.count("records", outcome="undecodable")
        if not self._logged_undecodable:
            self._logged_undecodable = True
            log.warning("%s; skipped%s (further undecodable records are logged at DEBUG and counted in "
                        "stats.undecodable)", error,
                        f" after copying it to {self.dead_letter_topic}" if self.dead_letter_topic else "")
        else:
            log.debug("%s; skipped", error)
        try:
            if self.dead_letter_topic is not None:
                self._send_dead_letter(msg, "undecodable", error, 0, [], [])
            if self._on_undecodable is not None:
                self._on_undecodable(msg, error)
        except Exception as e:
            self._seek_back([(m.topic(), m.partition(), m.offset()) for m in rest if m.error() is None])
            raise DeadLetterFailed(f"routing undecodable record {error} failed: {type(e).__name__}: {e}; "
                                   "sought back, it will come again") from e

    def _send_dead_letter(self, msg: Message, reason: str, cause: BaseException, attempts: int,
                          unprocessed: Sequence[tuple[Event, Message]], rest: Sequence[Message]) -> None:
        assert self.dead_letter_topic is not None
        kind = type(cause)
        headers: list[tuple[str, str | bytes | None]] = [
            ("outboxd.dlq.reason", reason.encode()),
            ("outboxd.dlq.topic", str(msg.topic()).encode()),
            ("outboxd.dlq.partition", str(msg.partition()).encode()),
            ("outboxd.dlq.offset", str(msg.offset()).encode()),
            ("outboxd.dlq.group", self.group_id.encode()),
            ("outboxd.dlq.error.type", f"{kind.__module__}.{kind.__qualname__}".encode()),
            ("outboxd.dlq.error.message", str(cause).encode("utf-8", "replace")[:_MAX_HEADER_TEXT]),
        ]
        if attempts:
            headers.append(("outboxd.dlq.attempts", str(attempts).encode()))
        try:
            self._dead_letters.send(self.dead_letter_topic, msg, headers)
        except Exception as e:
            if reason == "undecodable":
                raise
            self._seek_back([(ev.topic, ev.partition, ev.offset) for ev, _ in unprocessed] +
                            [(m.topic(), m.partition(), m.offset()) for m in rest if m.error() is None])
            raise DeadLetterFailed(f"dead-lettering {msg.topic()}[{msg.partition()}]@{msg.offset()} to "
                                   f"{self.dead_letter_topic} failed: {type(e).__name__}: {e}; sought back, it will "
                                   "come again") from e

    def _store(self, topic: str, partition: int, offset: int) -> None:
        self._pending[(topic, partition)] = offset + 1
        self._uncommitted_records += 1

    def _maybe_commit(self) -> None:
        if self._pending and (self._uncommitted_records >= self._commit_every
                              or time.monotonic() - self._last_commit >= self._commit_interval):
            self.commit()

    def _log_interval(self, what: str, seconds: float) -> None:
        now, last = self.stats, self._logged_stats
        self._logged_stats = now
        d = {f.name: getattr(now, f.name) - getattr(last, f.name) for f in fields(ConsumerStats)}
        log.info("consumer group %s: %s; in the last %.1f s: %d processed, %d duplicates, %d dead-lettered, "
                 "%d undecodable, %d failed attempts, %d handler re-runs", self.group_id, what, seconds,
                 d["processed"], d["duplicates"], d["dead_lettered"], d["undecodable"], d["failures"],
                 d["handler_reruns"])

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("consumer group %s: assigned %s", self.group_id, _describe_partitions(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The next owner resumes from the committed offset: give it everything we processed.
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._pending.items() if (t, p) in revoked]
        committed = "nothing to commit"
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                self._count(offset_commits=1)
                committed = f"committed {_describe(offsets)}"
            except KafkaException as e:
                self._count(commit_errors=1)
                committed = f"committing {_describe(offsets)} failed ({e}); the next owner will skip the " \
                            "redelivered events as duplicates"
        log.info("consumer group %s: revoked %s; %s", self.group_id, _describe_partitions(partitions), committed)
        self._forget(revoked)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: the group has moved on, a commit would be refused.
        log.warning("consumer group %s: lost %s (session timed out?); their records since the last offset commit "
                    "go to the next owner, who skips what was done here as duplicates", self.group_id,
                    _describe_partitions(partitions))
        self._forget({(tp.topic, tp.partition) for tp in partitions})

    def _forget(self, partitions: set[tuple[str, int]]) -> None:
        for key in partitions:
            self._pending.pop(key, None)
            self._attempts.forget_partition(*key)
            self._processor.forget_partition(*key)

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


def _one_of(name: str, argument: str | None, configured: Any) -> str | None:
    if argument is not None and configured is not None and str(configured) != argument:
        raise ValueError(f"IdempotentConsumer: {name}={argument!r} contradicts config {configured!r}")
    value = argument if argument is not None else configured
    return None if value is None else str(value)


def _describe(offsets: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in offsets)


def _describe_partitions(partitions: list[TopicPartition]) -> str:
    if not partitions:
        return "no partitions"
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return "; ".join(f"{topic}[{','.join(map(str, sorted(ps)))}]" for topic, ps in sorted(by_topic.items()))
