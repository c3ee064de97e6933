#!/usr/bin/env bash
# Decoding on a hot standby, measured (issue 22). A PostgreSQL primary and its streaming standby
# (tests/integration/pg_pair.sh, asynchronous replication as most setups run it), Kafka from the
# local stack, outboxd as built in $BUILD_DIR. Prints Markdown tables; targets are never asserted.
#
#   bench/standby.sh load   outboxd decoding on the primary, then on the standby, under the same
#                           pgbench load (bench/pgbench_outbox.sql, -R 5000 -c 8, 60 s each, twice
#                           interleaved): the
#                           primary's CPU (every process of it: backends, walsenders, the rest),
#                           its walsenders' CPU, the standby's CPU, outboxd's CPU, and commit to
#                           consumer latency (bench_consumer, first 5 s apart) of each.
#   bench/standby.sh idle   outboxd streaming from the standby, then 5 minutes of an idle pair and
#                           5 minutes of a primary writing only to a table outside the publication
#                           (1 transaction a second): every 30 s the primary's WAL position, the
#                           standby's replay position, the standby slot's restart and confirmed
#                           positions and the WAL it retains, the primary's physical slot's, and
#                           the standby's pg_wal size.
#
# Environment: OUTBOXD_PAIR_PORT (the pair: that port and the next; default 54347),
# OUTBOXD_PAIR_VERSION (default 17), OUTBOXD_KAFKA_PORT (the local stack's Kafka; started and
# stopped here unless up), BUILD_DIR (default build), BENCH_STANDBY_S (seconds per load phase,
# default 60), BENCH_STANDBY_REPS (runs of both load phases, interleaved; default 2),
# BENCH_STANDBY_RATE (default 5000), BENCH_STANDBY_IDLE_S (seconds per idle phase,
# default 300), BENCH_OUT (where the table is written too; default .run/bench/results).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$repo"
mode=${1:-load}
case $mode in load | idle) ;; *) echo "usage: bench/standby.sh load|idle" >&2; exit 2 ;; esac
build=${BUILD_DIR:-build}
p1=${OUTBOXD_PAIR_PORT:-54347}
p2=$((p1 + 1))
export OUTBOXD_PAIR_PORT=$p1
export OUTBOXD_PAIR_VERSION=${OUTBOXD_PAIR_VERSION:-17}
kafka_port=${OUTBOXD_KAFKA_PORT:-59092}
brokers=127.0.0.1:$kafka_port
load_s=${BENCH_STANDBY_S:-60}
reps=${BENCH_STANDBY_REPS:-2}
rate=${BENCH_STANDBY_RATE:-5000}
idle_s=${BENCH_STANDBY_IDLE_S:-300}
warm_s=5
out_dir=${BENCH_OUT:-.run/bench/results}
run_id=$(date +%Y%m%d%H%M%S)
work=$repo/.run/bench/standby-$run_id
mkdir -p "$work" "$out_dir"
consumer=$repo/build-bench/bench_consumer
hz=$(getconf CLK_TCK)
primary_dsn="host=127.0.0.1 port=$p1 dbname=app user=postgres"
standby_dsn="host=127.0.0.1 port=$p2 dbname=app user=postgres"
say() { printf 'bench standby: %s\n' "$*" >&2; }
die() { printf 'bench standby: error: %s\n' "$*" >&2; exit 1; }
psql_on() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$1" -c "$2"; }

[[ -x $build/outboxd ]] || die "$build/outboxd is missing: cmake --build $build --target outboxd"
mkdir -p build-bench
if [[ ! -x $consumer || bench/bench_consumer.cc -nt $consumer ]]; then
  c++ -O2 -std=c++20 -Wall -o "$consumer" bench/bench_consumer.cc -lrdkafka
fi
command -v pgbench >/dev/null || die "pgbench is missing (scripts/deps.sh installs postgresql-contrib-15)"

started_stack=0
if ! bash deploy/local/stack.sh status >/dev/null 2>&1; then
  bash deploy/local/stack.sh up
  started_stack=1
fi
cleanup() {
  local p
  for p in $(jobs -pr); do kill -TERM "$p" 2>/dev/null || true; done
  for p in $(jobs -p); do wait "$p" 2>/dev/null || true; done
  bash tests/integration/pg_pair.sh down >/dev/null 2>&1 || true
  if ((started_stack)); then bash deploy/local/stack.sh down || true; fi
}
trap cleanup EXIT

say "pair: PostgreSQL $OUTBOXD_PAIR_VERSION, primary $p1, standby $p2, asynchronous"
OUTBOXD_PAIR_SYNC=off bash tests/integration/pg_pair.sh up
table=bench_standby
psql_on "$primary_dsn" "CREATE TABLE $table (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type text NOT NULL,
  aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL, headers jsonb, destination text,
  created_at timestamptz NOT NULL DEFAULT now());
  CREATE PUBLICATION $table FOR TABLE $table WITH (publish = 'insert')"
sed "s/@TABLE@/$table/" bench/pgbench_outbox.sql >"$work/pgbench.sql"

# The postmaster of a node and every process it started (backends, walsenders, workers).
postmaster_of() { head -1 "$(psql_on "$1" "SELECT current_setting('data_directory')")/postmaster.pid"; }
tree_pids() { echo "$1"; awk -v p="$1" '$1 == "PPid:" && $2 == p {print FILENAME}' /proc/[0-9]*/status 2>/dev/null |
  sed 's|/proc/\([0-9]*\)/status|\1|'; }
ticks_of() {  # ticks_of PID...: user + system CPU ticks, summed
  local p sum=0 t
  for p in "$@"; do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    sum=$((sum + t))
  done
  echo "$sum"
}
pct() { awk -v a="$1" -v b="$2" -v hz="$hz" -v t="$3" 'BEGIN {printf "%.1f", 100 * (b - a) / hz / t}'; }
field() { tr ' ' '\n' <"$1" | awk -F= -v k="$2" '$1 == k {print $2}' | tail -1; }

# outboxd_config NAME DSN [PRIMARY_DSN]
outboxd_config() {
  local primary_line=""
  [[ -z ${3:-} ]] || primary_line="primary_dsn = \"$3\""
  cat >"$work/$1.toml" <<TOML
[source]
dsn = "$2"
$primary_line
slot = "bench_$1"
publication = "$table"
[sink.kafka]
"bootstrap.servers" = "$brokers"
[[outbox]]
table = "public.$table"
topic = "bench.standby.$1.$run_id"
[messages]
enabled = false
[http]
listen = "off"
TOML
}

wait_log() {  # wait_log PID LOG PATTERN TIMEOUT_S
  local deadline=$((SECONDS + $4))
  until grep -q "$3" "$2" 2>/dev/null; do
    kill -0 "$1" 2>/dev/null || die "process $1 exited before '$3' (see $2)"
    ((SECONDS < deadline)) || die "no '$3' in $2 within $4 s"
    sleep 0.05
  done
}

declare -A R=()
# load_phase NAME DSN [PRIMARY_DSN]: outboxd on DSN under the pgbench load.
load_phase() {
  local name=$1 dsn=$2 pdsn=${3:-}
  outboxd_config "$name" "$dsn" "$pdsn"
  "$build/outboxd" run --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
  local ox=$!
  wait_log "$ox" "$work/$name.log" "streaming slot" 120
  "$consumer" latency --brokers "$brokers" --topic "bench.standby.$name.$run_id" --idle-ms 5000 \
    --max-s $((load_s + 600)) --warm-s "$warm_s" >"$work/$name.cons" 2>"$work/$name.cons.err" &
  local cons=$!
  local deadline=$((SECONDS + 60))
  until grep -q '^ready' "$work/$name.cons" 2>/dev/null; do
    kill -0 "$cons" 2>/dev/null || die "bench_consumer exited (see $work/$name.cons.err)"
    ((SECONDS < deadline)) || die "bench_consumer not ready in 60 s"
    sleep 0.05
  done
  local pm1 pm2 walsenders
  pm1=$(postmaster_of "$primary_dsn") pm2=$(postmaster_of "$standby_dsn")
  walsenders=$(psql_on "$primary_dsn" "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type = 'walsender'")
  say "$name: pgbench -R $rate -c 8 for $load_s s (primary walsenders: $walsenders)"
  # pgbench's backends exit with it, and their CPU ticks with them: a sampler per node keeps each
  # process's last reading, so that a node's figure counts the processes that came and went.
  sample_tree "$name.primary" "$pm1" &
  local sampler1=$!
  sample_tree "$name.standby" "$pm2" &
  local sampler2=$!
  until [[ -s $work/$name.primary.ticks && -s $work/$name.standby.ticks ]]; do sleep 0.05; done
  local w0 s0 o0 t0 p_before
  p_before=$(cat "$work/$name.primary.ticks") s0=$(cat "$work/$name.standby.ticks")
  w0=$(ticks_of $walsenders) o0=$(ticks_of "$ox")
  t0=$(date +%s%N)
  pgbench -n -M prepared -c 8 -j 2 -T "$load_s" -R "$rate" -f "$work/pgbench.sql" "$primary_dsn" \
    >"$work/$name.pgbench.out" 2>&1 || { tail "$work/$name.pgbench.out"; die "pgbench failed"; }
  local t1 p_after w1 s1 o1 elapsed
  t1=$(date +%s%N)
  w1=$(ticks_of $walsenders) o1=$(ticks_of "$ox")
  sleep 0.6  # one more reading of each node
  p_after=$(cat "$work/$name.primary.ticks") s1=$(cat "$work/$name.standby.ticks")
  kill "$sampler1" "$sampler2" 2>/dev/null || true
  wait "$sampler1" "$sampler2" 2>/dev/null || true
  elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
  wait "$cons" || die "consumer failed"
  kill -TERM "$ox"; wait "$ox" || true
  local rows
  rows=$(psql_on "$primary_dsn" "SELECT count(*) FROM $table")
  R[${name}_rate]=$(awk -v n="$((rows - ${R[rows_before]:-0}))" -v t="$elapsed" 'BEGIN {printf "%.0f", n / t}')
  R[rows_before]=$rows
  R[${name}_primary]=$(pct "$p_before" "$p_after" "$elapsed")
  R[${name}_walsenders]=$(pct "$w0" "$w1" "$elapsed")
  R[${name}_standby]=$(pct "$s0" "$s1" "$elapsed")
  R[${name}_outboxd]=$(pct "$o0" "$o1" "$elapsed")
  local k
  for k in count p50_ms p99_ms p999_ms warm_p99_ms; do R[${name}_$k]=$(field "$work/$name.cons" "$k"); done
  # The slot is dropped so that the next phase starts alike (slot names differ anyway).
  psql_on "$dsn" "SELECT pg_drop_replication_slot('bench_$name')" >/dev/null
  say "$name: ${R[${name}_rate]} events/s, primary CPU ${R[${name}_primary]} % (walsenders ${R[${name}_walsenders]} %)," \
    "standby ${R[${name}_standby]} %, outboxd ${R[${name}_outboxd]} %; p50 ${R[${name}_p50_ms]} ms p99 ${R[${name}_p99_ms]} ms"
}

# sample_tree NAME POSTMASTER: every 0.5 s, the sum over every process the postmaster had since the
# sampler started of its last CPU ticks reading, into NAME.ticks.
sample_tree() {
  declare -A last=()
  local p t sum
  while :; do
    for p in $(tree_pids "$2"); do
      t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) || continue
      last[$p]=$t
    done
    sum=0
    for p in "${!last[@]}"; do sum=$((sum + last[$p])); done
    echo "$sum" >"$work/$1.ticks.tmp" && mv "$work/$1.ticks.tmp" "$work/$1.ticks"
    sleep 0.5
  done
}

if [[ $mode == load ]]; then
  # Interleaved, so that whatever else loads the machine weighs on both alike.
  phases=()
  for ((rep = 1; rep <= reps; rep++)); do
    load_phase "primary$rep" "$primary_dsn"
    load_phase "standby$rep" "$standby_dsn" "$primary_dsn"
    phases+=("primary$rep" "standby$rep")
  done
  table_md=$work/load.md
  {
    echo "## Decoding on the primary vs on the standby (PostgreSQL $OUTBOXD_PAIR_VERSION, pgbench -R $rate -c 8, $load_s s each, $reps run(s) interleaved, $(nproc) cores, load average at the end $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    echo "CPU in % of one core over the phase, of every process of the node (pgbench's backends, walsenders, startup and background processes); the primary's walsenders are the logical one outboxd reads when it decodes there, and the physical one the standby reads (both phases). Primary, standby, pgbench, outboxd and Kafka share the machine."
    echo
    echo "| outboxd decodes on | committed/s | primary CPU % | primary CPU % per 1,000/s | primary walsenders CPU % | standby CPU % | outboxd CPU % | events received | p50 ms | p99 ms | p99.9 ms | first ${warm_s} s p99 ms |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for phase in "${phases[@]}"; do
      per=$(awk -v c="${R[${phase}_primary]}" -v r="${R[${phase}_rate]}" 'BEGIN {if (r > 0) printf "%.1f", c * 1000 / r; else print "n/a"}')
      echo "| ${phase%[0-9]*} (run ${phase##*[a-z]}) | ${R[${phase}_rate]} | ${R[${phase}_primary]} | $per | ${R[${phase}_walsenders]} | ${R[${phase}_standby]} | ${R[${phase}_outboxd]} | ${R[${phase}_count]} | ${R[${phase}_p50_ms]} | ${R[${phase}_p99_ms]} | ${R[${phase}_p999_ms]} | ${R[${phase}_warm_p99_ms]} |"
    done
  } >"$table_md"
  cat "$table_md"
  cp "$table_md" "$out_dir/standby-load-$run_id.md"
  exit 0
fi

# ---- idle: what the slot on the standby retains while nothing is published -------------------
outboxd_config idle "$standby_dsn" "$primary_dsn"
"$build/outboxd" run --config "$work/idle.toml" >"$work/idle.log" 2>&1 &
ox=$!
wait_log "$ox" "$work/idle.log" "streaming slot" 120
psql_on "$primary_dsn" "INSERT INTO $table (aggregate_type, aggregate_id, event_type, payload)
  SELECT 'BenchOrder', 'o-' || i, 'OrderCreated', '{}' FROM generate_series(1, 100) i"
psql_on "$primary_dsn" "CREATE TABLE bench_unpublished (at timestamptz DEFAULT now(), v text)"
sample() {  # sample PHASE SECOND
  local p s
  p=$(psql_on "$primary_dsn" "SELECT pg_current_wal_lsn(), (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)
    FROM pg_replication_slots WHERE slot_name = 'standby1')" | tr '|' ' ')
  s=$(psql_on "$standby_dsn" "SELECT pg_last_wal_replay_lsn(), restart_lsn, confirmed_flush_lsn,
    pg_wal_lsn_diff(pg_last_wal_replay_lsn(), restart_lsn), (SELECT sum(size) FROM pg_ls_waldir())
    FROM pg_replication_slots WHERE slot_name = 'bench_idle'" | tr '|' ' ')
  read -r p_lsn p_phys <<<"$p"
  read -r s_replay s_restart s_confirmed s_retained s_waldir <<<"$s"
  echo "| $1 | $2 | $p_lsn | $s_replay | $s_restart | $s_confirmed | $s_retained | $p_phys | $((s_waldir / 1024 / 1024)) |"
}
table_md=$work/idle.md
{
  echo "## WAL retained by outboxd's slot on a standby (PostgreSQL $OUTBOXD_PAIR_VERSION, $idle_s s per phase, sampled every 30 s)"
  echo
  echo "idle: nothing writes to the primary (autovacuum and checkpoints as configured by default). unpublished: the primary commits one row a second to a table outside the publication. Retained = the standby's replay position minus the slot's restart_lsn."
  echo
  echo "| phase | second | primary WAL | standby replayed | slot restart_lsn | slot confirmed | slot retains (bytes) | primary's physical slot retains (bytes) | standby pg_wal (MB) |"
  echo "|---|---|---|---|---|---|---|---|---|"
} >"$table_md"
# Everything published so far is confirmed before the clock starts.
deadline=$((SECONDS + 60))
until [[ $(psql_on "$standby_dsn" "SELECT confirmed_flush_lsn >= pg_last_wal_replay_lsn() FROM pg_replication_slots WHERE slot_name = 'bench_idle'") == t ]]; do
  ((SECONDS < deadline)) || die "the slot did not catch up within 60 s"
  sleep 0.2
done
for phase in idle unpublished; do
  writer=
  if [[ $phase == unpublished ]]; then
    ( while :; do psql_on "$primary_dsn" "INSERT INTO bench_unpublished (v) VALUES ('x')" >/dev/null; sleep 1; done ) &
    writer=$!
  fi
  start=$SECONDS
  for ((at = 0; at <= idle_s; at += 30)); do
    while ((SECONDS - start < at)); do sleep 0.5; done
    sample "$phase" "$at" | tee -a "$table_md" >&2
  done
  if [[ -n $writer ]]; then kill "$writer"; wait "$writer" 2>/dev/null || true; fi
done
kill -TERM "$ox"; wait "$ox" || true
cat "$table_md"
cp "$table_md" "$out_dir/standby-idle-$run_id.md"
