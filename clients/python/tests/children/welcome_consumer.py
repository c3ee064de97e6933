"""A consumer process for tests/test_consumer_process.py (run as ``python -m welcome_consumer``):
a welcome handler that writes a row and sends its "e-mail" after the commit.

    DATABASE_URL, WELCOMED (table), TOPIC, GROUP, INSTANCE_ID, EMAIL_LOG, EMAIL_DELAY (seconds per e-mail), MAX_BATCH

The e-mail is a line ``<event id>`` appended to EMAIL_LOG (flushed: it survives a SIGKILL).
"""

from __future__ import annotations

import logging
import os
import sys
import time

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from outboxd import Event, IdempotentConsumer, after_commit
from outboxd.runner import serve
from outboxd.testing import kafka_bootstrap


def send_welcome(event: Event, *, to: str) -> None:
    """The 'e-mail provider', with the event id as idempotency key."""
    time.sleep(float(os.environ.get("EMAIL_DELAY", "0")))
    with open(os.environ["EMAIL_LOG"], "a") as log:
        log.write(f"{event.id} {to}\n")
        log.flush()


def welcome(session: Session, event: Event) -> None:
    session.execute(text(f"INSERT INTO {os.environ['WELCOMED']} (event_id, customer) VALUES (:id, :c)"),
                    {"id": event.id, "c": event.aggregate_id})
    after_commit(session, send_welcome, to=f"{event.aggregate_id}@example.com")


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    consumer = IdempotentConsumer(
        bootstrap_servers=kafka_bootstrap(), group_id=os.environ["GROUP"], topics=[os.environ["TOPIC"]],
        handler=welcome, session_factory=create_engine(os.environ["DATABASE_URL"]),
        group_instance_id=os.environ.get("INSTANCE_ID") or None, max_batch=int(os.environ.get("MAX_BATCH", "500")),
        commit_interval=0.5, config={"topic.metadata.refresh.interval.ms": 500})
    return serve(consumer, stop_timeout=15)


if __name__ == "__main__":
    sys.exit(main())
