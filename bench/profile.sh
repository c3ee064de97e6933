#!/usr/bin/env bash
# Profiles outboxd draining a backlog (needs the local stack up and a build):
#   bench/profile.sh perf      [EVENTS] [BINARY]   perf record -g; prints the top of perf report
#   bench/profile.sh callgrind [EVENTS] [BINARY]   valgrind --tool=callgrind; prints callgrind_annotate
#   bench/profile.sh allocs    [EVENTS] [BINARY]   valgrind heap summary: allocations per event
# Output under .run/bench/profile-<time>/. EVENTS defaults to 200000 (perf) or 20000 (valgrind).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$repo"
tool=${1:-perf}
case $tool in
  perf) events=${2:-200000} ;;
  callgrind | allocs) events=${2:-20000} ;;
  *) echo "usage: bench/profile.sh perf|callgrind|allocs [EVENTS] [BINARY]" >&2; exit 2 ;;
esac
binary=${3:-${BUILD_DIR:-build}/outboxd}
pg_port=${OUTBOXD_PG_PORT:-54329}
kafka_port=${OUTBOXD_KAFKA_PORT:-59092}
dsn="host=127.0.0.1 port=$pg_port dbname=app user=postgres"
psql=(psql -X -q -t -A -v ON_ERROR_STOP=1 "$dsn")
id=$(date +%H%M%S)_$$
t=bench_prof_$id
work=$repo/.run/bench/profile-$id
mkdir -p "$work"
cleanup() {
  local p
  for p in $(jobs -pr); do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "${psql[@]}" -c "SELECT pg_drop_replication_slot('$t') FROM pg_replication_slots WHERE slot_name = '$t'" \
    -c "DROP PUBLICATION IF EXISTS $t" -c "DROP TABLE IF EXISTS $t" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"${psql[@]}" >/dev/null <<SQL
CREATE TABLE $t (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type text NOT NULL,
  aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL, headers jsonb,
  destination text, created_at timestamptz NOT NULL DEFAULT now());
CREATE PUBLICATION $t FOR TABLE $t WITH (publish = 'insert');
SELECT pg_create_logical_replication_slot('$t', 'pgoutput');
DO \$\$
DECLARE done int := 0; sizes int[] := ARRAY[1, 10, 100, 1000]; i int := 0; n int;
BEGIN
  WHILE done < $events LOOP
    n := least(sizes[1 + i % 4], $events - done);
    INSERT INTO $t (aggregate_type, aggregate_id, event_type, payload)
    SELECT 'BenchOrder', 'order-' || (done + g), 'OrderCreated',
           jsonb_build_object('order_id', done + g, 'customer', 'customer-' || g, 'note', repeat('x', 180))
    FROM generate_series(1, n) g;
    COMMIT;
    done := done + n; i := i + 1;
  END LOOP;
END \$\$;
SQL
last=$("${psql[@]}" -c "SELECT pg_current_wal_insert_lsn()")
cat >"$work/outboxd.toml" <<TOML
[source]
dsn = "$dsn"
slot = "$t"
publication = "$t"
create_slot = false
[sink.kafka]
"bootstrap.servers" = "127.0.0.1:$kafka_port"
[[outbox]]
table = "public.$t"
topic = "bench.profile.$id"
[messages]
enabled = false
TOML

case $tool in
  perf) cmd=(perf record -F 999 -g --call-graph dwarf,16384 -o "$work/perf.data" -- "$binary") ;;
  callgrind) cmd=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$binary") ;;
  allocs) cmd=(valgrind --tool=memcheck --leak-check=no --log-file="$work/memcheck.log" "$binary") ;;
esac
"${cmd[@]}" run --config "$work/outboxd.toml" >"$work/outboxd.log" 2>&1 &
pid=$!
until [[ $("${psql[@]}" -c "SELECT confirmed_flush_lsn >= '$last'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$t'") == t ]]; do
  kill -0 "$pid" 2>/dev/null || { tail "$work/outboxd.log"; exit 1; }
  sleep 0.2
done
# SIGTERM the profiled program itself (perf and valgrind pass it on or are its parent).
child=$(pgrep -P "$pid" -n || true)
if [[ $tool == perf && -n $child ]]; then kill -TERM "$child"; else kill -TERM "$pid"; fi
wait "$pid" || true

case $tool in
  perf) perf report -i "$work/perf.data" --no-children --percent-limit 1 --stdio 2>/dev/null |
          grep -v '^$' | head -120 | tee "$work/report.txt" ;;
  callgrind) callgrind_annotate "$work/callgrind.out" 2>/dev/null | head -60 | tee "$work/report.txt" ;;
  allocs)
    line=$(grep 'total heap usage' "$work/memcheck.log")
    allocs=$(sed -E 's/.*usage: ([0-9,]+) allocs.*/\1/' <<<"$line" | tr -d ,)
    echo "$line"
    echo "allocs: events=$events allocations=$allocs per_event=$(awk -v a="$allocs" -v n="$events" 'BEGIN {printf "%.2f", a / n}')" |
      tee "$work/report.txt" ;;
esac
echo "profile: $work" >&2
