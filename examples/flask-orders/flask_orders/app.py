"""The orders service: each order and its OrderCreated event are written in one transaction.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:54329/app python -m flask_orders.app

POST /orders {"order_id": "o-1", "customer": "ada", "sku": "widget", "quantity": 2,
"amount_cents": 1998}: 201 with the event id; 200 for a retried order id (same event id, no
second event); 409 when the sku is out of stock (the transaction, event included, rolls back).
POST /orders/batch {"orders": [...]}: several orders in one transaction, all or nothing.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from outboxd import Outbox, emit

from flask_orders.models import Order, Stock, db


def create_app(database_url: str, *, outbox_table: str = "outbox") -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 10}
    db.init_app(app)
    outbox = Outbox(table=outbox_table)

    def take_order(body: Any) -> Order:
        """Adds the order and its OrderCreated event to the session; raises ValueError when invalid."""
        try:
            order = Order(id=str(body["order_id"]), customer=str(body["customer"]), sku=str(body["sku"]),
                          quantity=int(body["quantity"]), amount_cents=int(body["amount_cents"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"bad order: {e!r}") from e
        if order.quantity <= 0 or order.amount_cents < 0:
            raise ValueError("quantity must be positive and amount_cents not negative")
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
        if reserved.rowcount != 1:
            raise LookupError(f"unknown sku {order.sku}")
        return order

    def constraint_of(error: IntegrityError) -> str | None:
        return getattr(getattr(error.orig, "diag", None), "constraint_name", None)

    @app.post("/orders")
    def create_order() -> Any:
        body = request.get_json(force=True)
        try:
            order = take_order(body)
            db.session.commit()
        except ValueError as e:
            db.session.rollback()
            return jsonify(error=str(e)), 400
        except LookupError as e:
            db.session.rollback()
            return jsonify(error=str(e)), 404
        except IntegrityError as e:
            db.session.rollback()
            if constraint_of(e) == "stock_available_check":
                return jsonify(error=f"{body.get('sku')} is out of stock", order_id=body.get("order_id")), 409
            existing = db.session.get(Order, str(body.get("order_id")))
            if existing is not None:  # a retry of an order already taken
                return jsonify(order_id=existing.id, event_id=str(existing.event_id), created=False), 200
            raise
        return jsonify(order_id=order.id, event_id=str(order.event_id), created=True), 201

    @app.post("/orders/batch")
    def create_orders() -> Any:
        """{"orders": [...]}: all or nothing, in one transaction (e.g. an import)."""
        body = request.get_json(force=True)
        try:
            orders = [take_order(item) for item in body["orders"]]
            db.session.commit()
        except (ValueError, KeyError, TypeError) as e:
            db.session.rollback()
            return jsonify(error=f"bad batch: {e}"), 400
        except LookupError as e:
            db.session.rollback()
            return jsonify(error=str(e)), 404
        except IntegrityError as e:
            db.session.rollback()
            return jsonify(error=f"batch refused, nothing taken: {constraint_of(e) or e.orig}"), 409
        return jsonify(orders=[{"order_id": o.id, "event_id": str(o.event_id)} for o in orders]), 201

    @app.get("/orders/<order_id>")
    def get_order(order_id: str) -> Any:
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
