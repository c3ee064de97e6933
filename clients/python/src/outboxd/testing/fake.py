"""Unit tests of handlers without Kafka or outboxd: ``FakeConsumer`` feeds events to a handler
with the transaction semantics of ``IdempotentConsumer`` (the same code runs them).

    from outboxd.testing import FakeConsumer, make_event, sqlite_memory_engine

    def test_welcome_is_sent_once() -> None:
        engine = sqlite_memory_engine()          # or your test PostgreSQL
        Base.metadata.create_all(engine)
        consumer = FakeConsumer(handler=welcome, session_factory=engine)
        consumer.create_schema()
        event = make_event("customer", "42", "CustomerRegistered", CustomerRegistered(email="ada@example.com"))
        assert consumer.deliver(event, event) == [Outcome.PROCESSED, Outcome.DUPLICATE]

What is the same as in IdempotentConsumer: one transaction per ``deliver`` call with the ids
claimed in processed_events, each handler in a savepoint, the prefix before a failing handler
committed, ``after_commit`` callbacks run after the commit (and stored until they ran), attempts
counted per event, dead-lettering after ``max_attempts`` (into ``dead_letters``), ``stats``.
What differs: no offsets, no backoff (a failed event is retried at once, within ``deliver``), a
transient failure and, with ``max_attempts=None``, any failure raise ``HandlerFailed``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.pool import StaticPool

from outboxd._processing import Attempts, Handler, Outcome, Processor, SessionFactory, is_transient, \
    processed_events_table
from outboxd.consumer import ConsumerStats, HandlerFailed
from outboxd.envelope import Envelope, Event, Header, decode
from outboxd.outbox import json_default as _json_default
from outboxd.payload import to_json_value

__all__ = ["DeadLetter", "FakeConsumer", "make_event", "sqlite_memory_engine"]


@dataclass(frozen=True)
class DeadLetter:
    """An event the fake set aside, as IdempotentConsumer would copy it to the dead-letter topic."""

    event: Event
    reason: str            # handler_error, after_commit_error
    error: BaseException
    attempts: int


def make_event(aggregate_type: str, aggregate_id: object, event_type: str, payload: object = None, *,
               id: uuid.UUID | None = None, headers: Mapping[str, str] | None = None, topic: str | None = None,
               partition: int = 0, offset: int = 0) -> Event:
    """An ``Event`` as the consumer would decode it from outboxd's record: ``payload`` a JSON value, a
    dataclass or a pydantic model (as ``emit()`` takes it), ``topic`` by default outboxd's
    ``outbox.event.<aggregate_type>``."""
    import json

    body = json.dumps(to_json_value({} if payload is None else payload), default=_json_default).encode()
    envelope = Envelope(id=str(id or uuid.uuid4()), aggregate_type=aggregate_type, aggregate_id=str(aggregate_id),
                        event_type=event_type, payload=body, content_type="application/json",
                        headers=[Header(key=k, value=v.encode()) for k, v in (headers or {}).items()])
    envelope.created_at.FromDatetime(datetime.now(timezone.utc))
    return decode(envelope.SerializeToString(), topic=topic or f"outbox.event.{aggregate_type}",
                  partition=partition, offset=offset)


def sqlite_memory_engine() -> Engine:
    """An in-memory SQLite engine on which savepoints work (pysqlite's own transaction handling
    breaks them: SQLAlchemy's recipe is applied), shared by every session of the test."""
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


class FakeConsumer:
    """Runs ``handler(session, event)`` for events handed to ``deliver()``, as IdempotentConsumer would."""

    def __init__(self, *, handler: Handler, session_factory: SessionFactory, group_id: str = "test",
                 processed_table: str = "processed_events", schema: str | None = None,
                 max_attempts: int | None = 5,
                 is_transient: Callable[[BaseException], bool] = is_transient) -> None:
        self.group_id = group_id
        self.table = processed_events_table(MetaData(), processed_table, schema)
        self._processor = Processor(group_id=group_id, handler=handler, session_factory=session_factory,
                                    table=self.table)
        self._attempts = Attempts(max_attempts)
        self._is_transient = is_transient
        self._offsets: dict[tuple[str, int], int] = {}
        self.stats = ConsumerStats()
        #: Events set aside after ``max_attempts``, in order.
        self.dead_letters: list[DeadLetter] = []

    def create_schema(self) -> None:
        """Creates processed_events on the session factory's database (any dialect SQLAlchemy knows)."""
        with self._processor.session() as session:
            self.table.create(session.connection(), checkfirst=True)
            session.commit()

    def deliver(self, *events: Event) -> list[Outcome]:
        """Processes ``events`` as one poll; returns an outcome per event. A failing event is tried
        again at once until it passes or has failed ``max_attempts`` times (then DEAD_LETTERED)."""
        pending: Sequence[Event] = [self._positioned(e) for e in events]
        outcomes: list[Outcome] = []
        while pending:
            result = self._processor.process(pending)
            done = result.outcomes
            self._count(processed=done.count(Outcome.PROCESSED), duplicates=done.count(Outcome.DUPLICATE),
                        handler_calls=result.handler_calls, handler_reruns=result.handler_reruns,
                        after_commit_calls=result.after_commit_calls, batches=result.transactions)
            outcomes += done
            if result.failure is None:
                break
            failed = pending[len(done)]
            pending = pending[len(done):]
            self._count(failures=1)
            cause = result.failure.cause
            if self._is_transient(cause):
                raise HandlerFailed(failed, cause, stage=result.failure.stage, transient=True) from cause
            attempt = self._attempts.failed(failed)
            if self._attempts.max_attempts is None:
                raise HandlerFailed(failed, cause, stage=result.failure.stage, attempt=attempt) from cause
            if self._attempts.exhausted(attempt):
                reason = "after_commit_error" if result.failure.stage == "after_commit" else "handler_error"
                if result.failure.stage == "after_commit":
                    self._processor.clear_after_commit(failed)
                self._processor.forget(failed)
                self.dead_letters.append(DeadLetter(failed, reason, cause, attempt))
                self._count(dead_lettered=1)
                outcomes.append(Outcome.DEAD_LETTERED)
                pending = pending[1:]
        return outcomes

    def _positioned(self, event: Event) -> Event:
        """Each delivery is a record of its own: the next offset of its partition, as Kafka would give it."""
        key = (event.topic or "fake", max(event.partition, 0))
        offset = self._offsets.get(key, 0)
        self._offsets[key] = offset + 1
        return replace(event, topic=key[0], partition=key[1], offset=offset)

    def _count(self, **increments: int) -> None:
        self.stats = replace(self.stats, **{k: getattr(self.stats, k) + v for k, v in increments.items()})
