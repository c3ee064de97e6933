#!/usr/bin/env bash
# The Helm chart deploy/helm/outboxd without a cluster: helm lint and helm template with the
# default values and with each values file, every rendered manifest validated strictly
# (tests/deploy/helm_test.py says what exactly). Installs what it needs into .run/ when missing:
#   - helm from the Go module proxy, pinned (HELM_VERSION), `go install` into .run/helm-VERSION;
#   - crdcheck (tests/deploy/crdcheck: the Prometheus Operator's API types, pinned in its go.mod)
#     into .run/crdcheck, rebuilt when its sources change;
#   - the schema validator's venv .run/deploy-venv (tests/deploy/requirements.txt).
# Needs Go (1.26, as the machine has).
#
#   tests/deploy/helm_test.sh [OUTBOXD_BINARY] [--update]
#     OUTBOXD_BINARY: `outboxd check` each rendered config (skipped without it)
#     --update: rewrite deploy/kubernetes/outboxd.yaml from the chart (make kubernetes-manifests)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
HELM_VERSION=v4.3.2
helm_dir=$repo/.run/helm-$HELM_VERSION
helm=$helm_dir/helm
crdcheck=$repo/.run/crdcheck
export GOFLAGS=-mod=readonly CGO_ENABLED=0

command -v go >/dev/null || { echo "helm-test: needs Go (go install of helm $HELM_VERSION)" >&2; exit 1; }
if [[ ! -x $helm ]]; then
    echo "helm-test: go install helm.sh/helm/v4/cmd/helm@$HELM_VERSION into $helm_dir (a few minutes once)" >&2
    GOBIN=$helm_dir go install -trimpath \
        -ldflags "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
fi
src_sum=$(cat "$repo"/tests/deploy/crdcheck/{go.mod,go.sum,main.go} | sha256sum | cut -d' ' -f1)
if [[ ! -x $crdcheck || ! -f $crdcheck.sum || $(<"$crdcheck.sum") != "$src_sum" ]]; then
    echo "helm-test: building tests/deploy/crdcheck into $crdcheck" >&2
    (cd "$repo/tests/deploy/crdcheck" && go build -trimpath -o "$crdcheck" .)
    echo "$src_sum" >"$crdcheck.sum"
fi
python=$(python3 "$repo/tests/deploy/deploy_venv.py")
"$helm" version --short
exec "$python" "$repo/tests/deploy/helm_test.py" "$helm" "$crdcheck" "$@"
