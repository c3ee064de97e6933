"""The dead-letter producer inherits the consumer's security settings: against the SASL_SSL listener
(SCRAM-SHA-512) of the project's TLS stack (tests/integration/tls_stack.sh, started in the
background by scripts/python-test.sh), a record that is not an envelope and an event whose handler
keeps failing both reach the dead-letter topic, and the partition moves on."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from outboxd import Event, IdempotentConsumer
from outboxd.deadletter import producer_config
from outboxd.testing import make_envelope, unique_name, wait_for

REPO = Path(__file__).resolve().parents[3]
TLS_ENV = REPO / ".run" / "tls" / "env"
TIMEOUT = 60.0


def test_producer_config_drops_consumer_only_properties() -> None:
    config = producer_config({"bootstrap.servers": "b:1", "group.id": "g", "group.instance.id": "i",
                              "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                              "sasl.username": "u", "sasl.password": "p", "ssl.ca.location": "/ca.pem",
                              "client.id": "billing", "isolation.level": "read_committed",
                              "auto.offset.reset": "earliest", "enable.auto.commit": False,
                              "session.timeout.ms": 10000, "fetch.max.bytes": 1024},
                             {"message.timeout.ms": 5000})
    assert config == {"bootstrap.servers": "b:1", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                      "sasl.username": "u", "sasl.password": "p", "ssl.ca.location": "/ca.pem",
                      "client.id": "billing-dead-letter", "acks": "all", "enable.idempotence": True,
                      "message.timeout.ms": 5000}


@pytest.fixture(scope="module")
def scram() -> dict[str, Any]:
    """librdkafka properties for the TLS stack's SASL_SSL listener (waits for scripts/python-test.sh's
    background `tls_stack.sh up`)."""
    started = os.environ.get("OUTBOXD_PY_TLS_STACK")
    if not started:
        pytest.fail("the TLS stack is started by scripts/python-test.sh (OUTBOXD_PY_TLS_STACK); run the tests "
                    "through it, or start tests/integration/tls_stack.sh up and set OUTBOXD_PY_TLS_STACK=up")
    done = Path(started) if started != "up" else None
    assert wait_for(lambda: TLS_ENV.exists() or (done is not None and done.exists()), 300, every=0.5), \
        "tests/integration/tls_stack.sh up did not finish within 300 s"
    if done is not None:
        assert wait_for(done.exists, 300, every=0.5)
        status = done.read_text().strip()
        assert status == "0", f"tls_stack.sh up failed (exit {status}); see .run/python-tls-stack.log"
    env = dict(line.split("=", 1) for line in TLS_ENV.read_text().splitlines() if "=" in line)
    return {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "outboxd",
            "sasl.password": Path(env["KAFKA_PASSWORD_FILE"]).read_text().strip(), "ssl.ca.location": env["CA"],
            "bootstrap.servers": env["KAFKA_SASL_SSL"]}


def produce_secure(config: dict[str, Any], topic: str, values: list[tuple[Any, bytes]]) -> None:
    producer = Producer({**config, "enable.idempotence": True})
    for key, value in values:
        producer.produce(topic, value=value, key=str(key).encode() if key else None, partition=0)
    assert producer.flush(60) == 0


def read_secure(config: dict[str, Any], topic: str, count: int) -> list[Any]:
    consumer = Consumer({**config, "group.id": unique_name("reader"), "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(records) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                records.append(msg)
            elif msg is not None and msg.error().code() not in (KafkaError._PARTITION_EOF,
                                                               KafkaError.UNKNOWN_TOPIC_OR_PART):
                raise RuntimeError(str(msg.error()))
    finally:
        consumer.close()
    return records


def test_dead_letters_on_a_scram_listener(scram: dict[str, Any], engine: Engine) -> None:
    topic, dlq = unique_name("pyt.scram"), unique_name("pyt.scram.dlq")
    bad, good = make_envelope(aggregate_id="bad"), make_envelope(aggregate_id="good")
    produce_secure(scram, topic, [(None, b"\xff not an envelope"), bad, good])
    handled: list[str] = []

    def handler(session: Session, event: Event) -> None:
        if event.aggregate_id == "bad":
            raise ValueError("cannot welcome")
        handled.append(event.aggregate_id)

    security = {k: v for k, v in scram.items() if k != "bootstrap.servers"}
    consumer = IdempotentConsumer(bootstrap_servers=scram["bootstrap.servers"], group_id=unique_name("grp"),
                                  topics=[topic], handler=handler, session_factory=engine, config=security,
                                  dead_letter_topic=dlq, max_attempts=2, retry_backoff=0.05)
    consumer.create_schema()
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        assert wait_for(lambda: handled == ["good"], TIMEOUT), consumer.stats
    finally:
        stop.set()
        thread.join(30)
        consumer.close()
    assert (consumer.stats.undecodable, consumer.stats.dead_lettered) == (1, 1)
    letters = read_secure(scram, dlq, 2)
    reasons = [dict(m.headers())["outboxd.dlq.reason"] for m in letters]
    assert reasons == [b"undecodable", b"handler_error"]
    assert letters[1].value() == bad[1]
