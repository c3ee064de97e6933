"""Not a test module: scripts/python-test.sh runs ``mypy --strict`` on it, so that emit() keeps
accepting an ``AsyncSession`` (and Flask-SQLAlchemy's scoped session) in the types."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from outboxd import Outbox, emit, json_default


async def place_order(sessions: async_sessionmaker[AsyncSession], order_id: int) -> uuid.UUID:
    async with sessions() as session, session.begin():
        event = emit(session, "order", order_id, "OrderCreated",
                     {"order_id": order_id, "total": Decimal("19.99"), "at": datetime.now(timezone.utc)},
                     json_default=json_default, dedupe_key=("order", order_id))
        Outbox(table="outbox").emit(session, "order", order_id, "OrderNoted", {})
        return event


def sessions(url: str) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(create_async_engine(url))
