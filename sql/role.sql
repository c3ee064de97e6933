-- outboxd: a least-privilege role for the relay. Idempotent: run it again after
-- adding an outbox table, or on every deploy.
--
--   OUTBOXD_ROLE_PASSWORD=... psql "$ADMIN_DSN" -v ON_ERROR_STOP=1 -f sql/role.sql
--   psql "$ADMIN_DSN" -v outboxd_role=orders_relay -v outboxd_tables=orders.outbox,billing.outbox -f sql/role.sql
--
-- Who runs what:
--   * This file: a superuser (only a superuser may grant REPLICATION; on RDS/Aurora
--     use GRANT rds_replication TO outboxd instead of the REPLICATION attribute).
--   * sql/outbox.sql, sql/purge.sql: the owner of the outbox tables (usually the
--     service's migration role). CREATE/ALTER PUBLICATION needs ownership of every
--     table it names, so the publication belongs to that owner, not to outboxd.
--   * outboxd itself, as this role: creates its slot on first start (REPLICATION is
--     enough) and streams. It never creates tables, publications or roles.
--
-- psql variables (-v NAME=VALUE), all optional:
--   outboxd_role    the role's name                       (default outboxd)
--   outboxd_tables  comma-separated outbox tables, schema-qualified; for a
--                   partitioned outbox name the root      (default public.outbox)
--
-- The role gets: LOGIN, REPLICATION, CONNECT on this database, USAGE on the
-- outbox tables' schemas and SELECT on the outbox tables, and on PostgreSQL 16+
-- EXECUTE on pg_log_standby_snapshot() (for decoding on a standby); nothing else. It is
-- NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS, owns nothing, and cannot read
-- any other table. SELECT is what `outboxd replay` and `outboxd check` need;
-- streaming itself needs only REPLICATION.
--
-- The password never goes into a file or onto a command line. Either:
--   a) interactively, after this script:   psql "$ADMIN_DSN" -c '\password outboxd'
--      (psql hashes it with SCRAM on the client; the server sees only the hash), or
--   b) from the environment: export OUTBOXD_ROLE_PASSWORD (from your secret store)
--      in psql's environment; this script reads it with \getenv and sets it. The
--      server hashes it (password_encryption, scram-sha-256 by default) but the
--      statement carries the plain text to the server, so use a TLS connection;
--      the script suppresses statement logging for that statement when run by a
--      superuser, and never echoes it.
-- Without either, the role is created without a password (fine for peer or
-- certificate authentication in pg_hba.conf). Remember pg_hba.conf needs two
-- lines for the role: one for the database (check, replay) and one with the
-- keyword `replication` for the replication connection.

\set ON_ERROR_STOP 1
\if :{?outboxd_role}
\else
\set outboxd_role outboxd
\endif
\if :{?outboxd_tables}
\else
\set outboxd_tables public.outbox
\endif

-- CREATE ROLE has no IF NOT EXISTS.
SELECT format('CREATE ROLE %I', :'outboxd_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :'outboxd_role') \gexec

-- Re-applied every time, so that a role made by hand is brought back to least
-- privilege.
SELECT format('ALTER ROLE %I LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS',
              :'outboxd_role') \gexec

SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'outboxd_role') \gexec

-- The tables must exist (run sql/outbox.sql first): ::regclass fails with the
-- table's name otherwise.
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', n.nspname, :'outboxd_role')
  FROM (SELECT DISTINCT c.relnamespace
          FROM unnest(string_to_array(:'outboxd_tables', ',')) AS t(name)
          JOIN pg_catalog.pg_class c ON c.oid = trim(t.name)::regclass) AS s
  JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace \gexec

SELECT format('GRANT SELECT ON TABLE %s TO %I', trim(t.name)::regclass, :'outboxd_role')
  FROM unnest(string_to_array(:'outboxd_tables', ',')) AS t(name) \gexec

-- The password, from the environment only.
\getenv outboxd_password OUTBOXD_ROLE_PASSWORD
\if :{?outboxd_password}
\set outboxd_saved_echo :ECHO
\set ECHO none
SELECT rolsuper AS outboxd_admin_is_superuser FROM pg_catalog.pg_roles WHERE rolname = current_user \gset
BEGIN;
\if :outboxd_admin_is_superuser
SET LOCAL log_statement = 'none';
SET LOCAL log_min_duration_statement = -1;
SET LOCAL log_min_error_statement = 'panic';
\endif
ALTER ROLE :"outboxd_role" PASSWORD :'outboxd_password';
COMMIT;
\unset outboxd_password
\set ECHO :outboxd_saved_echo
\echo role.sql: password set from OUTBOXD_ROLE_PASSWORD
\endif

-- Decoding on a hot standby with [source] primary_dsn (PostgreSQL 16+): while outboxd's slot is
-- being created on the standby, outboxd asks this primary for a standby snapshot, one small WAL
-- record a call (superusers only by default). Run this file on the primary.
SELECT format('GRANT EXECUTE ON FUNCTION pg_catalog.pg_log_standby_snapshot() TO %I', :'outboxd_role')
 WHERE pg_catalog.to_regprocedure('pg_catalog.pg_log_standby_snapshot()') IS NOT NULL \gexec

-- What the role ended up with, for the operator to read. Privileges granted to
-- PUBLIC show here too: they apply to every role.
SELECT r.rolname AS role,
       r.rolcanlogin AS login,
       r.rolreplication AS replication,
       r.rolsuper AS superuser,
       r.rolcreatedb OR r.rolcreaterole AS can_create,
       (SELECT string_agg(format('%I.%I', table_schema, table_name), ', ' ORDER BY 1)
          FROM information_schema.table_privileges g
         WHERE g.grantee = r.rolname AND g.privilege_type = 'SELECT') AS can_select
  FROM pg_catalog.pg_roles r
 WHERE r.rolname = :'outboxd_role';
