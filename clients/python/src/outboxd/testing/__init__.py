"""Test support.

- ``outboxd.testing.fake``: ``FakeConsumer``, unit tests of handlers without Kafka or outboxd;
- ``outboxd.testing.stack``: end-to-end tests against a real PostgreSQL, Kafka and outboxd (the
  repository's local stack): a throwaway database, an outboxd process, a Kafka reader, deadlines.
"""

from outboxd.testing.fake import DeadLetter, FakeConsumer, make_event, sqlite_memory_engine
from outboxd.testing.stack import (KafkaRecord, OutboxdProcess, config_for, kafka_bootstrap, make_envelope, pg_dsn,
                                   pg_port, pg_url, produce, read_topics, scalar, outboxd_binary, temp_database,
                                   unique_name, wait_for)

__all__ = [
    "DeadLetter",
    "FakeConsumer",
    "KafkaRecord",
    "OutboxdProcess",
    "config_for",
    "kafka_bootstrap",
    "make_envelope",
    "make_event",
    "outboxd_binary",
    "pg_dsn",
    "pg_port",
    "pg_url",
    "produce",
    "read_topics",
    "scalar",
    "sqlite_memory_engine",
    "temp_database",
    "unique_name",
    "wait_for",
]
