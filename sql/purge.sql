-- outboxd: keeping the outbox table small. Idempotent; run by the owner of the
-- outbox tables (the role that ran sql/outbox.sql), since it creates a table and
-- alters the publication.
--
--   psql "$OWNER_DSN" -v ON_ERROR_STOP=1 -f sql/purge.sql
--   psql "$OWNER_DSN" -v partitioned_outbox=public.outbox_events -v publication=outboxd -f sql/purge.sql
--
-- An outbox row is an event the moment its insert commits: outboxd reads the
-- insert from the WAL, never from the table. So deleting rows never loses an
-- event, published or not; it only shortens what `outboxd replay` can re-send.
-- Three ways to keep the table small, cheapest first:
--
-- 1. Delete in the same transaction (no table growth at all, no replay):
--
--        BEGIN;
--        INSERT INTO orders ...;
--        INSERT INTO outbox (...) VALUES (...) RETURNING id;   -- or:
--        DELETE FROM outbox WHERE id = '...';                   -- same transaction
--        COMMIT;
--
--    The WAL keeps the insert and outboxd publishes it; the publication
--    publishes inserts only, so the delete is not an event. Or let a trigger do
--    it: SELECT outbox_set_delete_on_insert('public.outbox', true).
--    Or skip the table with outbox_emit() (sql/outbox.sql).
--
-- 2. Keep rows for a while, purge in batches (replay works within the window):
--        CALL outbox_purge('public.outbox', interval '3 days');
--    Cheap enough for moderate rates; at high rates every deleted row is work
--    for VACUUM.
--
-- 3. A time-partitioned outbox (below): purging is DROP of a whole day, no
--    VACUUM, no bloat, and replay works within the retention.
--
-- psql variables (-v NAME=VALUE), all optional:
--   partitioned_outbox  the partitioned outbox to create   (default public.outbox_partitioned)
--   publication         the publication to add it to       (default outboxd)

\set ON_ERROR_STOP 1
\if :{?partitioned_outbox}
\else
\set partitioned_outbox public.outbox_partitioned
\endif
\if :{?publication}
\else
\set publication outboxd
\endif

-- 1. Delete on insert -------------------------------------------------------

-- A statement-level AFTER INSERT trigger deletes the rows its statement just
-- inserted (one DELETE per INSERT statement, not per row). Generic: works on
-- any outbox table with an id column.
CREATE OR REPLACE FUNCTION public.outbox_delete_inserted() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE format('DELETE FROM %I.%I AS o USING outbox_inserted AS i WHERE o.id = i.id',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME);
    RETURN NULL;
END
$$;

-- Turns delete-on-insert on or off for one outbox table; returns whether it is on.
CREATE OR REPLACE FUNCTION public.outbox_set_delete_on_insert(outbox regclass, enabled boolean)
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_delete_on_insert ON %s', outbox);
    IF enabled THEN
        EXECUTE format('CREATE TRIGGER outbox_delete_on_insert AFTER INSERT ON %s '
                       'REFERENCING NEW TABLE AS outbox_inserted '
                       'FOR EACH STATEMENT EXECUTE FUNCTION public.outbox_delete_inserted()', outbox);
    END IF;
    RETURN enabled;
END
$$;

-- 2. Batched purge of a plain outbox table -----------------------------------

-- Deletes rows older than `keep` (by created_at), `batch_size` rows per
-- transaction, so that no single transaction holds many locks or produces a
-- burst of WAL. CALL it outside a transaction block (it commits per batch), e.g.
-- hourly from cron or pg_cron.
CREATE OR REPLACE PROCEDURE public.outbox_purge(outbox regclass, keep interval,
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
$$;

-- 3. Time-partitioned outbox --------------------------------------------------

-- The same columns as public.outbox; partitioned by created_at, one partition per
-- UTC day, named <table>_pYYYYMMDD. The primary key must include the partition
-- key, so it is (id, created_at); ids are random UUIDs, unique in practice.
-- Configure outboxd with the ROOT table: [[outbox]] table = "public.outbox_partitioned".
SELECT format($f$
CREATE TABLE %s (
    id             uuid        NOT NULL DEFAULT gen_random_uuid(),
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    headers        jsonb,
    destination    text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at)$f$, :'partitioned_outbox')
 WHERE to_regclass(:'partitioned_outbox') IS NULL \gexec

-- Creates the partitions for today (UTC) and the next `premake_days` days, and
-- drops the partitions whose whole day is older than `retention`. Returns what
-- it did. Run it daily or more often (cron, pg_cron, or the service's own
-- scheduler); premake_days is how long inserts keep working if it stops running,
-- since a row with no partition for its created_at fails (and so does the
-- business transaction that wrote it). Watch outbox_partition_horizon in
-- sql/monitoring.sql.
--
-- Dropping a partition never loses an event: outboxd decodes inserts from the
-- WAL, which the slot retains until outboxd confirms them, and PostgreSQL's
-- logical decoding still knows the dropped partition's catalog entry. It only
-- ends the replay window for that day. A DROP waits at most lock_wait for its
-- lock on the root (inserts wait behind it); a partition it could not lock is
-- reported as 'skipped' and retried on the next run.
CREATE OR REPLACE FUNCTION public.outbox_maintain_partitions(
    root         regclass,
    retention    interval DEFAULT '7 days',
    premake_days integer  DEFAULT 7,
    lock_wait    interval DEFAULT '2 seconds'
) RETURNS TABLE (action text, partition text, range_start timestamptz, range_end timestamptz)
LANGUAGE plpgsql
AS $$
DECLARE
    root_schema text;
    root_name   text;
    today       date := (now() AT TIME ZONE 'UTC')::date;
    day         date;
    part        record;
    saved_lock_timeout text := current_setting('lock_timeout');
BEGIN
    SELECT n.nspname, c.relname INTO root_schema, root_name
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = root AND c.relkind = 'p';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox_maintain_partitions: % is not a partitioned table', root
            USING HINT = 'Create it with sql/purge.sql (variable partitioned_outbox).';
    END IF;
    IF premake_days < 1 THEN
        RAISE EXCEPTION 'outbox_maintain_partitions: premake_days must be at least 1, got %', premake_days;
    END IF;

    FOR day IN SELECT d::date FROM generate_series(today, today + premake_days, interval '1 day') AS d LOOP
        partition   := format('%I.%I', root_schema, root_name || '_p' || to_char(day, 'YYYYMMDD'));
        range_start := (day::timestamp AT TIME ZONE 'UTC');
        range_end   := ((day + 1)::timestamp AT TIME ZONE 'UTC');
        IF to_regclass(partition) IS NULL THEN
            EXECUTE format('CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           partition, root, range_start, range_end);
            action := 'created';
            RETURN NEXT;
        END IF;
    END LOOP;

    -- Only partitions named by this function are dropped; others are left alone.
    FOR part IN
        SELECT c.oid::regclass AS rel, substring(c.relname FROM '_p([0-9]{8})$') AS ymd
          FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = root AND c.relname ~ ('^' || root_name || '_p[0-9]{8}$')
         ORDER BY c.relname
    LOOP
        range_start := (to_date(part.ymd, 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC');
        range_end   := range_start + interval '1 day';
        IF range_end <= now() - retention THEN
            partition := part.rel::text;
            BEGIN
                PERFORM set_config('lock_timeout', (extract(epoch FROM lock_wait) * 1000)::bigint::text, true);
                EXECUTE format('DROP TABLE %s', part.rel);
                action := 'dropped';
            EXCEPTION WHEN lock_not_available THEN
                action := 'skipped';
            END;
            RETURN NEXT;
        END IF;
    END LOOP;
    PERFORM set_config('lock_timeout', saved_lock_timeout, true);
END
$$;

SELECT action, partition FROM public.outbox_maintain_partitions(:'partitioned_outbox');

-- Publish inserts into any partition under the root's name, which is the name
-- the [[outbox]] config uses. Without publish_via_partition_root, pgoutput would
-- name each day's partition instead, and outboxd would not map them.
-- publish_via_partition_root applies to every partitioned table of the
-- publication and changes nothing for plain tables such as public.outbox.
SELECT CASE
         WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = :'publication') THEN
           format('CREATE PUBLICATION %I FOR TABLE %s WITH (publish = %L, publish_via_partition_root = true)',
                  :'publication', :'partitioned_outbox', 'insert')
         WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_publication
                       WHERE pubname = :'publication' AND NOT pubviaroot) THEN
           format('ALTER PUBLICATION %I SET (publish_via_partition_root = true)', :'publication')
       END \gexec

SELECT format('ALTER PUBLICATION %I ADD TABLE %s', :'publication', :'partitioned_outbox')
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr
                     JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
                    WHERE p.pubname = :'publication'
                      AND pr.prrelid = (:'partitioned_outbox')::regclass) \gexec
