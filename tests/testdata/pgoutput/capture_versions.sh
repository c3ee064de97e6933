#!/usr/bin/env bash
# Regenerates the per-version golden payloads (pgNN/*.hex) from a real server of each version,
# with the proto_version outboxd negotiates with it, by running capture_versions.sql in a
# scratch database that it drops after.
#
#   for v in 14 15 16 17 18; do OUTBOXD_PG_VERSION=$v deploy/local/stack.sh start postgres; done
#   tests/testdata/pgoutput/capture_versions.sh            # every version whose server runs
#
# Ports: the stack's defaults (54314, 54329, 54316, 54317, 54318), or PGPORT_14 ... PGPORT_18.
# Needs a superuser (replication slot, replication origin). LSNs, xids and timestamps change on
# every run: update the pinned values in tests/unit/pgoutput/decoder_versions_test.cc after.
set -euo pipefail

DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
export PGOPTIONS='-c client_min_messages=warning'
DB=outboxd_pgoutput_capture
PSQL=/usr/lib/postgresql/15/bin/psql
declare -A DEFAULT_PORT=([14]=54314 [15]=54329 [16]=54316 [17]=54317 [18]=54318)
# src/replication/pg_replication_stream.cc ProtoVersionFor.
declare -A PROTO=([14]=2 [15]=3 [16]=4 [17]=4 [18]=4)

for v in 14 15 16 17 18; do
    var=PGPORT_$v
    export PGPORT=${!var:-${DEFAULT_PORT[$v]}}
    if ! "$PSQL" -X -q -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
        echo "capture_versions.sh: no server on port $PGPORT: PostgreSQL $v skipped" >&2
        continue
    fi
    version=$("$PSQL" -X -At -d postgres -c 'SHOW server_version_num')
    [[ $version == "$v"* ]] || { echo "capture_versions.sh: port $PGPORT runs $version, not $v" >&2; exit 1; }
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    mkdir -p "$DIR/pg$v"
    (cd "$DIR/pg$v" && "$PSQL" -X -q -v ON_ERROR_STOP=1 -v proto="${PROTO[$v]}" -d "$DB" -f ../capture_versions.sql)
    "$PSQL" -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB"
    echo "capture_versions.sh: PostgreSQL $version (proto_version ${PROTO[$v]}) -> $DIR/pg$v" >&2
done
