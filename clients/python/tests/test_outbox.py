"""emit(): the outbox row commits and rolls back with the business rows; deterministic ids."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import outboxd
from outboxd import EVENT_ID_NAMESPACE, Outbox, emit, event_id
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
    ],
)
def test_invalid_arguments_are_refused_before_the_database(kwargs: dict, error: type) -> None:
    args = {"aggregate_type": "order", "aggregate_id": "1", "event_type": "OrderCreated", "payload": {}}
    args.update(kwargs)
    session = Session()
    with pytest.raises(error):
        emit(session, **args)
    assert not session.new


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
