#!/usr/bin/env bash
# Regenerates the golden pgoutput payloads (*.hex) in this directory from a real PostgreSQL 15
# with wal_level=logical, by running capture.sql in a scratch database that it drops after.
#
#   deploy/local/stack.sh up && tests/testdata/pgoutput/capture.sh
#
# Connection: the usual libpq variables, defaulting to the local stack
# (PGHOST=127.0.0.1 PGPORT=54329 PGUSER=postgres). Needs a superuser (replication slot,
# replication origin). OIDs, LSNs, xids and timestamps change on every run, so the unit tests
# that pin them (tests/unit/pgoutput/decoder_test.cc) must be updated after regenerating.
set -euo pipefail

DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-54329} PGUSER=${PGUSER:-postgres}
export PGOPTIONS='-c client_min_messages=warning'
DB=outboxd_pgoutput_capture

psql -X -q -v ON_ERROR_STOP=1 -d postgres \
  -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
trap 'psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null' EXIT

version=$(psql -X -At -d "$DB" -c 'SHOW server_version_num')
[[ $version == 15* ]] || echo "capture.sh: warning: server is $version, the goldens are for PostgreSQL 15" >&2

cd "$DIR"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f capture.sql
echo "capture.sh: wrote $(ls "$DIR"/*.hex | wc -l) files in $DIR" >&2
