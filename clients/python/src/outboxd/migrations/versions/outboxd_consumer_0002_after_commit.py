"""outboxd: the after_commit column of processed_events (outboxd 0.2), and the purge procedure.

Names from alembic.ini: outboxd_processed_table (processed_events), outboxd_schema (public).

Revision ID: outboxd_consumer_0002
Revises: outboxd_consumer_0001
Create Date: 2026-12-08
"""

from alembic import context

from outboxd.migrations import downgrade_processed_events_purge, upgrade_processed_events, \
    upgrade_processed_events_purge
from outboxd.schema import quote_ident

revision = "outboxd_consumer_0002"
down_revision = "outboxd_consumer_0001"
branch_labels = None
depends_on = None


def _names() -> tuple[str, str]:
    config = context.config
    return (config.get_main_option("outboxd_processed_table") or "processed_events",
            config.get_main_option("outboxd_schema") or "public")


def upgrade() -> None:
    table, schema = _names()
    upgrade_processed_events(table=table, schema=schema)  # idempotent: adds the after_commit column
    upgrade_processed_events_purge(schema=schema)


def downgrade() -> None:
    from alembic import op

    table, schema = _names()
    downgrade_processed_events_purge(schema=schema)
    op.execute(f"ALTER TABLE {quote_ident(schema)}.{quote_ident(table)} DROP COLUMN IF EXISTS after_commit")
