"""Keeping outboxd's tables small: processed_events (consumer side) and the outbox (producer side).

processed_events grows by a row per event a group processed. A row may go once no record of that
event can come again: after the topic's retention (``retention.ms``), plus however far back you
might ever rewind the group or replay a dead letter. A deleted row makes such a late record new
again (its handler runs a second time). Rows whose ``after_commit`` callbacks have not run yet are
never deleted.

The outbox table: rows may be deleted at any time after their insert committed (outboxd reads the
WAL, not the table); keeping them only serves ``outboxd replay``. ``purge_outbox`` calls the
``outbox_purge`` procedure of sql/purge.sql, ``maintain_outbox_partitions`` the partition
function of the same file; install them with ``psql -f sql/purge.sql`` or, in an Alembic
revision, ``outboxd.migrations.upgrade_outbox_purge()``.

All of them run in short transactions of ``batch_size`` rows, suited to a cron job, Celery beat,
``flask outboxd purge``, or pg_cron (``CALL outboxd_purge_processed_events(...)``, installed by
``outboxd.migrations.upgrade_processed_events_purge()``).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, text

from outboxd.schema import quote_ident

__all__ = [
    "maintain_outbox_partitions",
    "outbox_purge_ddl",
    "processed_events_purge_ddl",
    "purge_outbox",
    "purge_processed_events",
]


def processed_events_purge_ddl(schema: str = "public") -> list[str]:
    """The procedure ``outboxd_purge_processed_events(tbl regclass, keep interval, batch_size integer
    DEFAULT 10000, consumer_group text DEFAULT NULL)``: deletes rows processed longer than ``keep``
    ago, whose after_commit callbacks ran, ``batch_size`` per transaction. CALL it outside a
    transaction block (it commits per batch)."""
    return [f"""CREATE OR REPLACE PROCEDURE {quote_ident(schema)}.outboxd_purge_processed_events(
    tbl regclass, keep interval, batch_size integer DEFAULT 10000, consumer_group text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    deleted bigint;
    total   bigint := 0;
BEGIN
    LOOP
        EXECUTE format('DELETE FROM %s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %s WHERE processed_at < now() - $1 '
                       'AND after_commit IS NULL AND ($3::text IS NULL OR consumer_group = $3) LIMIT $2))', tbl, tbl)
            USING keep, batch_size, consumer_group;
        GET DIAGNOSTICS deleted = ROW_COUNT;
        total := total + deleted;
        COMMIT;
        EXIT WHEN deleted < batch_size;
    END LOOP;
    RAISE NOTICE 'outboxd_purge_processed_events: deleted % row(s) older than % from %', total, keep, tbl;
END
$$"""]


def outbox_purge_ddl() -> list[str]:
    """The ``public.outbox_purge(outbox regclass, keep interval, batch_size integer DEFAULT 10000)``
    procedure, as sql/purge.sql defines it (a test compares the two on a real server)."""
    return ["""CREATE OR REPLACE PROCEDURE public.outbox_purge(outbox regclass, keep interval,
                                                batch_size integer DEFAULT 10000)
LANGUAGE plpgsql
AS $$
DECLARE
    deleted bigint;
    total   bigint := 0;
BEGIN
    LOOP
        EXECUTE format('DELETE FROM %s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %s '
                       'WHERE created_at < now() - $1 LIMIT $2))', outbox, outbox)
            USING keep, batch_size;
        GET DIAGNOSTICS deleted = ROW_COUNT;
        total := total + deleted;
        COMMIT;
        EXIT WHEN deleted < batch_size;
    END LOOP;
    RAISE NOTICE 'outbox_purge: deleted % row(s) older than % from %', total, keep, outbox;
END
$$"""]


def _check(name: str, value: object) -> None:
    if isinstance(value, timedelta) and value < timedelta(0):
        raise ValueError(f"{name} must not be negative, got {value}")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def purge_processed_events(bind: Engine, older_than: timedelta, *, table: str = "processed_events",
                           schema: str = "public", consumer_group: str | None = None,
                           batch_size: int = 10_000) -> int:
    """Deletes processed_events rows processed more than ``older_than`` ago (of ``consumer_group``
    only, if given), never one whose after_commit callbacks have not run; ``batch_size`` rows per
    transaction. Returns how many."""
    _check("older_than", older_than)
    _check("batch_size", batch_size)
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    statement = text(f"DELETE FROM {qualified} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {qualified} "
                     "WHERE processed_at < now() - :keep AND after_commit IS NULL "
                     "AND (CAST(:grp AS text) IS NULL OR consumer_group = :grp) LIMIT :batch))")
    total = 0
    while True:
        with bind.begin() as conn:
            deleted = conn.execute(statement, {"keep": older_than, "grp": consumer_group, "batch": batch_size}).rowcount
        total += deleted
        if deleted < batch_size:
            return total


def purge_outbox(bind: Engine, keep: timedelta, *, table: str = "public.outbox", batch_size: int = 10_000) -> None:
    """``CALL public.outbox_purge(table, keep, batch_size)`` (sql/purge.sql): deletes outbox rows
    created more than ``keep`` ago, in batches. Deleting never loses an event (outboxd reads the
    WAL); it shortens what ``outboxd replay`` can re-send."""
    _check("keep", keep)
    _check("batch_size", batch_size)
    # The procedure commits per batch: outside a transaction block.
    with bind.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if conn.execute(text("SELECT to_regprocedure('public.outbox_purge(regclass,interval,integer)')")).scalar() \
                is None:
            raise RuntimeError("purge_outbox: procedure public.outbox_purge is missing; install it with "
                               "`psql -f sql/purge.sql` or outboxd.migrations.upgrade_outbox_purge() in a revision")
        conn.execute(text("CALL public.outbox_purge(CAST(:tbl AS regclass), :keep, :batch)"),
                     {"tbl": table, "keep": keep, "batch": batch_size})


def maintain_outbox_partitions(bind: Engine, root: str = "public.outbox_partitioned", *,
                               retention: timedelta = timedelta(days=7), premake_days: int = 7,
                               lock_wait: timedelta = timedelta(seconds=2)) -> list[tuple[str, str]]:
    """``public.outbox_maintain_partitions`` of sql/purge.sql for a day-partitioned outbox: creates
    the coming days' partitions, drops those older than ``retention``; returns (action, partition)."""
    with bind.begin() as conn:
        rows = conn.execute(text("SELECT action, partition FROM public.outbox_maintain_partitions("
                                 "CAST(:root AS regclass), :retention, :premake, :lock_wait)"),
                            {"root": root, "retention": retention, "premake": premake_days, "lock_wait": lock_wait})
        return [(str(a), str(p)) for a, p in rows]
