"""outboxd: the processed_events table of IdempotentConsumer (in the consumer's database).

Names from alembic.ini: outboxd_processed_table (processed_events), outboxd_schema (public).

Revision ID: outboxd_consumer_0001
Revises:
Create Date: 2026-11-27
"""

from typing import Any

from alembic import context

from outboxd.migrations import downgrade_processed_events, upgrade_processed_events

revision = "outboxd_consumer_0001"
down_revision = None
branch_labels = ("outboxd_consumer",)
depends_on = None


def _names() -> dict[str, Any]:
    config = context.config
    return {
        "table": config.get_main_option("outboxd_processed_table") or "processed_events",
        "schema": config.get_main_option("outboxd_schema") or "public",
        "create_schema": (config.get_main_option("outboxd_create_schema") or "false").lower() in ("true", "1", "yes"),
    }


def upgrade() -> None:
    upgrade_processed_events(**_names())


def downgrade() -> None:
    names = _names()
    del names["create_schema"]
    downgrade_processed_events(**names)
