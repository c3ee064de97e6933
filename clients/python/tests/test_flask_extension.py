"""The Flask extension end to end: an app built with ``Outboxd``, POST /customers emitting a
dataclass payload through the extension, a real outboxd, and ``flask outboxd consume`` running the
welcome handler in the app context (db.session is the consumer's session); and trace context: the
emitted traceparent is the server span's (OpenTelemetry SDK with an in-memory exporter), and the
consumer's span links to it."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine, text

from outboxd import IdempotentConsumer
from outboxd.schema import create_outbox, create_processed_events
from outboxd.testing import (OutboxdProcess, config_for, kafka_bootstrap, make_envelope, pg_url, produce, scalar,
                             temp_database, unique_name, wait_for)

CHILDREN = Path(__file__).resolve().parent / "children"
sys.path.insert(0, str(CHILDREN))

import customers_app  # noqa: E402

TIMEOUT = 90.0
CLIENT_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def customers_db() -> Iterator[tuple[str, Engine, str]]:
    with temp_database("pyflask") as (name, engine):
        publication = unique_name("pub")
        customers_app.Base.metadata.create_all(engine)
        create_outbox(engine, publication=publication)
        create_processed_events(engine)
        yield name, engine, publication


def flask_env(dbname: str, **more: str) -> dict[str, str]:
    return {"FLASK_SQLALCHEMY_DATABASE_URI": pg_url(dbname), "FLASK_OUTBOXD_KAFKA_BOOTSTRAP": kafka_bootstrap(),
            **more}


def make_app(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Flask:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return customers_app.create_app()


def test_flask_app_with_the_extension_and_flask_outboxd_consume(customers_db: tuple[str, Engine, str],
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dbname, engine, publication = customers_db
    prefix = unique_name("pyt.flask")
    topic, dlq, group = f"{prefix}.customer", f"{prefix}.dlq", unique_name("welcome")
    emails = tmp_path / "emails.txt"
    emails.touch()
    env = flask_env(dbname, FLASK_OUTBOXD_DEAD_LETTER_TOPIC=dlq, EMAIL_LOG=str(emails))
    app = make_app(env, monkeypatch)
    config = config_for(dbname=dbname, slot=unique_name("slot"), publication=publication, table="public.outbox",
                        topic=prefix + ".{aggregate_type}")
    log_path = tmp_path / "consume.log"
    with OutboxdProcess(config, tmp_path) as outboxd:
        outboxd.start()
        outboxd.wait_streaming()
        client = app.test_client()
        registered = [client.post("/customers", json={"email": f"c{n}@example.com"}) for n in range(20)]
        assert [r.status_code for r in registered] == [201] * 20
        assert client.post("/customers", json={"email": "c0@example.com"}).status_code == 409  # rolled back

        with open(log_path, "wb") as log:
            consume = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "customers_app", "outboxd", "consume", "--group", group,
                 "--topic", topic, "--handler", "customers_app:welcome", "--create-schema"],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                env={**os.environ, **env, "PYTHONPATH": str(CHILDREN)})
        try:
            assert wait_for(lambda: scalar(engine, "SELECT count(*) FROM welcomes") == 20, TIMEOUT), \
                log_path.read_text()
            assert wait_for(lambda: len(emails.read_text().splitlines()) == 20, TIMEOUT), log_path.read_text()
            stopping = time.monotonic()
            consume.send_signal(signal.SIGTERM)
            assert consume.wait(30) == 0, log_path.read_text()
            stop_took = time.monotonic() - stopping
        finally:
            if consume.poll() is None:
                consume.kill()
                consume.wait()
        assert outboxd.stop(signal.SIGTERM) == 0, outboxd.log()

    log = log_path.read_text()
    assert stop_took < 20, log
    for line in ("starting: topics", "assigned", "committed offsets", "SIGTERM: stopping", "stopped: 20 processed"):
        assert line in log, f"no {line!r} in the log of flask outboxd consume:\n{log}"
    # Each customer welcomed once, by the event of its own registration; one e-mail each.
    with engine.connect() as conn:
        welcomes = dict(conn.execute(text("SELECT customer_id, event_id::text FROM welcomes")).all())
    assert welcomes == {r.json["customer_id"]: r.json["event_id"] for r in registered}
    sent = collections.Counter(line.split()[1] for line in emails.read_text().splitlines())
    assert sent == {f"c{n}@example.com": 1 for n in range(20)}


def test_emit_writes_the_server_spans_traceparent_and_the_consumer_span_links_to_it(
        customers_db: tuple[str, Engine, str], monkeypatch: pytest.MonkeyPatch) -> None:
    dbname, engine, _ = customers_db
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_app(flask_env(dbname), monkeypatch)
    FlaskInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        response = app.test_client().post("/customers", json={"email": "traced@example.com"},
                                          headers={"traceparent": CLIENT_TRACEPARENT})
    finally:
        FlaskInstrumentor.uninstrument_app(app)
    assert response.status_code == 201
    (server,) = [s for s in exporter.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    context = server.get_span_context()
    with engine.connect() as conn:
        headers = conn.execute(text("SELECT headers FROM outbox WHERE id = :id"),
                               {"id": response.json["event_id"]}).scalar_one()
    # The server span's: the client's trace, the server's span id (not the client's b7ad6b7169203331).
    assert headers["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
    assert f"{context.trace_id:032x}" == CLIENT_TRACEPARENT.split("-")[1]
    assert f"{context.span_id:016x}" != CLIENT_TRACEPARENT.split("-")[2]
    # Outside a span, emit() adds nothing.
    with app.test_request_context():
        customers_app.outboxd.emit("customer", 0, "Nothing", {})
        assert customers_app.db.session.new.pop().headers is None  # type: ignore[attr-defined]

    # The consumer: a CONSUMER span per handled event, linked to the producer's (server) span.
    topic = unique_name("pyt.traced")
    event_id, value = make_envelope(headers=[("traceparent", headers["traceparent"].encode())])
    produce(topic, [(event_id, value)])
    exporter.clear()
    handled = threading.Event()
    consumer = IdempotentConsumer(bootstrap_servers=kafka_bootstrap(), group_id=unique_name("grp"), topics=[topic],
                                  handler=lambda session, event: handled.set(), session_factory=engine,
                                  tracer_provider=provider)
    try:
        assert wait_for(lambda: bool(consumer.poll_batch(0.2)) and handled.is_set(), TIMEOUT)
    finally:
        consumer.close()
    (span,) = [s for s in exporter.get_finished_spans() if s.kind is trace.SpanKind.CONSUMER]
    assert span.name == f"process {topic}"
    assert [(link.context.trace_id, link.context.span_id) for link in span.links] == \
        [(context.trace_id, context.span_id)]
    assert span.attributes is not None and span.attributes["messaging.message.id"] == str(event_id)
