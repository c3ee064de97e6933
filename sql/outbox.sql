-- outboxd: the default outbox table, its publication, and outbox_emit().
-- Idempotent: safe to run again on every deploy (psql -v ON_ERROR_STOP=1 -f sql/outbox.sql).
-- Needs PostgreSQL 13+ (gen_random_uuid() in core) and wal_level = logical.

-- A service inserts one row here in the same transaction as its business
-- change; outboxd reads the insert from the WAL and publishes it to Kafka.
-- Column names match outboxd's defaults; an existing Debezium-style table works
-- too, with its column names set in the [[outbox]] config section.
CREATE TABLE IF NOT EXISTS public.outbox (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),  -- Kafka key, de-duplication id
    aggregate_type text        NOT NULL,   -- e.g. 'order'; topic = "outbox.event.{aggregate_type}"
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,   -- e.g. 'OrderCreated'
    payload        jsonb       NOT NULL,
    headers        jsonb,                  -- optional {"name": "value"}, become Kafka headers (traceparent, ...)
    destination    text,                   -- optional, for topic = "{destination}"
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- publish = 'insert': an outbox row is an event when it is inserted, and only
-- then. Updates and deletes are housekeeping (marking or purging rows), not
-- events, so the server does not even send them.
--
-- That is also why a service may delete the row in the same transaction that
-- inserted it (INSERT ...; DELETE ...; COMMIT): the WAL still holds the insert,
-- outboxd publishes it, the delete is not published, and the table never grows,
-- so it needs no purge job.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = 'outboxd') THEN
        CREATE PUBLICATION outboxd FOR TABLE public.outbox WITH (publish = 'insert');
    ELSIF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables
                      WHERE pubname = 'outboxd' AND schemaname = 'public' AND tablename = 'outbox') THEN
        -- The publication exists (made by hand, or for other outbox tables) but
        -- lacks this table: add it rather than fail.
        ALTER PUBLICATION outboxd ADD TABLE public.outbox;
    END IF;
END
$$;

-- outbox_emit(): the table-less alternative. It writes a transactional logical
-- decoding message (prefix 'outbox') that outboxd receives with the protocol
-- option messages = true (PostgreSQL 14+). Like the table, the message is
-- published only if, and when, the calling transaction commits; unlike the
-- table, it leaves nothing to vacuum. The JSON keys are the column names above.
-- Returns the event id (the Kafka key).
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
        true,      -- transactional: decoded at commit, dropped on rollback
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
$$;

COMMENT ON FUNCTION public.outbox_emit(text, text, text, jsonb, jsonb, text) IS
    'Emits an outbox event as a transactional logical decoding message (prefix outbox) for outboxd; returns its id.';
