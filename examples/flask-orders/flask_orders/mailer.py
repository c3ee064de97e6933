"""The receipt mailer: sends each SendReceipt command once, the e-mail with the command's id as the
provider's idempotency key.

    DATABASE_URL=... KAFKA_BOOTSTRAP=127.0.0.1:59092 python -m flask_orders.mailer

The pattern for an effect that must happen once (the e-mail): billing writes a command row into
the outbox in its charge's transaction (``emit(session, "email", ..., "SendReceipt", ...)``), so
the command exists if and only if the charge does; outboxd publishes it (outbox.event.email); this
idempotent consumer records the command id in processed_events and the receipt in ``receipts``
in one transaction, and hands the e-mail to the provider only after that commit
(``outboxd.after_commit``), keyed by the command id. A crash between the commit and the send
sends it after the restart (at least once); the provider drops a repeated idempotency key, so the
customer gets one e-mail. With billing in a database of its own, that database gets its own outbox
table and outboxd stream (a second ``[[outbox]]`` or process); here both share ``app``.
"""

from __future__ import annotations

import logging
import os
import sys

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from outboxd import Event, IdempotentConsumer, after_commit
from outboxd.runner import serve

from flask_orders.models import Receipt

log = logging.getLogger("mailer")


def deliver(event: Event, *, to: str, order_id: str) -> None:
    """The e-mail provider's API call; ``event.id`` is its idempotency key (a repeat is dropped there)."""
    log.info("receipt for order %s sent to %s (idempotency key %s)", order_id, to, event.id)


def send_receipt(session: Session, event: Event) -> None:
    if event.event_type != "SendReceipt":
        return
    command = event.json()
    session.add(Receipt(order_id=command["order_id"], event_id=event.id))
    after_commit(session, deliver, to=f"{command['customer']}@example.com", order_id=command["order_id"])


def make_consumer(engine_url: str, bootstrap_servers: str, topic: str = "outbox.event.email",
                  group_id: str = "mailer") -> IdempotentConsumer:
    return IdempotentConsumer(bootstrap_servers=bootstrap_servers, group_id=group_id, topics=[topic],
                              handler=send_receipt, session_factory=create_engine(engine_url),
                              dead_letter_topic=f"{group_id}.dlq")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    consumer = make_consumer(os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:54329/app"),
                             os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:59092"),
                             os.environ.get("TOPIC", "outbox.event.email"))
    sys.exit(serve(consumer))


if __name__ == "__main__":
    main()
