"""A Flask + Flask-SQLAlchemy app built with the outboxd extension, for tests/test_flask_extension.py:
POST /customers registers a customer and emits CustomerRegistered (a dataclass); ``welcome`` is
the handler that ``flask --app customers_app outboxd consume`` runs. Settings from FLASK_* variables.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, Text, Uuid
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from outboxd import Event, after_commit
from outboxd.flask import Outboxd


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
outboxd = Outboxd()


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(Text, unique=True)


class Welcome(Base):
    __tablename__ = "welcomes"
    customer_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)


@dataclass(frozen=True)
class CustomerRegistered:
    customer_id: int
    email: str


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_prefixed_env()  # FLASK_SQLALCHEMY_DATABASE_URI, FLASK_OUTBOXD_KAFKA_BOOTSTRAP, ...
    db.init_app(app)
    outboxd.init_app(app)

    @app.post("/customers")
    def register() -> ResponseReturnValue:
        customer = Customer(email=str((request.get_json(silent=True) or {}).get("email", "")))
        db.session.add(customer)
        try:
            db.session.flush()
            event = outboxd.emit("customer", customer.id, "CustomerRegistered",
                                 CustomerRegistered(customer.id, customer.email))
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            return jsonify(error="already registered"), 409
        return jsonify(customer_id=customer.id, event_id=str(event)), 201

    return app


def send_welcome_email(event: Event, *, to: str) -> None:
    """The e-mail provider; ``event.id`` is the idempotency key."""
    with open(os.environ["EMAIL_LOG"], "a") as log:
        log.write(f"{event.id} {to}\n")


def welcome(session: Session, event: Event) -> None:
    """The handler: through db.session (the consumer's session, inside its savepoint)."""
    registered = event.payload_as(CustomerRegistered)
    db.session.add(Welcome(customer_id=registered.customer_id, event_id=event.id))
    after_commit(session, send_welcome_email, to=registered.email)
