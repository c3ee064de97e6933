-- outboxd: views for watching the replication slot from SQL, for dashboards
-- that query PostgreSQL directly (e.g. postgres_exporter custom queries) and for
-- the runbook in docs/operations.md. Idempotent (CREATE OR REPLACE); run by any
-- role that may create views in schema public, then grant SELECT to your
-- monitoring role. The views read pg_replication_slots, pg_stat_replication and
-- pg_settings, which every role may read, so they need no extra privilege.
--
--   psql "$DSN" -v ON_ERROR_STOP=1 -f sql/monitoring.sql
--   SELECT * FROM outboxd_slot_status;
--
-- outboxd exports the same numbers as Prometheus metrics
-- (outboxd_replication_lag_bytes, outboxd_confirmed_flush_lsn); these views
-- also work when outboxd is down, which is when you need them most.

-- One row per logical slot (all of them, not only outboxd's: an abandoned slot
-- retains WAL just the same).
--   lag_bytes           WAL written since the position outboxd confirmed: how far
--                       behind Kafka is. Grows while outboxd is down or stuck.
--   retained_wal_bytes  WAL the server keeps on disk for this slot (from
--                       restart_lsn). This is what fills the disk.
--   wal_status          reserved: fine. extended: retained beyond max_wal_size,
--                       still safe. unreserved: past max_slot_wal_keep_size, about
--                       to be invalidated at the next checkpoint. lost: invalidated;
--                       outboxd refuses to start (docs/operations.md, "Slot invalidated").
--   safe_wal_size       bytes that can still be written before the slot becomes
--                       unreserved; NULL when max_slot_wal_keep_size = -1 (unbounded).
--   active_pid          the walsender serving outboxd; NULL when nothing streams.
--   confirmed_flush_lsn the newest position whose events Kafka acknowledged.
--   flush_lag, replay_lag, reply_age  from pg_stat_replication: how old the last
--                       status update from outboxd is (outboxd sends one every
--                       status_interval, 10 s by default).
CREATE OR REPLACE VIEW public.outboxd_slot_status AS
WITH position AS (
    SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn()
                ELSE pg_catalog.pg_current_wal_lsn() END AS current_lsn
)
SELECT s.slot_name,
       s.plugin,
       s.database,
       s.active,
       s.active_pid,
       s.wal_status,
       s.safe_wal_size,
       s.restart_lsn,
       s.confirmed_flush_lsn,
       p.current_lsn,
       pg_catalog.pg_wal_lsn_diff(p.current_lsn, s.confirmed_flush_lsn)::bigint AS lag_bytes,
       pg_catalog.pg_size_pretty(pg_catalog.pg_wal_lsn_diff(p.current_lsn, s.confirmed_flush_lsn)) AS lag,
       pg_catalog.pg_wal_lsn_diff(p.current_lsn, s.restart_lsn)::bigint AS retained_wal_bytes,
       pg_catalog.pg_size_pretty(pg_catalog.pg_wal_lsn_diff(p.current_lsn, s.restart_lsn)) AS retained_wal,
       r.application_name,
       r.client_addr,
       r.state AS sender_state,
       r.flush_lag,
       r.replay_lag,
       now() - r.reply_time AS reply_age
  FROM pg_catalog.pg_replication_slots s
 CROSS JOIN position p
  LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid
 WHERE s.slot_type = 'logical';

COMMENT ON VIEW public.outboxd_slot_status IS
    'outboxd: logical replication slots with lag, retained WAL, wal_status and the active walsender (sql/monitoring.sql).';

-- The server settings that decide how much WAL a stuck slot may pin and whether
-- outboxd can run at all, with the number of slots and senders in use.
CREATE OR REPLACE VIEW public.outboxd_settings AS
SELECT name, setting, unit,
       CASE name
         WHEN 'wal_level' THEN 'must be logical'
         WHEN 'max_slot_wal_keep_size' THEN
           CASE WHEN setting = '-1'
                THEN 'unbounded: a stuck slot can fill the disk; a bound trades that for invalidation (lost events)'
                ELSE 'a slot retaining more than this is invalidated at the next checkpoint' END
         WHEN 'max_replication_slots' THEN
           format('%s slot(s) in use', (SELECT count(*) FROM pg_catalog.pg_replication_slots))
         WHEN 'max_wal_senders' THEN
           format('%s sender(s) in use', (SELECT count(*) FROM pg_catalog.pg_stat_replication))
         WHEN 'wal_sender_timeout' THEN 'keep outboxd''s status_interval under half of this'
       END AS note
  FROM pg_catalog.pg_settings
 WHERE name IN ('wal_level', 'max_slot_wal_keep_size', 'max_replication_slots', 'max_wal_senders',
                'wal_sender_timeout', 'max_wal_size');

-- For a partitioned outbox (sql/purge.sql): the newest partition's upper bound
-- per partitioned table with <table>_pYYYYMMDD partitions. Alert when it is less than a day
-- ahead: inserts after it fail.
CREATE OR REPLACE VIEW public.outbox_partition_horizon AS
SELECT i.inhparent::regclass AS root,
       count(*) AS partitions,
       max(pg_catalog.to_date(substring(c.relname FROM '_p([0-9]{8})$'), 'YYYYMMDD')) + 1 AS covered_until
  FROM pg_catalog.pg_inherits i
  JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
  JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent AND pc.relkind = 'p'
 WHERE c.relname ~ '_p[0-9]{8}$'
 GROUP BY i.inhparent;
