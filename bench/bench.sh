#!/usr/bin/env bash
# outboxd benchmark: one run, one database, one broker, the same rows for outboxd and the
# references (pg_recvlogical with pgoutput: the machine's decoding limit; Debezium's PostgreSQL
# connector with the Outbox Event Router in Kafka Connect standalone). Prints a table of figures
# and ratios and writes it as Markdown (with gnuplot PNGs) to bench/results/<date>.md.
#
#   bench/bench.sh [full|quick]          (make bench / make bench-quick)
#
# Steps: backlog drain of mixed transactions (outboxd, pg_recvlogical, Debezium) and of 1-row
# transactions (outboxd, pg_recvlogical); start-up (streaming -> first event in Kafka on a
# topic never seen, idle RSS and CPU); one big transaction (peak RSS, time); steady load driven
# by pgbench at 1,000, 5,000 and 10,000/s and unthrottled, each phase run REPS times
# interleaved, medians reported: commit -> consumer latency (first seconds apart), pg_recvlogical's
# commit -> receive latency under the same load (the walsender's floor), lag trend, CPU of outboxd
# and of its walsender, and which of them was behind. Targets are printed, never asserted.
# Delivery mode is a dimension: both drains and every steady phase run with outboxd in
# at_least_once and in exactly_once mode ([sink] delivery, Kafka transactions + checkpoint) on the
# same backlog / interleaved, the consumer reading with isolation.level=read_committed; the report
# gives drain(exactly_once) / drain(at_least_once) and exactly-once p99 at 1,000/s.
#
#   bench/bench.sh tune      the latency defaults: linger.ms 0/1/5 with Nagle off, the shipped
#                            defaults, and statistics off, at 1,000/s and in a drain.
#
# Environment: OUTBOXD_PG_PORT, OUTBOXD_KAFKA_PORT (the local stack's ports; started and
# stopped here unless already up), BENCH_CONNECT_PORT (Kafka Connect REST, default 18083),
# BENCH_SKIP_DEBEZIUM=1 (no JVM), BENCH_DEBEZIUM_MAX_S (time limit of Debezium's drain; past
# it, its rate is over the events published so far; default 900, quick 240), BENCH_OUT (results directory), BUILD_DIR (default build),
# BENCH_NO_BUILD=1 (use $BUILD_DIR/outboxd as built), BENCH_BASELINE=path/to/outboxd (a
# second outboxd build drains the same backlog too, at least once: before/after figures in one
# run), BENCH_DELIVERY=at_least_once (leave exactly-once mode out), BENCH_EOS_SINK (more [sink]
# lines for exactly-once runs, e.g. 'transaction_interval = "20ms"').
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$repo"
mode=${1:-full}
case $mode in
  full) drain_events=1000000 drain1_events=200000 steady_s=60 reps=3 big_txn=1000000 dbz_max_s=900
        out_dir=${BENCH_OUT:-bench/results} ;;
  quick) drain_events=100000 drain1_events=30000 steady_s=15 reps=1 big_txn=200000 dbz_max_s=240
         out_dir=${BENCH_OUT:-.run/bench/results} ;;
  tune) drain_events=200000 drain1_events=0 steady_s=30 reps=2 big_txn=0 dbz_max_s=0
        out_dir=${BENCH_OUT:-.run/bench/results} ;;
  *) echo "usage: bench/bench.sh [full|quick|tune]" >&2; exit 2 ;;
esac
reps=${BENCH_REPS:-$reps}
# Delivery modes: drains and steady phases run in both, on the same backlog and interleaved,
# unless BENCH_DELIVERY=at_least_once (a binary without exactly-once mode). tune: at-least-once.
with_eos=1
[[ ${BENCH_DELIVERY:-both} == at_least_once || $mode == tune ]] && with_eos=0
steady_s=${BENCH_STEADY_S:-$steady_s}
drain_events=${BENCH_DRAIN_EVENTS:-$drain_events}
# The first seconds of each steady phase (outboxd just started, topic metadata, connections)
# are reported on their own and left out of the steady percentiles.
warm_s=${BENCH_WARM_S:-5}
metrics_port=${BENCH_METRICS_PORT:-19187}
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
trap 'printf "bench: error: line %s: %s failed\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

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
[[ $mode == tune ]] && BENCH_SKIP_DEBEZIUM=1
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
  "${psql[@]}" -c "ALTER SYSTEM RESET log_checkpoints" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
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
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
status_mb() { awk -v k="$2" '$1 == k":" {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
sql() { "${psql[@]}" -c "$1"; }
rate_of() { awk -v n="$1" -v t="$2" 'BEGIN {printf "%.0f", n / t}'; }
# median V...: the middle value (the lower middle of an even count); "n/a" when none is numeric.
median() {
  printf '%s\n' "$@" | awk '$1 ~ /^-?[0-9.]+$/' | sort -g |
    awk '{v[NR] = $1} END {if (NR == 0) print "n/a"; else print v[int((NR + 1) / 2)]}'
}

# new_table NAME SLOT[:PLUGIN]...: a table shaped like sql/outbox.sql, its publication, logical
# slots (pgoutput unless a plugin is named).
new_table() {
  local t=$1; shift
  "${psql[@]}" >/dev/null <<SQL
CREATE TABLE $t (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type text NOT NULL,
  aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL, headers jsonb,
  destination text, created_at timestamptz NOT NULL DEFAULT now());
CREATE PUBLICATION $t FOR TABLE $t WITH (publish = 'insert');
SQL
  printf 'DROP PUBLICATION IF EXISTS %s;\nDROP TABLE IF EXISTS %s;\n' "$t" "$t" >>"$work/drop.sql"
  local s name plugin
  for s in "$@"; do
    name=${s%%:*} plugin=pgoutput
    [[ $s == *:* ]] && plugin=${s#*:}
    sql "SELECT pg_create_logical_replication_slot('$name', '$plugin')" >/dev/null
    printf "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '%s' AND NOT active;\n" \
      "$name" >>"$work/drop.sql"
  done
}

# insert_rows TABLE N [TXN_SIZE]: N rows of ~250-byte payload, in transactions of 1, 10, 100
# and 1000 rows taking turns, or all of TXN_SIZE. Asynchronous commit: writing the backlog is
# not what is measured.
insert_rows() {
  local t=$1 n=$2 sizes="ARRAY[1, 10, 100, 1000]"
  [[ -n ${3:-} ]] && sizes="ARRAY[$3, $3, $3, $3]"
  "${psql[@]}" >/dev/null <<SQL
SET synchronous_commit = off;
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

# commit_marker TABLE: commits one more row in a transaction of its own and prints the end LSN
# of that commit, read from pgoutput's Commit message (bytes 10..17: end_lsn) on a throwaway slot
# created just before it. A reader that confirmed this LSN delivered everything before it; the
# server's current WAL position would also cover WAL written after it by others (running-xacts
# records, checkpoints), which only a keepalive can confirm.
commit_marker() {
  local t=$1 probe=${1}_probe
  sql "SELECT pg_create_logical_replication_slot('$probe', 'pgoutput')" >/dev/null
  sql "INSERT INTO $t (aggregate_type, aggregate_id, event_type, payload)
       VALUES ('BenchOrder', 'marker', 'OrderCreated', jsonb_build_object('note', repeat('x', 200)))"
  sql "SELECT format('%s/%s', to_hex(hi), to_hex(lo))::pg_lsn FROM (
         SELECT ('x' || lpad(encode(substring(data FROM 11 FOR 4), 'hex'), 16, '0'))::bit(64)::bigint AS hi,
                ('x' || lpad(encode(substring(data FROM 15 FOR 4), 'hex'), 16, '0'))::bit(64)::bigint AS lo
         FROM pg_logical_slot_get_binary_changes('$probe', NULL, NULL, 'proto_version', '1',
                                                 'publication_names', '$t')
         WHERE get_byte(data, 0) = 67) c"
  sql "SELECT pg_drop_replication_slot('$probe')" >/dev/null
}

# outboxd_config TABLE SLOT TOPIC FILE [KAFKA_PROPERTY_LINE...]: the delivery mode is the
# caller's OX_DELIVERY (at_least_once when unset: no [sink] keys at all, so that an older binary
# given as BENCH_BASELINE reads the file too); exactly_once adds BENCH_EOS_SINK's lines.
outboxd_config() {
  local t=$1 slot=$2 topic=$3 file=$4; shift 4
  {
    cat <<TOML
[source]
dsn = "$dsn"
slot = "$slot"
publication = "$t"
create_slot = false
TOML
    if [[ ${OX_DELIVERY:-at_least_once} == exactly_once ]]; then
      printf '[sink]\ndelivery = "exactly_once"\n'
      if [[ -n ${BENCH_EOS_SINK:-} ]]; then printf '%s\n' "$BENCH_EOS_SINK"; fi
    fi
    cat <<TOML
[sink.kafka]
"bootstrap.servers" = "$brokers"
TOML
    local line
    for line in "$@"; do printf '%s\n' "$line"; done
    cat <<TOML
[[outbox]]
table = "public.$t"
topic = "$topic"
[messages]
enabled = false
[http]
listen = "127.0.0.1:$metrics_port"
TOML
  } >"$file"
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

# wait_log PID LOG PATTERN TIMEOUT_S: until LOG matches (outboxd streaming, ...).
wait_log() {
  local deadline=$((SECONDS + $4))
  until grep -q "$3" "$2" 2>/dev/null; do
    kill -0 "$1" 2>/dev/null || die "process $1 exited before '$3' (see $2)"
    ((SECONDS < deadline)) || die "no '$3' in $2 within $4 s"
    sleep 0.01
  done
}

# wait_confirmed SLOT LSN PID TIMEOUT_S: until the slot's confirmed_flush_lsn >= LSN, polled by
# a server-side loop on one held connection (no connection per probe to load the machine being
# measured). Sets confirmed_ns, the wall clock at which it held.
wait_confirmed() {
  local out=$work/wait.$1.out
  "${psql[@]}" -c "DO \$\$
DECLARE deadline timestamptz := clock_timestamp() + interval '$4 seconds';
BEGIN
  LOOP
    EXIT WHEN (SELECT confirmed_flush_lsn >= '$2'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$1');
    IF clock_timestamp() > deadline THEN
      RAISE EXCEPTION 'slot % did not reach % within % s', '$1', '$2', $4;
    END IF;
    PERFORM pg_sleep(0.005);
  END LOOP;
  RAISE NOTICE 'reached_ns=%', (extract(epoch FROM clock_timestamp()) * 1e9)::bigint;
END \$\$" >"$out" 2>&1 &
  local waiter=$!
  while kill -0 "$waiter" 2>/dev/null; do
    if ! kill -0 "$3" 2>/dev/null; then
      kill "$waiter" 2>/dev/null || true
      die "process $3 exited before slot $1 reached $2 (see $work)"
    fi
    sleep 0.1
  done
  wait "$waiter" || die "$(cat "$out")"
  confirmed_ns=$(sed -n 's/.*reached_ns=\([0-9]*\).*/\1/p' "$out")
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

# hist_quantile Q: the upper bound of the publish_latency_seconds bucket (commit -> Kafka ack)
# holding quantile Q, in ms, from outboxd's /metrics.
hist_quantile() {
  curl -s --max-time 2 "http://127.0.0.1:$metrics_port/metrics" |
    awk -v q="$1" '/^outboxd_publish_latency_seconds_bucket/ {
        match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); n[++k] = $2; b[k] = le }
      END { if (k == 0 || n[k] == 0) { print "n/a"; exit }
            for (i = 1; i <= k; i++) if (n[i] >= q * n[k]) { print (b[i] == "+Inf") ? "inf" : b[i] * 1000; exit } }'
}

# log_ns LOG PATTERN: the wall clock (ns) of the first line of outboxd's LOG matching PATTERN,
# from its ISO 8601 timestamp; empty when there is none.
log_ns() {
  local ts
  ts=$(grep -m1 -- "$2" "$1" 2>/dev/null | cut -d' ' -f1) || true
  [[ -n $ts ]] && date -d "$ts" +%s%N 2>/dev/null || true
}

# metric_sum NAME [LABEL_FILTER]: the sum of a counter's samples on outboxd's /metrics
# (e.g. metric_sum outboxd_kafka_transactions_total 'result="committed"'); "n/a" when absent.
metric_sum() {
  curl -s --max-time 2 "http://127.0.0.1:$metrics_port/metrics" |
    awk -v n="$1" -v f="${2:-}" '$1 == n || index($1, n "{") == 1 {
        if (f == "" || index($1, f) > 0) {s += $2; seen = 1} }
      END {if (seen) printf "%.0f", s; else print "n/a"}'
}
kafka_txns() { metric_sum outboxd_kafka_transactions_total 'result="committed"'; }

declare -A R   # results by name

# Checkpoints in the PostgreSQL log, to line them up with latency tails.
"${psql[@]}" -c "ALTER SYSTEM SET log_checkpoints = on" -c "SELECT pg_reload_conf()" >/dev/null
pg_log=$(bash deploy/local/stack.sh status 2>/dev/null | sed -n 's/.*log \([^ )]*\).*/\1/p' | head -1)
[[ -n $pg_log && -f $pg_log ]] || pg_log=$(ls -t "$repo"/.run/pg/log/*.log 2>/dev/null | head -1 || true)

# ---------------------------------------------------------------------------------------------
# Drains: outboxd and pg_recvlogical (and Debezium) over one backlog
# ---------------------------------------------------------------------------------------------
# drain NAME EVENTS TXN_SIZE(empty: mixed) [DEBEZIUM]: a backlog committed before any reader
# starts (every reader's slot exists before it is written), then each reader in turn until it
# has it all: pg_recvlogical to the last commit's end LSN, outboxd until its slot confirmed it.
drain() {
  local name=$1 events=$2 txn=$3 with_dbz=${4:-}
  local t=bench_${name}_$run_id
  local slots=("${t}_ox" "${t}_recv")
  ((with_eos)) && slots+=("${t}_eos")
  [[ -n ${BENCH_BASELINE:-} ]] && slots+=("${t}_base")
  [[ -n $with_dbz ]] && slots+=("${t}_dbz")
  new_table "$t" "${slots[@]}"
  say "drain $name: committing $events outbox rows (${txn:-mixed: 1, 10, 100, 1000}-row transactions)"
  local t0; t0=$(now_ns)
  insert_rows "$t" "$events" $txn
  local last_lsn; last_lsn=$(commit_marker "$t")
  events=$((events + 1))   # the marker row is part of the backlog
  R[${name}_events]=$events
  say "drain $name: inserted in $(secs "$t0" "$(now_ns)") s; last commit ends at $last_lsn"

  t0=$(now_ns)
  /usr/bin/time -f '%U %S %M' -o "$work/$name.recv.time" pg_recvlogical -d "$dsn" -S "${t}_recv" --start \
    -o proto_version=1 -o publication_names="$t" -E "$last_lsn" -F 0 -f /dev/null --no-loop \
    2>"$work/$name.recv.log" || die "pg_recvlogical failed: $(cat "$work/$name.recv.log")"
  R[${name}_recv_s]=$(secs "$t0" "$(now_ns)")
  R[${name}_recv_rate]=$(rate_of "$events" "${R[${name}_recv_s]}")
  local u sy m
  read -r u sy m <"$work/$name.recv.time"
  R[${name}_recv_cpu]=$(awk -v u="$u" -v s="$sy" 'BEGIN {printf "%.2f", u + s}')
  R[${name}_recv_rss]=$(awk -v k="$m" 'BEGIN {printf "%.1f", k / 1024}')
  say "drain $name: pg_recvlogical ${R[${name}_recv_s]} s, ${R[${name}_recv_rate]} events/s"

  # ox: at-least-once; eos: the same binary in exactly-once mode on the same backlog (done when
  # its slot confirmed the last commit, which it does only after that Kafka transaction
  # committed); base: BENCH_BASELINE, at-least-once.
  local bin label OX_DELIVERY
  for label in ox eos base; do
    bin=$build/outboxd OX_DELIVERY=at_least_once
    if [[ $label == eos ]]; then
      ((with_eos)) || continue
      OX_DELIVERY=exactly_once
    fi
    if [[ $label == base ]]; then
      [[ -n ${BENCH_BASELINE:-} ]] || continue
      bin=$BENCH_BASELINE
    fi
    # shellcheck disable=SC2086
    outboxd_config "$t" "${t}_$label" "bench.$name.$label.$run_id" "$work/$name.$label.toml" ${DRAIN_KAFKA:-}
    t0=$(now_ns)
    "$bin" run --config "$work/$name.$label.toml" >"$work/$name.$label.log" 2>&1 &
    local pid=$!
    wait_confirmed "${t}_$label" "$last_lsn" "$pid" 1800
    R[${name}_${label}_s]=$(secs "$t0" "$confirmed_ns")
    R[${name}_${label}_rate]=$(rate_of "$events" "${R[${name}_${label}_s]}")
    R[${name}_${label}_cpu]=$(cpu_s "$pid")
    R[${name}_${label}_rss]=$(status_mb "$pid" VmHWM)
    R[${name}_${label}_txns]=$(kafka_txns)
    stop_pid "$pid"
    # The rate once ready to publish: from the log's "streaming slot" line, or in exactly-once mode
    # from its "exactly-once: transactional.id" line, which follows the one-off transactional
    # start (init_transactions, checkpoint topic, checkpoint read); that start is reported apart:
    # it weighs on the short drains of a quick run.
    local streaming_ns ready_ns
    streaming_ns=$(log_ns "$work/$name.$label.log" "streaming slot")
    ready_ns=$streaming_ns
    [[ $label == eos ]] && ready_ns=$(log_ns "$work/$name.$label.log" "exactly-once: transactional.id")
    R[${name}_${label}_rate_ready]=$(awk -v n="$events" -v a="$ready_ns" -v b="$confirmed_ns" \
      'BEGIN {if (a > 0 && b > a) printf "%.0f", n / ((b - a) / 1e9); else print "n/a"}')
    R[${name}_${label}_setup_ms]=$(awk -v a="$streaming_ns" -v b="$ready_ns" \
      'BEGIN {if (a > 0 && b >= a) printf "%.0f", (b - a) / 1e6; else print "n/a"}')
    local note="; ${R[${name}_${label}_rate_ready]} events/s once ready" who=$OX_DELIVERY
    if [[ $label == eos ]]; then
      note+=" (transactional start ${R[${name}_eos_setup_ms]} ms); ${R[${name}_${label}_txns]} Kafka transactions committed"
    fi
    [[ $label == base ]] && who="baseline, $OX_DELIVERY"
    say "drain $name: outboxd ($who) ${R[${name}_${label}_s]} s, ${R[${name}_${label}_rate]} events/s," \
      "cpu ${R[${name}_${label}_cpu]} s, peak RSS ${R[${name}_${label}_rss]} MB$note"
  done

  if [[ -n $with_dbz ]]; then
    debezium_drain "$t" "${t}_dbz" "$events"
  fi
  "${psql[@]}" -f "$work/drop.sql" >/dev/null 2>&1 || true
  : >"$work/drop.sql"
}

# debezium_drain TABLE SLOT EVENTS: Kafka Connect standalone with Debezium's PostgreSQL connector
# and the Outbox Event Router, tuned for throughput as a fair operator would (large batches and
# queue, short poll interval, outboxd's producer settings), from JVM start until the routed topic
# holds every event. Also reported without the JVM's start: first record to last.
debezium_drain() {
  local t=$1 slot=$2 events=$3
  local prefix=bench.dbz.$run_id topic=bench.dbz.$run_id.BenchOrder
  mkdir -p "$work/connect"
  cat >"$work/connect/worker.properties" <<PROPS
bootstrap.servers=$brokers
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
offset.storage.file.filename=$work/connect/offsets
offset.flush.interval.ms=1000
listeners=http://127.0.0.1:$connect_port
plugin.discovery=service_load
# outboxd's producer guarantees (idempotent, acks=all, 5 requests in flight), with batching sized
# for throughput: Connect's defaults allow one request in flight and 16 KB batches.
producer.enable.idempotence=true
producer.acks=all
producer.linger.ms=5
producer.batch.size=524288
producer.max.in.flight.requests.per.connection=5
PROPS
  cat >"$work/connect/outbox.properties" <<PROPS
name=bench-outbox
connector.class=io.debezium.connector.postgresql.PostgresConnector
tasks.max=1
database.hostname=127.0.0.1
database.port=$pg_port
database.user=postgres
database.dbname=app
topic.prefix=benchdbz$run_id
plugin.name=pgoutput
slot.name=$slot
publication.name=$t
publication.autocreate.mode=disabled
snapshot.mode=no_data
table.include.list=public.$t
tombstones.on.delete=false
# Throughput tuning (defaults 2048, 8192, 500 ms): bigger batches, a deeper queue, no idle poll.
max.batch.size=16384
max.queue.size=65536
poll.interval.ms=10
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
transforms.outbox.table.field.event.id=id
transforms.outbox.table.field.event.key=aggregate_id
transforms.outbox.table.field.event.payload=payload
transforms.outbox.table.fields.additional.placement=event_type:header:eventType
transforms.outbox.route.by.field=aggregate_type
transforms.outbox.route.topic.replacement=$prefix.\${routedByValue}
PROPS
  cat >"$work/connect/log4j2.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="out"/></Root>
    <Logger name="io.debezium" level="INFO"/></Loggers>
</Configuration>
XML
  say "drain: Debezium $(ls "$dbz_jars" | sed -n 's/^debezium-connector-postgres-\(.*\)\.jar$/\1/p') in Kafka Connect standalone"
  local t0; t0=$(now_ns)
  java -Xms256m -Xmx2g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$work/connect/log4j2.xml" -cp "$dbz_jars/*" \
    org.apache.kafka.connect.cli.ConnectStandalone "$work/connect/worker.properties" \
    "$work/connect/outbox.properties" >>"$work/connect/connect.log" 2>&1 &
  local dbz_pid=$!
  local rc=0
  "$consumer" watermark --brokers "$brokers" --topic "$topic" --expect "$events" \
    --max-s "$dbz_max_s" >"$work/dbz.watermark" || rc=$?
  ((rc == 0 || rc == 3)) || die "Debezium's topic could not be read (see $work/connect/connect.log)"
  local first last got
  first=$(field "$work/dbz.watermark" first_ns) last=$(field "$work/dbz.watermark" last_ns)
  got=$(field "$work/dbz.watermark" count)
  R[dbz_s]=$(secs "$t0" "$last")
  R[dbz_rate]=$(rate_of "$got" "${R[dbz_s]}")
  R[dbz_nojvm_s]=$(secs "$first" "$last")
  R[dbz_nojvm_rate]=$(rate_of "$got" "${R[dbz_nojvm_s]}")
  ((rc == 3)) && R[dbz_note]=" (stopped after $dbz_max_s s with $got of $events events)"
  R[dbz_cpu]=$(cpu_s "$dbz_pid")
  R[dbz_rss]=$(status_mb "$dbz_pid" VmHWM)
  stop_pid "$dbz_pid"
  say "drain: Debezium ${R[dbz_s]} s from JVM start (${R[dbz_nojvm_s]} s first to last record)," \
    "${R[dbz_rate]} events/s, cpu ${R[dbz_cpu]} s, peak RSS ${R[dbz_rss]} MB${R[dbz_note]:-}"
}

# ---------------------------------------------------------------------------------------------
# Steady load
# ---------------------------------------------------------------------------------------------
# steady NAME RATE CLIENTS DELIVERY [KAFKA_PROPERTY_LINE...]: outboxd streaming (started, then
# waited for) in DELIVERY mode (at_least_once or exactly_once), pg_recvlogical on its own slot of
# the same table as the reference, then pgbench at RATE (max: unthrottled) for steady_s. The
# consumer reads with isolation.level=read_committed in both modes: in exactly-once mode a record
# is visible only after its Kafka transaction committed, so that wait is part of the latency.
# Results under R[NAME_*].
steady() {
  local name=$1 rate=$2 clients=$3 OX_DELIVERY=$4; shift 4
  local t=bench_${name}_$run_id topic=bench.steady.$name.$run_id
  new_table "$t" "${t}_ox" "${t}_td:test_decoding"
  sed "s/@TABLE@/$t/" bench/pgbench_outbox.sql >"$work/$name.pgbench.sql"
  outboxd_config "$t" "${t}_ox" "$topic" "$work/$name.toml" "$@"
  start_outboxd "$work/$name.toml" "$work/$name.log"
  wait_log "$ox_pid" "$work/$name.log" "streaming slot" 60
  local wal_pid; wal_pid=$(sql "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '${t}_ox'")
  start_consumer "$topic" "$work/$name.cons" --idle-ms 5000 --max-s $((steady_s + 600)) \
    --cdf "$work/$name.cdf" --warm-s "$warm_s" --timeline "$work/$name.timeline" \
    --isolation read_committed
  pg_recvlogical -d "$dsn" -S "${t}_td" --start -o include-timestamp=1 -o skip-empty-xacts=1 \
    -F 0 -f - 2>"$work/$name.td.log" | python3 bench/recv_latency.py --warm-s "$warm_s" >"$work/$name.td" &
  local td_pid=$!
  local rate_args=()
  [[ $rate != max ]] && rate_args=(-R "$rate")
  say "steady $name: pgbench ${rate_args[*]:-unthrottled} -c $clients for $steady_s s"
  local wal0 ticks0 wticks0 t0
  wal0=$(sql "SELECT pg_current_wal_lsn()")
  ticks0=$(cpu_ticks "$ox_pid") wticks0=$(cpu_ticks "$wal_pid")
  t0=$(now_ns)
  # Lag once a second on one held connection, for its trend.
  "${psql[@]}" -c "DO \$\$ BEGIN
    FOR i IN 1..$((steady_s + 1)) LOOP
      RAISE NOTICE 'lag=%', (SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots
                              WHERE slot_name = '${t}_ox');
      PERFORM pg_sleep(1);
    END LOOP; END \$\$" >"$work/$name.lag" 2>&1 &
  local lag_pid=$!
  pgbench -n -M prepared -c "$clients" -j 2 -T "$steady_s" "${rate_args[@]}" \
    -f "$work/$name.pgbench.sql" "$dsn" >"$work/$name.pgbench.out" 2>&1 ||
    { tail "$work/$name.pgbench.out"; die "pgbench failed"; }
  local t1; t1=$(now_ns)
  local lag_line
  lag_line=$(sql "SELECT pg_current_wal_lsn() - '$wal0'::pg_lsn, pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '${t}_ox'")
  local ticks1 wticks1; ticks1=$(cpu_ticks "$ox_pid") wticks1=$(cpu_ticks "$wal_pid")
  wait "$lag_pid" 2>/dev/null || true
  local elapsed; elapsed=$(secs "$t0" "$t1")
  local rows; rows=$(sql "SELECT count(*) FROM $t")
  R[${name}_events]=$rows
  R[${name}_rate]=$(rate_of "$rows" "$elapsed")
  R[${name}_cpu]=$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$hz" -v t="$elapsed" 'BEGIN {printf "%.0f", 100 * (b - a) / hz / t}')
  R[${name}_wcpu]=$(awk -v a="$wticks0" -v b="$wticks1" -v hz="$hz" -v t="$elapsed" 'BEGIN {printf "%.0f", 100 * (b - a) / hz / t}')
  local wal_bytes=${lag_line%%|*} lag=${lag_line##*|}
  R[${name}_lag_bytes]=$lag
  R[${name}_lag_s]=$(awk -v l="$lag" -v w="$wal_bytes" -v t="$elapsed" 'BEGIN {printf "%.3f", (w > 0) ? l / (w / t) : 0}')
  # Trend: mean lag over the first and the last third of the run, in KB.
  R[${name}_lag_trend]=$(sed -n 's/.*lag=\([0-9]*\).*/\1/p' "$work/$name.lag" |
    awk '{v[NR] = $1} END {n = int(NR / 3); if (n == 0) {print "n/a"; exit}
         for (i = 1; i <= n; i++) {a += v[i]; b += v[NR - n + i]}
         printf "%.0f -> %.0f KB", a / n / 1024, b / n / 1024}')
  # The walsender's floor: pg_recvlogical stops at the last commit.
  local end_lsn; end_lsn=$(sql "SELECT pg_current_wal_lsn()")
  sleep 1
  kill -TERM $(pgrep -f "pg_recvlogical.*${t}_td") 2>/dev/null || true
  wait "$td_pid" 2>/dev/null || true
  wait "$cons_pid" || die "consumer failed"
  R[${name}_recv]=$(field "$work/$name.cons" count)
  local k
  for k in p50 p99 p999 warm_p99; do
    R[${name}_$k]=$(field "$work/$name.cons" ${k}_ms)
    R[${name}_td_$k]=$(field "$work/$name.td" ${k}_ms)
  done
  R[${name}_ack_p99]=$(hist_quantile 0.99)
  R[${name}_rss]=$(status_mb "$ox_pid" VmHWM)
  R[${name}_txns]=n/a R[${name}_per_txn]=n/a
  if [[ $OX_DELIVERY == exactly_once ]]; then
    R[${name}_txns]=$(kafka_txns)
    R[${name}_per_txn]=$(awk -v n="$rows" -v t="${R[${name}_txns]}" 'BEGIN {if (t > 0) printf "%.1f", n / t; else print "n/a"}')
  fi
  stop_pid "$ox_pid"
  # Which side was behind: outboxd within 2x of the walsender's own floor means the walsender
  # (and the machine) set the pace; otherwise the share of commit -> ack says whether outboxd or
  # Kafka -> consumer took the time.
  R[${name}_behind]=$(awk -v c="${R[${name}_p99]}" -v f="${R[${name}_td_p99]:-0}" -v a="${R[${name}_ack_p99]}" \
    -v cpu="${R[${name}_cpu]}" 'BEGIN {
      if (f > 0 && c <= 2 * f) print "walsender (outboxd within 2x its floor)";
      else if (cpu >= 90) print "outboxd (CPU-bound)";
      else if (a != "n/a" && a != "inf" && a < c / 2) print "Kafka -> consumer";
      else print "outboxd -> Kafka ack"}')
  # The worst second of the timeline, and whether a checkpoint was running then.
  local worst; worst=$(sort -k5 -g "$work/$name.timeline" 2>/dev/null | tail -1)
  R[${name}_worst]=$(awk '{printf "second %d: p99 %.1f ms", $2, $5}' <<<"$worst")
  if [[ -n $worst && -n $pg_log ]] && checkpoint_at "${worst%% *}"; then R[${name}_worst]+=" (checkpoint running)"; fi
  "${psql[@]}" -f "$work/drop.sql" >/dev/null 2>&1 || true
  : >"$work/drop.sql"
  say "steady $name ($OX_DELIVERY): ${R[${name}_rate]} events/s committed, consumer got ${R[${name}_recv]}/$rows," \
    "p50 ${R[${name}_p50]} ms p99 ${R[${name}_p99]} ms p99.9 ${R[${name}_p999]} ms (first ${warm_s} s: p99 ${R[${name}_warm_p99]} ms);" \
    "pg_recvlogical p50 ${R[${name}_td_p50]} p99 ${R[${name}_td_p99]} ms; commit->ack p99 <= ${R[${name}_ack_p99]} ms;" \
    "CPU outboxd ${R[${name}_cpu]} % walsender ${R[${name}_wcpu]} %; lag ${R[${name}_lag_trend]}, end ${R[${name}_lag_bytes]} B;" \
    "behind: ${R[${name}_behind]}; worst ${R[${name}_worst]}; Kafka transactions ${R[${name}_txns]}" \
    "(${R[${name}_per_txn]} events each)"
}

# checkpoint_at UNIX_SECOND: true if the PostgreSQL log shows a checkpoint running then.
checkpoint_at() {
  local at=$1 line ts state=idle start=0
  while read -r line; do
    ts=$(date -d "$(cut -d' ' -f1-3 <<<"$line")" +%s 2>/dev/null) || continue
    if [[ $line == *"checkpoint starting"* ]]; then start=$ts; state=running
    elif [[ $line == *"checkpoint complete"* && $state == running ]]; then
      ((at >= start && at <= ts)) && return 0
      state=idle
    fi
  done < <(grep -E 'checkpoint (starting|complete)' "$pg_log" 2>/dev/null)
  [[ $state == running ]] && ((at >= start))
}

# phases NAME:RATE:CLIENTS[:DELIVERY]... run REPS times, interleaved (every phase once, then
# again), so that a slow minute of the shared machine hits every phase alike; R[PHASE_METRIC]
# become medians over the repetitions. DELIVERY: at_least_once (the default) or exactly_once.
declare -A PHASE_ARGS
phases() {
  local rep spec name rate clients delivery
  for ((rep = 1; rep <= reps; rep++)); do
    for spec in "$@"; do
      IFS=: read -r name rate clients delivery <<<"$spec"
      # shellcheck disable=SC2086
      steady "${name}_$rep" "$rate" "$clients" "${delivery:-at_least_once}" ${PHASE_ARGS[$name]:-}
    done
  done
  local metric
  for spec in "$@"; do
    name=${spec%%:*}
    for metric in rate events recv p50 p99 p999 warm_p99 td_p50 td_p99 td_p999 ack_p99 cpu wcpu lag_bytes lag_s rss txns per_txn; do
      local vals=()
      for ((rep = 1; rep <= reps; rep++)); do vals+=("${R[${name}_${rep}_$metric]:-}"); done
      R[${name}_$metric]=$(median "${vals[@]}")
    done
    R[${name}_lag_trend]=${R[${name}_1_lag_trend]}
    R[${name}_behind]=${R[${name}_1_behind]}
    R[${name}_worst]=${R[${name}_1_worst]}
    for ((rep = 2; rep <= reps; rep++)); do
      R[${name}_lag_trend]+=" / ${R[${name}_${rep}_lag_trend]}"
      R[${name}_behind]+=" / ${R[${name}_${rep}_behind]}"
      R[${name}_worst]+=" / ${R[${name}_${rep}_worst]}"
    done
  done
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0 && a ~ /^[0-9.]+$/) printf "%.2f", a / b; else print "n/a"}'; }
# holds EXPR: EXPR is an awk condition over numbers, e.g. "0.44 >= 0.5".
holds() { awk "BEGIN {print ($1) ? \"holds\" : \"NOT YET\"}" 2>/dev/null || echo "n/a"; }
date_tag=$(date -u +%Y-%m-%d)
[[ $mode != full ]] && date_tag=$mode-$date_tag
md=$out_dir/$date_tag.md
outboxd_rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+local changes')"

# ---------------------------------------------------------------------------------------------
# tune: the producer defaults, by measurement
# ---------------------------------------------------------------------------------------------
if [[ $mode == tune ]]; then
  variants=(
    'shipped|'
    'linger0_nonagle|"linger.ms" = 0|"socket.nagle.disable" = true'
    'linger1_nonagle|"linger.ms" = 1|"socket.nagle.disable" = true'
    'linger5_nonagle|"linger.ms" = 5|"socket.nagle.disable" = true'
    'linger5_nagle|"linger.ms" = 5|"socket.nagle.disable" = false'
    'nostats|"statistics.interval.ms" = 0'
  )
  specs=()
  for v in "${variants[@]}"; do
    IFS='|' read -r vname rest <<<"$v"
    PHASE_ARGS[$vname]=$(tr '|' '\n' <<<"$rest" | sed 's/ //g' | tr '\n' ' ')
    specs+=("$vname:1000:4")
  done
  # shellcheck disable=SC2206
  phases "${specs[@]}"
  # A drain of a mixed backlog with each variant: what latency settings cost in throughput.
  for v in "${variants[@]}"; do
    n=${v%%|*}
    DRAIN_KAFKA=${PHASE_ARGS[$n]:-} drain "drain_$n" "$drain_events" ""
  done
  {
    echo "# outboxd producer defaults ($mode), $(date -u '+%Y-%m-%d %H:%M UTC'), outboxd $outboxd_rev"
    echo
    echo "Steady load at 1,000 events/s for $steady_s s, $reps runs interleaved, medians; first $warm_s s apart."
    echo
    echo "| variant | p50 ms | p99 ms | p99.9 ms | first ${warm_s} s p99 ms | pg_recvlogical p99 ms | outboxd CPU % | worst second | drain of $drain_events events/s |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|---:|"
    for v in "${variants[@]}"; do
      n=${v%%|*}
      echo "| $n (${PHASE_ARGS[$n]:-as shipped}) | ${R[${n}_p50]} | ${R[${n}_p99]} | ${R[${n}_p999]} | ${R[${n}_warm_p99]} | ${R[${n}_td_p99]} | ${R[${n}_cpu]} | ${R[${n}_worst]} | ${R[drain_${n}_ox_rate]} |"
    done
  } >"$md"
  cat "$md"
  say "written $md"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# 1. Drains
# ---------------------------------------------------------------------------------------------
with_dbz=""
[[ ${BENCH_SKIP_DEBEZIUM:-0} != 1 ]] && with_dbz=dbz
drain mixed "$drain_events" "" "$with_dbz"
drain single "$drain1_events" 1

# ---------------------------------------------------------------------------------------------
# 2. Start-up: streaming -> first event on a topic never seen; idle RSS and CPU
# ---------------------------------------------------------------------------------------------
say "start-up: outboxd streaming, then one event on a new topic"
st=bench_start_$run_id
new_table "$st" "${st}_ox"
outboxd_config "$st" "${st}_ox" "bench.start.$run_id.{aggregate_type}" "$work/start.toml"
start_consumer "bench.start.$run_id.BenchOrder" "$work/start.cons" --expect 1 --max-s 60
t_launch=$(now_ns)
start_outboxd "$work/start.toml" "$work/start.log"
wait_log "$ox_pid" "$work/start.log" "streaming slot" 60
t_stream=$(now_ns)
insert_rows "$st" 1
wait "$cons_pid" || die "start-up consumer failed"
first_recv=$(field "$work/start.cons" first_recv_ns)
R[start_ms]=$(awk -v a="$t_stream" -v b="$first_recv" 'BEGIN {printf "%.1f", (b - a) / 1e6}')
R[launch_ms]=$(awk -v a="$t_launch" -v b="$t_stream" 'BEGIN {printf "%.1f", (b - a) / 1e6}')
idle_ticks0=$(cpu_ticks "$ox_pid")
idle_s=${BENCH_IDLE_S:-60}
[[ $mode == quick ]] && idle_s=10
sleep "$idle_s"
R[idle_cpu]=$(awk -v a="$idle_ticks0" -v b="$(cpu_ticks "$ox_pid")" -v hz="$hz" -v t="$idle_s" \
  'BEGIN {printf "%.2f", 100 * (b - a) / hz / t}')
R[idle_rss]=$(status_mb "$ox_pid" VmRSS)
stop_pid "$ox_pid"
"${psql[@]}" -f "$work/drop.sql" >/dev/null 2>&1 || true
: >"$work/drop.sql"
say "start-up: streaming after ${R[launch_ms]} ms, first event ${R[start_ms]} ms later;" \
  "idle ${R[idle_cpu]} % CPU over $idle_s s, RSS ${R[idle_rss]} MB"

# ---------------------------------------------------------------------------------------------
# 3. One big transaction
# ---------------------------------------------------------------------------------------------
say "big transaction: $big_txn rows in one transaction"
bt=bench_big_$run_id
new_table "$bt" "${bt}_ox"
insert_rows "$bt" "$big_txn" "$big_txn"
last_lsn=$(commit_marker "$bt")
outboxd_config "$bt" "${bt}_ox" "bench.big.$run_id" "$work/big.toml"
t0=$(now_ns)
start_outboxd "$work/big.toml" "$work/big.log"
wait_confirmed "${bt}_ox" "$last_lsn" "$ox_pid" 1800
R[big_s]=$(secs "$t0" "$confirmed_ns")
R[big_rss]=$(status_mb "$ox_pid" VmHWM)
stop_pid "$ox_pid"
say "big transaction: ${R[big_s]} s, peak RSS ${R[big_rss]} MB"
"${psql[@]}" -f "$work/drop.sql" >/dev/null 2>&1 || true
: >"$work/drop.sql"

# ---------------------------------------------------------------------------------------------
# 4. Steady load (PostgreSQL as configured: fsync and synchronous_commit on)
# ---------------------------------------------------------------------------------------------
# Each rate in at-least-once mode, then the same rate in exactly-once mode (eos_*), interleaved.
steady_specs=()
for spec in r1000:1000:4 r5000:5000:8 r10000:10000:16 max:max:32; do
  steady_specs+=("$spec:at_least_once")
  ((with_eos)) && steady_specs+=("eos_$spec:exactly_once")
done
phases "${steady_specs[@]}"

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
R[ratio_recv]=$(ratio "${R[mixed_ox_rate]}" "${R[mixed_recv_rate]}")
R[ratio_recv1]=$(ratio "${R[single_ox_rate]}" "${R[single_recv_rate]}")
R[ratio_dbz]=$(ratio "${R[mixed_ox_rate]}" "${R[dbz_rate]:-0}")
R[ratio_dbz_nojvm]=$(ratio "${R[mixed_ox_rate]}" "${R[dbz_nojvm_rate]:-0}")
R[ratio_eos]=$(ratio "${R[mixed_eos_rate]:-0}" "${R[mixed_ox_rate]}")
R[ratio_eos1]=$(ratio "${R[single_eos_rate]:-0}" "${R[single_ox_rate]}")
dbz_version=$( (ls "$dbz_jars" 2>/dev/null || true) | sed -n 's/^debezium-connector-postgres-\(.*\)\.jar$/\1/p')
connect_version=$( (ls "$dbz_jars" 2>/dev/null || true) | sed -n 's/^connect-runtime-\(.*\)\.jar$/\1/p')
{
  echo "# outboxd benchmark ($mode), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)," \
    "load average at the end $(cut -d' ' -f1-3 /proc/loadavg) (shared with other jobs: compare ratios, not absolutes)."
  echo "PostgreSQL $(sql 'SHOW server_version') (fsync $(sql 'SHOW fsync'), synchronous_commit $(sql 'SHOW synchronous_commit')), Kafka $(sed -n 's/.*<kafka.version>\(.*\)<.*/\1/p' deploy/local/pom.xml) (local stack)," \
    "outboxd $outboxd_rev, Debezium ${dbz_version:-skipped} in Kafka Connect ${connect_version:-n/a}."
  echo
  echo "## Backlog drains, committed before the readers start"
  echo
  echo "| backlog | reader | seconds | events/s | CPU s | peak RSS MB |"
  echo "|---|---|---:|---:|---:|---:|"
  for d in mixed single; do
    label="${R[${d}_events]} rows, transactions of 1/10/100/1000"
    [[ $d == single ]] && label="${R[${d}_events]} one-row transactions"
    echo "| $label | pg_recvlogical (pgoutput, decode only) | ${R[${d}_recv_s]} | ${R[${d}_recv_rate]} | ${R[${d}_recv_cpu]} | ${R[${d}_recv_rss]} |"
    echo "| $label | outboxd, at_least_once (start until the slot confirmed the last commit) | ${R[${d}_ox_s]} | ${R[${d}_ox_rate]} | ${R[${d}_ox_cpu]} | ${R[${d}_ox_rss]} |"
    ((with_eos)) && echo "| $label | outboxd, exactly_once (the same; ${R[${d}_eos_txns]} Kafka transactions; ${R[${d}_eos_setup_ms]} ms of it the one-off transactional start) | ${R[${d}_eos_s]} | ${R[${d}_eos_rate]} | ${R[${d}_eos_cpu]} | ${R[${d}_eos_rss]} |"
    [[ -n ${BENCH_BASELINE:-} ]] && echo "| $label | outboxd baseline ($BENCH_BASELINE) | ${R[${d}_base_s]} | ${R[${d}_base_rate]} | ${R[${d}_base_cpu]} | ${R[${d}_base_rss]} |"
  done
  if [[ -n ${R[dbz_s]:-} ]]; then
    echo "| ${R[mixed_events]} rows, mixed | Debezium + Outbox Event Router, tuned (JVM start to last record)${R[dbz_note]:-} | ${R[dbz_s]} | ${R[dbz_rate]} | ${R[dbz_cpu]} | ${R[dbz_rss]} |"
    echo "| ${R[mixed_events]} rows, mixed | Debezium, first record to last (without JVM and connector start) | ${R[dbz_nojvm_s]} | ${R[dbz_nojvm_rate]} | | |"
  fi
  echo
  echo "## Steady load: pgbench, one outbox insert per transaction, $steady_s s per phase, medians of $reps interleaved runs"
  echo
  echo "Latency: commit to an independent consumer (steady part: the first $warm_s s are the separate 'first seconds' column)."
  echo "pg_recvlogical: commit to receipt by pg_recvlogical on its own slot of the same table, same load: the walsender's floor."
  echo "commit->ack: outboxd's publish_latency_seconds, upper bound of the bucket holding p99."
  echo "The consumer reads with isolation.level=read_committed in both modes. exactly_once: default [sink] settings${BENCH_EOS_SINK:+ plus $(tr '\n' ' ' <<<"$BENCH_EOS_SINK")}"
  echo "(transaction_interval 100ms unless set); a record is visible only after its Kafka transaction committed."
  echo
  echo "| pgbench rate | delivery | committed/s | received / committed | p50 ms | p99 ms | p99.9 ms | first ${warm_s} s p99 ms | pg_recvlogical p50 / p99 ms | commit->ack p99 ms | events per Kafka transaction | lag (first -> last third) | lag at end (s of WAL) | CPU % outboxd / walsender | behind | worst second |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|"
  for n in r1000 r5000 r10000 max; do
    label=${n#r}; [[ $n == max ]] && label="unthrottled (32 clients)"
    for m in "" eos_; do
      [[ -z $m ]] || ((with_eos)) || continue
      d=at_least_once; [[ $m == eos_ ]] && d=exactly_once
      k=$m$n
      echo "| $label | $d | ${R[${k}_rate]} | ${R[${k}_recv]}/${R[${k}_events]} | ${R[${k}_p50]} | ${R[${k}_p99]} | ${R[${k}_p999]} | ${R[${k}_warm_p99]} | ${R[${k}_td_p50]} / ${R[${k}_td_p99]} | ${R[${k}_ack_p99]} | ${R[${k}_per_txn]} | ${R[${k}_lag_trend]} | ${R[${k}_lag_s]} | ${R[${k}_cpu]} / ${R[${k}_wcpu]} | ${R[${k}_behind]} | ${R[${k}_worst]} |"
    done
  done
  echo
  echo "## One transaction of $big_txn rows; start-up; idle"
  echo
  echo "| figure | value |"
  echo "|---|---:|"
  echo "| big transaction: seconds to slot confirmed | ${R[big_s]} |"
  echo "| big transaction: outboxd peak RSS MB | ${R[big_rss]} |"
  echo "| start-up: process start to streaming, ms | ${R[launch_ms]} |"
  echo "| start-up: streaming to first event in Kafka (topic never seen), ms | ${R[start_ms]} |"
  echo "| idle: outboxd CPU % over $idle_s s | ${R[idle_cpu]} |"
  echo "| idle: RSS MB | ${R[idle_rss]} |"
  echo
  echo "## Targets (ratios in this run)"
  echo
  echo "| target | measured | status |"
  echo "|---|---:|---|"
  echo "| drain >= 0.8 x pg_recvlogical (mixed) | ${R[ratio_recv]} x | $(holds "${R[ratio_recv]} >= 0.8") |"
  echo "| drain >= 0.5 x pg_recvlogical (1-row transactions) | ${R[ratio_recv1]} x | $(holds "${R[ratio_recv1]} >= 0.5") |"
  echo "| drain vs Debezium (from JVM start / without it) | ${R[ratio_dbz]} x / ${R[ratio_dbz_nojvm]} x | info |"
  if ((with_eos)); then
    echo "| drain exactly_once >= 0.7 x at_least_once (mixed, same backlog) | ${R[ratio_eos]} x (${R[mixed_eos_rate]} / ${R[mixed_ox_rate]} events/s) | $(holds "${R[ratio_eos]} >= 0.7") |"
    echo "| drain exactly_once vs at_least_once (1-row transactions) | ${R[ratio_eos1]} x (${R[single_eos_rate]} / ${R[single_ox_rate]} events/s) | info |"
    echo "| the same once ready to publish (after the log's streaming line; exactly_once: after its transactional start, an upper bound: the walsender decodes into the socket meanwhile), mixed / 1-row | $(ratio "${R[mixed_eos_rate_ready]}" "${R[mixed_ox_rate_ready]}") x (${R[mixed_eos_rate_ready]} / ${R[mixed_ox_rate_ready]}) / $(ratio "${R[single_eos_rate_ready]}" "${R[single_ox_rate_ready]}") x (${R[single_eos_rate_ready]} / ${R[single_ox_rate_ready]}) | info |"
    echo "| exactly_once p99 < 50 ms at 1,000/s (read_committed, default transaction_interval) | ${R[eos_r1000_p99]} ms at ${R[eos_r1000_rate]}/s (at_least_once ${R[r1000_p99]} ms) | $(holds "${R[eos_r1000_p99]} < 50") |"
  fi
  echo "| p99 < 10 ms at 1,000/s | ${R[r1000_p99]} ms at ${R[r1000_rate]}/s | $(holds "${R[r1000_p99]} < 10") |"
  echo "| p99 < 20 ms at the highest sustained rate, or <= 2 x pg_recvlogical's p99 | ${R[max_p99]} ms at ${R[max_rate]}/s (pg_recvlogical ${R[max_td_p99]} ms) | $(holds "${R[max_p99]} < 20 || ${R[max_p99]} <= 2 * ${R[max_td_p99]}") |"
  echo "| first event < 100 ms after streaming, new topic | ${R[start_ms]} ms | $(holds "${R[start_ms]} < 100") |"
  echo "| idle < 1 % of a core over $idle_s s | ${R[idle_cpu]} % | $(holds "${R[idle_cpu]} < 1") |"
  echo "| idle RSS < 16 MB | ${R[idle_rss]} MB | $(holds "${R[idle_rss]} < 16") |"
  echo "| 1M-row transaction peak RSS < 64 MB | ${R[big_rss]} MB ($big_txn rows) | $(holds "${R[big_rss]} < 64") |"
  echo
  echo "Drains end when the reader has the last commit: outboxd when its slot's confirmed_flush_lsn"
  echo "reaches that commit's end LSN (polled on one held connection), pg_recvlogical at that LSN."
  echo "Lag is the slot's confirmed_flush_lsn behind pg_current_wal_lsn(), sampled every second;"
  echo "seconds of WAL divide the value at the end by the WAL rate of the run. Raw logs: .run/bench/$run_id/."
} >"$md"

if command -v gnuplot >/dev/null; then
  png=$out_dir/$date_tag-latency.png
  eos_plot="" eos_bar=""
  if ((with_eos)); then
    eos_plot=", \\
     \"$work/eos_r1000_1.cdf\" using 1:2 with lines lw 2 dt 2 title \"1,000/s exactly-once (read_committed)\""
    eos_bar=$'\n'"\"outboxd EOS\" ${R[mixed_eos_rate]:-0}"
  fi
  gnuplot <<GP 2>"$work/gnuplot.log" || say "gnuplot failed (see $work/gnuplot.log)"
set terminal pngcairo size 900,500
set output "$png"
set title "commit -> consumer latency, outboxd ($mode run, first ${warm_s} s left out)"
set xlabel "percentile"
set ylabel "latency (ms)"
set logscale y
set grid
set key left top
plot "$work/r1000_1.cdf" using 1:2 with lines lw 2 title "1,000/s", \
     "$work/r5000_1.cdf" using 1:2 with lines lw 2 title "5,000/s", \
     "$work/r10000_1.cdf" using 1:2 with lines lw 2 title "10,000/s", \
     "$work/max_1.cdf" using 1:2 with lines lw 2 title "unthrottled (${R[max_rate]}/s)"$eos_plot
GP
  png2=$out_dir/$date_tag-drain.png
  gnuplot <<GP 2>>"$work/gnuplot.log" || say "gnuplot failed (see $work/gnuplot.log)"
set terminal pngcairo size 700,400
set output "$png2"
set title "backlog drain, ${R[mixed_events]} events ($mode run)"
set ylabel "events/s"
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:*]
set grid ytics
set xtics nomirror
plot "-" using 0:2:xtic(1) with boxes notitle, "-" using 0:2:(sprintf("%d", \$2)) with labels offset 0,1 notitle
"pg_recvlogical" ${R[mixed_recv_rate]}
"outboxd" ${R[mixed_ox_rate]}$eos_bar
"Debezium" ${R[dbz_rate]:-0}
e
"pg_recvlogical" ${R[mixed_recv_rate]}
"outboxd" ${R[mixed_ox_rate]}$eos_bar
"Debezium" ${R[dbz_rate]:-0}
e
GP
  printf '\n![latency](%s)\n![drain](%s)\n' "$(basename "$png")" "$(basename "$png2")" >>"$md"
fi

cat "$md"
say "written $md"
