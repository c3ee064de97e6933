"""Creates the example's tables, the outbox and its publication, and processed_events.

    python -m flask_orders.schema [DATABASE_URL]

In a real service these come from Alembic revisions (outboxd.migrations has the outbox's).
"""

from __future__ import annotations

import os
import sys

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from outboxd.schema import create_outbox, create_processed_events

from flask_orders.models import Base, Stock

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:54329/app"


def init_db(engine: Engine, *, outbox_table: str = "outbox", publication: str = "outboxd",
            stock: dict[str, int] | None = None) -> None:
    """Creates every table (idempotent) and sets the stock levels given."""
    Base.metadata.create_all(engine)
    create_outbox(engine, table=outbox_table, publication=publication)
    create_processed_events(engine)
    with Session(engine) as session, session.begin():
        for sku, available in (stock or {"widget": 1_000_000, "limited": 0}).items():
            session.merge(Stock(sku=sku, available=available))


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DATABASE_URL", DEFAULT_URL)
    init_db(create_engine(url))
    print(f"flask-orders: tables, outbox and publication ready in {url}")


if __name__ == "__main__":
    main()
