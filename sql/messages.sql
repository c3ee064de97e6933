-- outboxd: who may emit table-less events. Idempotent; run it as a superuser
-- before setting [messages] enabled = true, and again after a major upgrade
-- (pg_upgrade keeps the ACL; a new overload would not have it).
--
--   psql "$ADMIN_DSN" -v ON_ERROR_STOP=1 -v app_roles=orders_service -f sql/messages.sql
--   psql "$ADMIN_DSN" -v app_roles=orders_service,billing_service -f sql/messages.sql
--
-- Why: with [messages] enabled, whoever can call pg_logical_emit_message(true,
-- 'outbox', ...) publishes an event, to any topic the template allows, with any
-- id. PostgreSQL grants EXECUTE on it to PUBLIC, i.e. to every role that can
-- connect, a read-only reporting user included. An outbox table is guarded by
-- its INSERT privilege; a message only by this EXECUTE privilege.
--
-- This file revokes EXECUTE on every overload in pg_catalog (text and bytea
-- content, and the 4-argument variants with `flush` of PostgreSQL 17+) from
-- PUBLIC, and grants it to the roles in app_roles (comma-separated). outbox_emit()
-- (sql/outbox.sql) runs with its caller's privileges, so its callers need the
-- grant too. `outboxd check` FAILs while [messages] is enabled and PUBLIC can
-- still execute the function.
--
-- psql variables (-v NAME=VALUE):
--   app_roles   roles that may emit events (default: none; only the revoke)

\set ON_ERROR_STOP 1
\if :{?app_roles}
\else
\set app_roles ''
\endif

SELECT format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', p.oid::regprocedure)
  FROM pg_catalog.pg_proc p
 WHERE p.proname = 'pg_logical_emit_message'
   AND p.pronamespace = 'pg_catalog'::regnamespace \gexec

-- A role that does not exist fails here with its name (::regrole).
SELECT format('GRANT EXECUTE ON FUNCTION %s TO %s', p.oid::regprocedure, trim(r.name)::regrole)
  FROM pg_catalog.pg_proc p,
       unnest(string_to_array(:'app_roles', ',')) AS r(name)
 WHERE p.proname = 'pg_logical_emit_message'
   AND p.pronamespace = 'pg_catalog'::regnamespace
   AND trim(r.name) <> '' \gexec

-- Who may execute it now ("PUBLIC" must not appear).
SELECT p.oid::regprocedure AS function,
       string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, ', '
                  ORDER BY 1) AS may_execute
  FROM pg_catalog.pg_proc p
  LEFT JOIN LATERAL aclexplode(p.proacl) a ON a.privilege_type = 'EXECUTE'
 WHERE p.proname = 'pg_logical_emit_message'
   AND p.pronamespace = 'pg_catalog'::regnamespace
 GROUP BY 1 ORDER BY 1;
