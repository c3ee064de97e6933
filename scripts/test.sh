#!/usr/bin/env bash
# make test: unit tests, then the local stack, integration tests, stack down.
# Exits non-zero on any failure; the stack is stopped whatever happens.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
cd "$repo"

start=$(date +%s)
echo "== unit tests"
ctest --test-dir "$build" -L unit --output-on-failure -j 2

echo "== local stack"
trap 'bash deploy/local/stack.sh down || true' EXIT
bash deploy/local/stack.sh up

echo "== integration tests (real PostgreSQL and Kafka)"
# Serial: some tests stop and start the broker.
ctest --test-dir "$build" -L integration --output-on-failure --timeout 600

echo "== python tests (clients/python, examples/flask-orders; real PostgreSQL, Kafka, outboxd)"
bash scripts/python-test.sh "$build"

echo "== make test passed in $(( $(date +%s) - start )) s"
