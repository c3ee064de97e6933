"""outboxd for Python services: emit outbox events in the business transaction, consume them once.

Producer side::

    from outboxd import emit

    with Session(engine) as session, session.begin():
        session.add(order)
        emit(session, "order", order.id, "OrderCreated", {"order_id": order.id})

Consumer side: ``IdempotentConsumer`` (``outboxd.consumer``). Schema: ``outboxd.schema`` and the
Alembic revisions in ``outboxd.migrations``. The Kafka value: ``outboxd.envelope``.
"""

from outboxd.consumer import ConsumerStats, DeadLetterFailed, HandlerFailed, IdempotentConsumer, Outcome
from outboxd.envelope import Envelope, Event, UndecodableRecord, decode
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

__version__ = "0.1.0"

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
    "UndecodableRecord",
    "canonical_key",
    "create_outbox",
    "create_processed_events",
    "decode",
    "default_outbox",
    "emit",
    "event_id",
    "json_default",
]
