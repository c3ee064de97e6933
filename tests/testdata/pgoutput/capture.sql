-- Produces the golden pgoutput payloads in this directory; run through capture.sh, which
-- creates a scratch database, runs this file from this directory and drops the database.
--
-- Each case makes one change in its own transaction, then decodes it twice from the slot:
-- first with binary = true (peek, into <case>.binary.hex), then in text form (get, which also
-- consumes it, into <case>.hex). Each decoding call starts a new pgoutput session, so every
-- file is self-contained: Relation (and Type) messages come before the first change.
-- Output lines: LSN <TAB> xid <TAB> hex of one pgoutput message, as returned by
-- pg_logical_slot_{peek,get}_binary_changes; lines starting with '#' are comments.
\set ON_ERROR_STOP 1
\pset format unaligned
\pset fieldsep '\t'
\pset tuples_only on
\pset pager off
SET client_min_messages = warning;

CREATE SCHEMA capture;
CREATE TYPE capture.mood AS ENUM ('sad', 'ok', 'happy');

-- Every column kind a row can carry: text, jsonb, bytea, and a NULL.
CREATE TABLE capture.kitchen (
  id int PRIMARY KEY,
  name text NOT NULL,
  doc jsonb,
  blob bytea,
  note text
);
-- REPLICA IDENTITY FULL: updates and deletes carry the whole old row ('O').
CREATE TABLE capture.full_row (id int PRIMARY KEY, val text);
ALTER TABLE capture.full_row REPLICA IDENTITY FULL;
-- Default identity (primary key): a key change carries the old key ('K').
CREATE TABLE capture.keyed (id int PRIMARY KEY, val text);
-- A column of a custom type makes pgoutput send a Type message ('Y') first.
CREATE TABLE capture.moods (id int PRIMARY KEY, mood capture.mood NOT NULL);
-- A large value stored out of line, uncompressed: an update that leaves it alone sends 'u'.
CREATE TABLE capture.toasted (id int PRIMARY KEY, counter int NOT NULL, big text NOT NULL);
ALTER TABLE capture.toasted ALTER COLUMN big SET STORAGE EXTERNAL;
-- Two tables truncated together.
CREATE TABLE capture.trunc_a (id serial PRIMARY KEY);
CREATE TABLE capture.trunc_b (id serial PRIMARY KEY);

CREATE PUBLICATION outboxd_capture FOR TABLE capture.kitchen, capture.full_row,
  capture.keyed, capture.moods, capture.toasted, capture.trunc_a, capture.trunc_b;

-- Rows that later cases change; their own changes are drained below, before the slot exists.
INSERT INTO capture.full_row VALUES (1, 'before');
INSERT INTO capture.keyed VALUES (1, 'keep');
INSERT INTO capture.toasted VALUES (1, 0, repeat('toast-me-', 2000));
INSERT INTO capture.trunc_a DEFAULT VALUES;
INSERT INTO capture.trunc_b DEFAULT VALUES;

SELECT 'slot' FROM pg_create_logical_replication_slot('outboxd_capture', 'pgoutput') \g /dev/null

\set opts '''proto_version'', ''1'', ''publication_names'', ''outboxd_capture'', ''messages'', ''true'''
\set peek_binary 'SELECT lsn, xid, encode(data, ''hex'') FROM pg_logical_slot_peek_binary_changes(''outboxd_capture'', NULL, NULL, ' :opts ', ''binary'', ''true'')'
\set get_text 'SELECT lsn, xid, encode(data, ''hex'') FROM pg_logical_slot_get_binary_changes(''outboxd_capture'', NULL, NULL, ' :opts ')'

-- insert: text, jsonb, bytea and NULL columns.
INSERT INTO capture.kitchen VALUES
  (7, 'widget', '{"sku": "W-7", "qty": 3}', '\x00ff10', NULL);
\o insert.binary.hex
\qecho '# INSERT INTO capture.kitchen VALUES (7, ''widget'', ''{"sku": "W-7", "qty": 3}'', ''\\x00ff10'', NULL) (binary = true)'
:peek_binary;
\o insert.hex
\qecho '# INSERT INTO capture.kitchen VALUES (7, ''widget'', ''{"sku": "W-7", "qty": 3}'', ''\\x00ff10'', NULL)'
:get_text;
\o

-- update_full: REPLICA IDENTITY FULL sends the old row ('O').
UPDATE capture.full_row SET val = 'after' WHERE id = 1;
\o update_full.binary.hex
\qecho '# UPDATE capture.full_row SET val = ''after'' WHERE id = 1 (REPLICA IDENTITY FULL; binary = true)'
:peek_binary;
\o update_full.hex
\qecho '# UPDATE capture.full_row SET val = ''after'' WHERE id = 1 (REPLICA IDENTITY FULL)'
:get_text;
\o

-- update_key: the primary key changes, so the old key is sent ('K').
UPDATE capture.keyed SET id = 2 WHERE id = 1;
\o update_key.binary.hex
\qecho '# UPDATE capture.keyed SET id = 2 WHERE id = 1 (key change; binary = true)'
:peek_binary;
\o update_key.hex
\qecho '# UPDATE capture.keyed SET id = 2 WHERE id = 1 (key change)'
:get_text;
\o

-- toast_unchanged: only counter changes; the out-of-line value is sent as 'u'.
UPDATE capture.toasted SET counter = counter + 1 WHERE id = 1;
\o toast_unchanged.binary.hex
\qecho '# UPDATE capture.toasted SET counter = counter + 1 WHERE id = 1 (big unchanged; binary = true)'
:peek_binary;
\o toast_unchanged.hex
\qecho '# UPDATE capture.toasted SET counter = counter + 1 WHERE id = 1 (big unchanged)'
:get_text;
\o

-- delete: default identity sends the old key ('K').
DELETE FROM capture.keyed WHERE id = 2;
\o delete_key.binary.hex
\qecho '# DELETE FROM capture.keyed WHERE id = 2 (binary = true)'
:peek_binary;
\o delete_key.hex
\qecho '# DELETE FROM capture.keyed WHERE id = 2'
:get_text;
\o

-- delete_full: REPLICA IDENTITY FULL sends the whole old row ('O').
DELETE FROM capture.full_row WHERE id = 1;
\o delete_full.binary.hex
\qecho '# DELETE FROM capture.full_row WHERE id = 1 (REPLICA IDENTITY FULL; binary = true)'
:peek_binary;
\o delete_full.hex
\qecho '# DELETE FROM capture.full_row WHERE id = 1 (REPLICA IDENTITY FULL)'
:get_text;
\o

-- truncate: two relations, CASCADE (1) and RESTART IDENTITY (2).
TRUNCATE capture.trunc_a, capture.trunc_b RESTART IDENTITY CASCADE;
\o truncate.hex
\qecho '# TRUNCATE capture.trunc_a, capture.trunc_b RESTART IDENTITY CASCADE'
:get_text;
\o

-- message_transactional: sent inside Begin/Commit.
SELECT 'msg' FROM pg_logical_emit_message(true, 'outbox', '{"event": "created"}') \g /dev/null
\o message_transactional.hex
\qecho '# SELECT pg_logical_emit_message(true, ''outbox'', ''{"event": "created"}'')'
:get_text;
\o

-- message_nontransactional: sent on its own, at once; the content holds a NUL byte. Decoding
-- stops at the flushed WAL position and this message alone flushes nothing, so it is emitted in
-- a transaction that gets an xid: its commit flushes the WAL, and pgoutput skips the
-- transaction itself because it changed no published table.
BEGIN;
SELECT 'msg' FROM pg_logical_emit_message(false, 'audit', '\x00ff01'::bytea) \g /dev/null
SELECT 'xid' FROM txid_current() \g /dev/null
COMMIT;
\o message_nontransactional.hex
\qecho '# SELECT pg_logical_emit_message(false, ''audit'', ''\\x00ff01''::bytea)'
:get_text;
\o

-- type: a column of an enum type; pgoutput sends Type before Relation.
INSERT INTO capture.moods VALUES (1, 'happy');
\o type.binary.hex
\qecho '# INSERT INTO capture.moods VALUES (1, ''happy'') (mood is enum capture.mood; binary = true)'
:peek_binary;
\o type.hex
\qecho '# INSERT INTO capture.moods VALUES (1, ''happy'') (mood is enum capture.mood)'
:get_text;
\o

-- origin: a change made under a replication origin (as a subscriber's apply worker would)
-- carries an Origin message after Begin.
SELECT 'origin' FROM pg_replication_origin_create('outboxd_capture_origin') \g /dev/null
SELECT 'origin' FROM pg_replication_origin_session_setup('outboxd_capture_origin') \g /dev/null
BEGIN;
SELECT 'origin' FROM pg_replication_origin_xact_setup('0/1234ABCD', '2024-01-02 03:04:05+00') \g /dev/null
INSERT INTO capture.keyed VALUES (9, 'from origin');
COMMIT;
SELECT 'origin' FROM pg_replication_origin_session_reset() \g /dev/null
\o origin.hex
\qecho '# INSERT INTO capture.keyed VALUES (9, ''from origin'') under origin outboxd_capture_origin (origin LSN 0/1234ABCD)'
:get_text;
\o

SELECT 'drop' FROM pg_drop_replication_slot('outboxd_capture') \g /dev/null
SELECT 'drop' FROM pg_replication_origin_drop('outboxd_capture_origin') \g /dev/null
