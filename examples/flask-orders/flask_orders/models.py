"""Tables of the example: orders and stock (the orders service), charges (billing)."""

from __future__ import annotations

import uuid
from datetime import datetime

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import CheckConstraint, DateTime, Integer, Text, Uuid, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


# The models subclass Base itself rather than db.Model (a subclass Flask-SQLAlchemy makes at run
# time, typed Any): same metadata, same sessions, and mypy --strict sees the mapped columns.
db = SQLAlchemy(model_class=Base)


class Order(Base):
    __tablename__ = "orders"

    # Chosen by the client, so that a retried POST names the same order.
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    customer: Mapped[str] = mapped_column(Text)
    sku: Mapped[str] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer)
    amount_cents: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Stock(Base):
    __tablename__ = "stock"
    __table_args__ = (CheckConstraint("available >= 0", name="stock_available_check"),)

    sku: Mapped[str] = mapped_column(Text, primary_key=True)
    available: Mapped[int] = mapped_column(Integer)


class Charge(Base):
    """One charge per order: the unique order_id is billing's own last line of defence."""

    __tablename__ = "charges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(Text, unique=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    charged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Receipt(Base):
    """One receipt per order (the mailer's record of SendReceipt commands it handled)."""

    __tablename__ = "receipts"

    order_id: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
