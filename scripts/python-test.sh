#!/usr/bin/env bash
# Python tests (clients/python and examples/flask-orders) against the running local stack.
# Creates the venv .run/python-venv from clients/python/requirements-test.txt when missing or
# stale, installs the outboxd package from clients/python (generating the Envelope classes from
# proto/), runs `mypy --strict` on the installed package, the example and a typing-only asyncio
# usage file, and runs pytest (which also builds venvs under .run/protobuf-range/ with the lowest
# and highest accepted protobuf: needs PyPI the first time), with the TLS stack of
# tests/integration/tls_stack.sh up in the background meanwhile (stopped on exit). Needs build/outboxd (or
# $OUTBOXD_BIN) and `deploy/local/stack.sh up`.
#
#   scripts/python-test.sh [build-dir] [pytest args...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
[[ $# -gt 0 ]] && shift
cd "$repo"

venv="$repo/.run/python-venv"
reqs="$repo/clients/python/requirements-test.txt"
python=/usr/bin/python3
[[ -x $python ]] || python=$(command -v python3)

if [[ ! -x $venv/bin/python || $reqs -nt $venv/.installed ]]; then
    echo "python-test: creating $venv (pinned wheels from $reqs)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --only-binary=:all: -r "$reqs"
    touch "$venv/.installed"
fi
# PYTHON_TEST_SETUP_ONLY=1: the venv only (make test prepares it while compiling).
[[ ${PYTHON_TEST_SETUP_ONLY:-0} == 1 ]] && exit 0
# The TLS stack (tests/integration/tls_stack.sh: SASL_SSL with SCRAM-SHA-512) for the dead-letter
# producer's test, started in the background now (it takes ~20 s, overlapping mypy and the other
# tests) and stopped on exit. No Kafka 3.9 broker: the Python client's own librdkafka (>= 2.6.1)
# does SCRAM with Kafka 4.x. The test waits for $OUTBOXD_PY_TLS_STACK (the exit status of `up`).
tls_done="$repo/.run/python-tls-stack.done"
rm -f "$tls_done"
(OUTBOXD_TLS_KAFKA3=0 bash tests/integration/tls_stack.sh up >"$repo/.run/python-tls-stack.log" 2>&1
 echo $? >"$tls_done") &
tls_pid=$!
stop_tls() {
    wait "$tls_pid" 2>/dev/null || true
    OUTBOXD_TLS_KAFKA3=0 bash tests/integration/tls_stack.sh down >>"$repo/.run/python-tls-stack.log" 2>&1 || true
}
trap stop_tls EXIT
export OUTBOXD_PY_TLS_STACK=$tls_done

# The package itself, rebuilt every time (cheap): the Envelope classes come from proto/.
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall \
    "$repo/clients/python" >/dev/null

# mypy --strict (settings in clients/python/pyproject.toml) on the package as installed, with its
# generated envelope_pb2.pyi, the example, and emit() called with an AsyncSession. From /tmp, so
# that `outboxd` resolves to the installed package, not to clients/python/src without the stubs.
echo "python-test: mypy --strict"
(cd /tmp && MYPYPATH="$repo/examples/flask-orders" "$venv/bin/python" -m mypy \
    --config-file "$repo/clients/python/pyproject.toml" --cache-dir "$repo/.run/mypy-cache" \
    -p outboxd -p flask_orders &&
 "$venv/bin/python" -m mypy --config-file "$repo/clients/python/pyproject.toml" \
    --cache-dir "$repo/.run/mypy-cache" "$repo/clients/python/tests/typecheck/asyncio_usage.py")

[[ $build == /* ]] || build="$repo/$build"
export OUTBOXD_BIN=${OUTBOXD_BIN:-$build/outboxd}
[[ -x $OUTBOXD_BIN ]] || { echo "python-test: $OUTBOXD_BIN not found; run make build" >&2; exit 1; }
"$venv/bin/python" -m pytest -p no:cacheprovider --import-mode=importlib --rootdir "$repo" \
    --ignore=clients/python/tests/typecheck clients/python/tests examples/flask-orders/tests "$@"
