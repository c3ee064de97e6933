"""Test support: a real outboxd process, a throwaway database, a Kafka reader, deadlines.

For end-to-end tests against a local PostgreSQL (wal_level = logical) and Kafka, such as the
repository's ``deploy/local/stack.sh up``. Ports come from ``OUTBOXD_PG_PORT`` (54329) and
``OUTBOXD_KAFKA_PORT`` (59092), the binary from ``OUTBOXD_BIN`` (else ``build/outboxd`` of the
checkout). Needs psycopg (``pip install outboxd[postgres]``).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer
from sqlalchemy import Engine, create_engine, text

from outboxd.envelope import Envelope, Header

__all__ = [
    "KafkaRecord",
    "OutboxdProcess",
    "config_for",
    "kafka_bootstrap",
    "make_envelope",
    "produce",
    "scalar",
    "outboxd_binary",
    "pg_url",
    "read_topics",
    "temp_database",
    "unique_name",
    "wait_for",
]


def pg_port() -> str:
    return os.environ.get("OUTBOXD_PG_PORT") or "54329"


def kafka_bootstrap() -> str:
    """``127.0.0.1:$OUTBOXD_KAFKA_PORT``."""
    return f"127.0.0.1:{os.environ.get('OUTBOXD_KAFKA_PORT') or '59092'}"


def pg_url(dbname: str = "app") -> str:
    """SQLAlchemy URL of the local stack's database (user postgres, no password)."""
    return f"postgresql+psycopg://postgres@127.0.0.1:{pg_port()}/{dbname}"


def pg_dsn(dbname: str = "app") -> str:
    """libpq DSN of the same database, for outboxd's ``[source] dsn``."""
    return f"host=127.0.0.1 port={pg_port()} dbname={dbname} user=postgres"


def unique_name(prefix: str) -> str:
    """``prefix_<random hex>``: lower case, a valid slot, table or topic name."""
    return f"{prefix}_{secrets.token_hex(4)}"


def wait_for(condition: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    """Polls ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def outboxd_binary() -> Path:
    """``$OUTBOXD_BIN``, else build/outboxd of the repository this file is checked out in."""
    configured = os.environ.get("OUTBOXD_BIN")
    if configured:
        return Path(configured)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "build" / "outboxd"
        if candidate.is_file():
            return candidate
    return Path.cwd() / "build" / "outboxd"


@contextmanager
def temp_database(prefix: str = "pytest") -> Iterator[tuple[str, Engine]]:
    """Creates a database for one test and drops it afterwards; yields (name, engine)."""
    name = unique_name(prefix)
    admin = create_engine(pg_url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine = create_engine(pg_url(name))
        try:
            yield name, engine
        finally:
            engine.dispose()
            with admin.connect() as conn:
                # Drop the slots made in it (they pin WAL), then the database. A walsender may
                # take a moment to exit after its client went away.
                wait_for(lambda: conn.execute(text(
                    "SELECT count(*) FROM pg_replication_slots WHERE database = :db AND active"),
                    {"db": name}).scalar() == 0, timeout=30, every=0.2)
                conn.execute(text("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                  "WHERE database = :db AND NOT active"), {"db": name})
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def config_for(*, dbname: str, slot: str, publication: str, table: str, topic: str,
               status_interval: str = "10s", extra: str = "", sink: str = "") -> str:
    """An outboxd config for the local stack: one ``[[outbox]]`` table, messages off.

    ``sink``: lines of the ``[sink]`` section, e.g. ``'delivery = "exactly_once"'``; ``extra``:
    more sections at the end.
    """
    sink_section = f"[sink]\n{sink}\n\n" if sink else ""
    return f"""[source]
dsn = "{pg_dsn(dbname)}"
slot = "{slot}"
publication = "{publication}"
create_slot = true
status_interval = "{status_interval}"

{sink_section}[sink.kafka]
"bootstrap.servers" = "{kafka_bootstrap()}"

[[outbox]]
table = "{table}"
topic = "{topic}"

[messages]
enabled = false

[http]
listen = "off"

[log]
level = "info"
{extra}"""


class OutboxdProcess:
    """An ``outboxd run --config`` child process; its log goes to a file."""

    def __init__(self, config_toml: str, workdir: Path, binary: Path | None = None) -> None:
        self.binary = binary or outboxd_binary()
        if not self.binary.is_file():
            raise FileNotFoundError(f"outboxd binary {self.binary} not found: run `make build` or set OUTBOXD_BIN")
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "outboxd.toml"
        self.config_path.write_text(config_toml)
        self.log_path = workdir / "outboxd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.starts = 0

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Starts ``outboxd run``; ``env``: variables added to this process's environment for it
        (e.g. ``OUTBOXD_FAILPOINT``, a test-only hook of outboxd's)."""
        assert self._proc is None, "already running"
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen([str(self.binary), "run", "--config", str(self.config_path)],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          env={**os.environ, **env} if env else None)
        self.starts += 1

    def wait_exit(self, timeout: float) -> int | None:
        """Waits up to ``timeout`` seconds for the process to end by itself; returns its exit
        code (negative signal number if killed), or None while it still runs."""
        assert self._proc is not None, "not running"
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._proc = None
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Sends ``sig`` and waits; returns the exit code (negative signal number if killed)."""
        assert self._proc is not None, "not running"
        self._proc.send_signal(sig)
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        self._proc = None
        return code

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_since_start(self) -> str:
        return self.log()[self._log_offset:]

    def wait_for_log(self, needle: str, timeout: float) -> bool:
        """Waits until the log written since the last start() contains ``needle``."""
        return wait_for(lambda: needle in self.log_since_start(), timeout, every=0.1)

    def wait_streaming(self, timeout: float = 60) -> None:
        """Waits for outboxd's "streaming slot" line; raises with the log if it does not come."""
        if not self.wait_for_log("streaming slot", timeout):
            raise AssertionError(f"outboxd did not start streaming within {timeout}s:\n{self.log_since_start()}")

    def __enter__(self) -> OutboxdProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self.stop(signal.SIGKILL)


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def read_topics(topics: Sequence[str], done: Callable[[list[KafkaRecord]], bool], timeout: float,
                bootstrap: str | None = None, isolation_level: str = "read_committed") -> list[KafkaRecord]:
    """Reads ``topics`` from their start (a fresh group) until ``done(records)`` or the deadline.

    ``isolation_level``: read_committed (the default, librdkafka's too) skips records of aborted
    Kafka transactions and waits for open ones to commit; read_uncommitted shows every record.
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap or kafka_bootstrap(),
        "group.id": unique_name("pytest_reader"),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": isolation_level,
        "topic.metadata.refresh.interval.ms": 500,
    })
    records: list[KafkaRecord] = []
    try:
        consumer.subscribe(list(topics))
        deadline = time.monotonic() + timeout
        while not done(records) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    raise RuntimeError(f"reading {topics}: {err}")
                continue
            raw = msg.headers() or []  # a consumed message has a list; the type also allows a dict
            pairs = list(raw.items()) if isinstance(raw, dict) else raw
            headers = tuple((k, v.encode() if isinstance(v, str) else v or b"") for k, v in pairs)
            records.append(KafkaRecord(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.key(),
                                       msg.value(), headers))
    finally:
        consumer.close()
    return records


def scalar(engine: Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        """The first column of the single row ``sql`` returns, as an int."""
        return int(conn.execute(text(sql), params).scalar_one())


def make_envelope(event_id: uuid.UUID | None = None, *, aggregate_id: str = "1", event_type: str = "OrderCreated",
             payload: bytes = b'{"n": 1}', headers: Sequence[tuple[str, bytes]] = ()) -> tuple[uuid.UUID, bytes]:
    """An envelope as outboxd produces it; returns (id, serialized value)."""
    event_id = event_id or uuid.uuid4()
    value = Envelope(id=str(event_id), aggregate_type="order", aggregate_id=aggregate_id, event_type=event_type,
                     payload=payload, content_type="application/json",
                     headers=[Header(key=k, value=v) for k, v in headers])
    return event_id, value.SerializeToString()


def produce(topic: str, values: Sequence[tuple[uuid.UUID | None, bytes]]) -> None:
    """Produces the values to ``topic`` (partition 0, in order) and waits for the broker's acks."""
    producer = Producer({"bootstrap.servers": kafka_bootstrap(), "enable.idempotence": True})
    errors: list[str] = []

    def report(err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            errors.append(str(err))

    for key, value in values:
        producer.produce(topic, value=value, key=str(key).encode() if key else None, partition=0,
                         on_delivery=report)
    remaining = producer.flush(30)
    assert remaining == 0 and not errors, f"producing to {topic}: {remaining} unacknowledged, errors {errors}"
