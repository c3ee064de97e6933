"""Validates Kubernetes manifests against the Kubernetes OpenAPI schemas that
kubernetes-validate bundles (no cluster, no network), in strict mode: an unknown
field, a wrong type, a missing required field or an unknown kind fails.

Every resource is checked against each Kubernetes minor version from MIN_VERSION
to the newest bundled one. A Kustomization has no Kubernetes schema: its
resources must exist and parse, and every manifest of its directory except
*.example.yaml must be listed (a YAML file that holds no resource is not a manifest).

usage: validate_manifests.py FILE...   (run with the venv's python)
exit 0: every resource valid; 1: any failure (each printed).
"""
import os
import sys

import kubernetes_validate
import yaml

MIN_VERSION = "1.29"  # the oldest minor version the manifests claim to work on


def versions():
    seen = []
    for v in kubernetes_validate.utils.all_versions():
        mm = kubernetes_validate.utils.major_minor(v)
        if mm >= MIN_VERSION and mm not in seen:
            seen.append(mm)
    return seen


def main(paths):
    failures = 0
    checked = versions()
    for path in paths:
        try:
            with open(path) as f:
                resources = [d for d in yaml.safe_load_all(f) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            print(f"FAIL {path}: {e}")
            failures += 1
            continue
        for res in resources:
            if not isinstance(res, dict) or "kind" not in res or "apiVersion" not in res:
                print(f"FAIL {path}: not a Kubernetes resource (no kind/apiVersion)")
                failures += 1
                continue
            name = f"{res['kind']}/{res.get('metadata', {}).get('name', '?')}"
            if res["kind"] == "Kustomization":
                failures += check_kustomization(path, res)
                continue
            bad = validate_resource(res, checked)
            if bad:
                failures += 1
                # The first errors say it; the same error for every version would be noise.
                print(f"FAIL {path} {name}: " + "; ".join(dict.fromkeys(b.split(": ", 1)[1] for b in bad)))
                print(f"     (invalid for {len(bad)} of {len(checked)} versions {checked[0]}..{checked[-1]})")
            else:
                print(f"ok   {path} {name}: valid (strict) for Kubernetes {checked[0]}..{checked[-1]}")
    return failures


def validate_resource(res, checked):
    """The errors of one resource against each Kubernetes version in checked (empty: valid)."""
    bad = []
    for v in checked:
        try:
            kubernetes_validate.validate(res, v, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "(top)"
            bad.append(f"Kubernetes {v}: at {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            bad.append(f"Kubernetes {v}: no schema for kind {res['kind']} of apiVersion "
                       f"{res['apiVersion']} (misspelt, or not in this Kubernetes version)")
    return bad


def check_kustomization(path, res):
    base = os.path.dirname(path)
    listed = res.get("resources", [])
    failures = 0
    for r in listed:
        if not os.path.isfile(os.path.join(base, r)):
            print(f"FAIL {path}: resource {r} does not exist")
            failures += 1
    own = {os.path.basename(path)}
    for f in sorted(os.listdir(base)):
        if f.endswith(".yaml") and f not in own and f not in listed and not f.endswith(".example.yaml"):
            with open(os.path.join(base, f)) as fh:
                docs = [d for d in yaml.safe_load_all(fh) if isinstance(d, dict)]
            if not any("kind" in d and "apiVersion" in d for d in docs):
                continue  # not a manifest (e.g. the chart's values.yaml the manifests are rendered with)
            print(f"FAIL {path}: {f} is not listed in resources")
            failures += 1
    if not failures:
        print(f"ok   {path} Kustomization: {len(listed)} resources, all present")
    return failures


if __name__ == "__main__":
    n = main(sys.argv[1:])
    print(f"{n} invalid" if n else "all valid")
    sys.exit(1 if n else 0)
