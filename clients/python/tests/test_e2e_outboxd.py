"""End to end with a real outboxd process (build/outboxd): emit() -> WAL -> outboxd -> Kafka ->
IdempotentConsumer. Committed events arrive with their fields; rolled-back ones never do. In
exactly-once mode, SIGKILLs of outboxd leave no duplicate on the topic for the consumer to drop."""

from __future__ import annotations

import collections
import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
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


def test_exactly_once_mode_survives_sigkill_without_duplicates(tmp_path: Path,
                                                                report: Callable[[str], None]) -> None:
    """outboxd with ``[sink] delivery = "exactly_once"``, killed with SIGKILL while a writer keeps
    committing: once by its test failpoint right after a Kafka commit and before the slot
    confirmation (the window where at-least-once mode publishes again), then twice from outside
    at whatever point it is. The IdempotentConsumer (read_committed) must see every committed id
    exactly once and drop no duplicate (its counter stays 0); the topic itself, read with
    read_committed, holds each id once."""
    with temp_database("pyeos") as (dbname, engine):
        table, publication, slot = unique_name("outbox"), unique_name("pub"), unique_name("slot")
        topic = unique_name("pyt.eos")
        create_outbox(engine, table=table, publication=publication)
        box = Outbox(table=table)
        config = config_for(dbname=dbname, slot=slot, publication=publication, table=f"public.{table}",
                            topic=topic, status_interval="1s", sink='delivery = "exactly_once"')

        committed: list[uuid.UUID] = []
        rolled_back: list[uuid.UUID] = []
        stop_writing = threading.Event()

        def write() -> None:
            # Transactions of 1 to 5 events, every seventh rolled back, until told to stop.
            n = 0
            while not stop_writing.is_set():
                with Session(engine) as session:
                    ids = [emit(session, "order", f"{n}-{i}", "OrderCreated", {"n": n, "i": i}, outbox=box)
                           for i in range(1 + n % 5)]
                    if n % 7 == 6:
                        session.flush()
                        session.rollback()
                        rolled_back.extend(ids)
                    else:
                        session.commit()
                        committed.extend(ids)
                n += 1
                time.sleep(0.01)

        handled: list[uuid.UUID] = []  # appended by the consumer's thread, read here

        def handler(session: Session, event: Event) -> None:
            handled.append(event.id)
            session.execute(text("SELECT 1"))

        writer = threading.Thread(target=write)
        with OutboxdProcess(config, tmp_path) as outboxd, \
                IdempotentConsumer(bootstrap_servers=kafka_bootstrap(), group_id=unique_name("grp"),
                                   topics=[topic], handler=handler, session_factory=engine,
                                   config={"topic.metadata.refresh.interval.ms": 500}) as consumer:
            assert consumer.isolation_level == "read_committed"
            consumer.create_schema()
            stop_consuming = threading.Event()
            runner = threading.Thread(target=consumer.run, args=(stop_consuming,))
            runner.start()
            try:
                # 1. The failpoint: outboxd SIGKILLs itself right after its 3rd Kafka commit
                #    returned, before it confirms that position to PostgreSQL.
                outboxd.start(env={"OUTBOXD_FAILPOINT": "kill_after_kafka_commit:3"})
                outboxd.wait_streaming()  # the slot exists: every write from now on is in it
                writer.start()
                code = outboxd.wait_exit(TIMEOUT)
                assert code == -signal.SIGKILL, f"outboxd did not kill itself at the failpoint ({code}):\n{outboxd.log()}"

                # PostgreSQL sends that Kafka transaction's PostgreSQL transactions again; the
                # restarted outboxd finds them at or before the checkpoint and skips them.
                outboxd.start()
                assert outboxd.wait_for_log("exactly-once: skipped", TIMEOUT), outboxd.log_since_start()
                skipped = re.search(r"exactly-once: skipped (\d+) event", outboxd.log_since_start())
                assert skipped and int(skipped.group(1)) >= 1, (
                    f"the restart after the failpoint skipped nothing:\n{outboxd.log_since_start()}")

                # 2. SIGKILL from outside, twice, each time once more events arrived.
                for _ in range(2):
                    seen = len(handled)
                    assert wait_for(lambda: len(handled) >= seen + 20, TIMEOUT), (
                        f"no progress after restart {outboxd.starts}:\n{outboxd.log_since_start()}")
                    assert outboxd.stop(signal.SIGKILL) == -signal.SIGKILL
                    outboxd.start()

                seen = len(handled)
                assert wait_for(lambda: len(handled) >= seen + 20, TIMEOUT), outboxd.log_since_start()
                stop_writing.set()
                writer.join(30)
                assert wait_for(lambda: set(committed) <= set(handled), TIMEOUT), (
                    f"{len(set(committed) - set(handled))} of {len(committed)} committed events missing\n"
                    f"{outboxd.log_since_start()}")
                assert outboxd.stop(signal.SIGTERM) == 0, outboxd.log_since_start()
            finally:
                stop_writing.set()
                if writer.is_alive():
                    writer.join(30)
                stop_consuming.set()
                runner.join(30)

            stats = consumer.stats
            assert stats.duplicates == 0, f"the consumer dropped {stats.duplicates} duplicate(s)"
            assert stats.failures == 0 and stats.undecodable == 0, stats
            assert stats.processed == len(committed)

        twice = [i for i, c in collections.Counter(handled).items() if c > 1]
        assert not twice, f"{len(twice)} id(s) handled more than once"
        assert sorted(handled) == sorted(committed)
        assert not set(rolled_back) & set(handled)

        # The topic as a read_committed reader sees it: each committed id once, in commit order.
        records = read_topics([topic], lambda r: len(r) >= len(committed), TIMEOUT)
        ids = [decode(r.value).id for r in records]
        repeated = [i for i, c in collections.Counter(ids).items() if c > 1]
        assert not repeated, f"{len(repeated)} id(s) on the topic more than once"
        assert ids == committed

        report(f"exactly-once e2e: {len(committed)} events committed ({len(rolled_back)} rolled back), "
               f"outboxd SIGKILLed 3 times (once at the failpoint, restart skipped {skipped.group(1)} "
               f"event(s)); consumer processed {stats.processed}, duplicates {stats.duplicates}")
