"""FakeConsumer (no Kafka, no outboxd) on SQLite in memory: the same transaction semantics as
IdempotentConsumer; typed payloads both ways; purge helpers on the real PostgreSQL."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pydantic
import pytest
from sqlalchemy import Engine, Integer, Text, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from outboxd import Event, Outcome, PayloadError, after_commit, emit, json_default
from outboxd.purge import outbox_purge_ddl, purge_outbox, purge_processed_events
from outboxd.schema import create_outbox, create_processed_events
from outboxd.testing import FakeConsumer, make_event, scalar, sqlite_memory_engine, temp_database, unique_name

REPO = Path(__file__).resolve().parents[3]


class Base(DeclarativeBase):
    pass


class Welcome(Base):
    __tablename__ = "welcomes"
    customer: Mapped[str] = mapped_column(Text, primary_key=True)
    visits: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class Address:
    city: str


@dataclass(frozen=True)
class Registered:
    customer: str
    at: datetime
    credit: Decimal
    addresses: list[Address] = field(default_factory=list)
    referrer: uuid.UUID | None = None


class RegisteredModel(pydantic.BaseModel):
    customer: str
    credit: Decimal


SENT: list[tuple[str, str]] = []


def send(event: Event, *, to: str) -> None:
    SENT.append((str(event.id), to))


def handler(session: Session, event: Event) -> None:
    registered = event.payload_as(Registered)
    if registered.customer == "bad":
        session.add(Welcome(customer="bad", visits=1))  # flushed into its savepoint, then rolled back
        session.flush()
        raise ValueError("no welcome for bad")
    session.add(Welcome(customer=registered.customer, visits=1))
    after_commit(session, send, to=registered.customer)


@pytest.fixture
def fake() -> FakeConsumer:
    engine = sqlite_memory_engine()
    Base.metadata.create_all(engine)
    consumer = FakeConsumer(handler=handler, session_factory=engine, max_attempts=2)
    consumer.create_schema()
    SENT.clear()
    return consumer


def registered(customer: str) -> Event:
    return make_event("customer", customer, "Registered",
                      Registered(customer, datetime(2026, 1, 2, tzinfo=timezone.utc), Decimal("1.50"),
                                 [Address("Oslo")]))


def test_fake_consumer_has_the_consumers_semantics(fake: FakeConsumer) -> None:
    a, bad, b = registered("a"), registered("bad"), registered("b")
    assert fake.deliver(a, bad, b, a) == [Outcome.PROCESSED, Outcome.DEAD_LETTERED, Outcome.PROCESSED,
                                          Outcome.DUPLICATE]
    assert (fake.stats.processed, fake.stats.duplicates, fake.stats.dead_lettered) == (2, 1, 1)
    assert (fake.stats.handler_calls, fake.stats.handler_reruns, fake.stats.failures) == (4, 1, 2)
    assert [(d.event.id, d.reason, d.attempts) for d in fake.dead_letters] == [(bad.id, "handler_error", 2)]
    assert SENT == [(str(a.id), "a"), (str(b.id), "b")]
    with fake._processor.session() as session:
        assert sorted(session.scalars(select(Welcome.customer))) == ["a", "b"]


def test_payload_as_dataclass_and_pydantic() -> None:
    event = registered("ada")
    value = event.payload_as(Registered)
    assert value == Registered("ada", datetime(2026, 1, 2, tzinfo=timezone.utc), Decimal("1.50"), [Address("Oslo")])
    assert event.payload_as(RegisteredModel) == RegisteredModel(customer="ada", credit=Decimal("1.50"))
    with pytest.raises(PayloadError, match="missing field 'customer'"):
        make_event("customer", "x", "Registered", {"at": "2026-01-02"}).payload_as(Registered)
    with pytest.raises(PayloadError):
        make_event("customer", "x", "Registered", {"customer": 1, "credit": "x"}).payload_as(RegisteredModel)


def test_emit_takes_dataclasses_and_pydantic_models(engine: Engine) -> None:
    name = unique_name("outbox")
    create_outbox(engine, table=name, publication=unique_name("pub"))
    from outboxd import Outbox

    box = Outbox(table=name, json_default=json_default)
    with Session(engine) as session, session.begin():
        first = emit(session, "customer", "ada", "Registered", Registered("ada", datetime(2026, 1, 2), Decimal("2")),
                     outbox=box)
        second = emit(session, "customer", "ada", "Registered", RegisteredModel(customer="ada", credit=Decimal("2")),
                      outbox=box)
    with engine.connect() as conn:
        payloads = dict(conn.execute(text(f"SELECT id, payload FROM {name}")).all())
    assert payloads[first] == {"customer": "ada", "at": "2026-01-02T00:00:00", "credit": "2", "addresses": [],
                               "referrer": None}
    assert payloads[second] == {"customer": "ada", "credit": "2"}


def test_purge_processed_events_keeps_pending_callbacks_and_recent_rows(engine: Engine) -> None:
    table = unique_name("processed")
    create_processed_events(engine, table=table)
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {table} (consumer_group, event_id, kafka_topic, kafka_partition, "
                          f"kafka_offset, processed_at, after_commit) SELECT 'g', gen_random_uuid(), 't', 0, n, "
                          f"now() - make_interval(days => n % 3 * 10), CASE WHEN n = 1 THEN '[]'::jsonb END "
                          f"FROM generate_series(1, 30) n"))
    # Rows of 10 and 20 days ago: 20, of which one (n = 1) has after_commit callbacks pending.
    assert purge_processed_events(engine, timedelta(days=5), table=table, batch_size=7) == 19
    assert scalar(engine, f"SELECT count(*) FROM {table}") == 11


def test_purge_outbox_ddl_is_sql_purge_sql_and_purges() -> None:
    """The procedure of outboxd.migrations.upgrade_outbox_purge() is the one of sql/purge.sql."""
    definitions = []
    for how in ("psql", "python"):
        with temp_database(f"pypurge_{how}") as (name, engine):
            create_outbox(engine)
            if how == "psql":
                url = engine.url
                subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(url.host), "-p", str(url.port),
                                "-U", "postgres", "-d", name, "-f", str(REPO / "sql" / "purge.sql")],
                               check=True, capture_output=True, timeout=60)
            else:
                with engine.begin() as conn:
                    for statement in outbox_purge_ddl():
                        conn.execute(text(statement))
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, "
                                      "created_at) SELECT 'a', n::text, 'E', '{}', now() - make_interval(days => n) "
                                      "FROM generate_series(0, 9) n"))
                purge_outbox(engine, timedelta(days=3, hours=12), batch_size=4)
                assert scalar(engine, "SELECT count(*) FROM outbox") == 4
            definitions.append(scalar_text(engine, "SELECT pg_get_functiondef('public.outbox_purge'::regproc)"))
    assert definitions[0] == definitions[1]


def scalar_text(engine: Engine, sql: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text(sql)).scalar_one())
