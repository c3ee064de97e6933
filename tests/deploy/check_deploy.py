#!/usr/bin/python3
"""Checks the files under deploy/ without Docker, Kubernetes or systemd running:

- the Kubernetes manifests against the Kubernetes schemas (kubernetes-validate, strict, in the
  venv .run/deploy-venv made here from tests/deploy/requirements.txt), and a deliberately broken
  copy must fail that validation;

- promtool check rules / test rules on the alert rules, check config on prometheus.yml;
- systemd-analyze verify on the unit this build configures (when systemd-analyze exists);
- every YAML and JSON file parses, and the manifests say what docs/deployment.md promises;
- every metric the alerts and the dashboard use is documented in docs/metrics.md.

usage: check_deploy.py SOURCE_DIR OUTBOXD_BINARY
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deploy_venv import deploy_venv  # noqa: E402
import stop_budget  # noqa: E402

src, binary = sys.argv[1], sys.argv[2]
deploy = os.path.join(src, "deploy")
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def run(cmd, cwd=None):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = (p.stdout + p.stderr).rstrip()
    print("$ " + " ".join(cmd) + "".join("\n   " + l for l in out.splitlines()))
    return p.returncode


# promtool (Debian's prometheus package).
prom = os.path.join(deploy, "prometheus")
check(run(["promtool", "check", "rules", "alerts.yml"], cwd=prom) == 0, "promtool check rules")
check(run(["promtool", "test", "rules", "alerts_test.yml"], cwd=prom) == 0, "promtool test rules")
with tempfile.TemporaryDirectory() as tmp:
    shutil.copy(os.path.join(prom, "alerts.yml"), os.path.join(tmp, "outboxd-alerts.yml"))
    with open(os.path.join(prom, "prometheus.yml")) as f:
        config = f.read().replace("/etc/prometheus/outboxd-alerts.yml", "outboxd-alerts.yml")
    with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
        f.write(config)
    check(run(["promtool", "check", "config", "prometheus.yml"], cwd=tmp) == 0,
          "promtool check config (compose's prometheus.yml)")

# systemd unit: the one cmake/Install.cmake configures from deploy/systemd/outboxd.service.in
# (this build's prefix), verified with the binary path rewritten to the build's.
# tests/deploy/deb_test.sh verifies the packaged one where it is installed.
unit_path = os.path.join(os.path.dirname(os.path.abspath(binary)), "deploy", "outboxd.service")
with open(unit_path) as f:
    unit = f.read()
exec_start = re.search(r"^ExecStart=(\S+) run --config (\S+)/outboxd.toml$", unit, re.M)
check(exec_start is not None, "unit: ExecStart=<bindir>/outboxd run --config <sysconfdir>/outboxd/outboxd.toml")
for directive in ["Restart=on-failure", "User=outboxd", "StateDirectory=outboxd", "ProtectSystem=strict",
                  "NoNewPrivileges=yes", "EnvironmentFile=", "SuccessExitStatus=3",
                  "RestartPreventExitStatus=2", "KillSignal=SIGTERM"]:
    check(re.search("^" + re.escape(directive), unit, re.M) is not None, "unit has " + directive)
# One TimeoutStopSec, above the stop flush timeout of the config the package installs plus the
# margin (tests/deploy/stop_budget.py).
stop = re.findall(r"^TimeoutStopSec=(\d+)$", unit, re.M)
with open(os.path.join(deploy, "systemd", "outboxd.toml")) as f:
    package_toml = f.read()
check(len(stop) == 1 and int(stop[0]) >= stop_budget.required_grace_s(package_toml),
      "unit: one TimeoutStopSec, " + stop_budget.describe(int(stop[0]) if stop else 0, package_toml)
      + " (deploy/systemd/outboxd.toml)")
if shutil.which("systemd-analyze") and exec_start:
    with tempfile.TemporaryDirectory() as tmp:
        local = (unit.replace(exec_start.group(1), os.path.abspath(binary))
                 .replace("EnvironmentFile=/", "EnvironmentFile=-/"))
        path = os.path.join(tmp, "outboxd.service")
        with open(path, "w") as f:
            f.write(local)
        check(run(["systemd-analyze", "verify", "--man=no", path]) == 0, "systemd-analyze verify outboxd.service")
else:
    print("skip systemd-analyze verify: not installed")

# YAML and JSON parse.
docs = {}
# Not the chart's templates: Go templates, not YAML (tests/deploy/helm_test.sh renders them).
for path in sorted(p for p in glob.glob(os.path.join(deploy, "**", "*.y*ml"), recursive=True)
                   if "/templates/" not in os.path.relpath(p, deploy)):
    try:
        with open(path) as f:
            docs[os.path.relpath(path, deploy)] = [d for d in yaml.safe_load_all(f) if d is not None]
        check(True, "YAML parses: " + os.path.relpath(path, src))
    except yaml.YAMLError as e:
        check(False, f"YAML parses: {os.path.relpath(path, src)}: {e}")
dashboard_path = os.path.join(deploy, "grafana", "outboxd-dashboard.json")
with open(dashboard_path) as f:
    dashboard = json.load(f)
check(len(dashboard["panels"]) >= 10, "dashboard JSON parses, %d panels" % len(dashboard["panels"]))

# Kubernetes: schema validation (strict, offline), then what docs/deployment.md promises.
k8s = os.path.join(deploy, "kubernetes")
validator = os.path.join(src, "tests", "deploy", "validate_manifests.py")
python = deploy_venv(src)
# Every file of deploy/kubernetes that holds resources (values.yaml is the chart's values).
manifests = sorted(p for p in glob.glob(os.path.join(k8s, "*.yaml"))
                   if any("kind" in d for d in docs["kubernetes/" + os.path.basename(p)]))
check(run([python, validator] + manifests) == 0, "Kubernetes manifests valid against the schemas (strict)")
# The validator must catch what a key check would miss: a misspelt field, a wrong type, an
# unknown kind, a field at the wrong level.
raw = {d["kind"]: d for d in docs["kubernetes/outboxd.yaml"]}
good = yaml.safe_dump(raw["Deployment"])
breakages = {
    "misspelt field": ("  replicas: 2\n", "  replica: 2\n"),
    "wrong type": ("containerPort: 9187", 'containerPort: "9187"'),
    "unknown kind": ("kind: Deployment", "kind: Deploymnet"),
    "probe at the pod level": ("    spec:\n      automountServiceAccountToken",
                               "    spec:\n      readinessProbe: {httpGet: {path: /readyz, port: 9187}}\n"
                               "      automountServiceAccountToken"),
}
with tempfile.TemporaryDirectory() as tmp:
    for what, (old, new) in breakages.items():
        assert old in good, old
        path = os.path.join(tmp, what.replace(" ", "-") + ".yaml")
        with open(path, "w") as f:
            f.write(good.replace(old, new, 1))
        check(run([python, validator, path]) == 1, "validator rejects a broken Deployment: " + what)

# What docs/deployment.md promises of the raw manifests (the chart rendered with
# deploy/kubernetes/values.yaml; tests/deploy/helm_test.sh checks every render of the chart).
deployment = raw["Deployment"]
pod = deployment["spec"]["template"]["spec"]
container = pod["containers"][0]
check(deployment["spec"]["replicas"] == 2, "Deployment has 2 replicas")
check(container["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe on /healthz")
check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe on /readyz")
# One at a time, never fewer than two Ready pods: docs/operations.md "Upgrading outboxd".
strategy = deployment["spec"]["strategy"]
check(strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0},
      "rolling update one pod at a time (maxSurge 1, maxUnavailable 0)")
raw_toml = raw["ConfigMap"]["data"]["outboxd.toml"]
check(pod["terminationGracePeriodSeconds"] >= stop_budget.required_grace_s(raw_toml),
      "terminationGracePeriodSeconds: " + stop_budget.describe(pod["terminationGracePeriodSeconds"], raw_toml)
      + " (its ConfigMap)")
pdb = raw["PodDisruptionBudget"]
check(pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["selector"] == deployment["spec"]["selector"],
      "PodDisruptionBudget: one pod at a time")
check(not any(k.startswith("helm.sh/") or k == "app.kubernetes.io/managed-by"
              for d in docs["kubernetes/outboxd.yaml"] for k in d["metadata"].get("labels", {})),
      "raw manifests carry no Helm management labels")
mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
volumes = {v["name"]: v for v in pod["volumes"]}
pvc = raw["PersistentVolumeClaim"]
check(volumes.get(mounts.get("/var/lib/outboxd"), {}).get("persistentVolumeClaim", {}).get("claimName")
      == pvc["metadata"]["name"], "state directory /var/lib/outboxd on the PersistentVolumeClaim")
check(pvc["spec"]["accessModes"] == ["ReadWriteMany"], "state volume shared by both replicas (ReadWriteMany)")
kustomization = docs["kubernetes/kustomization.yaml"][0]
check(kustomization["resources"] == ["outboxd.yaml"], "kustomization applies the rendered outboxd.yaml")
check({"ConfigMap", "PersistentVolumeClaim", "Deployment", "PodDisruptionBudget", "Service"} <= set(raw),
      "outboxd.yaml: ConfigMap, PersistentVolumeClaim, Deployment, PodDisruptionBudget, Service")
check(all("secretKeyRef" in e.get("valueFrom", {}) for e in container["env"]), "secrets from a Secret via env")
check(any(v.get("configMap", {}).get("name") == "outboxd" for v in pod["volumes"]), "config from the ConfigMap")
check(container["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"],
      "non-root, read-only root filesystem")
configmap = raw["ConfigMap"]
toml_text = configmap["data"]["outboxd.toml"]
check("${OUTBOXD_PG_PASSWORD}" in toml_text and "${KAFKA_SASL_PASSWORD}" in toml_text,
      "ConfigMap refers to secrets by ${NAME} only")
check(re.search(r"^\s*create_slot = false$", toml_text, re.M) is not None, "production example: create_slot = false")
ca = re.search(r"sslmode=verify-full sslrootcert=(\S+?)\"", toml_text)
check(ca is not None, "production example: sslmode=verify-full with sslrootcert")
if ca:
    ca_dir, ca_file = os.path.split(ca.group(1))
    ca_volume = volumes.get(mounts.get(ca_dir), {})
    check(any(i["path"] == ca_file for i in ca_volume.get("secret", {}).get("items", [])),
          "sslrootcert is mounted from a Secret")
env_names = {e["name"] for e in container["env"]}
check(set(re.findall(r"\$\{(\w+)\}", toml_text)) <= env_names, "every ${NAME} of the ConfigMap is set by the Deployment")

# The ConfigMap's and compose's TOML are valid outboxd configs (placeholders set).
env = dict(os.environ, OUTBOXD_PG_PASSWORD="x", KAFKA_SASL_PASSWORD="x", POSTGRES_PASSWORD="x")
with tempfile.TemporaryDirectory() as tmp:
    for name, text in [("configmap", toml_text),
                       ("compose", open(os.path.join(deploy, "compose", "outboxd.toml")).read()),
                       ("package example", open(os.path.join(deploy, "systemd", "outboxd.toml")).read())]:
        path = os.path.join(tmp, name + ".toml")
        with open(path, "w") as f:
            f.write(text)
        # `check` parses the config first; a config error exits 2 before any connection.
        p = subprocess.run([binary, "check", "--config", path], env=env, capture_output=True,
                           text=True, timeout=120)
        check(p.returncode != 2, f"{name} TOML is a valid outboxd config"
              + ("" if p.returncode != 2 else ": " + p.stderr.strip()))

# compose: every service, ports on 127.0.0.1 only, Grafana gets the dashboard.
compose = docs["compose.yaml"][0]
check({"postgres", "kafka", "outboxd", "prometheus", "grafana"} <= set(compose["services"]),
      "compose has postgres, kafka, outboxd, prometheus, grafana")
ports = [p for s in compose["services"].values() for p in s.get("ports", [])]
check(all(str(p).startswith("127.0.0.1:") for p in ports), "compose publishes ports on 127.0.0.1 only")
check("wal_level=logical" in compose["services"]["postgres"]["command"], "compose PostgreSQL has wal_level=logical")
with open(os.path.join(deploy, "compose", "outboxd.toml")) as f:
    compose_toml = f.read()
compose_grace = stop_budget.duration_s(str(compose["services"]["outboxd"].get("stop_grace_period", "10s")))
check(compose_grace >= stop_budget.required_grace_s(compose_toml),
      "compose stop_grace_period: " + stop_budget.describe(compose_grace, compose_toml) + " (compose/outboxd.toml)")
# The relation holds where it matters: a config raising the timeout needs a longer grace period.
check(stop_budget.required_grace_s('[shutdown]\nstop_flush_timeout = "2m"\n') == 120 + stop_budget.MARGIN_S
      and stop_budget.required_grace_s("") == stop_budget.DEFAULT_STOP_FLUSH_TIMEOUT_S + stop_budget.MARGIN_S,
      "stop budget: grace >= [shutdown] stop_flush_timeout (default %d s) + %d s"
      % (stop_budget.DEFAULT_STOP_FLUSH_TIMEOUT_S, stop_budget.MARGIN_S))

# Dockerfile: multi-stage on trixie-slim (librdkafka 2.8: SCRAM with Kafka 4), non-root.
with open(os.path.join(deploy, "Dockerfile")) as f:
    dockerfile = f.read()
check(len(re.findall(r"^FROM debian:trixie-slim", dockerfile, re.M)) == 2, "Dockerfile: two stages on debian:trixie-slim")
check(re.search(r"^USER 10001", dockerfile, re.M) is not None, "Dockerfile: runs as a non-root user")
check(re.search(r"cpack -G DEB", dockerfile) is not None
      and re.search(r"apt-get install .*/tmp/pkg/outboxd_\*_amd64\.deb", dockerfile) is not None,
      "Dockerfile: the runtime stage installs the Debian package its build stage made")
check(re.search(r"--uid 10001", dockerfile) is not None and re.search(r"--gid 10001", dockerfile) is not None,
      "Dockerfile: the outboxd user and group have the uid/gid 10001 the chart's securityContext names")
# .dockerignore: ignore everything, then let in exactly what the build stage COPYs.
with open(os.path.join(src, ".dockerignore")) as f:
    ignore = [l.strip() for l in f if l.strip() and not l.startswith("#")]
allowed = {l[1:].rstrip("/") for l in ignore if l.startswith("!")}
copied = {src.rstrip("/") for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M)
          for src in line.split()[:-1]}
missing = sorted(c for c in copied
                 if not any(c == a or c.startswith(a + "/") or a.startswith(c + "/") for a in allowed))
check(ignore[:1] == ["*"] and not missing, ".dockerignore lets in only the files the Dockerfile copies"
      + (": missing " + ", ".join(missing) if missing else ""))

# Metrics used by alerts and dashboard are documented.
with open(os.path.join(src, "docs", "metrics.md")) as f:
    metrics_doc = f.read()
used = set()
for text in [open(os.path.join(prom, "alerts.yml")).read(), json.dumps(dashboard)]:
    used |= {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"outboxd_[a-z_]+", text)}
undocumented = sorted(m for m in used if "`" + m not in metrics_doc)
check(not undocumented, "metrics used by alerts and dashboard are in docs/metrics.md"
      + (": missing " + ", ".join(undocumented) if undocumented else ""))

print("\n%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
