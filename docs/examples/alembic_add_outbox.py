"""Add the transactional outbox for outboxd, without downtime.

An Alembic migration that mirrors sql/outbox.sql: the table public.outbox, the
publication outboxd (publish = 'insert') and outbox_emit(). Copy it into your
alembic/versions/ directory and set down_revision to your current head.

Why it needs no downtime (docs/zero-downtime.md):
  * it only creates new objects: no lock on any existing table, so the
    service's traffic never waits for it;
  * every statement is idempotent (IF NOT EXISTS, or guarded), so a retried or
    partially applied deploy converges;
  * lock_timeout bounds the one lock it could wait for (its own new table,
    taken by CREATE PUBLICATION), so it fails fast instead of queueing.

Run it as the role that will own the outbox (the service's migration role): it
needs CREATE on the schema and on the database (for the publication). The
outboxd role itself is created separately by a superuser (sql/role.sql).
Prerequisite: wal_level = logical (the one setting that needs a restart).
"""

from alembic import op

revision = "b7d1c0ffee01"
down_revision = None  # set to your current head
branch_labels = None
depends_on = None

OUTBOX_TABLE = """
CREATE TABLE IF NOT EXISTS public.outbox (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    headers        jsonb,
    destination    text,
    created_at     timestamptz NOT NULL DEFAULT now()
)
"""

# CREATE PUBLICATION has no IF NOT EXISTS; add the table to an existing
# publication instead of failing, as sql/outbox.sql does.
OUTBOX_PUBLICATION = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = 'outboxd') THEN
        CREATE PUBLICATION outboxd FOR TABLE public.outbox WITH (publish = 'insert');
    ELSIF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables
                      WHERE pubname = 'outboxd' AND schemaname = 'public' AND tablename = 'outbox') THEN
        ALTER PUBLICATION outboxd ADD TABLE public.outbox;
    END IF;
END
$$
"""

OUTBOX_EMIT = """
CREATE OR REPLACE FUNCTION public.outbox_emit(
    aggregate_type text,
    aggregate_id   text,
    event_type     text,
    payload        jsonb,
    headers        jsonb DEFAULT NULL,
    destination    text  DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql
VOLATILE
AS $$
DECLARE
    event_id uuid := gen_random_uuid();
BEGIN
    IF aggregate_type IS NULL OR aggregate_id IS NULL OR event_type IS NULL OR payload IS NULL THEN
        RAISE EXCEPTION 'outbox_emit: aggregate_type, aggregate_id, event_type and payload must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM pg_catalog.pg_logical_emit_message(
        true,
        'outbox',
        jsonb_build_object(
            'id',             event_id,
            'aggregate_type', aggregate_type,
            'aggregate_id',   aggregate_id,
            'event_type',     event_type,
            'payload',        payload,
            'headers',        headers,
            'destination',    destination,
            'created_at',     now()
        )::text);
    RETURN event_id;
END
$$
"""


def upgrade() -> None:
    # Alembic runs the migration in one transaction: SET LOCAL lasts until its end.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(OUTBOX_TABLE)
    op.execute(OUTBOX_PUBLICATION)
    op.execute(OUTBOX_EMIT)


def downgrade() -> None:
    # Stop outboxd and drop its slot first
    # (SELECT pg_drop_replication_slot('outboxd')): a slot whose publication
    # disappears stops streaming with "publication does not exist".
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("DROP FUNCTION IF EXISTS public.outbox_emit(text, text, text, jsonb, jsonb, text)")
    op.execute("DROP PUBLICATION IF EXISTS outboxd")
    op.execute("DROP TABLE IF EXISTS public.outbox")
