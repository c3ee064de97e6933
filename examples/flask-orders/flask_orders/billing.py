"""The billing consumer: charges each order once, however often Kafka delivers its event.

    DATABASE_URL=... KAFKA_BOOTSTRAP=127.0.0.1:59092 python -m flask_orders.billing

IdempotentConsumer records each event id in processed_events in the same transaction as the
charge, so a duplicate is skipped: with outboxd at least once, a re-publication of what was in
flight when outboxd crashed; in either mode, a record this consumer gets again because it
crashed after the charge committed and before its Kafka offset commit. It reads with
isolation.level=read_committed, which outboxd's exactly-once mode (Kafka transactions) needs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from outboxd import Event, IdempotentConsumer, emit

from flask_orders.models import Charge

log = logging.getLogger("billing")


def charge(session: Session, event: Event) -> None:
    """The handler: runs inside the consumer's transaction; must not commit."""
    if event.event_type != "OrderCreated":
        return
    order = event.json()
    session.add(Charge(order_id=order["order_id"], amount_cents=order["amount_cents"], event_id=event.id))
    # The receipt e-mail must go out once: not from here (a handler may run again after a failure),
    # but as a command in the outbox, in this same transaction, published by outboxd and sent by
    # flask_orders.mailer. Its id derives from the order, so a re-run cannot make a second one.
    emit(session, "email", order["order_id"], "SendReceipt",
         {"order_id": order["order_id"], "customer": order["customer"], "amount_cents": order["amount_cents"]},
         dedupe_key=order["order_id"])
    log.info("charged order %s: %d cents (event %s)", order["order_id"], order["amount_cents"], event.id)


def make_consumer(engine: Engine, bootstrap_servers: str, topic: str = "outbox.event.order",
                  group_id: str = "billing") -> IdempotentConsumer:
    # read_committed is the default; spelled out because outboxd's exactly_once mode relies on
    # it: records of an aborted Kafka transaction stay hidden, those of an open one wait.
    return IdempotentConsumer(bootstrap_servers=bootstrap_servers, group_id=group_id, topics=[topic],
                              handler=charge, session_factory=engine, isolation_level="read_committed")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    engine = create_engine(os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:54329/app"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with make_consumer(engine, os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:59092"),
                       os.environ.get("TOPIC", "outbox.event.order")) as consumer:
        consumer.run(stop)
        s = consumer.stats
        log.info("stopped: %d charged, %d duplicates skipped, %d failures", s.processed, s.duplicates, s.failures)


if __name__ == "__main__":
    main()
