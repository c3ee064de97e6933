"""DDL for the outbox table, its publication, and the consumer's processed_events table.

``outbox_ddl()`` produces the same table and publication as the repository's sql/outbox.sql (a
test compares the two on a real server), for any table name and schema; the Alembic revisions in
``outboxd.migrations`` and ``create_outbox()`` run it. Every statement is idempotent.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

__all__ = [
    "create_outbox",
    "create_processed_events",
    "drop_outbox",
    "drop_processed_events",
    "outbox_ddl",
    "drop_outbox_ddl",
    "processed_events_ddl",
    "quote_ident",
]


def quote_ident(name: str) -> str:
    """Quotes an SQL identifier, as PostgreSQL's quote_ident() does for any name."""
    if not name or "\0" in name:
        raise ValueError(f"invalid SQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def outbox_ddl(table: str = "outbox", schema: str = "public", publication: str = "outboxd", *,
               create_schema: bool = False) -> list[str]:
    """The statements that create the outbox table and add it to ``publication``.

    With ``create_schema``, first ``CREATE SCHEMA IF NOT EXISTS`` (without it a missing schema is
    an error: creating one is usually a decision of the database's owner).

    The publication is created with ``publish = 'insert'`` when missing; an existing one that
    lacks the table gets it added. Needs wal_level = logical only later, for outboxd to stream;
    creating a publication needs the database's CREATE privilege (and ownership of the table).
    """
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    pub = quote_ident(publication)
    schema_ddl = [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"] if create_schema else []
    return schema_ddl + [
        f"""CREATE TABLE IF NOT EXISTS {qualified} (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    headers        jsonb,
    destination    text,
    created_at     timestamptz NOT NULL DEFAULT now()
)""",
        f"""DO $outboxd$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = {_literal(publication)}) THEN
        CREATE PUBLICATION {pub} FOR TABLE {qualified} WITH (publish = 'insert');
    ELSIF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables
                      WHERE pubname = {_literal(publication)} AND schemaname = {_literal(schema)}
                        AND tablename = {_literal(table)}) THEN
        ALTER PUBLICATION {pub} ADD TABLE {qualified};
    END IF;
END
$outboxd$""",
    ]


def drop_outbox_ddl(table: str = "outbox", schema: str = "public", publication: str = "outboxd") -> list[str]:
    """The reverse of ``outbox_ddl``: the table leaves the publication (dropped once empty), then goes.

    Dropping the outbox does not drop outboxd's replication slot: drop an abandoned slot with
    ``pg_drop_replication_slot`` so that it does not retain WAL.
    """
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    pub = quote_ident(publication)
    return [
        f"""DO $outboxd$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables
               WHERE pubname = {_literal(publication)} AND schemaname = {_literal(schema)}
                 AND tablename = {_literal(table)}) THEN
        IF (SELECT count(*) FROM pg_catalog.pg_publication_tables WHERE pubname = {_literal(publication)}) = 1 THEN
            DROP PUBLICATION {pub};
        ELSE
            ALTER PUBLICATION {pub} DROP TABLE {qualified};
        END IF;
    END IF;
END
$outboxd$""",
        f"DROP TABLE IF EXISTS {qualified}",
    ]


def processed_events_ddl(table: str = "processed_events", schema: str = "public", *,
                         create_schema: bool = False) -> list[str]:
    """The table where ``IdempotentConsumer`` records each event it processed, per consumer group.

    The primary key (consumer_group, event_id) is the de-duplication: the consumer inserts the
    event id in the handler's transaction, and a second insert of the same id finds the row.
    ``after_commit`` holds the handler's ``outboxd.after_commit`` registrations until they ran
    (NULL otherwise). The last statement adds that column to a table made by outboxd 0.1, so that
    running these statements again upgrades it.
    """
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    schema_ddl = [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"] if create_schema else []
    return schema_ddl + [
        f"""CREATE TABLE IF NOT EXISTS {qualified} (
    consumer_group  text        NOT NULL,
    event_id        uuid        NOT NULL,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    after_commit    jsonb,
    PRIMARY KEY (consumer_group, event_id)
)""",
        f"ALTER TABLE {qualified} ADD COLUMN IF NOT EXISTS after_commit jsonb",
    ]


def _run(bind: Engine | Connection, statements: list[str]) -> None:
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    else:
        for statement in statements:
            bind.execute(text(statement))


def create_outbox(bind: Engine | Connection, table: str = "outbox", schema: str = "public",
                  publication: str = "outboxd", *, create_schema: bool = False) -> None:
    """Creates the outbox table and publication (idempotent), and the schema too with
    ``create_schema=True``. An Engine commits; a Connection is left for the caller to commit."""
    _run(bind, outbox_ddl(table, schema, publication, create_schema=create_schema))


def drop_outbox(bind: Engine | Connection, table: str = "outbox", schema: str = "public",
                publication: str = "outboxd") -> None:
    """Drops what ``create_outbox`` created."""
    _run(bind, drop_outbox_ddl(table, schema, publication))


def create_processed_events(bind: Engine | Connection, table: str = "processed_events",
                            schema: str = "public", *, create_schema: bool = False) -> None:
    """Creates the consumer's processed_events table (idempotent), and its schema with ``create_schema``."""
    _run(bind, processed_events_ddl(table, schema, create_schema=create_schema))


def drop_processed_events(bind: Engine | Connection, table: str = "processed_events",
                          schema: str = "public") -> None:
    """Drops the processed_events table."""
    _run(bind, [f"DROP TABLE IF EXISTS {quote_ident(schema)}.{quote_ident(table)}"])
