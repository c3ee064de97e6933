-- Produces the per-version golden payloads in pgNN/ (NN = the server's major version); run
-- through capture_versions.sh, which makes a scratch database, runs this file from pgNN/ with
-- -v proto=N (the proto_version outboxd negotiates with that server: ProtoVersionFor) and drops
-- the database. Same output format as capture.sql: LSN <TAB> xid <TAB> hex per message.
\set ON_ERROR_STOP 1
\pset format unaligned
\pset fieldsep '\t'
\pset tuples_only on
\pset pager off
SET client_min_messages = warning;

CREATE SCHEMA capture;
-- The default outbox table (sql/outbox.sql), plus a stored generated column: PostgreSQL 18 can
-- publish those (publish_generated_columns), but only when the publication asks; outboxd's
-- publications never do, so no version sends it.
CREATE TABLE capture.outbox (
  id uuid PRIMARY KEY,
  aggregate_type text NOT NULL,
  aggregate_id text NOT NULL,
  event_type text NOT NULL,
  payload jsonb NOT NULL,
  headers jsonb,
  created_at timestamptz NOT NULL DEFAULT '2024-01-02 03:04:05+00',
  payload_size int GENERATED ALWAYS AS (length(payload::text)) STORED
);
CREATE PUBLICATION outboxd_capture FOR TABLE capture.outbox WITH (publish = 'insert');

SELECT 'slot' FROM pg_create_logical_replication_slot('outboxd_capture', 'pgoutput') \g /dev/null
-- What outboxd's START_REPLICATION asks for (streaming stays off).
\set opts '''proto_version'', ' :'proto' ', ''publication_names'', ''outboxd_capture'', ''messages'', ''true'''
\set get_text 'SELECT lsn, xid, encode(data, ''hex'') FROM pg_logical_slot_get_binary_changes(''outboxd_capture'', NULL, NULL, ' :opts ')'

-- outbox_insert: one outbox row and a transactional logical message in one transaction.
BEGIN;
INSERT INTO capture.outbox (id, aggregate_type, aggregate_id, event_type, payload, headers) VALUES
  ('4f1c2a58-3b7e-4d0a-9c61-0a5be8d3e201', 'Order', 'o-1', 'OrderCreated', '{"total": 12}',
   '{"traceparent": "00-abc"}');
SELECT 'msg' FROM pg_logical_emit_message(true, 'outbox', '{"event": "created"}') \g /dev/null
COMMIT;
\o outbox_insert.hex
\qecho '# INSERT INTO capture.outbox (...) VALUES (''4f1c2a58-...'', ''Order'', ''o-1'', ''OrderCreated'', ...); pg_logical_emit_message(true, ''outbox'', ...) in one transaction; payload_size is a stored generated column'
:get_text;
\o

-- origin: a change made under a replication origin carries an Origin message ('O') after Begin.
SELECT 'origin' FROM pg_replication_origin_create('outboxd_capture_origin') \g /dev/null
SELECT 'origin' FROM pg_replication_origin_session_setup('outboxd_capture_origin') \g /dev/null
BEGIN;
SELECT 'origin' FROM pg_replication_origin_xact_setup('0/1234ABCD', '2024-01-02 03:04:05+00') \g /dev/null
INSERT INTO capture.outbox (id, aggregate_type, aggregate_id, event_type, payload) VALUES
  ('4f1c2a58-3b7e-4d0a-9c61-0a5be8d3e202', 'Order', 'o-2', 'OrderShipped', '{}');
COMMIT;
SELECT 'origin' FROM pg_replication_origin_session_reset() \g /dev/null
\o origin.hex
\qecho '# INSERT INTO capture.outbox (...) VALUES (''4f1c2a58-...-e202'', ''Order'', ''o-2'', ''OrderShipped'', ''{}'') under origin outboxd_capture_origin (origin LSN 0/1234ABCD)'
:get_text;
\o

SELECT 'drop' FROM pg_drop_replication_slot('outboxd_capture') \g /dev/null
SELECT 'drop' FROM pg_replication_origin_drop('outboxd_capture_origin') \g /dev/null
