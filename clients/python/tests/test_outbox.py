"""emit(): the outbox row commits and rolls back with the business rows; deterministic ids."""

from __future__ import annotations

import math
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, Identity, Integer, event, text
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import outboxd
from outboxd import EVENT_ID_NAMESPACE, Outbox, canonical_key, emit, event_id, json_default
from outboxd.schema import create_outbox
from outboxd.testing import scalar, unique_name


@pytest.fixture
def outbox(engine: Engine) -> Outbox:
    name = unique_name("outbox")
    create_outbox(engine, table=name, publication=unique_name("pub"))
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {name}_orders (id int PRIMARY KEY, total int NOT NULL)"))
    return Outbox(table=name)


def orders(outbox: Outbox) -> str:
    return f"{outbox.name}_orders"


def test_emit_commits_with_the_business_rows(engine: Engine, outbox: Outbox) -> None:
    with Session(engine) as session, session.begin():
        session.execute(text(f"INSERT INTO {orders(outbox)} VALUES (1, 1999)"))
        eid = emit(session, "order", 1, "OrderCreated", {"order_id": 1, "total": 1999},
                   {"traceparent": "00-abc-01"}, outbox=outbox)
        # Not inserted yet: emit only adds the row to the unit of work.
        assert scalar(engine, f"SELECT count(*) FROM {outbox.name}") == 0
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT id, aggregate_type, aggregate_id, event_type, payload, headers, "
                                f"destination, created_at FROM {outbox.name}")).one()
    assert row.id == eid
    assert (row.aggregate_type, row.aggregate_id, row.event_type) == ("order", "1", "OrderCreated")
    assert row.payload == {"order_id": 1, "total": 1999}
    assert row.headers == {"traceparent": "00-abc-01"}
    assert row.destination is None and row.created_at is not None
    assert scalar(engine, f"SELECT count(*) FROM {orders(outbox)}") == 1


def test_emit_rolls_back_with_the_business_rows(engine: Engine, outbox: Outbox) -> None:
    with Session(engine) as session:
        session.execute(text(f"INSERT INTO {orders(outbox)} VALUES (2, 500)"))
        emit(session, "order", 2, "OrderCreated", {"order_id": 2}, outbox=outbox)
        session.flush()  # the row really reaches the server, then the transaction rolls back
        assert session.execute(text(f"SELECT count(*) FROM {outbox.name}")).scalar_one() == 1
        session.rollback()
    assert scalar(engine, f"SELECT count(*) FROM {outbox.name}") == 0
    assert scalar(engine, f"SELECT count(*) FROM {orders(outbox)}") == 0


def test_emit_never_flushes_nor_commits(engine: Engine, outbox: Outbox) -> None:
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with Session(engine) as session:
            emit(session, "order", 3, "OrderCreated", {}, outbox=outbox)
            assert len(session.new) == 1
            assert statements == []  # nothing sent to the server: no flush, no commit
            session.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert scalar(engine, f"SELECT count(*) FROM {outbox.name}") == 0


def test_null_headers_are_sql_null(engine: Engine, outbox: Outbox) -> None:
    with Session(engine) as session, session.begin():
        eid = emit(session, "order", 4, "OrderCreated", [1, 2], outbox=outbox, destination="billing.orders")
    assert scalar(engine, f"SELECT count(*) FROM {outbox.name} WHERE id = :id AND headers IS NULL "
                         "AND destination = 'billing.orders' AND payload = '[1, 2]'::jsonb", id=eid) == 1


def test_event_id_is_a_documented_uuid5() -> None:
    expected = uuid.uuid5(EVENT_ID_NAMESPACE, "order\x0042\x00OrderCreated\x00req-7")
    assert event_id("order", "42", "OrderCreated", "req-7") == expected
    assert event_id("order", 42, "OrderCreated", "req-7") == expected
    assert expected.version == 5
    # A fixed vector: changing the namespace or the name layout breaks every retrying producer.
    assert str(expected) == "88240cdd-a178-51c6-8acd-6645d1b5140a"
    # Every part matters.
    others = {event_id("order", "43", "OrderCreated", "req-7"), event_id("order", "42", "OrderPaid", "req-7"),
              event_id("orders", "42", "OrderCreated", "req-7"), event_id("order", "42", "OrderCreated", "req-8"),
              event_id("order", "42\x01", "OrderCreated", "req-7")}
    assert expected not in others and len(others) == 5


def test_a_retrying_producer_writes_the_same_id_once(engine: Engine, outbox: Outbox) -> None:
    ids = []
    for attempt in range(2):
        with Session(engine) as session:
            ids.append(emit(session, "order", 5, "OrderCreated", {"attempt": attempt}, dedupe_key="req-5",
                            outbox=outbox))
            if attempt == 0:
                session.commit()
            else:
                with pytest.raises(IntegrityError):
                    session.commit()
    assert ids[0] == ids[1] == event_id("order", "5", "OrderCreated", "req-5")
    assert scalar(engine, f"SELECT count(*) FROM {outbox.name}") == 1


def test_explicit_id(engine: Engine, outbox: Outbox) -> None:
    wanted = uuid.uuid4()
    with Session(engine) as session, session.begin():
        assert emit(session, "order", 6, "OrderCreated", {}, id=wanted, outbox=outbox) == wanted
    assert scalar(engine, f"SELECT count(*) FROM {outbox.name} WHERE id = :id", id=wanted) == 1


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"id": uuid.uuid4(), "dedupe_key": "k"}, ValueError),
        ({"payload": None}, ValueError),
        ({"aggregate_type": ""}, ValueError),
        ({"event_type": 7}, TypeError),
        ({"headers": {"n": 1}}, TypeError),
        ({"aggregate_id": "a\0b"}, ValueError),
        ({"id": "not-a-uuid"}, TypeError),
        # An autoincrement id read before the flush.
        ({"aggregate_id": None}, ValueError),
        # What jsonb (or JSON) refuses fails here, not at the commit.
        ({"payload": {"at": datetime(2026, 1, 2, tzinfo=timezone.utc)}}, TypeError),
        ({"payload": {"amount": Decimal("9.99")}}, TypeError),
        ({"payload": {"id": uuid.uuid4()}}, TypeError),
        ({"payload": {"x": math.nan}}, TypeError),
        ({"payload": {"x": object()}, "json_default": json_default}, TypeError),
        ({"payload": {"x": Decimal("NaN")}, "json_default": json_default}, TypeError),
        ({"payload": {"s": "a\0b"}}, ValueError),
        ({"dedupe_key": 1.5}, TypeError),
        ({"dedupe_key": True}, TypeError),
        ({"dedupe_key": object()}, TypeError),
    ],
)
def test_invalid_arguments_are_refused_before_the_database(kwargs: dict, error: type) -> None:
    args = {"aggregate_type": "order", "aggregate_id": "1", "event_type": "OrderCreated", "payload": {}}
    args.update(kwargs)
    session = Session()
    with pytest.raises(error):
        emit(session, **args)
    assert not session.new


def test_payload_serializer_hook(engine: Engine, outbox: Outbox) -> None:
    at, amount, ref = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), Decimal("1234567890.123456789"), uuid.uuid4()
    body = {"at": at, "day": date(2026, 1, 2), "amount": amount, "ref": ref, "n": [1, "x"]}
    with Session(engine) as session, session.begin():
        first = emit(session, "order", 1, "OrderPaid", body, json_default=json_default, outbox=outbox)
        # The hook set on the outbox serves every emit() through it.
        second = Outbox(table=outbox.name, json_default=json_default).emit(session, "order", 2, "OrderPaid", body)
        body["n"].append("changed after emit")  # the stored event is what emit() checked
    with engine.connect() as conn:
        stored = conn.execute(text(f"SELECT id, payload FROM {outbox.name} ORDER BY aggregate_id")).all()
    expected = {"at": "2026-01-02T03:04:05+00:00", "day": "2026-01-02", "amount": "1234567890.123456789",
                "ref": str(ref), "n": [1, "x"]}
    assert [tuple(row) for row in stored] == [(first, expected), (second, expected)]
    with Session(engine) as session, session.begin():  # a backslash and "u0000" are just text
        emit(session, "order", 3, "Note", {"text": "C:\\u0000"}, outbox=outbox)
    assert scalar(engine, f"SELECT count(*) FROM {outbox.name} WHERE payload->>'text' = :t", t="C:\\u0000") == 1


def test_readme_snippet_flushes_before_reading_an_autoincrement_id(engine: Engine, outbox: Outbox) -> None:
    class Base(DeclarativeBase):
        pass

    class Order(Base):
        __tablename__ = unique_name("orders_auto")
        id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
        total_cents: Mapped[int]

    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        order = Order(total_cents=1999)
        session.add(order)
        with pytest.raises(ValueError, match="flush"):  # what the old README did: id still None
            emit(session, "order", order.id, "OrderCreated", {"order_id": order.id}, outbox=outbox)
        session.flush()  # the INSERT runs, the database assigns order.id
        emit(session, "order", order.id, "OrderCreated", {"order_id": order.id, "total_cents": order.total_cents},
             outbox=outbox)
        order_id = order.id
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT aggregate_id, payload FROM {outbox.name}")).one()
    assert isinstance(order_id, int)
    assert tuple(row) == (str(order_id), {"order_id": order_id, "total_cents": 1999})


@pytest.mark.parametrize(
    "key, text_form",
    [
        ("req-5", "req-5"),
        (42, "42"),
        (uuid.UUID("6F9619FF-8B86-D011-B42D-00C04FC964FF"), "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        (Decimal("10.50"), "10.50"),
        (date(2026, 1, 2), "2026-01-02"),
        (("o-1", 2), '["o-1","2"]'),
        (("é", ("x", 1)), '["é","[\\"x\\",\\"1\\"]"]'),
    ],
)
def test_dedupe_keys_in_their_canonical_form(key: object, text_form: str) -> None:
    assert canonical_key(key) == text_form
    assert event_id("order", 5, "OrderCreated", key) == event_id("order", "5", "OrderCreated", text_form)
    session = Session()
    assert emit(session, "order", 5, "OrderCreated", {}, dedupe_key=key) == \
        uuid.uuid5(EVENT_ID_NAMESPACE, f"order\0{5}\0OrderCreated\0{text_form}")


def test_create_outbox_creates_the_schema_when_asked(engine: Engine) -> None:
    schema, name = unique_name("billing"), unique_name("box")
    with pytest.raises(ProgrammingError, match="does not exist"):
        create_outbox(engine, table=name, schema=schema, publication=unique_name("pub"))
    create_outbox(engine, table=name, schema=schema, publication=unique_name("pub"), create_schema=True)
    create_outbox(engine, table=name, schema=schema, publication=unique_name("pub"), create_schema=True)
    assert scalar(engine, "SELECT count(*) FROM pg_tables WHERE schemaname = :s AND tablename = :t",
                  s=schema, t=name) == 1


def test_configurable_schema_and_table(engine: Engine) -> None:
    schema, name = unique_name("events"), unique_name("box")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    create_outbox(engine, table=name, schema=schema, publication=unique_name("pub"))
    box = Outbox(table=name, schema=schema)
    assert box.qualified_name == f"{schema}.{name}"
    with Session(engine) as session, session.begin():
        box.emit(session, "invoice", "9", "InvoiceIssued", {"n": 9})
    assert scalar(engine, f"SELECT count(*) FROM {schema}.{name} WHERE aggregate_type = 'invoice'") == 1
    assert Outbox(table=name, schema=schema).model is box.model  # one mapping per table


def test_flask_sqlalchemy_db_session(database: tuple[str, Engine], outbox: Outbox) -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database[1].url.render_as_string(hide_password=False)
    db = SQLAlchemy(app)

    class Order(db.Model):  # type: ignore[name-defined]
        __tablename__ = orders(outbox)
        id = db.Column(db.Integer, primary_key=True)
        total = db.Column(db.Integer, nullable=False)

    with app.app_context():
        db.session.add(Order(id=10, total=100))
        committed = emit(db.session, "order", 10, "OrderCreated", {"order_id": 10}, outbox=outbox)
        db.session.commit()
        db.session.add(Order(id=11, total=100))
        rolled_back = emit(db.session, "order", 11, "OrderCreated", {"order_id": 11}, outbox=outbox)
        db.session.flush()
        db.session.rollback()
        db.engine.dispose()
    engine = database[1]
    assert scalar(engine, f"SELECT count(*) FROM {outbox.name} WHERE id = :id", id=committed) == 1
    assert scalar(engine, f"SELECT count(*) FROM {outbox.name} WHERE id = :id", id=rolled_back) == 0
    assert scalar(engine, f"SELECT count(*) FROM {orders(outbox)}") == 1


def test_public_names() -> None:
    assert outboxd.emit is emit and outboxd.default_outbox.qualified_name == "public.outbox"
