#!/usr/bin/env bash
# make test: everything CI runs, from a clean clone. Exits non-zero on any failure
# (a background job's included); the stack and background jobs are stopped
# whatever happens. Prints a lap (seconds since start) before each phase and a
# summary of every phase's duration at the end.
#
# One build runs the tests: the sanitizer build (ASan + UBSan, every report
# fatal, compiled with clang when installed: about 1.5x quicker than gcc here).
# Every test binary is compiled once, there; the outboxd processes the
# integration tests spawn are that build too (OUTBOXD_BINARY is compiled into
# each test), so every end-to-end path is checked for memory errors and
# undefined behaviour. The plain build ($1, default build) compiles only what
# the Python tests and `make demo` run (outboxd, outboxd-tail), with the
# default compiler: the binary that ships is built and exercised too.
#
# Phases, in order (the PHASES list below). Work that needs no compiler output
# (the local stack, the Python venv) starts in the background at once; the plain
# build and the fuzz smoke run in the background while the sanitizer build's
# tests run. From the start, at the lowest priority, the Debian package's build
# (build-deb), the Helm chart's test (helm built from the Go module proxy the
# first time) and the making of the Debian 12 chroot base run in the background;
# the package is then installed and run in that chroot against the stack (phase
# deploy). The container image (make image-test, ~10 min) is not part of it.
# Integration tests run in parallel (ctest -j $IT_JOBS); the test cases that stop,
# kill or reconfigure the shared PostgreSQL or Kafka are marked
# RUN_SERIAL in CMake (outboxd_test(... SERIAL filter), tests/CMakeLists.txt), so
# ctest runs each of them alone.
#
# Adding a phase: write a function phase_<name> (it fails the run by returning
# non-zero, `set -e` style) and put <name> in PHASES where it belongs. A slow
# step that does not need the build (a download, a container pull, a server):
# start it with `bg_start <name> <command...>` in phase_start_background (or in
# the phase after whatever it needs), and `bg_wait <name>` in the first phase
# that needs its result; its output goes to .run/ci/<name>.log and is printed
# when waited for; a failure fails the run. Adding a test: an outboxd_test() in
# tests/.../CMakeLists.txt with LABEL unit or integration is picked up by the
# ctest phases; give it SERIAL "<gtest filter>" if it stops or reconfigures a
# shared server.
#
# Knobs: JOBS (compile jobs, 2), IT_JOBS (parallel integration tests, 3),
# ASAN_BUILD_DIR (build-asan), ASAN_CXX (clang++ if installed, else c++),
# FUZZ_SMOKE_SECONDS (20), CCACHE_DISABLE=1 (ccache is used when installed).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
asan=${ASAN_BUILD_DIR:-build-asan}
jobs=${JOBS:-2}
it_jobs=${IT_JOBS:-3}
cd "$repo"
logs="$repo/.run/ci"
mkdir -p "$logs"

PHASES=(
  start_background   # stack up, Python venv, PostgreSQL matrix, package and chart (background)
  asan_build         # sanitizer build: all targets, tests included
  start_after_build  # plain build then fuzz smoke (background)
  asan_unit          # unit tests under the sanitizers
  integration        # waits for the stack; integration tests (chaos short forms included, both modes)
  deploy             # waits for the package and chart job; the package installed in Debian 12 (deb_test.sh)
  pg_matrix          # waits for PostgreSQL 14, 16, 17, 18; the relay's end-to-end tests on each, and
                     # decoding on a standby on 16 and 18 (background, beside them)
  python             # waits for the venv, the plain build and the fuzz smoke; clients/python, examples/flask-orders
)

launcher=
if command -v ccache >/dev/null; then launcher=-DCMAKE_CXX_COMPILER_LAUNCHER=ccache; fi
asan_cxx=${ASAN_CXX:-$(command -v clang++ || echo c++)}

start=$(date +%s)
lap() { echo "== $1 ($(( $(date +%s) - start )) s)"; }

# ---- background jobs -------------------------------------------------------
declare -A bg_pid=() bg_started=()
# A job runs in a session (and process group) of its own, so that clean-up can
# stop it with everything it started; the foreground stays in the script's
# group, so that a CI runner's signal to the group reaches it. A shell function
# runs as `bg_start NAME bash -c FUNCTION` after `export -f FUNCTION`.
bg_start() {  # bg_start NAME COMMAND...: runs COMMAND in the background
  local name=$1; shift
  setsid "$@" >"$logs/$name.log" 2>&1 &
  bg_pid[$name]=$!
  bg_started[$name]=$(date +%s)
  echo "   (background: $name, log .run/ci/$name.log)"
}
bg_wait() {  # bg_wait NAME: waits for it; prints its log; fails the run if it failed
  local name=$1 rc=0
  wait "${bg_pid[$name]}" || rc=$?
  unset "bg_pid[$name]"
  sed "s/^/   $name: /" "$logs/$name.log"
  echo "   ($name: $(( $(date +%s) - bg_started[$name] )) s in the background, exit $rc)"
  if (( rc != 0 )); then echo "make test: $name failed (exit $rc)" >&2; return 1; fi
}

stack_started=0
cleanup() {
  local rc=$?
  for name in "${!bg_pid[@]}"; do
    kill -TERM -- "-${bg_pid[$name]}" 2>/dev/null || true
    wait "${bg_pid[$name]}" 2>/dev/null || true
  done
  if (( stack_started )); then
    pg_matrix_down >/dev/null 2>&1 || true
    standby_matrix_down >/dev/null 2>&1 || true
    bash deploy/local/stack.sh down >/dev/null 2>&1 || true
  fi
  (( rc == 0 )) || echo "make test FAILED (exit $rc) after $(( $(date +%s) - start )) s" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- sanitizer reports -----------------------------------------------------
reports="$repo/$asan/sanitizer-reports"
# Set once the build and the background jobs started after it are under way
# (a background job inherits the environment of its start): inherited by the
# tests and the outboxd processes they spawn. Reports go to files as well, so
# that one from an outboxd a test killed is not missed.
use_sanitizer_reports() {
  rm -rf "$reports" && mkdir -p "$reports"
  export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:log_path=$reports/asan
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan
  export LSAN_OPTIONS=suppressions=$repo/tests/lsan.supp:print_suppressions=0
}
check_reports() {
  if compgen -G "$reports/*" >/dev/null; then
    for f in "$reports"/*; do printf -- '---- %s\n' "$f" >&2; head -n 80 "$f" >&2; done
    echo "sanitizer reports above ($reports): fix the error they name" >&2
    return 1
  fi
}
# ctest_asan ARGS...: ctest in the sanitizer build, then the report check.
ctest_asan() {
  ctest --test-dir "$asan" --output-on-failure "$@" || { check_reports || true; return 1; }
  check_reports
}

# ---- phases ----------------------------------------------------------------
# The Debian package (its own build tree, configured for /usr), the Helm chart's test (helm from
# the Go module proxy the first time) and the Debian 12 base the package test installs into:
# nothing here needs the stack. At low priority: the tests running meanwhile come first.
package_and_chart() {
  set -euo pipefail
  JOBS=1 bash scripts/deb.sh >/dev/null
  bash tests/deploy/helm_test.sh build-deb/outboxd
  bash tests/deploy/deb_test.sh --prepare
}
phase_start_background() {
  stack_started=1
  bg_start stack bash deploy/local/stack.sh up
  # Creates or refreshes .run/python-venv only (no tests, no outboxd needed).
  bg_start venv env PYTHON_TEST_SETUP_ONLY=1 bash scripts/python-test.sh "$build"
  # The other PostgreSQL versions (official builds from Maven Central), downloaded and started now.
  export PG_MATRIX_VERSIONS
  export -f pg_matrix_up pg_matrix_port
  bg_start pg_matrix_up bash -c pg_matrix_up
  # At the lowest priority: it yields the cores to the sanitizer build and the tests.
  export -f package_and_chart
  bg_start package_chart nice -n 19 bash -c package_and_chart
}

phase_asan_build() {
  echo "   compiler: $asan_cxx (-O1 -g1: quicker than -O2 -g, line numbers in reports)"
  cmake -S . -B "$asan" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_COMPILER="$asan_cxx" \
    -DCMAKE_CXX_FLAGS="-O1 -g1" -DOUTBOXD_SANITIZE=ON $launcher >/dev/null
  cmake --build "$asan" -j "$jobs"
}

plain_then_fuzz() {
  set -euo pipefail
  # The plain build: only the binaries the Python tests and the demo run.
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $launcher >/dev/null
  cmake --build "$build" -j 1 --target outboxd outboxd-tail
  FUZZ_SECONDS=${FUZZ_SMOKE_SECONDS:-20} JOBS=1 bash scripts/fuzz.sh
}
phase_start_after_build() {
  # One compile job: the tests running meanwhile need a core too.
  export build launcher
  export -f plain_then_fuzz
  bg_start plain_fuzz bash -c plain_then_fuzz
}

phase_asan_unit() {
  use_sanitizer_reports
  ctest_asan -L unit -j "$jobs"
}

phase_integration() {
  bg_wait stack
  ctest_asan -L integration -j "$it_jobs" --timeout 900
}

phase_deploy() {
  bg_wait package_chart
  bash tests/deploy/deb_test.sh "$(ls build-deb/outboxd_*_amd64.deb)"
}

# ---- PostgreSQL version matrix ---------------------------------------------
# The full suite runs on PostgreSQL 15 (Debian's) above. The relay's end-to-end tests (RelayTest,
# but the Kafka outage, which is about the broker) and the replication stream's tests (slot
# creation, failover slots, what each server sends) run against 14, 16, 17 and 18 too, each
# server on its own port (OUTBOXD_PG_MATRIX_PORT_BASE + version: 54314, 54316, ...), Kafka
# shared. The PostgreSQL 17 switchover test (switchover_test) and decoding on a standby
# (standby_test's StandbyTest) run with the integration tests: they start their own primary and
# standby. Decoding on a standby on 16 and 18 (standby_test's StandbyMatrixTest: the standby
# case, and 18's idle_replication_slot_timeout) runs here, in the background beside the relay's
# tests, one version after the other, each pair on ports of its own (pg_matrix_pair_port).
PG_MATRIX_VERSIONS=${PG_MATRIX_VERSIONS:-14 16 17 18}
PG_MATRIX_FILTER='RelayTest.*:-RelayTest.KafkaOutage*'
pg_matrix_port() { echo $(( ${OUTBOXD_PG_MATRIX_PORT_BASE:-54300} + $1 )); }
STANDBY_MATRIX_VERSIONS=${STANDBY_MATRIX_VERSIONS:-16 18}
# The primary's port; the standby's is the next one (54372 and 54373 for 16, 54376 and 54377 for 18).
pg_matrix_pair_port() { echo $(( ${OUTBOXD_PG_MATRIX_PORT_BASE:-54300} + 40 + 2 * $1 )); }
standby_matrix() {
  set -euo pipefail
  local v t0
  for v in $STANDBY_MATRIX_VERSIONS; do
    t0=$(date +%s)
    OUTBOXD_PAIR_VERSION=$v OUTBOXD_STANDBY_PAIR_PORT=$(pg_matrix_pair_port "$v") \
      "$asan/tests/integration/standby_test" --gtest_filter='StandbyMatrixTest.*' --gtest_brief=1
    echo "PostgreSQL $v: decoding on a standby passed in $(( $(date +%s) - t0 )) s"
  done
}
standby_matrix_down() {
  local v
  for v in $STANDBY_MATRIX_VERSIONS; do
    OUTBOXD_PAIR_VERSION=$v OUTBOXD_PAIR_PORT=$(pg_matrix_pair_port "$v") bash tests/integration/pg_pair.sh down || true
  done
}
pg_matrix_up() {
  local v
  for v in $PG_MATRIX_VERSIONS; do
    OUTBOXD_PG_VERSION=$v OUTBOXD_PG_PORT=$(pg_matrix_port "$v") bash deploy/local/stack.sh start postgres
  done
}
pg_matrix_down() {
  local v
  for v in $PG_MATRIX_VERSIONS; do
    OUTBOXD_PG_VERSION=$v OUTBOXD_PG_PORT=$(pg_matrix_port "$v") bash deploy/local/stack.sh stop postgres || true
  done
}
phase_pg_matrix() {
  bg_wait pg_matrix_up
  export asan STANDBY_MATRIX_VERSIONS
  export -f standby_matrix pg_matrix_pair_port
  bg_start standby_matrix bash -c standby_matrix
  local v t0
  for v in $PG_MATRIX_VERSIONS; do
    t0=$(date +%s)
    OUTBOXD_PG_VERSION=$v OUTBOXD_PG_PORT=$(pg_matrix_port "$v") "$asan/tests/integration/relay_test" \
      --gtest_filter="$PG_MATRIX_FILTER" --gtest_brief=1 || { check_reports || true; return 1; }
    OUTBOXD_PG_VERSION=$v OUTBOXD_PG_PORT=$(pg_matrix_port "$v") "$asan/tests/integration/pg_stream_test" \
      --gtest_brief=1 || { check_reports || true; return 1; }
    check_reports
    echo "   PostgreSQL $v: relay and replication stream tests passed in $(( $(date +%s) - t0 )) s"
  done
  pg_matrix_down
  bg_wait standby_matrix || { check_reports || true; return 1; }
  check_reports
}

phase_python() {
  bg_wait venv
  bg_wait plain_fuzz
  bash scripts/python-test.sh "$build"
}

declare -A took=()
for phase in "${PHASES[@]}"; do
  lap "$phase"
  t0=$(date +%s)
  "phase_$phase"
  took[$phase]=$(( $(date +%s) - t0 ))
done
lap "make test passed"
for phase in "${PHASES[@]}"; do printf '   %-18s %5d s\n' "$phase" "${took[$phase]}"; done
