"""outboxd: the processed_events table of IdempotentConsumer (in the consumer's database).

Names from alembic.ini: outboxd_processed_table (processed_events), outboxd_schema (public).

Revision ID: outboxd_consumer_0001
Revises:
Create Date: 2026-11-27
"""

from alembic import context

from outboxd.migrations import downgrade_processed_events, upgrade_processed_events

revision = "outboxd_consumer_0001"
down_revision = None
branch_labels = ("outboxd_consumer",)
depends_on = None


def _names() -> dict[str, str]:
    config = context.config
    return {
        "table": config.get_main_option("outboxd_processed_table") or "processed_events",
        "schema": config.get_main_option("outboxd_schema") or "public",
    }


def upgrade() -> None:
    upgrade_processed_events(**_names())


def downgrade() -> None:
    downgrade_processed_events(**_names())
