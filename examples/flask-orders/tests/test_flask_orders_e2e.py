"""flask-orders end to end: orders over HTTP while outboxd is SIGKILLed and restarted.

Real components only: the Flask app served by Werkzeug on a loopback port, PostgreSQL and Kafka of
the local stack, build/outboxd, and the billing IdempotentConsumer. A kill leaves events that
Kafka acknowledged but PostgreSQL never heard confirmed; the restarted outboxd publishes them
again, so the topic holds duplicates. Billing must still charge every order exactly once, and an
order whose transaction rolled back (out of stock) must never reach Kafka nor be billed.
"""

from __future__ import annotations

import collections
import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import text
from werkzeug.serving import make_server

from outboxd import decode, event_id
from outboxd.testing import (OutboxdProcess, config_for, kafka_bootstrap, pg_url, temp_database, unique_name,
                             wait_for)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask_orders.app import create_app  # noqa: E402
from flask_orders.billing import make_consumer  # noqa: E402
from flask_orders.mailer import make_consumer as make_mailer  # noqa: E402
from flask_orders.schema import init_db  # noqa: E402

CLIENTS = 4            # concurrent HTTP clients: keeps events in flight when outboxd is killed
MIN_KILLS = 3          # SIGKILLs at least this many times...
MAX_KILLS = 20         # ...and until the topic shows a duplicate, at most this many
ORDERS_PER_ROUND = 15  # orders created between two kills (outboxd streaming meanwhile)
BATCH = 50             # orders of the one-transaction batch posted right before each kill
TIMEOUT = 120.0


class Tally:
    """Reads the topic from its start in a thread and counts the records of each event id."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.counts: collections.Counter = collections.Counter()
        self.aggregates: dict = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap(), "group.id": unique_name("tally"),
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "topic.metadata.refresh.interval.ms": 500})
        consumer.subscribe([self.topic])
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                event = decode(msg.value())
                with self._lock:
                    self.counts[event.id] += 1
                    self.aggregates[event.id] = event.aggregate_id
        finally:
            consumer.close()

    def seen_any(self, ids: set) -> bool:
        with self._lock:
            return not ids.isdisjoint(self.counts)

    def snapshot(self) -> tuple[int, int]:
        """(records, distinct event ids) seen so far."""
        with self._lock:
            return sum(self.counts.values()), len(self.counts)

    @property
    def duplicates(self) -> int:
        records, distinct = self.snapshot()
        return records - distinct

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def post(port: int, order: dict, path: str = "/orders") -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(order).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def topic_size(topic: str) -> int:
    """Records in the topic, from the partitions' watermarks."""
    probe = Consumer({"bootstrap.servers": kafka_bootstrap(), "group.id": unique_name("probe")})
    try:
        partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        probe.close()


def test_every_order_is_billed_exactly_once_while_outboxd_is_killed(tmp_path: Path, report) -> None:
    with temp_database("flask_orders") as (dbname, engine):
        # Batches take "bulk", so that they do not queue behind single orders on the "widget" row.
        init_db(engine, stock={"widget": 1_000_000, "bulk": 1_000_000, "limited": 0})
        prefix = unique_name("pyt.orders")
        topic = f"{prefix}.order"
        config = config_for(dbname=dbname, slot=unique_name("orders_slot"), publication="outboxd",
                            table="public.outbox", topic=prefix + ".{aggregate_type}")

        app = create_app(pg_url(dbname))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        server_thread = threading.Thread(target=server.serve_forever, daemon=True)
        server_thread.start()
        port = server.server_port

        outboxd = OutboxdProcess(config, tmp_path)
        try:
            outboxd.start()
            outboxd.wait_streaming()

            billing = make_consumer(engine, kafka_bootstrap(), topic=topic, group_id=unique_name("billing"))
            billing_stop = threading.Event()
            billing_thread = threading.Thread(target=billing.run, args=(billing_stop,), daemon=True)
            billing_thread.start()
            # The receipts: SendReceipt commands billing writes in its charge's transaction.
            mailer = make_mailer(pg_url(dbname), kafka_bootstrap(), topic=f"{prefix}.email",
                                 group_id=unique_name("mailer"))
            mailer_thread = threading.Thread(target=mailer.run, args=(billing_stop,), daemon=True)
            mailer_thread.start()
            tally = Tally(topic)

            created: dict[str, str] = {}   # order id -> event id
            rejected: list[str] = []       # out of stock: rolled back
            retried: list[str] = []
            errors: list[str] = []
            lock = threading.Lock()
            next_order = iter(range(1_000_000))
            stop_posting = threading.Event()

            def client() -> None:
                while not stop_posting.is_set():
                    with lock:
                        n = next(next_order)
                    order_id = f"o-{n:06d}"
                    limited = n % 10 == 7
                    order = {"order_id": order_id, "customer": f"c{n % 13}", "sku": "limited" if limited else "widget",
                             "quantity": 1 + n % 3, "amount_cents": 100 + n}
                    status, body = post(port, order)
                    with lock:
                        if limited and status == 409:
                            rejected.append(order_id)
                        elif not limited and status == 201:
                            created[order_id] = body["event_id"]
                        else:
                            errors.append(f"{order_id}: {status} {body}")
                            continue
                    if n % 25 == 3 and status == 201:  # the client retries: same order, same event
                        again, body2 = post(port, order)
                        with lock:
                            if again == 200 and body2["event_id"] == body["event_id"] and not body2["created"]:
                                retried.append(order_id)
                            else:
                                errors.append(f"retry of {order_id}: {again} {body2}")

            def new_orders(count: int, sku: str = "bulk") -> list[dict]:
                with lock:
                    numbers = [next(next_order) for _ in range(count)]
                return [{"order_id": f"b-{n:06d}", "customer": "importer", "sku": sku, "quantity": 1,
                         "amount_cents": 100 + n} for n in numbers]

            def post_batch(batch: list[dict]) -> None:
                status, body = post(port, {"orders": batch}, "/orders/batch")
                with lock:
                    if status == 201 and len(body["orders"]) == len(batch):
                        created.update({o["order_id"]: o["event_id"] for o in body["orders"]})
                    elif status == 409 and any(o["sku"] == "limited" for o in batch):
                        rejected.extend(o["order_id"] for o in batch)
                    else:
                        errors.append(f"batch: {status} {body}")

            # A batch with one out-of-stock order: refused whole, none of its events may ever appear.
            post_batch(new_orders(20) + new_orders(1, sku="limited") + new_orders(20))

            clients = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
            for c in clients:
                c.start()

            def orders_so_far() -> int:
                with lock:
                    return len(created) + len(rejected)

            kills = 0
            try:
                while kills < MIN_KILLS or (tally.duplicates == 0 and kills < MAX_KILLS):
                    target = orders_so_far() + ORDERS_PER_ROUND
                    assert wait_for(lambda: orders_so_far() >= target or bool(errors), TIMEOUT), "clients stalled"
                    assert not errors, errors[:5]
                    # A batch of orders in one transaction: outboxd confirms it only once Kafka
                    # acknowledged all of its events, so killing outboxd as soon as the first of
                    # them is in Kafka leaves published events unconfirmed.
                    batch = new_orders(BATCH)
                    batch_events = {event_id("order", o["order_id"], "OrderCreated", o["order_id"]) for o in batch}
                    poster = threading.Thread(target=post_batch, args=(batch,))
                    poster.start()
                    assert wait_for(lambda: tally.seen_any(batch_events) or bool(errors), TIMEOUT), (
                        "no event of the batch reached Kafka")
                    assert outboxd.stop(signal.SIGKILL) == -signal.SIGKILL
                    poster.join(TIMEOUT)
                    assert not errors, errors[:5]
                    kills += 1
                    outboxd.start()
                    outboxd.wait_streaming(TIMEOUT)
                # A last round with outboxd left running, then stop the clients.
                target = orders_so_far() + ORDERS_PER_ROUND
                assert wait_for(lambda: orders_so_far() >= target, TIMEOUT), "clients stalled"
            finally:
                stop_posting.set()
                for c in clients:
                    c.join(60)
            assert not errors, errors[:5]

            try:
                expected_events = {event_id("order", o, "OrderCreated", o) for o in created}
                assert {str(e) for e in expected_events} == set(created.values())
                # Every committed order reaches Kafka and is billed.
                assert wait_for(lambda: expected_events <= set(tally.counts), TIMEOUT), (
                    f"{len(expected_events - set(tally.counts))} events missing from Kafka\n{outboxd.log()[-4000:]}")
                assert wait_for(lambda: billing.processed >= len(created), TIMEOUT), (
                    f"billed {billing.processed} of {len(created)}")
                # Let the readers reach the end of the topic, so that every duplicate is counted.
                size = topic_size(topic)
                assert wait_for(lambda: tally.snapshot()[0] >= size, TIMEOUT)
                assert wait_for(lambda: billing.processed + billing.duplicates >= size, TIMEOUT)
                assert wait_for(lambda: mailer.processed >= len(created), TIMEOUT), mailer.stats
            finally:
                billing_stop.set()
                billing_thread.join(60)
                billing.close()
                mailer_thread.join(60)
                mailer.close()
                tally.stop()
                assert outboxd.stop(signal.SIGTERM) == 0, outboxd.log()[-4000:]
                server.shutdown()
                server_thread.join(30)


        finally:
            if outboxd.running:
                outboxd.stop(signal.SIGKILL)
        records, distinct = tally.snapshot()
        duplicates = records - distinct
        with engine.connect() as conn:
            charges = dict(conn.execute(text("SELECT order_id, count(*) FROM charges GROUP BY order_id")).all())
            orders = {row[0] for row in conn.execute(text("SELECT id FROM orders"))}
            outbox_rows = conn.execute(text("SELECT count(*) FROM outbox WHERE aggregate_type = 'order'")).scalar_one()
            receipts = dict(conn.execute(text("SELECT order_id, count(*) FROM receipts GROUP BY order_id")).all())
        billed = sum(charges.values())
        report(f"flask-orders e2e: {len(created)} orders created, {len(rejected)} rolled back (out of stock), "
              f"{len(retried)} retried requests; outboxd SIGKILLed {kills} times; Kafka received {records} "
              f"records for {distinct} events: {duplicates} duplicates; billing skipped {billing.duplicates} "
              f"duplicates; billed {billed} orders")

        assert duplicates > 0, f"no duplicates after {kills} SIGKILLs: the test proves nothing"
        assert kills >= MIN_KILLS and retried and rejected
        # Kafka: exactly the created orders' events (retries added none), rolled-back ones never.
        assert set(tally.counts) == expected_events and distinct == len(created) == outbox_rows
        rejected_events = {event_id("order", o, "OrderCreated", o) for o in rejected}
        assert not rejected_events & set(tally.counts)
        # Billing: every order exactly once; duplicates were skipped by the idempotent consumer,
        # not refused by the charges' unique constraint (that would be a handler failure).
        assert charges == {o: 1 for o in created}
        assert billed == len(created)
        assert orders == set(created) and not set(rejected) & set(charges)
        assert billing.duplicates == duplicates
        assert billing.processed == len(created) and billing.failures == 0
        # One receipt command per order, handled once by the mailer.
        assert receipts == {o: 1 for o in created}
        assert mailer.processed == len(created) and mailer.failures == 0
