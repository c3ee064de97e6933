"""The orders service: each order and its OrderCreated event are written in one transaction.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:54329/app PORT=8080 python -m flask_orders.app

POST /orders {"order_id": "o-1", "customer": "ada", "sku": "widget", "quantity": 2,
"amount_cents": 1998}: 201 with the event id; 200 for a retry (same order id and same body: same
event id, no second event); 409 when the order id exists with a different body, or the sku is
out of stock (the transaction, event included, rolls back); 400 for a malformed order; 404 for
an unknown sku. POST /orders/batch {"orders": [...]}: several orders in one transaction, all or
nothing, retried like single ones: 201 when it created any order, 200 when all were there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import CursorResult, update
from sqlalchemy.exc import IntegrityError

from outboxd import Outbox, emit

from flask_orders.models import Order, Stock, db


#: Limits of the input (the columns are 32-bit integers; ids and names are bounded text).
MAX_QUANTITY = 10_000
MAX_AMOUNT_CENTS = 2**31 - 1
MAX_TEXT = 200
MAX_BATCH = 1000
FIELDS = ("order_id", "customer", "sku", "quantity", "amount_cents")


class BadOrder(ValueError):
    """The request is malformed: 400."""


class Conflict(Exception):
    """The order id exists with another body: 409."""


class Refused(Exception):
    """The transaction was refused: the HTTP status and the JSON body to answer."""

    def __init__(self, status: int, **payload: str) -> None:
        super().__init__(payload.get("error", ""))
        self.status, self.payload = status, payload


@dataclass(frozen=True)
class OrderIn:
    """A validated order, as the client sent it."""

    order_id: str
    customer: str
    sku: str
    quantity: int
    amount_cents: int

    def matches(self, order: Order) -> bool:
        return (order.customer, order.sku, order.quantity, order.amount_cents) == \
            (self.customer, self.sku, self.quantity, self.amount_cents)


def parse_order(body: object, where: str = "order") -> OrderIn:
    """Checks types and ranges; no coercion (2.9 is not 2, "2" is not 2, null is not "None")."""
    if not isinstance(body, dict):
        raise BadOrder(f"{where} must be a JSON object")
    missing = [name for name in FIELDS if name not in body]
    unknown = sorted(set(body) - set(FIELDS))
    if missing or unknown:
        raise BadOrder(f"{where}: missing {missing}, unknown {unknown}" if unknown else f"{where}: missing {missing}")
    texts = {}
    for name in ("order_id", "customer", "sku"):
        value = body[name]
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT or "\0" in value:
            raise BadOrder(f"{where}: {name} must be a non-blank string of at most {MAX_TEXT} characters")
        texts[name] = value
    numbers = {}
    for name, low, high in (("quantity", 1, MAX_QUANTITY), ("amount_cents", 0, MAX_AMOUNT_CENTS)):
        value = body[name]
        # bool is an int in Python, not in JSON's eyes; 2.0 and 2.9 are not integers here.
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise BadOrder(f"{where}: {name} must be an integer from {low} to {high}")
        numbers[name] = value
    return OrderIn(order_id=texts["order_id"], customer=texts["customer"], sku=texts["sku"],
                   quantity=numbers["quantity"], amount_cents=numbers["amount_cents"])


def create_app(database_url: str, *, outbox_table: str = "outbox") -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 10}
    db.init_app(app)
    outbox = Outbox(table=outbox_table)

    def take_order(spec: OrderIn) -> tuple[Order, bool]:
        """Adds the order and its OrderCreated event to the session, or finds the same order
        taken before (a retry); returns it and whether it is new. Raises Conflict, LookupError."""
        existing = db.session.get(Order, spec.order_id)
        if existing is not None:
            if not spec.matches(existing):
                raise Conflict(f"order {spec.order_id} exists with a different body")
            return existing, False
        order = Order(id=spec.order_id, customer=spec.customer, sku=spec.sku, quantity=spec.quantity,
                      amount_cents=spec.amount_cents)
        headers = {"traceparent": request.headers["traceparent"]} if "traceparent" in request.headers else None
        # The order id is the natural key of its OrderCreated: a retried request emits the same id.
        order.event_id = emit(db.session, "order", order.id, "OrderCreated",
                              {"order_id": order.id, "customer": order.customer, "sku": order.sku,
                               "quantity": order.quantity, "amount_cents": order.amount_cents},
                              headers, dedupe_key=order.id, outbox=outbox)
        db.session.add(order)
        # Autoflush inserts the order and the outbox row first; then the stock goes down, and
        # the CHECK constraint refuses to go below zero (IntegrityError).
        reserved = db.session.execute(
            update(Stock).where(Stock.sku == order.sku).values(available=Stock.available - order.quantity))
        if cast("CursorResult[Any]", reserved).rowcount != 1:
            raise LookupError(f"unknown sku {order.sku}")
        return order, True

    def constraint_of(error: IntegrityError) -> str | None:
        name: str | None = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
        return name

    def take_all(specs: list[OrderIn]) -> list[tuple[Order, bool]]:
        """Takes every order in one transaction, all or nothing; raises Refused. A concurrent
        request that inserted the same order id first makes the insert fail on the primary key:
        then the whole transaction runs once more and finds that order (a retry like any other)."""
        for attempt in range(2):
            try:
                taken = [take_order(spec) for spec in specs]
                db.session.commit()
                return taken
            except Conflict as e:
                db.session.rollback()
                raise Refused(409, error=str(e)) from e
            except LookupError as e:
                db.session.rollback()
                raise Refused(404, error=str(e)) from e
            except IntegrityError as e:
                db.session.rollback()
                if constraint_of(e) == "stock_available_check":
                    if len(specs) == 1:
                        raise Refused(409, error=f"{specs[0].sku} is out of stock", order_id=specs[0].order_id) from e
                    raise Refused(409, error="batch refused, nothing taken: stock_available_check") from e
                if constraint_of(e) != "orders_pkey" or attempt == 1:
                    raise
        raise AssertionError("unreachable")

    @app.post("/orders")
    def create_order() -> ResponseReturnValue:
        try:
            (order, created), = take_all([parse_order(request.get_json(silent=True))])
        except BadOrder as e:
            return jsonify(error=str(e)), 400
        except Refused as e:
            return jsonify(**e.payload), e.status
        return jsonify(order_id=order.id, event_id=str(order.event_id), created=created), 201 if created else 200

    @app.post("/orders/batch")
    def create_orders() -> ResponseReturnValue:
        """{"orders": [...]}: all or nothing, in one transaction (e.g. an import)."""
        body = request.get_json(silent=True)
        items = body.get("orders") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
            return jsonify(error=f"bad batch: orders must be a list of 1 to {MAX_BATCH} orders"), 400
        try:
            taken = take_all([parse_order(item, f"orders[{n}]") for n, item in enumerate(items)])
        except BadOrder as e:
            return jsonify(error=f"bad batch: {e}"), 400
        except Refused as e:
            return jsonify(**e.payload), e.status
        created = any(new for _, new in taken)
        return jsonify(orders=[{"order_id": o.id, "event_id": str(o.event_id), "created": new}
                               for o, new in taken]), 201 if created else 200

    @app.get("/orders/<order_id>")
    def get_order(order_id: str) -> ResponseReturnValue:
        order = db.session.get(Order, order_id)
        if order is None:
            return jsonify(error="no such order"), 404
        return jsonify(order_id=order.id, customer=order.customer, sku=order.sku, quantity=order.quantity,
                       amount_cents=order.amount_cents, event_id=str(order.event_id))

    return app


def main() -> None:
    url = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:54329/app")
    create_app(url).run(host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))


if __name__ == "__main__":
    main()
