#!/usr/bin/env bash
# Backlog drain: N outbox rows (payload ~250 bytes) committed in transactions
# of mixed sizes before outboxd starts; measures the time from process start
# until the slot is confirmed past the last commit (so every event was
# acknowledged by Kafka), outboxd's CPU seconds and peak RSS.
#   bench/drain.sh [EVENTS] [TXN_SIZE]   (needs deploy/local/stack.sh up and make build)
# Without TXN_SIZE, transactions of 1, 10, 100 and 1000 rows take turns; with
# it, every transaction has TXN_SIZE rows (TXN_SIZE = EVENTS: one transaction).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
events=${1:-100000}
txn_size=${2:-}
sizes_sql="ARRAY[1, 10, 100, 1000]"
[[ -n "$txn_size" ]] && sizes_sql="ARRAY[$txn_size, $txn_size, $txn_size, $txn_size]"
build=${BUILD_DIR:-build}
pg_port=${OUTBOXD_PG_PORT:-54329}
kafka_port=${OUTBOXD_KAFKA_PORT:-59092}
psql=(psql -X -q -t -A -v ON_ERROR_STOP=1 "host=127.0.0.1 port=$pg_port dbname=app user=postgres")
run_id=$(date +%s)_$$
table=bench_outbox_$run_id
slot=bench_slot_$run_id
pub=bench_pub_$run_id
work=.run/bench/$run_id
mkdir -p "$work"

cleanup() {
  [[ -n "${pid:-}" ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  "${psql[@]}" -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" \
    -c "DROP PUBLICATION IF EXISTS $pub" -c "DROP TABLE IF EXISTS $table" >/dev/null || true
}
trap cleanup EXIT

"${psql[@]}" >/dev/null <<SQL
CREATE TABLE $table (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type text NOT NULL,
  aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL, headers jsonb,
  destination text, created_at timestamptz NOT NULL DEFAULT now());
CREATE PUBLICATION $pub FOR TABLE $table WITH (publish = 'insert');
SELECT pg_create_logical_replication_slot('$slot', 'pgoutput');
SQL

echo "bench: committing $events outbox rows in transactions of ${txn_size:-mixed} size" >&2
"${psql[@]}" >/dev/null <<SQL
DO \$\$
DECLARE done int := 0; sizes int[] := $sizes_sql; i int := 0; n int;
BEGIN
  WHILE done < $events LOOP
    n := least(sizes[1 + i % 4], $events - done);
    INSERT INTO $table (aggregate_type, aggregate_id, event_type, payload)
    SELECT 'BenchOrder', 'order-' || (done + g), 'OrderCreated',
           jsonb_build_object('order_id', done + g, 'customer', 'customer-' || g,
                              'note', repeat('x', 180))
    FROM generate_series(1, n) g;
    COMMIT;
    done := done + n; i := i + 1;
  END LOOP;
END \$\$;
SQL
last_lsn=$("${psql[@]}" -c "SELECT pg_current_wal_insert_lsn()")

cat > "$work/outboxd.toml" <<TOML
[source]
dsn = "host=127.0.0.1 port=$pg_port dbname=app user=postgres"
slot = "$slot"
publication = "$pub"
create_slot = false
[sink.kafka]
"bootstrap.servers" = "127.0.0.1:$kafka_port"
[[outbox]]
table = "public.$table"
topic = "bench.drain.$run_id"
[messages]
enabled = false
TOML

start_ns=$(date +%s%N)
"$build/outboxd" run --config "$work/outboxd.toml" > "$work/outboxd.log" 2>&1 &
pid=$!
while true; do
  confirmed=$("${psql[@]}" -c "SELECT confirmed_flush_lsn >= '$last_lsn'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$slot'")
  [[ $confirmed == t ]] && break
  kill -0 "$pid" 2>/dev/null || { echo "bench: outboxd exited:"; tail "$work/outboxd.log"; exit 1; }
  sleep 0.05
done
end_ns=$(date +%s%N)
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
hz=$(getconf CLK_TCK)
kill -TERM "$pid"; wait "$pid" || true; pid=

elapsed=$(awk -v s="$start_ns" -v e="$end_ns" 'BEGIN {printf "%.3f", (e - s) / 1e9}')
rate=$(awk -v n="$events" -v t="$elapsed" 'BEGIN {printf "%.0f", n / t}')
cpu=$(awk -v t="$ticks" -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}')
rss=$(awk -v k="$hwm_kb" 'BEGIN {printf "%.1f", k / 1024}')
echo "drain: events=$events txn_size=${txn_size:-mixed} seconds=$elapsed events_per_s=$rate cpu_s=$cpu peak_rss_mb=$rss"
