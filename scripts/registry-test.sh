#!/usr/bin/env bash
# The schema registry end-to-end test (make registry-test): builds and starts a local Apicurio
# Registry (deploy/local/registry.sh, Maven + Quarkus, cached in .run/registry), makes the venv
# .run/registry-venv with confluent-kafka[schemaregistry,protobuf] (tests/registry/requirements.txt),
# and runs tests/registry/test_registry_e2e.py against the local stack, which it starts when it is
# not running (and then stops). The registry is stopped at the end.
#
#   scripts/registry-test.sh [build-dir] [pytest args...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
[[ $# -gt 0 ]] && shift
cd "$repo"
[[ $build == /* ]] || build="$repo/$build"
export OUTBOXD_BIN=${OUTBOXD_BIN:-$build/outboxd}
[[ -x $OUTBOXD_BIN ]] || { echo "registry-test: $OUTBOXD_BIN not found; run make build" >&2; exit 1; }
export OUTBOXD_REGISTRY_PORT=${OUTBOXD_REGISTRY_PORT:-58081}

venv="$repo/.run/registry-venv"
reqs="$repo/tests/registry/requirements.txt"
if [[ ! -x $venv/bin/python || $reqs -nt $venv/.installed ]]; then
    echo "registry-test: creating $venv from $reqs"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --only-binary=:all: -r "$reqs"
    touch "$venv/.installed"
fi

started_stack=0
if ! bash deploy/local/stack.sh status >/dev/null 2>&1; then
    bash deploy/local/stack.sh up
    started_stack=1
fi
cleanup() {
    bash deploy/local/registry.sh down || true
    if ((started_stack)); then bash deploy/local/stack.sh down || true; fi
}
trap cleanup EXIT
start=$SECONDS
bash deploy/local/registry.sh up
echo "registry-test: registry build/start took $((SECONDS - start)) s"
"$venv/bin/python" -m pytest -p no:cacheprovider -v -s "$repo/tests/registry" "$@"
