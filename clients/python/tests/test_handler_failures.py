"""A failing handler against the real Kafka and PostgreSQL: the handlers of the other records run
exactly once, the failing one once per attempt, then it is dead-lettered and the partition moves
on; transient failures never count as attempts."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from outboxd import Event, IdempotentConsumer
from outboxd.testing import kafka_bootstrap, make_envelope, produce, read_topics, scalar, unique_name, wait_for

TIMEOUT = 60.0


@pytest.fixture
def handled(engine: Engine) -> str:
    name = unique_name("handled")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {name} (event_id uuid PRIMARY KEY, n int NOT NULL)"))
    return name


def run_in_thread(consumer: IdempotentConsumer) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    return stop, thread


def test_handler_failing_on_record_17_of_32(engine: Engine, handled: str) -> None:
    topic, dlq, group = unique_name("pyt.fail17"), unique_name("pyt.fail17.dlq"), unique_name("grp")
    events = [make_envelope(aggregate_id=str(n)) for n in range(1, 33)]
    later = [make_envelope(aggregate_id=str(n)) for n in range(33, 41)]
    produce(topic, events)
    calls: collections.Counter[int] = collections.Counter()

    def handler(session: Session, event: Event) -> None:
        n = int(event.aggregate_id)
        calls[n] += 1
        session.execute(text(f"INSERT INTO {handled} VALUES (:id, :n)"), {"id": event.id, "n": n})
        if n == 17:
            raise ValueError(f"customer {n} has no e-mail address")

    consumer = IdempotentConsumer(bootstrap_servers=kafka_bootstrap(), group_id=group, topics=[topic],
                                  handler=handler, session_factory=sessionmaker(engine), max_attempts=3,
                                  dead_letter_topic=dlq, retry_backoff=0.05)
    consumer.create_schema()
    stop, thread = run_in_thread(consumer)
    try:
        assert wait_for(lambda: consumer.stats.dead_lettered == 1 and consumer.processed == 31, TIMEOUT), consumer.stats
        produce(topic, later)  # later events flow
        assert wait_for(lambda: consumer.processed == 39, TIMEOUT), consumer.stats
    finally:
        stop.set()
        thread.join(30)
        consumer.close()

    # Records 1-16 and 18-40: their handler ran exactly once; record 17 once per attempt.
    assert calls == {n: (3 if n == 17 else 1) for n in range(1, 41)}, calls
    s = consumer.stats
    assert (s.processed, s.dead_lettered, s.failures, s.handler_reruns, s.handler_calls) == (39, 1, 3, 2, 42), s
    # Their effects committed once; record 17's (rolled back to its savepoint) never.
    assert scalar(engine, f"SELECT count(*) FROM {handled}") == 39
    assert scalar(engine, f"SELECT count(*) FROM {handled} WHERE n = 17") == 0
    assert not consumer.is_processed(events[16][0])
    # The dead letter: the original record, the reason and the exception in headers.
    (letter,) = read_topics([dlq], lambda r: len(r) >= 1, TIMEOUT)
    headers = dict(letter.headers)
    assert letter.value == events[16][1] and letter.key == str(events[16][0]).encode()
    assert headers["outboxd.dlq.reason"] == b"handler_error"
    assert headers["outboxd.dlq.error.type"] == b"builtins.ValueError"
    assert headers["outboxd.dlq.error.message"] == b"customer 17 has no e-mail address"
    assert headers["outboxd.dlq.attempts"] == b"3"
    assert (headers["outboxd.dlq.topic"], headers["outboxd.dlq.offset"]) == (topic.encode(), b"16")


def test_transient_failures_do_not_count_as_attempts(engine: Engine, handled: str) -> None:
    topic, dlq = unique_name("pyt.transient"), unique_name("pyt.transient.dlq")
    produce(topic, [make_envelope(aggregate_id="1")])
    failures = iter(range(3))

    def handler(session: Session, event: Event) -> None:
        if next(failures, None) is not None:  # three times "the database went away", then fine
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
        session.execute(text(f"INSERT INTO {handled} VALUES (:id, 1)"), {"id": event.id})

    consumer = IdempotentConsumer(bootstrap_servers=kafka_bootstrap(), group_id=unique_name("grp"), topics=[topic],
                                  handler=handler, session_factory=engine, max_attempts=1, dead_letter_topic=dlq,
                                  retry_backoff=0.05)
    consumer.create_schema()
    stop, thread = run_in_thread(consumer)
    try:
        assert wait_for(lambda: consumer.processed == 1, TIMEOUT), consumer.stats
    finally:
        stop.set()
        thread.join(30)
        consumer.close()
    assert (consumer.stats.failures, consumer.stats.dead_lettered) == (3, 0)


def test_without_a_dead_letter_topic_an_event_is_never_skipped(engine: Engine, handled: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    topic = unique_name("pyt.nodlq")
    produce(topic, [make_envelope(aggregate_id="1"), make_envelope(aggregate_id="2")])
    calls: collections.Counter[str] = collections.Counter()

    def handler(session: Session, event: Event) -> None:
        calls[event.aggregate_id] += 1
        raise RuntimeError("always")

    consumer = IdempotentConsumer(bootstrap_servers=kafka_bootstrap(), group_id=unique_name("grp"), topics=[topic],
                                  handler=handler, session_factory=engine, max_attempts=2, retry_backoff=0.01,
                                  max_retry_backoff=0.01)
    consumer.create_schema()
    with caplog.at_level("ERROR", logger="outboxd.consumer"):
        stop, thread = run_in_thread(consumer)
        try:
            assert wait_for(lambda: calls["1"] >= 5, TIMEOUT), calls
        finally:
            stop.set()
            thread.join(30)
            consumer.close()
    assert calls["2"] == 0 and consumer.stats.dead_lettered == 0
    assert sum("no dead_letter_topic is configured" in r.getMessage() for r in caplog.records) == 1
