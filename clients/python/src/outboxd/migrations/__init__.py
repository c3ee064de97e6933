"""Alembic support: revisions that create the outbox table and publication, and the consumer's
processed_events table.

Two ways to use them:

1. Add this package's revisions to your Alembic environment (``alembic.ini``)::

       version_locations = %(here)s/migrations/versions outboxd.migrations:versions

   (Alembic accepts ``package:directory`` locations), then ``alembic upgrade outboxd@head``
   creates the outbox, ``alembic upgrade outboxd_consumer@head`` the processed_events table.
   Both are branches with no parent, independent of your own revisions. Names come from
   ``alembic.ini`` options ``outboxd_table`` (default ``outbox``), ``outboxd_schema``
   (``public``), ``outboxd_publication`` (``outboxd``), ``outboxd_processed_table``
   (``processed_events``).

2. Or call the helpers from one of your own revisions::

       from outboxd.migrations import upgrade_outbox, downgrade_outbox

       def upgrade() -> None:
           upgrade_outbox(table="outbox", schema="public", publication="outboxd")

       def downgrade() -> None:
           downgrade_outbox(table="outbox", schema="public", publication="outboxd")

The resulting table and publication are those of sql/outbox.sql.
"""

from __future__ import annotations

from pathlib import Path

from outboxd import schema as _ddl

__all__ = [
    "downgrade_outbox",
    "downgrade_processed_events",
    "upgrade_outbox",
    "upgrade_processed_events",
    "versions_dir",
]


def versions_dir() -> Path:
    """The directory holding outboxd's Alembic revision files."""
    return Path(__file__).resolve().parent / "versions"


def _execute(statements: list[str]) -> None:
    from alembic import op

    for statement in statements:
        op.execute(statement)


def upgrade_outbox(table: str = "outbox", schema: str = "public", publication: str = "outboxd") -> None:
    """Inside an Alembic revision: creates the outbox table and publication (idempotent)."""
    _execute(_ddl.outbox_ddl(table, schema, publication))


def downgrade_outbox(table: str = "outbox", schema: str = "public", publication: str = "outboxd") -> None:
    """Inside an Alembic revision: removes the table from the publication and drops it."""
    _execute(_ddl.drop_outbox_ddl(table, schema, publication))


def upgrade_processed_events(table: str = "processed_events", schema: str = "public") -> None:
    """Inside an Alembic revision: creates the consumer's processed_events table."""
    _execute(_ddl.processed_events_ddl(table, schema))


def downgrade_processed_events(table: str = "processed_events", schema: str = "public") -> None:
    """Inside an Alembic revision: drops the processed_events table."""
    _execute([f"DROP TABLE IF EXISTS {_ddl.quote_ident(schema)}.{_ddl.quote_ident(table)}"])
