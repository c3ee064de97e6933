"""outboxd with [schema_registry] against a real registry (Apicurio Registry's Confluent-compatible
API, deploy/local/registry.sh) and a real Kafka and PostgreSQL (deploy/local/stack.sh): Confluent's
own ProtobufDeserializer decodes every record into the generated Envelope class, field for field
equal to the outbox rows. Run by scripts/registry-test.sh (make registry-test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

REPO = Path(__file__).resolve().parents[2]
OUTBOXD = os.environ.get("OUTBOXD_BIN", str(REPO / "build/outboxd"))
PG_PORT = int(os.environ.get("OUTBOXD_PG_PORT", "54329"))
KAFKA = f"127.0.0.1:{os.environ.get('OUTBOXD_KAFKA_PORT', '59092')}"
REGISTRY = f"http://127.0.0.1:{os.environ.get('OUTBOXD_REGISTRY_PORT', '58081')}/apis/ccompat/v7"
TIMEOUT = 60.0


@pytest.fixture(scope="session")
def envelope_pb2():
    gen = tempfile.mkdtemp(prefix="outboxd-envelope-")
    subprocess.run(["protoc", f"-I{REPO}/proto", f"--python_out={gen}", "outbox/v1/envelope.proto"], check=True)
    sys.path.insert(0, gen)
    from outbox.v1 import envelope_pb2 as module  # noqa: E402
    return module


def psql(sql: str) -> str:
    out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          f"host=127.0.0.1 port={PG_PORT} dbname=app user=postgres", "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Outbox:
    """A fresh outbox table, publication and slot in database app."""

    def __init__(self) -> None:
        self.table = unique("reg_outbox")
        self.publication = unique("reg_pub")
        self.slot = unique("reg_slot")
        psql(f"""
            CREATE TABLE public.{self.table} (
                id uuid PRIMARY KEY, aggregate_type text NOT NULL, aggregate_id text NOT NULL,
                event_type text NOT NULL, payload jsonb NOT NULL, headers jsonb, destination text,
                created_at timestamptz NOT NULL DEFAULT now());
            CREATE PUBLICATION {self.publication} FOR TABLE public.{self.table} WITH (publish = 'insert');""")

    def drop(self) -> None:
        psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
             f"WHERE slot_name = '{self.slot}' AND NOT active")
        psql(f"DROP PUBLICATION IF EXISTS {self.publication}; DROP TABLE IF EXISTS public.{self.table}")

    def config(self, topic: str, registry: str, http_port: int, extra: str = "") -> str:
        return f"""
[source]
dsn = "host=127.0.0.1 port={PG_PORT} dbname=app user=postgres"
slot = "{self.slot}"
publication = "{self.publication}"
[sink.kafka]
"bootstrap.servers" = "{KAFKA}"
[[outbox]]
table = "public.{self.table}"
topic = "{topic}"
[messages]
enabled = false
[http]
listen = "127.0.0.1:{http_port}"
[schema_registry]
url = "{registry}"
timeout = "3s"
{extra}
"""


class Outboxd:
    def __init__(self, config: str, tmp: Path) -> None:
        self.config_path = tmp / "outboxd.toml"
        self.config_path.write_text(config)
        self.log_path = tmp / "outboxd.log"
        self.proc: subprocess.Popen | None = None

    def start(self, *args: str) -> None:
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen([OUTBOXD, *args, "--config", str(self.config_path)],
                                     stdout=self.log_file, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self.log_file.close()
        return rc


def read_records(topic: str, count: int) -> list:
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": unique("reg_grp"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0)])
    records = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(records) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            records.append(msg)
    finally:
        consumer.close()
    return records


def test_confluent_deserializer_reads_every_envelope(tmp_path: Path, envelope_pb2) -> None:
    box = Outbox()
    prefix = unique("reg.e2e").replace("_", "-")
    topic = f"{prefix}.order"
    rows = []
    try:
        port = free_port()
        # A templated topic: its subject is resolved when the first event names it.
        outboxd = Outboxd(box.config(prefix + ".{aggregate_type}", REGISTRY, port), tmp_path)
        outboxd.start("run")
        try:
            wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, TIMEOUT,
                     "outboxd /readyz 200")
            for n in range(20):
                event_id = uuid.uuid4()
                payload = json.dumps({"order_id": n, "note": "naïve ☕", "total": n * 1.5})
                headers = json.dumps({"traceparent": f"00-{n:032x}-{n:016x}-01", "tenant": "acme"})
                psql(f"INSERT INTO public.{box.table} (id, aggregate_type, aggregate_id, event_type, payload, headers)"
                     f" VALUES ('{event_id}', 'order', '{n}', 'OrderCreated', $${payload}$$, $${headers}$$)")
            rows = [line.split("|", 6) for line in psql(
                f"SELECT id, aggregate_type, aggregate_id, event_type, "
                f"(extract(epoch from created_at) * 1000000)::bigint, headers::text, payload::text "
                f"FROM public.{box.table} ORDER BY created_at, id").splitlines()]
            assert len(rows) == 20
            records = read_records(topic, len(rows))
            assert len(records) == len(rows), outboxd.log()
            _, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
        finally:
            assert outboxd.stop() == 0, outboxd.log()

        registry = SchemaRegistryClient({"url": REGISTRY})
        # Without a registry client: the deserializer reads the framing and parses into the
        # generated class. With one it would also fetch the writer schema as a serialized
        # descriptor (GET /schemas/ids/N?format=serialized), a Confluent-only format that
        # Apicurio's ccompat API does not serve; the schema is checked against the registry below.
        deserializer = ProtobufDeserializer(envelope_pb2.Envelope, {})
        by_id = {r[0]: r for r in rows}
        schema_ids = set()
        for record in records:
            value = record.value()
            assert value[0] == 0 and value[5] == 0, value[:6].hex()  # magic byte, message index [0]
            schema_ids.add(int.from_bytes(value[1:5], "big"))
            env = deserializer(value, SerializationContext(topic, MessageField.VALUE))
            assert isinstance(env, envelope_pb2.Envelope)
            row = by_id[env.id]
            event_id, aggregate_type, aggregate_id, event_type, created_us, headers, payload = row
            assert record.key().decode() == event_id
            assert env.aggregate_type == aggregate_type
            assert env.aggregate_id == aggregate_id
            assert env.event_type == event_type
            assert env.payload == payload.encode()
            assert env.content_type == "application/json"
            assert {h.key: h.value.decode() for h in env.headers} == json.loads(headers)
            assert env.created_at.seconds * 1_000_000 + env.created_at.nanos // 1000 == int(created_us)
            assert env.source.schema == "public" and env.source.table == box.table
            assert env.source.commit_lsn > 0 and env.source.xid > 0
        assert sorted(by_id) == sorted(r.key().decode() for r in records)

        # One schema id, registered by outboxd under the topic's subject, with its reference.
        assert len(schema_ids) == 1
        registered = registry.get_latest_version(f"{topic}-value")
        assert registered.schema_id == schema_ids.pop()
        assert "message Envelope" in registered.schema.schema_str
        assert registry.get_schema(registered.schema_id).schema_str == registered.schema.schema_str
        assert [r.name for r in registered.schema.references] == ["google/protobuf/timestamp.proto"]
        # Cached: one lookup for the whole topic, not one per event.
        assert 'outboxd_schema_registry_requests_total{result="ok"}' in metrics
        ok = int(metrics.split('outboxd_schema_registry_requests_total{result="ok"} ')[1].split()[0])
        assert ok <= 4, metrics
        print(f"\n{len(records)} records decoded by confluent-kafka's ProtobufDeserializer; schema id "
              f"{registered.schema_id}, subject {topic}-value; registry requests ok={ok}")
    finally:
        box.drop()


def test_unreachable_registry_keeps_readyz_503_and_produces_nothing(tmp_path: Path) -> None:
    box = Outbox()
    topic = unique("reg.down").replace("_", "-")
    try:
        port = free_port()
        dead = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
        outboxd = Outboxd(box.config(topic, dead, port), tmp_path)
        outboxd.start("run")
        try:
            psql(f"INSERT INTO public.{box.table} (id, aggregate_type, aggregate_id, event_type, payload)"
                 f" VALUES ('{uuid.uuid4()}', 'order', '1', 'OrderCreated', '{{}}')")
            status, body = wait_for(lambda: (lambda r: r if "schema registry" in r[1] else None)(
                http_get(f"http://127.0.0.1:{port}/readyz")), TIMEOUT, "/readyz naming the registry")
            assert status == 503, body
            assert f"{topic}-value" in body, body
            _, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
            assert 'outboxd_schema_registry_requests_total{result="unreachable"}' in metrics, metrics
            assert outboxd.proc.poll() is None, outboxd.log()  # retrying, not exited
        finally:
            assert outboxd.stop() == 0, outboxd.log()
        assert read_records_quick(topic) == 0
    finally:
        box.drop()


def read_records_quick(topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": unique("reg_grp"),
                         "auto.offset.reset": "earliest"})
    try:
        md = consumer.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            return 0
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return high - low
    finally:
        consumer.close()


def test_incompatible_schema_stops_naming_subject_and_answer(tmp_path: Path) -> None:
    box = Outbox()
    topic = unique("reg.incompat").replace("_", "-")
    subject = f"{topic}-value"
    try:
        registry = SchemaRegistryClient({"url": REGISTRY})
        from confluent_kafka.schema_registry import Schema
        registry.register_schema(subject, Schema(
            'syntax = "proto3";\npackage outbox.v1;\nmessage Envelope {\n  int64 id = 1;\n}\n', "PROTOBUF"))
        registry.set_compatibility(subject, "BACKWARD")
        port = free_port()
        outboxd = Outboxd(box.config(topic, REGISTRY, port), tmp_path)
        outboxd.start("run")
        rc = outboxd.proc.wait(TIMEOUT)
        outboxd.stop()
        log = outboxd.log()
        assert rc == 1, log
        assert subject in log and "409" in log, log
        print(f"\noutboxd exited {rc}: {[l for l in log.splitlines() if subject in l][-1]}")

        check = subprocess.run([OUTBOXD, "check", "--config", str(outboxd.config_path)],
                               capture_output=True, text=True, timeout=TIMEOUT)
        # check asks the registry whether it would take the envelope (without registering it).
        assert check.returncode == 1, check.stdout + check.stderr
        assert (f"FAIL  registry     subject {subject}: the registry would refuse outbox.v1.Envelope under "
                "compatibility BACKWARD") in check.stdout, check.stdout + check.stderr
        print(check.stdout)
    finally:
        box.drop()
