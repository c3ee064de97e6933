"""outboxd for Python services: emit outbox events in the business transaction, consume them once.

Producer side::

    from outboxd import emit

    with Session(engine) as session, session.begin():
        session.add(order)
        emit(session, "order", order.id, "OrderCreated", {"order_id": order.id})

Consumer side: ``IdempotentConsumer`` (``outboxd.consumer``), ``after_commit`` for effects outside
the database, ``outboxd.testing.FakeConsumer`` for unit tests of handlers. Flask:
``outboxd.flask.Outboxd``. Schema: ``outboxd.schema`` and the Alembic revisions in
``outboxd.migrations``; purging: ``outboxd.purge``. The Kafka value: ``outboxd.envelope``; typed
payloads: ``outboxd.payload``.
"""

from outboxd._processing import SchemaError, after_commit, is_transient
from outboxd.consumer import ConsumerStats, DeadLetterFailed, HandlerFailed, IdempotentConsumer, Outcome
from outboxd.envelope import Envelope, Event, UndecodableRecord, decode
from outboxd.payload import PayloadError
from outboxd.outbox import (
    EVENT_ID_NAMESPACE,
    Outbox,
    OutboxRow,
    canonical_key,
    default_outbox,
    emit,
    event_id,
    json_default,
)
from outboxd.schema import create_outbox, create_processed_events

__version__ = "0.2.0"

__all__ = [
    "EVENT_ID_NAMESPACE",
    "ConsumerStats",
    "DeadLetterFailed",
    "Envelope",
    "Event",
    "HandlerFailed",
    "IdempotentConsumer",
    "Outbox",
    "OutboxRow",
    "Outcome",
    "PayloadError",
    "SchemaError",
    "UndecodableRecord",
    "after_commit",
    "canonical_key",
    "create_outbox",
    "create_processed_events",
    "decode",
    "default_outbox",
    "emit",
    "event_id",
    "is_transient",
    "json_default",
]
