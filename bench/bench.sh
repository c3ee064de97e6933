#!/usr/bin/env bash
# outboxd benchmark: one run, one database, one broker, the same rows for outboxd and the
# references (pg_recvlogical with pgoutput: the machine's decoding limit; Debezium's PostgreSQL
# connector with the Outbox Event Router in Kafka Connect standalone). Prints a table of figures
# and ratios and writes it as Markdown (with gnuplot PNGs) to bench/results/<date>.md.
#
#   bench/bench.sh [full|quick]          (make bench / make bench-quick)
#
# Steps: backlog drain (outboxd, pg_recvlogical, Debezium), steady load driven by pgbench at
# fixed rates and unthrottled (latency commit -> consumer from bench_consumer, lag at the end),
# one big transaction (peak RSS, time), start-up (process start -> first event in Kafka, and
# idle RSS after it). Targets are printed, never asserted.
#
# Environment: OUTBOXD_PG_PORT, OUTBOXD_KAFKA_PORT (the local stack's ports; started and
# stopped here unless already up), BENCH_CONNECT_PORT (Kafka Connect REST, default 18083),
# BENCH_SKIP_DEBEZIUM=1 (no JVM), BENCH_DEBEZIUM_MAX_S (time limit of Debezium's drain; past
# it, its rate is over the events published so far; default 900, quick 240), BENCH_OUT (results directory), BUILD_DIR (default build),
# BENCH_NO_BUILD=1 (use $BUILD_DIR/outboxd as built), BENCH_BASELINE=path/to/outboxd (a
# second outboxd build drains the same backlog too: before/after figures in one run).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$repo"
mode=${1:-full}
case $mode in
  full) drain_events=1000000 steady_s=60 big_txn=1000000 dbz_max_s=900 out_dir=${BENCH_OUT:-bench/results} ;;
  quick) drain_events=100000 steady_s=10 big_txn=200000 dbz_max_s=240 out_dir=${BENCH_OUT:-.run/bench/results} ;;
  *) echo "usage: bench/bench.sh [full|quick]" >&2; exit 2 ;;
esac
dbz_max_s=${BENCH_DEBEZIUM_MAX_S:-$dbz_max_s}
build=${BUILD_DIR:-build}
pg_port=${OUTBOXD_PG_PORT:-54329}
kafka_port=${OUTBOXD_KAFKA_PORT:-59092}
connect_port=${BENCH_CONNECT_PORT:-18083}
brokers=127.0.0.1:$kafka_port
dsn="host=127.0.0.1 port=$pg_port dbname=app user=postgres"
psql=(psql -X -q -t -A -v ON_ERROR_STOP=1 "$dsn")
run_id=$(date +%Y%m%d%H%M%S)
work=$repo/.run/bench/$run_id
mkdir -p "$work" "$out_dir"
consumer=$repo/build-bench/bench_consumer
hz=$(getconf CLK_TCK)
say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Dependencies, build, stack
# ---------------------------------------------------------------------------------------------
bash bench/deps.sh
say "building outboxd ($build) and bench_consumer"
# Only the relay binary: the tests are not needed here. BENCH_NO_BUILD=1 takes $build/outboxd
# as it is.
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
  [[ -f $build/CMakeCache.txt ]] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" --target outboxd -j "${JOBS:-2}" >/dev/null
fi
[[ -x $build/outboxd ]] || die "$build/outboxd is missing"
mkdir -p build-bench
if [[ ! -x $consumer || bench/bench_consumer.cc -nt $consumer ]]; then
  c++ -O2 -std=c++20 -Wall -o "$consumer" bench/bench_consumer.cc -lrdkafka
fi
dbz_jars=$repo/.run/bench/debezium/jars
if [[ ${BENCH_SKIP_DEBEZIUM:-0} != 1 && ( ! -d $dbz_jars || bench/debezium/pom.xml -nt $dbz_jars ) ]]; then
  say "resolving Debezium and Kafka Connect jars (Maven Central -> ~/.m2 -> $dbz_jars)"
  rm -rf "$dbz_jars"
  mvn -B -q -f bench/debezium/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$dbz_jars" >"$work/mvn.log" 2>&1 || { tail "$work/mvn.log"; die "Maven failed"; }
fi

started_stack=0
if ! bash deploy/local/stack.sh status >/dev/null 2>&1; then
  bash deploy/local/stack.sh up
  started_stack=1
fi

cleanup() {
  "${psql[@]}" -c "ALTER SYSTEM RESET fsync" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
  # Only this shell's own background jobs that still run (outboxd, consumers, Kafka Connect).
  local p
  for p in $(jobs -pr); do kill -TERM "$p" 2>/dev/null || true; done
  for p in $(jobs -p); do wait "$p" 2>/dev/null || true; done
  if [[ -s $work/drop.sql ]]; then "${psql[@]}" -f "$work/drop.sql" >/dev/null 2>&1 || true; fi
  if ((started_stack)); then bash deploy/local/stack.sh down || true; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", (b - a) / 1e9}'; }
cpu_s() { awk -v hz="$hz" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_mb() { awk -v k="$2" '$1 == k":" {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
sql() { "${psql[@]}" -c "$1"; }
lsn_num() { sql "SELECT '$1'::pg_lsn - '0/0'::pg_lsn"; }

# new_table NAME SLOT...: a table shaped like sql/outbox.sql, its publication, logical slots.
new_table() {
  local t=$1; shift
  "${psql[@]}" >/dev/null <<SQL
CREATE TABLE $t (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type text NOT NULL,
  aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL, headers jsonb,
  destination text, created_at timestamptz NOT NULL DEFAULT now());
CREATE PUBLICATION $t FOR TABLE $t WITH (publish = 'insert');
SQL
  printf 'DROP PUBLICATION IF EXISTS %s;\nDROP TABLE IF EXISTS %s;\n' "$t" "$t" >>"$work/drop.sql"
  local s
  for s in "$@"; do
    sql "SELECT pg_create_logical_replication_slot('$s', 'pgoutput')" >/dev/null
    printf "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '%s' AND NOT active;\n" \
      "$s" >>"$work/drop.sql"
  done
}

# insert_rows TABLE N [TXN_SIZE]: N rows of ~250-byte payload, in transactions of 1, 10, 100
# and 1000 rows taking turns, or all of TXN_SIZE.
insert_rows() {
  local t=$1 n=$2 sizes="ARRAY[1, 10, 100, 1000]"
  [[ -n ${3:-} ]] && sizes="ARRAY[$3, $3, $3, $3]"
  "${psql[@]}" >/dev/null <<SQL
DO \$\$
DECLARE done int := 0; sizes int[] := $sizes; i int := 0; n int;
BEGIN
  WHILE done < $n LOOP
    n := least(sizes[1 + i % 4], $n - done);
    INSERT INTO $t (aggregate_type, aggregate_id, event_type, payload)
    SELECT 'BenchOrder', 'order-' || (done + g), 'OrderCreated',
           jsonb_build_object('order_id', done + g, 'customer', 'customer-' || g,
                              'note', repeat('x', 180))
    FROM generate_series(1, n) g;
    COMMIT;
    done := done + n; i := i + 1;
  END LOOP;
END \$\$;
SQL
}

# outboxd_config TABLE SLOT TOPIC FILE
outboxd_config() {
  cat >"$4" <<TOML
[source]
dsn = "$dsn"
slot = "$2"
publication = "$1"
create_slot = false
[sink.kafka]
"bootstrap.servers" = "$brokers"
[[outbox]]
table = "public.$1"
topic = "$3"
[messages]
enabled = false
TOML
}

# start_outboxd CONFIG LOG: sets $ox_pid.
start_outboxd() {
  "$build/outboxd" run --config "$1" >"$2" 2>&1 &
  ox_pid=$!
}

stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# wait_confirmed SLOT LSN PID TIMEOUT_S: until the slot's confirmed_flush_lsn >= LSN.
wait_confirmed() {
  local deadline=$((SECONDS + $4))
  while [[ $(sql "SELECT confirmed_flush_lsn >= '$2'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$1'") != t ]]; do
    kill -0 "$3" 2>/dev/null || die "process $3 exited before slot $1 reached $2 (see $work)"
    ((SECONDS < deadline)) || die "slot $1 did not reach $2 within $4 s (see $work)"
    sleep 0.02
  done
}

wait_slot_active() {
  local deadline=$((SECONDS + $2))
  while [[ $(sql "SELECT active FROM pg_replication_slots WHERE slot_name = '$1'") != t ]]; do
    ((SECONDS < deadline)) || die "slot $1 not active within $2 s (see $work)"
    sleep 0.02
  done
}

# start_consumer TOPIC OUT [ARGS...]: latency consumer in the background, ready when it says so.
start_consumer() {
  local topic=$1 out=$2; shift 2
  "$consumer" latency --brokers "$brokers" --topic "$topic" "$@" >"$out" 2>"$out.err" &
  cons_pid=$!
  local deadline=$((SECONDS + 60))
  until grep -q '^ready' "$out" 2>/dev/null; do
    kill -0 "$cons_pid" 2>/dev/null || { cat "$out.err" >&2; die "bench_consumer exited"; }
    ((SECONDS < deadline)) || die "bench_consumer not ready in 60 s"
    sleep 0.05
  done
}
field() { tr ' ' '\n' <"$1" | awk -F= -v k="$2" '$1 == k {print $2}' | tail -1; }

declare -A R   # results by name

# The relay is measured, not the disk: without fsync, commits cost CPU only, so that pgbench
# gets as close to its target rates as this machine allows. Reset when the script ends.
"${psql[@]}" -c "ALTER SYSTEM SET fsync = off" -c "SELECT pg_reload_conf()" >/dev/null

# ---------------------------------------------------------------------------------------------
# 1. Backlog drain
# ---------------------------------------------------------------------------------------------
drain_table=bench_drain_$run_id
ox_slot=${drain_table}_ox
recv_slot=${drain_table}_recv
dbz_slot=${drain_table}_dbz
base_slot=${drain_table}_base
baseline=${BENCH_BASELINE:-}
[[ -z $baseline || -x $baseline ]] || die "BENCH_BASELINE=$baseline is not an executable"
dbz_slots=()
[[ ${BENCH_SKIP_DEBEZIUM:-0} != 1 ]] && dbz_slots=("$dbz_slot")
# Every reader's slot exists before the backlog is written: each one reads exactly the backlog.
# Debezium with snapshot.mode=no_data and no stored offset streams from its slot's position.
new_table "$drain_table" "$ox_slot" "$recv_slot" ${baseline:+"$base_slot"} "${dbz_slots[@]}"
extra=0
if [[ ${BENCH_SKIP_DEBEZIUM:-0} != 1 ]]; then
  dbz_topic_prefix=bench.dbz.$run_id
  dbz_topic=$dbz_topic_prefix.BenchOrder
  mkdir -p "$work/connect"
  cat >"$work/connect/worker.properties" <<EOF
bootstrap.servers=$brokers
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
offset.storage.file.filename=$work/connect/offsets
offset.flush.interval.ms=1000
listeners=http://127.0.0.1:$connect_port
plugin.discovery=service_load
# The same producer guarantees and batching as outboxd's (idempotent, acks=all, linger 5 ms,
# 5 requests in flight); Connect's own default allows one request in flight.
producer.enable.idempotence=true
producer.acks=all
producer.linger.ms=5
producer.max.in.flight.requests.per.connection=5
EOF
  cat >"$work/connect/outbox.properties" <<EOF
name=bench-outbox
connector.class=io.debezium.connector.postgresql.PostgresConnector
tasks.max=1
database.hostname=127.0.0.1
database.port=$pg_port
database.user=postgres
database.dbname=app
topic.prefix=benchdbz$run_id
plugin.name=pgoutput
slot.name=$dbz_slot
publication.name=$drain_table
publication.autocreate.mode=disabled
snapshot.mode=no_data
table.include.list=public.$drain_table
tombstones.on.delete=false
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
transforms.outbox.table.field.event.id=id
transforms.outbox.table.field.event.key=aggregate_id
transforms.outbox.table.field.event.payload=payload
transforms.outbox.table.fields.additional.placement=event_type:header:eventType
transforms.outbox.route.by.field=aggregate_type
transforms.outbox.route.topic.replacement=$dbz_topic_prefix.\${routedByValue}
EOF
  cat >"$work/connect/log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="out"/></Root>
    <Logger name="io.debezium" level="INFO"/></Loggers>
</Configuration>
EOF
  start_connect() {
    java -Xms256m -Xmx2g -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$work/connect/log4j2.xml" -cp "$dbz_jars/*" \
      org.apache.kafka.connect.cli.ConnectStandalone "$work/connect/worker.properties" \
      "$work/connect/outbox.properties" >>"$work/connect/connect.log" 2>&1 &
    dbz_pid=$!
  }
fi

say "drain: committing $drain_events outbox rows in transactions of 1, 10, 100 and 1000 rows"
t0=$(now_ns)
insert_rows "$drain_table" "$drain_events"
R[insert_s]=$(secs "$t0" "$(now_ns)")
last_lsn=$(sql "SELECT pg_current_wal_insert_lsn()")
say "drain: inserted in ${R[insert_s]} s; last LSN $last_lsn"

say "drain: pg_recvlogical (pgoutput proto_version 1) to $last_lsn"
t0=$(now_ns)
/usr/bin/time -f '%U %S %M' -o "$work/recv.time" pg_recvlogical -d "$dsn" -S "$recv_slot" --start \
  -o proto_version=1 -o publication_names="$drain_table" -E "$last_lsn" -F 0 -f /dev/null --no-loop \
  2>"$work/recv.log" || die "pg_recvlogical failed: $(cat "$work/recv.log")"
t1=$(now_ns)
R[recv_s]=$(secs "$t0" "$t1")
R[recv_rate]=$(awk -v n="$drain_events" -v t="${R[recv_s]}" 'BEGIN {printf "%.0f", n / t}')
read -r u s m <"$work/recv.time"
R[recv_cpu]=$(awk -v u="$u" -v s="$s" 'BEGIN {printf "%.2f", u + s}')
R[recv_rss]=$(awk -v k="$m" 'BEGIN {printf "%.1f", k / 1024}')
say "drain: pg_recvlogical ${R[recv_s]} s, ${R[recv_rate]} events/s"

say "drain: outboxd"
outboxd_config "$drain_table" "$ox_slot" "bench.drain.$run_id" "$work/drain.toml"
t0=$(now_ns)
start_outboxd "$work/drain.toml" "$work/drain.log"
wait_confirmed "$ox_slot" "$last_lsn" "$ox_pid" 1800
t1=$(now_ns)
R[ox_s]=$(secs "$t0" "$t1")
R[ox_rate]=$(awk -v n="$drain_events" -v t="${R[ox_s]}" 'BEGIN {printf "%.0f", n / t}')
R[ox_cpu]=$(cpu_s "$ox_pid")
R[ox_rss]=$(status_mb "$ox_pid" VmHWM)
stop_pid "$ox_pid"
say "drain: outboxd ${R[ox_s]} s, ${R[ox_rate]} events/s, cpu ${R[ox_cpu]} s, peak RSS ${R[ox_rss]} MB"

if [[ -n $baseline ]]; then
  say "drain: baseline outboxd $baseline"
  outboxd_config "$drain_table" "$base_slot" "bench.drain.base.$run_id" "$work/base.toml"
  t0=$(now_ns)
  "$baseline" run --config "$work/base.toml" >"$work/base.log" 2>&1 &
  base_pid=$!
  wait_confirmed "$base_slot" "$last_lsn" "$base_pid" 1800
  R[base_s]=$(secs "$t0" "$(now_ns)")
  R[base_rate]=$(awk -v n="$drain_events" -v t="${R[base_s]}" 'BEGIN {printf "%.0f", n / t}')
  R[base_cpu]=$(cpu_s "$base_pid")
  R[base_rss]=$(status_mb "$base_pid" VmHWM)
  stop_pid "$base_pid"
  say "drain: baseline ${R[base_s]} s, ${R[base_rate]} events/s, cpu ${R[base_cpu]} s, peak RSS ${R[base_rss]} MB"
fi

if [[ ${BENCH_SKIP_DEBEZIUM:-0} != 1 ]]; then
  say "drain: Debezium $(ls "$dbz_jars" | sed -n 's/^debezium-connector-postgres-\(.*\)\.jar$/\1/p') in Kafka Connect standalone"
  t0=$(now_ns)
  start_connect
  rc=0
  "$consumer" watermark --brokers "$brokers" --topic "$dbz_topic" --expect $((drain_events + extra)) \
    --max-s "$dbz_max_s" >"$work/dbz.watermark" || rc=$?
  ((rc == 0 || rc == 3)) || die "Debezium's topic could not be read (see $work/connect/connect.log)"
  R[dbz_s]=$(secs "$t0" "$(field "$work/dbz.watermark" last_ns)")
  dbz_events=$(( $(field "$work/dbz.watermark" count) - extra ))
  R[dbz_rate]=$(awk -v n="$dbz_events" -v t="${R[dbz_s]}" 'BEGIN {printf "%.0f", n / t}')
  # Past the time limit the rate is over the events published so far (the JVM's start-up
  # included), and the table says so.
  ((rc == 3)) && R[dbz_note]=" (stopped after $dbz_max_s s with $dbz_events of $drain_events events)"
  R[dbz_cpu]=$(cpu_s "$dbz_pid")
  R[dbz_rss]=$(status_mb "$dbz_pid" VmHWM)
  stop_pid "$dbz_pid"
  say "drain: Debezium ${R[dbz_s]} s, ${R[dbz_rate]} events/s, cpu ${R[dbz_cpu]} s, peak RSS ${R[dbz_rss]} MB${R[dbz_note]:-}"
fi
"${psql[@]}" -f "$work/drop.sql" >/dev/null 2>&1 || true
: >"$work/drop.sql"

# ---------------------------------------------------------------------------------------------
# 2. Start-up and idle RSS
# ---------------------------------------------------------------------------------------------
say "start-up: backlog of one event"
st=bench_start_$run_id
new_table "$st" "${st}_ox"
insert_rows "$st" 1
outboxd_config "$st" "${st}_ox" "bench.start.$run_id" "$work/start.toml"
start_consumer "bench.start.$run_id" "$work/start.cons" --expect 1 --max-s 60
t0=$(now_ns)
start_outboxd "$work/start.toml" "$work/start.log"
wait "$cons_pid" || die "start-up consumer failed"
R[start_ms]=$(awk -v a="$t0" -v b="$(field "$work/start.cons" first_recv_ns)" 'BEGIN {printf "%.1f", (b - a) / 1e6}')
sleep 3
R[idle_rss]=$(status_mb "$ox_pid" VmRSS)
stop_pid "$ox_pid"
say "start-up: first event after ${R[start_ms]} ms; idle RSS ${R[idle_rss]} MB"

# ---------------------------------------------------------------------------------------------
# 3. One big transaction
# ---------------------------------------------------------------------------------------------
say "big transaction: $big_txn rows in one transaction"
bt=bench_big_$run_id
new_table "$bt" "${bt}_ox"
insert_rows "$bt" "$big_txn" "$big_txn"
last_lsn=$(sql "SELECT pg_current_wal_insert_lsn()")
outboxd_config "$bt" "${bt}_ox" "bench.big.$run_id" "$work/big.toml"
t0=$(now_ns)
start_outboxd "$work/big.toml" "$work/big.log"
wait_confirmed "${bt}_ox" "$last_lsn" "$ox_pid" 1800
R[big_s]=$(secs "$t0" "$(now_ns)")
R[big_rss]=$(status_mb "$ox_pid" VmHWM)
stop_pid "$ox_pid"
say "big transaction: ${R[big_s]} s, peak RSS ${R[big_rss]} MB"
"${psql[@]}" -f "$work/drop.sql" >/dev/null 2>&1 || true
: >"$work/drop.sql"

# ---------------------------------------------------------------------------------------------
# 4. Steady load
# ---------------------------------------------------------------------------------------------
steady() {
  local name=$1 rate=$2 clients=$3
  local t=bench_${name}_$run_id topic=bench.steady.$name.$run_id
  new_table "$t" "${t}_ox"
  sed "s/@TABLE@/$t/" bench/pgbench_outbox.sql >"$work/$name.pgbench.sql"
  outboxd_config "$t" "${t}_ox" "$topic" "$work/$name.toml"
  start_outboxd "$work/$name.toml" "$work/$name.log"
  wait_slot_active "${t}_ox" 60
  start_consumer "$topic" "$work/$name.cons" --idle-ms 5000 --max-s $((steady_s + 600)) \
    --cdf "$work/$name.cdf"
  local rate_args=()
  [[ $rate != max ]] && rate_args=(-R "$rate")
  say "steady $name: pgbench ${rate_args[*]:-unthrottled} -c $clients for $steady_s s"
  local wal0 ticks0 t0
  wal0=$(sql "SELECT pg_current_wal_lsn()")
  ticks0=$(cpu_ticks "$ox_pid")
  t0=$(now_ns)
  pgbench -n -M prepared -c "$clients" -j 2 -T "$steady_s" "${rate_args[@]}" \
    -f "$work/$name.pgbench.sql" "$dsn" >"$work/$name.pgbench.out" 2>&1 ||
    { tail "$work/$name.pgbench.out"; die "pgbench failed"; }
  local lag_line
  lag_line=$(sql "SELECT pg_current_wal_lsn() - '$wal0'::pg_lsn, pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '${t}_ox'")
  local t1; t1=$(now_ns)
  local ticks1; ticks1=$(cpu_ticks "$ox_pid")
  local elapsed; elapsed=$(secs "$t0" "$t1")
  local rows; rows=$(sql "SELECT count(*) FROM $t")
  R[${name}_events]=$rows
  R[${name}_rate]=$(awk -v n="$rows" -v t="$elapsed" 'BEGIN {printf "%.0f", n / t}')
  R[${name}_cpu]=$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$hz" -v t="$elapsed" 'BEGIN {printf "%.0f", 100 * (b - a) / hz / t}')
  local wal_bytes=${lag_line%%|*} lag=${lag_line##*|}
  R[${name}_lag_bytes]=$lag
  R[${name}_lag_s]=$(awk -v l="$lag" -v w="$wal_bytes" -v t="$elapsed" 'BEGIN {printf "%.3f", (w > 0) ? l / (w / t) : 0}')
  R[${name}_wal_rate]=$(awk -v w="$wal_bytes" -v t="$elapsed" 'BEGIN {printf "%.1f", w / t / 1048576}')
  wait "$cons_pid" || die "consumer failed"
  R[${name}_recv]=$(field "$work/$name.cons" count)
  R[${name}_p50]=$(field "$work/$name.cons" p50_ms)
  R[${name}_p99]=$(field "$work/$name.cons" p99_ms)
  R[${name}_p999]=$(field "$work/$name.cons" p999_ms)
  R[${name}_rss]=$(status_mb "$ox_pid" VmHWM)
  stop_pid "$ox_pid"
  "${psql[@]}" -f "$work/drop.sql" >/dev/null 2>&1 || true
  : >"$work/drop.sql"
  say "steady $name: ${R[${name}_rate]} events/s committed, consumer got ${R[${name}_recv]}/$rows," \
    "p50 ${R[${name}_p50]} ms p99 ${R[${name}_p99]} ms p99.9 ${R[${name}_p999]} ms," \
    "lag ${R[${name}_lag_bytes]} B = ${R[${name}_lag_s]} s of WAL"
}
steady r1000 1000 4
steady r10000 10000 8
steady max max 16

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
# holds EXPR: EXPR is an awk condition over numbers, e.g. "0.44 >= 0.5".
holds() { awk "BEGIN {print ($1) ? \"holds\" : \"NOT YET\"}"; }
R[ratio_recv]=$(ratio "${R[ox_rate]}" "${R[recv_rate]}")
R[ratio_dbz]=$(ratio "${R[ox_rate]}" "${R[dbz_rate]:-0}")
date_tag=$(date -u +%Y-%m-%d)
[[ $mode == quick ]] && date_tag=quick-$date_tag
md=$out_dir/$date_tag.md
dbz_version=$(ls "$dbz_jars" 2>/dev/null | sed -n 's/^debezium-connector-postgres-\(.*\)\.jar$/\1/p')
connect_version=$(ls "$dbz_jars" 2>/dev/null | sed -n 's/^connect-runtime-\(.*\)\.jar$/\1/p')
{
  echo "# outboxd benchmark ($mode), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)," \
    "load average at the end $(cut -d' ' -f1-3 /proc/loadavg) (shared with other jobs: compare ratios, not absolutes)."
  echo "PostgreSQL $(sql 'SHOW server_version'), Kafka $(sed -n 's/.*<kafka.version>\(.*\)<.*/\1/p' deploy/local/pom.xml) (local stack)," \
    "outboxd $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+local changes'), Debezium ${dbz_version:-skipped} in Kafka Connect ${connect_version:-n/a}."
  echo
  echo "## Backlog drain: $drain_events rows, transactions of 1/10/100/1000 rows, committed before start"
  echo
  echo "| reader | seconds | events/s | CPU s | peak RSS MB |"
  echo "|---|---:|---:|---:|---:|"
  echo "| pg_recvlogical (pgoutput, decode only) | ${R[recv_s]} | ${R[recv_rate]} | ${R[recv_cpu]} | ${R[recv_rss]} |"
  echo "| outboxd (until slot confirmed past last commit) | ${R[ox_s]} | ${R[ox_rate]} | ${R[ox_cpu]} | ${R[ox_rss]} |"
  [[ -n $baseline ]] && echo "| outboxd baseline ($baseline) | ${R[base_s]} | ${R[base_rate]} | ${R[base_cpu]} | ${R[base_rss]} |"
  echo "| Debezium + Outbox Event Router (JVM start to last record in Kafka)${R[dbz_note]:-} | ${R[dbz_s]:-skipped} | ${R[dbz_rate]:-} | ${R[dbz_cpu]:-} | ${R[dbz_rss]:-} |"
  echo
  echo "## Steady load: pgbench, one outbox insert per transaction, $steady_s s each"
  echo
  echo "| pgbench rate | committed events/s | received / committed | p50 ms | p99 ms | p99.9 ms | lag at end (bytes) | lag (s of WAL) | WAL MB/s | outboxd CPU % |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for n in r1000 r10000 max; do
    label=${n#r}; [[ $n == max ]] && label=unthrottled
    echo "| $label | ${R[${n}_rate]} | ${R[${n}_recv]}/${R[${n}_events]} | ${R[${n}_p50]} | ${R[${n}_p99]} | ${R[${n}_p999]} | ${R[${n}_lag_bytes]} | ${R[${n}_lag_s]} | ${R[${n}_wal_rate]} | ${R[${n}_cpu]} |"
  done
  echo
  echo "## One transaction of $big_txn rows; start-up"
  echo
  echo "| figure | value |"
  echo "|---|---:|"
  echo "| big transaction: seconds to slot confirmed | ${R[big_s]} |"
  echo "| big transaction: outboxd peak RSS MB | ${R[big_rss]} |"
  echo "| start-up: process start to first event in Kafka, ms | ${R[start_ms]} |"
  echo "| idle RSS MB (3 s after start-up) | ${R[idle_rss]} |"
  echo
  echo "## Targets (ratios in this run)"
  echo
  echo "| target | measured | status |"
  echo "|---|---:|---|"
  echo "| drain >= 0.5 x pg_recvlogical | ${R[ratio_recv]} x | $(holds "${R[ratio_recv]} >= 0.5") |"
  echo "| drain >= 10 x Debezium | ${R[ratio_dbz]} x | $(holds "${R[ratio_dbz]:-0} >= 10") |"
  echo "| p99 < 10 ms at 10,000 events/s | ${R[r10000_p99]} ms at ${R[r10000_rate]} events/s | $(holds "${R[r10000_p99]} < 10 && ${R[r10000_rate]} >= 9500") |"
  echo "| lag < 1 s of WAL, unthrottled | ${R[max_lag_s]} s at ${R[max_rate]} events/s | $(holds "${R[max_lag_s]} < 1") |"
  echo "| 1M-row transaction peak RSS < 64 MB | ${R[big_rss]} MB ($big_txn rows) | $(holds "${R[big_rss]} < 64") |"
  echo "| idle RSS < 16 MB | ${R[idle_rss]} MB | $(holds "${R[idle_rss]} < 16") |"
  echo "| first event within 100 ms of start | ${R[start_ms]} ms | $(holds "${R[start_ms]} < 100") |"
  echo
  echo "PostgreSQL ran with fsync = off during the run (commits cost CPU, not disk flushes)."
  echo "Lag is the slot's confirmed_flush_lsn behind pg_current_wal_lsn() the moment pgbench ends;"
  echo "seconds of WAL divide it by the WAL rate measured over the same run. Latency is a separate"
  echo "librdkafka consumer's receive time minus the envelope's source.commit_time (same clock)."
  echo "Raw logs: .run/bench/$run_id/."
} >"$md"

if command -v gnuplot >/dev/null; then
  png=$out_dir/$date_tag-latency.png
  gnuplot <<GP 2>"$work/gnuplot.log" || say "gnuplot failed (see $work/gnuplot.log)"
set terminal pngcairo size 900,500
set output "$png"
set title "commit -> consumer latency, outboxd ($mode run)"
set xlabel "percentile"
set ylabel "latency (ms)"
set logscale y
set grid
set key left top
plot "$work/r1000.cdf" using 1:2 with lines lw 2 title "1,000/s", \
     "$work/r10000.cdf" using 1:2 with lines lw 2 title "10,000/s", \
     "$work/max.cdf" using 1:2 with lines lw 2 title "unthrottled (${R[max_rate]}/s)"
GP
  png2=$out_dir/$date_tag-drain.png
  gnuplot <<GP 2>>"$work/gnuplot.log" || say "gnuplot failed (see $work/gnuplot.log)"
set terminal pngcairo size 700,400
set output "$png2"
set title "backlog drain, $drain_events events ($mode run)"
set ylabel "events/s"
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:*]
set grid ytics
set xtics nomirror
plot "-" using 0:2:xtic(1) with boxes notitle, "-" using 0:2:(sprintf("%d", \$2)) with labels offset 0,1 notitle
"pg_recvlogical" ${R[recv_rate]}
"outboxd" ${R[ox_rate]}
"Debezium" ${R[dbz_rate]:-0}
e
"pg_recvlogical" ${R[recv_rate]}
"outboxd" ${R[ox_rate]}
"Debezium" ${R[dbz_rate]:-0}
e
GP
  printf '\n![latency](%s)\n![drain](%s)\n' "$(basename "$png")" "$(basename "$png2")" >>"$md"
fi

cat "$md"
say "written $md"
