#!/usr/bin/env bash
# Servers configured wrong on purpose, for the catalogue of mistakes (catalogue_test.cc), each a
# named stack of deploy/local/stack.sh beside the local stack:
#   - catalogue-replica: PostgreSQL with wal_level = replica (no logical decoding);
#   - catalogue-small:   PostgreSQL with max_replication_slots = 2 and max_wal_senders = 2, for
#                        the tests that fill them, and track_commit_timestamp = on (replay by
#                        commit time);
#   - catalogue-kafka:   a Kafka broker that does not auto-create topics and whose
#                        transaction.state.log.replication.factor (3) exceeds its one broker, so
#                        that it can never run a transaction.
# They start in parallel; `up` writes $REPO/.run/catalogue/env (KEY=VALUE lines) for the test.
#
#   tests/integration/catalogue_stack.sh up | down
#
# Ports (derived from the local stack's, beside tls_stack.sh's +200 and +5..+9):
#   OUTBOXD_CATALOGUE_PG_PORT     the replica server (default OUTBOXD_PG_PORT + 300); the small
#                                 server the next port
#   OUTBOXD_CATALOGUE_KAFKA_PORT  the broker (default OUTBOXD_KAFKA_PORT + 10), its controller
#                                 the next port
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd -- "$SCRIPT_DIR/../.." && pwd -P)
STACK="$REPO/deploy/local/stack.sh"
OUT="$REPO/.run/catalogue"
REPLICA_PORT=${OUTBOXD_CATALOGUE_PG_PORT:-$((${OUTBOXD_PG_PORT:-54329} + 300))}
SMALL_PORT=$((REPLICA_PORT + 1))
KAFKA_PORT=${OUTBOXD_CATALOGUE_KAFKA_PORT:-$((${OUTBOXD_KAFKA_PORT:-59092} + 10))}

say() { printf 'catalogue-stack: %s\n' "$*" >&2; }

replica() {
    OUTBOXD_STACK_NAME=catalogue-replica OUTBOXD_PG_PORT=$REPLICA_PORT \
        OUTBOXD_PG_SETTINGS="wal_level = replica" bash "$STACK" "$@" postgres
}
small() {
    OUTBOXD_STACK_NAME=catalogue-small OUTBOXD_PG_PORT=$SMALL_PORT \
        OUTBOXD_PG_SETTINGS="max_replication_slots = 2;max_wal_senders = 2;track_commit_timestamp = on" bash "$STACK" "$@" postgres
}
kafka() {
    OUTBOXD_STACK_NAME=catalogue-kafka OUTBOXD_KAFKA_PORT=$KAFKA_PORT \
        OUTBOXD_KAFKA_SETTINGS="auto.create.topics.enable=false;transaction.state.log.replication.factor=3" \
        bash "$STACK" "$@" kafka
}

case ${1:-} in
    up)
        t0=$SECONDS
        mkdir -p "$OUT"
        pids=()
        replica start >"$OUT/replica.log" 2>&1 & pids+=($!)
        small start >"$OUT/small.log" 2>&1 & pids+=($!)
        kafka start >"$OUT/kafka.log" 2>&1 & pids+=($!)
        rc=0
        for p in "${pids[@]}"; do wait "$p" || rc=1; done
        cat "$OUT"/replica.log "$OUT"/small.log "$OUT"/kafka.log >&2
        ((rc == 0)) || { say "a server did not start (logs above)"; exit 1; }
        cat >"$OUT/env" <<ENV
REPLICA_PG_PORT=$REPLICA_PORT
SMALL_PG_PORT=$SMALL_PORT
STRICT_KAFKA=127.0.0.1:$KAFKA_PORT
ENV
        say "up in $((SECONDS - t0)) s: wal_level=replica on $REPLICA_PORT, 2 slots and senders on $SMALL_PORT, strict Kafka on $KAFKA_PORT"
        ;;
    down)
        rc=0
        replica stop >&2 || rc=1
        small stop >&2 || rc=1
        kafka stop >&2 || rc=1
        rm -f "$OUT/env"
        exit "$rc"
        ;;
    *)
        sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
