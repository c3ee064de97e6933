"""Alembic support: the outbox table and publication, and the consumer's processed_events table.

Recommended (one head, works the same under plain Alembic and Flask-Migrate): put the tables in
one of your own revisions. ``alembic revision -m "outbox"`` (or ``flask db revision -m
"outbox"``), then in the new file::

    from outboxd.migrations import downgrade_outbox, upgrade_outbox

    def upgrade() -> None:
        upgrade_outbox(table="outbox", schema="public", publication="outboxd")

    def downgrade() -> None:
        downgrade_outbox(table="outbox", schema="public", publication="outboxd")

(``upgrade_processed_events`` / ``downgrade_processed_events`` on the consumer's side.) It is a
revision of your chain like any other, so ``alembic upgrade head`` / ``flask db upgrade`` run it.

Autogenerate: your models' metadata does not have these tables, so ``--autogenerate`` (``flask
db migrate``) would emit ``op.drop_table`` for them. Pass ``include_object``::

    # env.py (plain Alembic)
    from outboxd.migrations import exclude_outbox_tables
    context.configure(..., include_object=exclude_outbox_tables())

    # Flask-Migrate: its env.py passes Migrate's keyword arguments to context.configure
    Migrate(app, db, include_object=exclude_outbox_tables())

Or the packaged revisions, as a branch of their own: add ``outboxd.migrations:versions`` to
``version_locations`` in ``alembic.ini``. That value contains a colon, so ``path_separator``
must not be ``os`` (what ``alembic init`` writes; on POSIX it splits the value at the colon and
the revisions silently vanish): use ``path_separator = space``::

    path_separator = space
    version_locations = %(here)s/alembic/versions outboxd.migrations:versions

The branches ``outboxd`` and ``outboxd_consumer`` have no parent, so the environment then has
two or three heads: ``alembic upgrade head`` (and ``flask db upgrade``) refuses, ``alembic
upgrade heads`` runs them all. Do not ``alembic merge`` them: Alembic would write the merge
revision into the installed package's directory. For one head, use your own revision (above).
Names come from ``alembic.ini`` options ``outboxd_table`` (default ``outbox``),
``outboxd_schema`` (``public``), ``outboxd_publication`` (``outboxd``),
``outboxd_processed_table`` (``processed_events``), ``outboxd_create_schema`` (``false``).

The resulting table and publication are those of sql/outbox.sql.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from outboxd import purge as _purge
from outboxd import schema as _ddl

__all__ = [
    "IncludeObject",
    "downgrade_outbox",
    "downgrade_outbox_purge",
    "downgrade_processed_events",
    "downgrade_processed_events_purge",
    "exclude_outbox_tables",
    "upgrade_outbox",
    "upgrade_outbox_purge",
    "upgrade_processed_events",
    "upgrade_processed_events_purge",
    "versions_dir",
]

#: Alembic's ``include_object(object, name, type_, reflected, compare_to) -> bool`` hook.
IncludeObject = Callable[[Any, "str | None", str, bool, Any], bool]


def exclude_outbox_tables(tables: Iterable[str] = ("outbox", "processed_events"), schema: str | None = None,
                          then: IncludeObject | None = None) -> IncludeObject:
    """An ``include_object`` for Alembic's autogenerate that leaves outboxd's tables alone.

    The tables (and their indexes and columns) named in ``tables`` are skipped when they exist
    only in the database, as they do when a migration created them and the models do not map
    them, so autogenerate emits no ``drop_table`` for them. ``schema``: only in that schema
    (None: any). ``then``: your own include_object, asked about everything else.
    """
    names = frozenset(tables)

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        table = obj if type_ == "table" else getattr(obj, "table", None)
        if table is not None and table.name in names and (schema is None or (table.schema or "public") == schema):
            return False
        return then(obj, name, type_, reflected, compare_to) if then is not None else True

    return include_object


def versions_dir() -> Path:
    """The directory holding outboxd's Alembic revision files."""
    return Path(__file__).resolve().parent / "versions"


def _execute(statements: list[str]) -> None:
    from alembic import op

    for statement in statements:
        op.execute(statement)


def upgrade_outbox(table: str = "outbox", schema: str = "public", publication: str = "outboxd", *,
                   create_schema: bool = False) -> None:
    """Inside an Alembic revision: creates the outbox table and publication (idempotent), and the
    schema with ``create_schema``."""
    _execute(_ddl.outbox_ddl(table, schema, publication, create_schema=create_schema))


def downgrade_outbox(table: str = "outbox", schema: str = "public", publication: str = "outboxd") -> None:
    """Inside an Alembic revision: removes the table from the publication and drops it."""
    _execute(_ddl.drop_outbox_ddl(table, schema, publication))


def upgrade_processed_events(table: str = "processed_events", schema: str = "public", *,
                             create_schema: bool = False) -> None:
    """Inside an Alembic revision: creates the consumer's processed_events table. Idempotent: on a
    table of outboxd 0.1 it adds the after_commit column, so a new revision calling it again is
    the upgrade."""
    _execute(_ddl.processed_events_ddl(table, schema, create_schema=create_schema))


def downgrade_processed_events(table: str = "processed_events", schema: str = "public") -> None:
    """Inside an Alembic revision: drops the processed_events table."""
    _execute([f"DROP TABLE IF EXISTS {_ddl.quote_ident(schema)}.{_ddl.quote_ident(table)}"])


def upgrade_processed_events_purge(schema: str = "public") -> None:
    """Inside an Alembic revision: creates the procedure ``outboxd_purge_processed_events`` (see
    ``outboxd.purge.processed_events_purge_ddl``), for pg_cron or any scheduler."""
    _execute(_purge.processed_events_purge_ddl(schema))


def downgrade_processed_events_purge(schema: str = "public") -> None:
    _execute([f"DROP PROCEDURE IF EXISTS {_ddl.quote_ident(schema)}.outboxd_purge_processed_events"
              "(regclass, interval, integer, text)"])


def upgrade_outbox_purge() -> None:
    """Inside an Alembic revision: creates ``public.outbox_purge`` as sql/purge.sql does, so that
    ``outboxd.purge.purge_outbox()`` (or ``CALL outbox_purge(...)``) works without running psql."""
    _execute(_purge.outbox_purge_ddl())


def downgrade_outbox_purge() -> None:
    _execute(["DROP PROCEDURE IF EXISTS public.outbox_purge(regclass, interval, integer)"])
