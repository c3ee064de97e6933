"""The Helm chart deploy/helm/outboxd, checked without a cluster (run by tests/deploy/helm_test.sh):

- `helm lint --strict` and `helm template` with the default values and with every values file
  of deploy/helm/outboxd/examples and tests/deploy/helm-values; together those files must set
  every option of values.yaml to something other than its default (a new option without a test
  fails here);
- every rendered manifest validated strictly against the Kubernetes schemas 1.29..1.37 by
  validate_manifests.py (as deploy_files does for the raw manifests), the Prometheus Operator's
  ServiceMonitor and PrometheusRule by crdcheck (strict decoding into the operator's API types);
  deliberately broken renders must fail both;
- what every render must keep whatever the values: the standby model's rollout (RollingUpdate,
  maxSurge 1, maxUnavailable 0) and disruption budget, probes on /healthz and /readyz, non-root
  with a read-only root file system, no service-account token, the secrets' wiring, the http
  port of the config equal to the container's, the PrometheusRule equal to
  deploy/prometheus/alerts.yml;
- every render's terminationGracePeriodSeconds is at least the stop flush timeout of the config it
  renders plus the margin (tests/deploy/stop_budget.py); values.schema.json refuses a misspelt
  option and a grace period below the default timeout plus the margin (40 s);
- the TOML of each rendered ConfigMap is a valid outboxd config (`outboxd check` does not exit 2);
- deploy/kubernetes/outboxd.yaml is the chart rendered with deploy/kubernetes/values.yaml
  (--update rewrites it: `make kubernetes-manifests`);
- the chart's appVersion is CMake's project version.

usage: helm_test.py HELM CRDCHECK [OUTBOXD_BINARY] [--update]   (with the deploy venv's python)
"""
import copy
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stop_budget  # noqa: E402

sys.stdout.reconfigure(line_buffering=True)  # progress as it happens, in make test's log too
here = os.path.dirname(os.path.abspath(__file__))
src = os.path.dirname(os.path.dirname(here))
chart = os.path.join(src, "deploy", "helm", "outboxd")
raw_dir = os.path.join(src, "deploy", "kubernetes")
raw_path = os.path.join(raw_dir, "outboxd.yaml")
args = [a for a in sys.argv[1:] if not a.startswith("--")]
update = "--update" in sys.argv[1:]
helm, crdcheck = args[0], args[1]
binary = args[2] if len(args) > 2 else None
failures = []

RAW_HEADER = """\
# Generated from the Helm chart deploy/helm/outboxd with deploy/kubernetes/values.yaml by
# `make kubernetes-manifests`; do not edit: change the chart (tests/deploy/helm_test.sh fails
# when this file and the chart differ). Applied by kustomization.yaml.
"""


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)
    return ok


def run(cmd, show=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    out = (p.stdout + p.stderr).rstrip()
    # Helm logs an INFO line for the link files/alerts.yml -> deploy/prometheus/alerts.yml.
    out = "\n".join(l for l in out.splitlines() if "found symbolic link in path" not in l)
    if show:
        print("$ " + " ".join(os.path.relpath(c, src) if c.startswith(src) else c for c in cmd)
              + ("\n" + "\n".join("   " + l for l in out.splitlines()) if out else ""))
    return p.returncode, p.stdout


def render(values_files, release="outboxd"):
    cmd = [helm, "template", release, chart]
    for f in values_files:
        cmd += ["-f", f]
    rc, out = run(cmd, show=False)
    if rc != 0:
        run(cmd)
        return None, None
    return out, [d for d in yaml.safe_load_all(out) if d]


def flatten(tree, prefix=""):
    """values.yaml as {dotted path: value}; a non-empty mapping is a branch, anything else a leaf."""
    out = {}
    for k, v in tree.items():
        path = prefix + k
        if isinstance(v, dict) and v:
            out.update(flatten(v, path + "."))
        else:
            out[path] = v
    return out


if update:  # make kubernetes-manifests: write deploy/kubernetes/outboxd.yaml, nothing else
    text, _ = render([os.path.join(raw_dir, "values.yaml")])
    if text is None:
        sys.exit(1)
    with open(raw_path, "w") as f:
        f.write(RAW_HEADER + text)
    print("wrote deploy/kubernetes/outboxd.yaml")
    sys.exit(0)

# ---- the chart's version is outboxd's -------------------------------------------------------
with open(os.path.join(src, "CMakeLists.txt")) as f:
    cmake_version = re.search(r"project\(outboxd VERSION ([0-9.]+)", f.read()).group(1)
with open(os.path.join(chart, "Chart.yaml")) as f:
    chart_meta = yaml.safe_load(f)
check(chart_meta["appVersion"] == cmake_version,
      f"Chart.yaml appVersion {chart_meta['appVersion']} is CMake's project version {cmake_version}")

# ---- which values files, and do they cover every option ------------------------------------
with open(os.path.join(chart, "values.yaml")) as f:
    defaults = yaml.safe_load(f)
value_sets = [("default values", [])]
for path in sorted(glob.glob(os.path.join(chart, "examples", "*.yaml"))
                   + glob.glob(os.path.join(here, "helm-values", "*.yaml"))):
    value_sets.append((os.path.relpath(path, src), [path]))
default_leaves = flatten(defaults)
covered = set()
for _, files in value_sets[1:]:
    with open(files[0]) as f:
        for path, value in flatten(yaml.safe_load(f) or {}).items():
            for leaf, default in default_leaves.items():
                if (path == leaf or path.startswith(leaf + ".") or leaf.startswith(path + ".")) \
                        and value != default:
                    covered.add(leaf)
# Pinned by the invariants below (every render must keep them): no values file may change them.
PINNED = {"securityContext.allowPrivilegeEscalation", "securityContext.readOnlyRootFilesystem",
          "securityContext.capabilities.drop", "podSecurityContext.runAsNonRoot"}
missing = sorted(set(default_leaves) - covered - PINNED)
check(not missing, f"the values files set each of the {len(default_leaves)} options of values.yaml"
      + (": never set: " + ", ".join(missing) if missing else ""))

# ---- lint, render, validate, invariants ------------------------------------------------------
with open(os.path.join(src, "deploy", "prometheus", "alerts.yml")) as f:
    alerts = yaml.safe_load(f)


def invariants(name, docs, values):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    dep = by_kind["Deployment"][0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    ok = True
    ok &= check(spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                f"{name}: RollingUpdate, maxSurge 1, maxUnavailable 0")
    ok &= check(spec["replicas"] == values["replicaCount"], f"{name}: replicas {values['replicaCount']}")
    ok &= check(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
                and c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"},
                f"{name}: liveness on /healthz, readiness on /readyz")
    ok &= check(pod["securityContext"].get("runAsNonRoot") is True
                and c["securityContext"].get("readOnlyRootFilesystem") is True
                and c["securityContext"].get("allowPrivilegeEscalation") is False,
                f"{name}: non-root, read-only root file system, no privilege escalation")
    ok &= check(pod["automountServiceAccountToken"] is False, f"{name}: no service-account token")
    grace = pod["terminationGracePeriodSeconds"]
    # The config the pods run: the rendered ConfigMap's, or (an existing ConfigMap) unknown: the default.
    run_toml = by_kind["ConfigMap"][0]["data"]["outboxd.toml"] if "ConfigMap" in by_kind else ""
    ok &= check(grace == values["terminationGracePeriodSeconds"] and grace >= stop_budget.required_grace_s(run_toml),
                f"{name}: terminationGracePeriodSeconds (values): " + stop_budget.describe(grace, run_toml))
    selector = spec["selector"]["matchLabels"]
    ok &= check(all(pod_label in spec["template"]["metadata"]["labels"].items() for pod_label in selector.items()),
                f"{name}: the pods carry the selector's labels")
    if values["podDisruptionBudget"]["enabled"]:
        pdb = by_kind["PodDisruptionBudget"][0]["spec"]
        ok &= check(pdb["selector"]["matchLabels"] == selector
                    and pdb["maxUnavailable"] == values["podDisruptionBudget"]["maxUnavailable"],
                    f"{name}: PodDisruptionBudget on the Deployment's pods, maxUnavailable {pdb['maxUnavailable']}")
    else:
        ok &= check("PodDisruptionBudget" not in by_kind, f"{name}: no PodDisruptionBudget")
    service = by_kind["Service"][0]
    ok &= check(service["spec"]["selector"] == selector and service["spec"]["publishNotReadyAddresses"] is True,
                f"{name}: the Service selects the pods, not-ready ones too")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_volume = volumes[mounts["/etc/outboxd"]]["configMap"]["name"]
    if values["config"]["existingConfigMap"]:
        ok &= check("ConfigMap" not in by_kind and config_volume == values["config"]["existingConfigMap"],
                    f"{name}: config from the existing ConfigMap {config_volume}")
    else:
        cm = by_kind["ConfigMap"][0]
        ok &= check(cm["metadata"]["name"] == config_volume, f"{name}: config from the ConfigMap {config_volume}")
        toml_text = cm["data"]["outboxd.toml"]
        env_names = {e["name"] for e in c.get("env", [])}
        refs = set(re.findall(r"\$\{(\w+)\}", toml_text))
        ok &= check(refs <= env_names, f"{name}: every ${{NAME}} of the config is set in the pod "
                    + str(sorted(refs)))
        listen = re.search(r'^listen = "[^"]*:(\d+)"', toml_text, re.M)
        ok &= check(listen is not None and int(listen.group(1)) == c["ports"][0]["containerPort"] == values["httpPort"],
                    f"{name}: [http] listen port = containerPort = httpPort {values['httpPort']}")
        configs.append((name, toml_text))
    for e in c.get("env", []):
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
            ok &= check(e["valueFrom"]["secretKeyRef"]["name"] == values["secret"]["name"],
                        f"{name}: {e['name']} from the Secret {values['secret']['name']}")
    state = volumes[mounts["/var/lib/outboxd"]]
    if values["persistence"]["enabled"]:
        claim = state["persistentVolumeClaim"]["claimName"]
        if values["persistence"]["existingClaim"]:
            ok &= check(claim == values["persistence"]["existingClaim"] and "PersistentVolumeClaim" not in by_kind,
                        f"{name}: state on the existing claim {claim}")
        else:
            pvc = by_kind["PersistentVolumeClaim"][0]
            ok &= check(pvc["metadata"]["name"] == claim
                        and pvc["spec"]["accessModes"] == values["persistence"]["accessModes"],
                        f"{name}: state on the PersistentVolumeClaim {claim} {pvc['spec']['accessModes']}")
    else:
        ok &= check("emptyDir" in state and "PersistentVolumeClaim" not in by_kind, f"{name}: state on an emptyDir")
    if values["metrics"]["serviceMonitor"]["enabled"]:
        sm = by_kind["ServiceMonitor"][0]
        ok &= check(all(l in service["metadata"]["labels"].items() for l in sm["spec"]["selector"]["matchLabels"].items())
                    and sm["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"],
                    f"{name}: the ServiceMonitor selects the Service and scrapes its port")
    if values["metrics"]["prometheusRule"]["enabled"]:
        rule = by_kind["PrometheusRule"][0]
        ok &= check(rule["spec"] == alerts, f"{name}: PrometheusRule spec is deploy/prometheus/alerts.yml, "
                    f"{sum(len(g['rules']) for g in alerts['groups'])} rules")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        key = "serviceMonitor" if kind == "ServiceMonitor" else "prometheusRule"
        if not values["metrics"][key]["enabled"]:
            ok &= check(kind not in by_kind, f"{name}: no {kind}")
    return ok


def merged(files):
    values = copy.deepcopy(defaults)

    def merge(into, extra):
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v
    for path in files:
        with open(path) as f:
            merge(values, yaml.safe_load(f) or {})
    return values


python = sys.executable
validator = os.path.join(here, "validate_manifests.py")
configs = []
with tempfile.TemporaryDirectory() as tmp:
    for name, files in value_sets:
        print(f"\n== {name}")
        lint = [helm, "lint", "--strict", chart] + sum((["-f", f] for f in files), [])
        check(run(lint)[0] == 0, f"{name}: helm lint --strict")
        text, docs = render(files)
        if not check(text is not None, f"{name}: helm template"):
            continue
        kinds = sorted({d["kind"] for d in docs})
        print(f"   rendered {len(docs)} manifests: {', '.join(kinds)}")
        core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
        operator = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
        core_path = os.path.join(tmp, "core.yaml")
        with open(core_path, "w") as f:
            yaml.safe_dump_all(core, f)
        check(run([python, validator, core_path])[0] == 0,
              f"{name}: {len(core)} manifests valid against the Kubernetes schemas (strict)")
        if operator:
            op_path = os.path.join(tmp, "operator.yaml")
            with open(op_path, "w") as f:
                yaml.safe_dump_all(operator, f)
            check(run([crdcheck, op_path])[0] == 0,
                  f"{name}: {len(operator)} Prometheus Operator resources valid (strict)")
        invariants(name, docs, merged(files))

    # The validators must catch what a key check would miss, in what the chart renders.
    print("\n== broken renders must fail")
    cluster = os.path.join(chart, "examples", "values-cluster.yaml")
    _, docs = render([cluster])
    breakages = [
        ("Deployment: misspelt field", "Deployment", lambda d: d["spec"].update(replica=d["spec"].pop("replicas"))),
        ("Deployment: probe at the pod level", "Deployment",
         lambda d: d["spec"]["template"]["spec"].update(readinessProbe={"httpGet": {"path": "/readyz", "port": 9187}})),
        ("PodDisruptionBudget: wrong type", "PodDisruptionBudget", lambda d: d["spec"].update(maxUnavailable=[1])),
        ("ServiceMonitor: misspelt field", "ServiceMonitor",
         lambda d: d["spec"]["endpoints"][0].update(intervall=d["spec"]["endpoints"][0].pop("interval"))),
        ("PrometheusRule: field at the wrong level", "PrometheusRule",
         lambda d: d["spec"]["groups"][0].update(expr="up == 0")),
        ("PrometheusRule: wrong type", "PrometheusRule",
         lambda d: d["spec"]["groups"][0]["rules"][0].update(labels=["severity"])),
    ]
    for what, kind, breaker in breakages:
        doc = copy.deepcopy(next(d for d in docs if d["kind"] == kind))
        breaker(doc)
        path = os.path.join(tmp, "broken.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
        tool = [crdcheck, path] if kind in ("ServiceMonitor", "PrometheusRule") else [python, validator, path]
        check(run(tool)[0] == 1, f"validator rejects a broken render: {what}")

# values.schema.json: a misspelt option or an unsafe value fails at install, not silently. Its
# grace period minimum is the stop budget of the default config.
with open(os.path.join(chart, "values.schema.json")) as f:
    minimum = json.load(f)["properties"]["terminationGracePeriodSeconds"]["minimum"]
check(minimum == stop_budget.DEFAULT_STOP_FLUSH_TIMEOUT_S + stop_budget.MARGIN_S,
      f"values.schema.json: terminationGracePeriodSeconds minimum {minimum} = default stop_flush_timeout "
      f"{stop_budget.DEFAULT_STOP_FLUSH_TIMEOUT_S} s + margin {stop_budget.MARGIN_S} s")
print("\n== values the chart's schema must refuse")
for what, setting in [("a misspelt option", "replicasCount=3"),
                      ("a grace period below the default stop flush timeout plus the margin",
       "terminationGracePeriodSeconds=%d" % (stop_budget.DEFAULT_STOP_FLUSH_TIMEOUT_S + stop_budget.MARGIN_S - 1)),
                      ("a misspelt nested option", "persistence.existingclaim=x"),
                      ("an unknown image pull policy", "image.pullPolicy=Sometimes")]:
    rc, _ = run([helm, "template", "outboxd", chart, "--set", setting])
    check(rc != 0, f"helm template --set {setting} fails ({what})")

# ---- each rendered config is a valid outboxd config -----------------------------------------
# [source] databases and max_active_slots come with issue 21; until outboxd knows them, a config
# that uses them is reported and skipped instead of failed.
FUTURE_KEYS = ("databases", "max_active_slots")
if binary:
    print("\n== rendered configs with outboxd check")
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in configs:
            path = os.path.join(tmp, "outboxd.toml")
            with open(path, "w") as f:
                f.write(text)
            env = dict(os.environ, **{n: "x" for n in re.findall(r"\$\{(\w+)\}", text)})
            p = subprocess.run([binary, "check", "--config", path], env=env, capture_output=True, text=True, timeout=120)
            if p.returncode == 2 and any(k in p.stderr for k in FUTURE_KEYS):
                print(f"skip {name}: config uses keys outboxd does not know yet (issue 21): {p.stderr.strip()}")
                continue
            check(p.returncode != 2, f"{name}: the config is a valid outboxd config"
                  + ("" if p.returncode != 2 else ": " + p.stderr.strip()))

# ---- the raw manifests are the chart rendered ------------------------------------------------
print("\n== deploy/kubernetes/outboxd.yaml")
text, _ = render([os.path.join(raw_dir, "values.yaml")])
if check(text is not None, "the chart renders with deploy/kubernetes/values.yaml"):
    current = open(raw_path).read() if os.path.exists(raw_path) else ""
    check(current == RAW_HEADER + text,
          "deploy/kubernetes/outboxd.yaml is the chart rendered with deploy/kubernetes/values.yaml"
          + ("" if current == RAW_HEADER + text else " (stale: run `make kubernetes-manifests` and commit it)"))

print("\n%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
