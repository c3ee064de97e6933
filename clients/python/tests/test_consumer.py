"""IdempotentConsumer against the real Kafka and PostgreSQL: once per event id, offsets after the
database commit, nothing committed when the handler fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from outboxd import Event, HandlerFailed, IdempotentConsumer, Outcome, UndecodableRecord
from outboxd.testing import kafka_bootstrap, make_envelope, produce, scalar, unique_name, wait_for

TIMEOUT = 60.0


@pytest.fixture
def topic() -> str:
    return unique_name("pyt.consumer")


@pytest.fixture
def handled(engine: Engine) -> str:
    """A business table the handlers write to, one row per handled event."""
    name = unique_name("handled")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {name} (event_id uuid NOT NULL, aggregate_id text NOT NULL, "
                          f"group_name text NOT NULL)"))
    return name


class Recorder:
    """A handler that inserts a row per event, and fails while ``fail`` is positive."""

    def __init__(self, table: str, group: str) -> None:
        self.table, self.group, self.calls, self.fail = table, group, 0, 0

    def __call__(self, session: Session, event: Event) -> None:
        self.calls += 1
        session.execute(text(f"INSERT INTO {self.table} VALUES (:id, :agg, :grp)"),
                        {"id": event.id, "agg": event.aggregate_id, "grp": self.group})
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("payment provider unavailable")


@pytest.fixture
def make_consumer(engine: Engine, topic: str) -> Iterator:
    made: list[IdempotentConsumer] = []

    def make(handler, group: str | None = None, **kwargs) -> IdempotentConsumer:  # type: ignore[no-untyped-def]
        consumer = IdempotentConsumer(bootstrap_servers=kafka_bootstrap(), group_id=group or unique_name("grp"),
                                      topics=[topic], handler=handler, session_factory=sessionmaker(engine),
                                      processed_table="processed_events", **kwargs)
        consumer.create_schema()
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()


def drain(consumer: IdempotentConsumer, records: int) -> list[Outcome]:
    """Polls until ``records`` records were handled (any outcome) or the deadline."""
    outcomes: list[Outcome] = []

    def step() -> bool:
        outcome = consumer.poll_once(0.2)
        if outcome is not None:
            outcomes.append(outcome)
        return len(outcomes) >= records

    assert wait_for(step, TIMEOUT, every=0), f"handled {len(outcomes)} of {records} records: {outcomes}"
    return outcomes


def committed(group: str, topic: str) -> int:
    """The group's committed offset of partition 0, or -1001 (none) — asked through another client."""
    probe = Consumer({"bootstrap.servers": kafka_bootstrap(), "group.id": group, "enable.auto.commit": False})
    try:
        return probe.committed([TopicPartition(topic, 0)], timeout=30)[0].offset
    finally:
        probe.close()


def handled_ids(engine: Engine, table: str) -> list[uuid.UUID]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text(f"SELECT event_id FROM {table} ORDER BY aggregate_id"))]


def test_duplicates_are_skipped_and_counted(engine: Engine, topic: str, handled: str, make_consumer) -> None:
    a, b, c = (make_envelope(aggregate_id=n) for n in ("a", "b", "c"))
    produce(topic, [a, b, a, c, a])
    group = unique_name("grp")
    recorder = Recorder(handled, group)
    consumer = make_consumer(recorder, group)

    outcomes = drain(consumer, 5)

    assert outcomes == [Outcome.PROCESSED, Outcome.PROCESSED, Outcome.DUPLICATE, Outcome.PROCESSED,
                        Outcome.DUPLICATE]
    assert recorder.calls == 3
    assert handled_ids(engine, handled) == [a[0], b[0], c[0]]
    assert (consumer.processed, consumer.duplicates, consumer.failures) == (3, 2, 0)
    assert committed(group, topic) == 5
    assert scalar(engine, "SELECT count(*) FROM processed_events WHERE consumer_group = :g", g=group) == 3


def test_each_group_processes_every_event_once(engine: Engine, topic: str, handled: str, make_consumer) -> None:
    a = make_envelope()
    produce(topic, [a, a])
    for group in (unique_name("billing"), unique_name("shipping")):
        consumer = make_consumer(Recorder(handled, group), group)
        assert drain(consumer, 2) == [Outcome.PROCESSED, Outcome.DUPLICATE]
        assert consumer.is_processed(a[0])
    assert scalar(engine, f"SELECT count(*) FROM {handled}") == 2


def test_a_failing_handler_rolls_back_and_commits_no_offset(engine: Engine, topic: str, handled: str,
                                                            make_consumer) -> None:
    a, b = make_envelope(aggregate_id="a"), make_envelope(aggregate_id="b")
    produce(topic, [a, b])
    group = unique_name("grp")
    recorder = Recorder(handled, group)
    recorder.fail = 2
    consumer = make_consumer(recorder, group)

    for _ in range(2):
        with pytest.raises(HandlerFailed) as failure:
            drain(consumer, 1)
        assert failure.value.event.id == a[0]
        assert isinstance(failure.value.cause, RuntimeError)
        # Rolled back: neither the business row nor the processed_events row; offset untouched.
        assert scalar(engine, f"SELECT count(*) FROM {handled}") == 0
        assert not consumer.is_processed(a[0])
        assert committed(group, topic) == -1001

    # The consumer sought back: the same record comes again, now handled, then the next one.
    assert drain(consumer, 2) == [Outcome.PROCESSED, Outcome.PROCESSED]
    assert handled_ids(engine, handled) == [a[0], b[0]]
    assert (consumer.processed, consumer.failures, recorder.calls) == (2, 2, 4)
    assert committed(group, topic) == 2


def test_a_restart_after_a_failure_redelivers_the_record(engine: Engine, topic: str, handled: str,
                                                        make_consumer) -> None:
    a = make_envelope()
    produce(topic, [a])
    group = unique_name("grp")
    first = Recorder(handled, group)
    first.fail = 1
    consumer = make_consumer(first, group)
    with pytest.raises(HandlerFailed):
        drain(consumer, 1)
    consumer.close()

    second = Recorder(handled, group)
    assert drain(make_consumer(second, group), 1) == [Outcome.PROCESSED]
    assert second.calls == 1 and handled_ids(engine, handled) == [a[0]]


class FailingCommit:
    """Wraps the Kafka consumer: the first offset commit fails, as if the process died right
    after the database commit."""

    def __init__(self, inner: Consumer) -> None:
        self.inner, self.failed = inner, False

    def commit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self.failed:
            self.failed = True
            raise KafkaException("simulated crash before the offset commit")
        return self.inner.commit(*args, **kwargs)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


def test_a_crash_between_database_and_offset_commit_is_a_skipped_duplicate(
        engine: Engine, topic: str, handled: str, make_consumer) -> None:
    a = make_envelope()
    produce(topic, [a])
    group = unique_name("grp")
    first = make_consumer(Recorder(handled, group), group)
    first._consumer = FailingCommit(first._consumer)  # type: ignore[assignment]
    assert drain(first, 1) == [Outcome.PROCESSED]
    assert first.stats.commit_errors == 1 and committed(group, topic) == -1001
    first.close()

    recorder = Recorder(handled, group)
    second = make_consumer(recorder, group)
    assert drain(second, 1) == [Outcome.DUPLICATE]
    assert recorder.calls == 0 and second.duplicates == 1
    assert scalar(engine, f"SELECT count(*) FROM {handled}") == 1
    assert committed(group, topic) == 1


def test_undecodable_records_stop_unless_handed_over(engine: Engine, topic: str, handled: str,
                                                   make_consumer) -> None:
    a = make_envelope()
    produce(topic, [(None, b"\xff\xff not an envelope"), a])
    group = unique_name("grp")
    strict = make_consumer(Recorder(handled, group), group)
    with pytest.raises(UndecodableRecord, match=rf"{topic}\[0\]@0"):
        drain(strict, 1)
    assert strict.stats.undecodable == 1 and committed(group, topic) == -1001
    strict.close()

    seen: list[bytes] = []
    lenient = make_consumer(Recorder(handled, group), group,
                            on_undecodable=lambda msg, error: seen.append(msg.value()))
    assert drain(lenient, 2) == [Outcome.UNDECODABLE, Outcome.PROCESSED]
    assert seen == [b"\xff\xff not an envelope"] and committed(group, topic) == 2


def test_run_retries_a_failed_record_until_it_succeeds(engine: Engine, topic: str, handled: str,
                                                       make_consumer) -> None:
    import threading

    a = make_envelope()
    produce(topic, [a])
    group = unique_name("grp")
    recorder = Recorder(handled, group)
    recorder.fail = 2
    consumer = make_consumer(recorder, group, retry_backoff=0.05)
    stop = threading.Event()
    runner = threading.Thread(target=consumer.run, args=(stop,))
    runner.start()
    try:
        assert wait_for(lambda: consumer.processed == 1, TIMEOUT)
    finally:
        stop.set()
        runner.join(30)
    assert consumer.failures == 2 and recorder.calls == 3
    assert handled_ids(engine, handled) == [a[0]]


def test_auto_commit_cannot_be_enabled(engine: Engine) -> None:
    with pytest.raises(ValueError, match="enable.auto.commit"):
        IdempotentConsumer(bootstrap_servers=kafka_bootstrap(), group_id="g", topics=["t"],
                           handler=lambda s, e: None, session_factory=engine,
                           config={"enable.auto.commit": True})
