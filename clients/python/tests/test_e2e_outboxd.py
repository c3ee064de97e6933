"""End to end with a real outboxd process (build/outboxd): emit() -> WAL -> outboxd -> Kafka ->
IdempotentConsumer. Committed events arrive with their fields; rolled-back ones never do."""

from __future__ import annotations

import json
import signal
import threading
import uuid
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outboxd import Event, IdempotentConsumer, Outbox, decode, emit
from outboxd.schema import create_outbox
from outboxd.testing import (OutboxdProcess, config_for, kafka_bootstrap, read_topics, temp_database,
                             unique_name, wait_for)

TIMEOUT = 90.0


def test_emit_to_kafka_through_outboxd(tmp_path: Path) -> None:
    with temp_database("pye2e") as (dbname, engine):
        table, publication, slot = unique_name("outbox"), unique_name("pub"), unique_name("slot")
        prefix = unique_name("pyt.e2e")
        topic = f"{prefix}.order"
        create_outbox(engine, table=table, publication=publication)
        box = Outbox(table=table)
        config = config_for(dbname=dbname, slot=slot, publication=publication, table=f"public.{table}",
                            topic=prefix + ".{aggregate_type}")
        with OutboxdProcess(config, tmp_path) as outboxd:
            outboxd.start()
            outboxd.wait_streaming()

            committed, rolled_back = emit_events(engine, box)

            received: dict[uuid.UUID, Event] = {}

            def handler(session: Session, event: Event) -> None:
                received[event.id] = event
                session.execute(text("SELECT 1"))

            with IdempotentConsumer(bootstrap_servers=kafka_bootstrap(), group_id=unique_name("grp"),
                                    topics=[topic], handler=handler, session_factory=engine) as consumer:
                consumer.create_schema()
                stop = threading.Event()
                runner = threading.Thread(target=consumer.run, args=(stop,))
                runner.start()
                try:
                    assert wait_for(lambda: set(committed) <= set(received), TIMEOUT), (
                        f"{len(received)} of {len(committed)} events arrived\n{outboxd.log()}")
                finally:
                    stop.set()
                    runner.join(30)

            assert outboxd.stop(signal.SIGTERM) == 0, outboxd.log()

        # Every record on the topic: the committed events, in commit order, and nothing else. The
        # last committed event was written after the rolled-back ones, so they would be here.
        records = read_topics([topic], lambda r: len(r) >= len(committed), TIMEOUT)
        ids = [decode(r.value).id for r in records]
        assert ids == list(committed)
        assert not set(rolled_back) & set(received)
        assert [r.key for r in records] == [str(i).encode() for i in committed]

        first = received[next(iter(committed))]
        assert (first.aggregate_type, first.aggregate_id, first.event_type) == ("order", "0", "OrderCreated")
        assert first.content_type == "application/json"
        assert first.json() == committed[first.id]
        assert first.header("traceparent") == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert first.created_at is not None


def emit_events(engine: Engine, box: Outbox) -> tuple[dict[uuid.UUID, dict], list[uuid.UUID]]:
    committed: dict[uuid.UUID, dict] = {}
    rolled_back: list[uuid.UUID] = []
    for n in range(30):
        payload = {"order_id": n, "total_cents": 100 * n, "note": "naïve ☕"}
        with Session(engine) as session:
            event = emit(session, "order", n, "OrderCreated", payload,
                         {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, outbox=box)
            if n % 3 == 2:
                session.flush()  # in the WAL, then aborted
                session.rollback()
                rolled_back.append(event)
            else:
                session.commit()
                committed[event] = json.loads(json.dumps(payload))
    return committed, rolled_back
