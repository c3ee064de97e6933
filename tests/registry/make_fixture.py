"""Writes tests/testdata/registry/envelope_confluent.bin: one outbox.v1.Envelope serialized by
confluent-kafka's own ProtobufSerializer (the Confluent wire format: magic byte, schema id, message
indexes, Protobuf bytes), for tests/unit/registry/wire_format_test.cc, which frames the same
event with outboxd's encoder and compares the bytes.

Run by hand when the Envelope or the event below changes (a mock registry, no server):
  .run/registry-venv/bin/python tests/registry/make_fixture.py
The event must stay equal to FixtureEvent() in wire_format_test.cc.
"""
import os
import subprocess
import sys
import tempfile

from confluent_kafka.schema_registry import RegisteredSchema, SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FixedIdRegistry(SchemaRegistryClient):
    """No server: every schema gets id SCHEMA_ID, version 1."""
    SCHEMA_ID = 1234567

    def __init__(self):
        pass

    def register_schema(self, subject_name, schema, normalize_schemas=False):
        return self.SCHEMA_ID

    def lookup_schema(self, subject_name, schema, normalize_schemas=False):
        return RegisteredSchema(self.SCHEMA_ID, schema, subject_name, 1)


def envelope_module(out_dir):
    subprocess.run(["protoc", f"-I{REPO}/proto", f"--python_out={out_dir}",
                    "outbox/v1/envelope.proto"], check=True)
    sys.path.insert(0, out_dir)
    from outbox.v1 import envelope_pb2  # noqa: E402
    return envelope_pb2


def main():
    with tempfile.TemporaryDirectory() as gen:
        pb = envelope_module(gen)
        env = pb.Envelope(
            id="0b5f7e0c-2a4d-4c1e-9f3a-7d2b1c0e4a55",
            aggregate_type="order",
            aggregate_id="42",
            event_type="OrderCreated",
            payload=b'{"total": 12.5}',
            content_type="application/json",
            headers=[pb.Header(key="traceparent", value=b"00-abc-def-01")],
        )
        env.created_at.seconds = 1764633600  # 2025-12-02T00:00:00Z
        env.created_at.nanos = 123456000
        env.source.commit_lsn = 0x16B3748
        env.source.lsn = 0x16B3700
        env.source.xid = 771
        env.source.commit_time.seconds = 1764633601
        env.source.commit_time.nanos = 5000
        env.source.schema = "public"
        env.source.table = "outbox"
        client = FixedIdRegistry()
        serializer = ProtobufSerializer(pb.Envelope, client, {"use.deprecated.format": False})
        data = serializer(env, SerializationContext("orders", MessageField.VALUE))
        out = os.path.join(REPO, "tests/testdata/registry/envelope_confluent.bin")
        with open(out, "wb") as f:
            f.write(data)
        schema_id = int.from_bytes(data[1:5], "big")
        print(f"wrote {out}: {len(data)} bytes, schema id {schema_id}, header {data[:6].hex()}")


if __name__ == "__main__":
    main()
