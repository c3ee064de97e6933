"""The orders API on the real PostgreSQL, through Flask's test client: input validation, retries
of single orders and batches (same body: 200 and the same event; different body: 409)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from outboxd.testing import pg_url, scalar, temp_database

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask_orders.app import MAX_QUANTITY, create_app  # noqa: E402
from flask_orders.schema import init_db  # noqa: E402


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Any]]:
    with temp_database("flask_orders_api") as (dbname, engine):
        init_db(engine, stock={"widget": 1_000_000, "limited": 1})
        yield dbname, engine


@pytest.fixture
def client(database: tuple[str, Any]) -> Iterator[FlaskClient]:
    app = create_app(pg_url(database[0]))
    with app.test_client() as client:
        yield client


_counter = iter(range(1_000_000))


def order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"order_id": f"api-{next(_counter)}", "customer": "ada", "sku": "widget",
                            "quantity": 2, "amount_cents": 1998}
    body.update(changes)
    return body


def counts(database: tuple[str, Any], order_id: str) -> tuple[int, int]:
    engine = database[1]
    return (scalar(engine, "SELECT count(*) FROM orders WHERE id = :id", id=order_id),
            scalar(engine, "SELECT count(*) FROM outbox WHERE aggregate_id = :id", id=order_id))


@pytest.mark.parametrize("changes", [
    {"order_id": None}, {"order_id": ""}, {"order_id": "   "}, {"order_id": 7}, {"order_id": "x" * 201},
    {"customer": None}, {"sku": ["widget"]},
    {"quantity": 2.9}, {"quantity": 2.0}, {"quantity": "2"}, {"quantity": True}, {"quantity": 0},
    {"quantity": -1}, {"quantity": MAX_QUANTITY + 1}, {"quantity": 10**30},
    {"amount_cents": -1}, {"amount_cents": 2**31}, {"amount_cents": None}, {"colour": "red"},
])
def test_invalid_orders_are_400_and_take_nothing(client: FlaskClient, database: tuple[str, Any],
                                                 changes: dict[str, Any]) -> None:
    body = order(**changes)
    response = client.post("/orders", json=body)
    assert response.status_code == 400, response.get_json()
    if isinstance(body["order_id"], str):
        assert counts(database, body["order_id"]) == (0, 0)
    # The same order inside a batch refuses the whole batch.
    good = order()
    assert client.post("/orders/batch", json={"orders": [good, body]}).status_code == 400
    assert counts(database, good["order_id"]) == (0, 0)


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b"null"])
def test_a_body_that_is_not_an_object_is_400(client: FlaskClient, raw: bytes) -> None:
    assert client.post("/orders", data=raw, content_type="application/json").status_code == 400
    assert client.post("/orders/batch", data=raw, content_type="application/json").status_code == 400
    assert client.post("/orders/batch", json={"orders": []}).status_code == 400


def test_missing_field_is_a_missing_key_not_missing_value(client: FlaskClient) -> None:
    body = order()
    del body["sku"]
    response = client.post("/orders", json=body)
    assert response.status_code == 400 and "sku" in response.get_json()["error"]


def test_a_retry_with_the_same_body_is_200_and_a_different_body_409(client: FlaskClient,
                                                                   database: tuple[str, Any]) -> None:
    body = order()
    first = client.post("/orders", json=body)
    assert first.status_code == 201 and first.get_json()["created"] is True
    again = client.post("/orders", json=body)
    assert again.status_code == 200
    assert again.get_json() == {**first.get_json(), "created": False}
    for changes in ({"quantity": 3}, {"amount_cents": 1}, {"customer": "bob"}, {"sku": "limited"}):
        changed = client.post("/orders", json={**body, **changes})
        assert changed.status_code == 409, changes
        assert "different body" in changed.get_json()["error"]
    assert counts(database, body["order_id"]) == (1, 1)


def test_a_batch_retry_is_like_a_single_retry(client: FlaskClient, database: tuple[str, Any]) -> None:
    batch = [order(), order(), order()]
    first = client.post("/orders/batch", json={"orders": batch})
    assert first.status_code == 201
    assert [o["created"] for o in first.get_json()["orders"]] == [True, True, True]
    again = client.post("/orders/batch", json={"orders": batch})
    assert again.status_code == 200
    assert again.get_json()["orders"] == [{**o, "created": False} for o in first.get_json()["orders"]]
    # Partly new: the known orders are retries (same events), the new one is created.
    extra = order()
    mixed = client.post("/orders/batch", json={"orders": [batch[0], extra]})
    assert mixed.status_code == 201
    assert [(o["order_id"], o["created"]) for o in mixed.get_json()["orders"]] == \
        [(batch[0]["order_id"], False), (extra["order_id"], True)]
    # A retried batch whose body changed: 409, and nothing of it is taken.
    newcomer = order()
    changed = client.post("/orders/batch", json={"orders": [newcomer, {**batch[1], "quantity": 9}]})
    assert changed.status_code == 409
    assert counts(database, newcomer["order_id"]) == (0, 0)
    for item in batch + [extra]:
        assert counts(database, item["order_id"]) == (1, 1)
    # A single retry of an order that came in a batch: the same event.
    single = client.post("/orders", json=batch[2])
    assert single.status_code == 200 and single.get_json()["event_id"] == first.get_json()["orders"][2]["event_id"]


def test_out_of_stock_and_unknown_sku(client: FlaskClient, database: tuple[str, Any]) -> None:
    taken = client.post("/orders", json=order(sku="limited", quantity=1))
    assert taken.status_code == 201
    refused = order(sku="limited", quantity=1)
    response = client.post("/orders", json=refused)
    assert response.status_code == 409 and "out of stock" in response.get_json()["error"]
    assert counts(database, refused["order_id"]) == (0, 0)
    unknown = order(sku="gizmo")
    assert client.post("/orders", json=unknown).status_code == 404
    assert counts(database, unknown["order_id"]) == (0, 0)


def test_the_example_outboxd_config_does_not_take_the_stacks_port() -> None:
    import tomllib

    repo = Path(__file__).resolve().parents[3]
    example = tomllib.loads((repo / "examples/flask-orders/outboxd.toml").read_text())
    stack = tomllib.loads((repo / "deploy/local/outboxd.toml").read_text())
    assert example["http"]["listen"] != stack["http"]["listen"]
    assert example["source"]["slot"] != stack["source"].get("slot")
