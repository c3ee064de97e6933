#!/usr/bin/env bash
# make test: unit tests (plain build), the sanitizer build (ASan + UBSan) and its
# unit tests, a short fuzzing smoke, then the local stack and the integration
# tests (chaos short form included) under the sanitizer build, stack down.
# Exits non-zero on any failure; the stack is stopped whatever happens.
#
# Integration tests run once, under build-asan: the outboxd they spawn is the
# sanitizer build (OUTBOXD_BINARY is compiled into each test from its own build),
# so every end-to-end path is checked for memory errors and undefined behaviour;
# running them under the plain build as well would double the slowest part of CI
# for no coverage the sanitizer run lacks.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
asan=${ASAN_BUILD_DIR:-build-asan}
cd "$repo"

start=$(date +%s)
lap() { echo "== $1 ($(( $(date +%s) - start )) s)"; }
lap "unit tests ($build)"
ctest --test-dir "$build" -L unit --output-on-failure -j 2

lap "sanitizer build ($asan: AddressSanitizer + UndefinedBehaviorSanitizer)"
# -O1 -g1: quicker to compile than -O2 -g, line numbers in reports, asserts kept.
cmake -S . -B "$asan" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" \
    -DOUTBOXD_SANITIZE=ON >/dev/null
cmake --build "$asan" -j "${JOBS:-2}"
# Inherited by the outboxd processes the integration tests spawn. Reports go to
# files as well, so that one from an outboxd a test killed is not missed.
reports="$repo/$asan/sanitizer-reports"
rm -rf "$reports" && mkdir -p "$reports"
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:log_path=$reports/asan
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan
export LSAN_OPTIONS=suppressions=$repo/tests/lsan.supp:print_suppressions=0
check_reports() {
    if compgen -G "$reports/*" >/dev/null; then
        for f in "$reports"/*; do printf -- '---- %s\n' "$f" >&2; head -n 80 "$f" >&2; done
        echo "sanitizer reports above ($reports): fix the error they name" >&2
        return 1
    fi
}

lap "unit tests ($asan)"
ctest --test-dir "$asan" -L unit --output-on-failure -j 2 || { check_reports || true; exit 1; }
check_reports

lap "fuzz smoke (${FUZZ_SMOKE_SECONDS:-20} s per target)"
FUZZ_SECONDS=${FUZZ_SMOKE_SECONDS:-20} bash scripts/fuzz.sh

lap "local stack"
trap 'bash deploy/local/stack.sh down || true' EXIT
bash deploy/local/stack.sh up

lap "integration tests ($asan, real PostgreSQL and Kafka)"
# Serial: some tests stop and start the broker.
ctest --test-dir "$asan" -L integration --output-on-failure --timeout 900 ||
    { check_reports || true; exit 1; }
check_reports

# ---- PostgreSQL version matrix (issue 12) -------------------------------------------------
# The full suite ran on PostgreSQL 15 (Debian's) above. Here the relay's end-to-end tests
# (RelayTest but the Kafka outage, which is about the broker) and the replication stream's
# tests (slot creation, failover slots, decoding of what each server sends) run against 14, 16,
# 17 and 18 as well: the official builds from Maven Central, all started once, each on its own
# port (OUTBOXD_PG_MATRIX_PORT_BASE + version, default 54314, 54316, ...), Kafka shared. (The
# PostgreSQL 17 switchover test, switchover_test, runs with the integration tests above: it starts
# its own primary and standby.) Seconds per version are printed for the budget.
PG_MATRIX_VERSIONS=${PG_MATRIX_VERSIONS:-14 16 17 18}
PG_MATRIX_FILTER='RelayTest.*:-RelayTest.KafkaOutage*'
pg_matrix_port() { echo $(( ${OUTBOXD_PG_MATRIX_PORT_BASE:-54300} + $1 )); }
pg_matrix_down() {
    local v
    for v in $PG_MATRIX_VERSIONS; do
        OUTBOXD_PG_VERSION=$v OUTBOXD_PG_PORT=$(pg_matrix_port "$v") bash deploy/local/stack.sh stop postgres || true
    done
}
pg_matrix() {
    local v t0
    trap 'pg_matrix_down; bash deploy/local/stack.sh down || true' EXIT
    t0=$(date +%s)
    for v in $PG_MATRIX_VERSIONS; do
        OUTBOXD_PG_VERSION=$v OUTBOXD_PG_PORT=$(pg_matrix_port "$v") bash deploy/local/stack.sh start postgres
    done
    echo "== PostgreSQL $PG_MATRIX_VERSIONS started in $(( $(date +%s) - t0 )) s"
    for v in $PG_MATRIX_VERSIONS; do
        t0=$(date +%s)
        OUTBOXD_PG_VERSION=$v OUTBOXD_PG_PORT=$(pg_matrix_port "$v") "$asan/tests/integration/relay_test" \
            --gtest_filter="$PG_MATRIX_FILTER" --gtest_brief=1 || { check_reports || true; return 1; }
        OUTBOXD_PG_VERSION=$v OUTBOXD_PG_PORT=$(pg_matrix_port "$v") "$asan/tests/integration/pg_stream_test" \
            --gtest_brief=1 ||
            { check_reports || true; return 1; }
        check_reports
        echo "== PostgreSQL $v: relay and replication stream tests passed in $(( $(date +%s) - t0 )) s"
    done
    pg_matrix_down
    trap 'bash deploy/local/stack.sh down || true' EXIT
}
lap "PostgreSQL version matrix ($PG_MATRIX_VERSIONS; $asan)"
pg_matrix
# ---- end of the PostgreSQL version matrix ----------------------------------------------------

lap "python tests (clients/python, examples/flask-orders; real PostgreSQL, Kafka, outboxd)"
bash scripts/python-test.sh "$build"

lap "make test passed"
