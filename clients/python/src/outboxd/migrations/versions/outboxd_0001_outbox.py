"""outboxd: the outbox table and its publication, as sql/outbox.sql.

Names from alembic.ini: outboxd_table (outbox), outboxd_schema (public),
outboxd_publication (outboxd). Copy this file into your own versions directory, or add
``outboxd.migrations:versions`` to ``version_locations``.

Revision ID: outboxd_0001
Revises:
Create Date: 2026-11-27
"""

from typing import Any

from alembic import context

from outboxd.migrations import downgrade_outbox, upgrade_outbox

revision = "outboxd_0001"
down_revision = None
branch_labels = ("outboxd",)
depends_on = None


def _names() -> dict[str, Any]:
    config = context.config
    return {
        "table": config.get_main_option("outboxd_table") or "outbox",
        "schema": config.get_main_option("outboxd_schema") or "public",
        "publication": config.get_main_option("outboxd_publication") or "outboxd",
        "create_schema": (config.get_main_option("outboxd_create_schema") or "false").lower() in ("true", "1", "yes"),
    }


def upgrade() -> None:
    upgrade_outbox(**_names())


def downgrade() -> None:
    names = _names()
    del names["create_schema"]
    downgrade_outbox(**names)
