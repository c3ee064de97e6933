"""The one rule between outboxd's stop budget and a supervisor's grace period, for the deploy tests:

    grace period >= [shutdown] stop_flush_timeout of the config it runs + the stop margin

On SIGTERM outboxd waits up to stop_flush_timeout for Kafka's acknowledgements, then confirms
what was acknowledged and exits; the margin covers the final status update and the exit. A
supervisor whose grace period is shorter SIGKILLs it mid-flush (nothing lost, more published
twice). The default timeout and the margin are read from src/config/config.h, where outboxd
takes them from, so that this file states the relation and nothing else (docs/deployment.md,
"Stopping"). check_deploy.py applies it to the systemd unit, the raw Kubernetes manifests and
compose; helm_test.py to every render of the chart.
"""
import os
import re
import tomllib

_SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _config_h():
    with open(os.path.join(_SRC, "src", "config", "config.h")) as f:
        return f.read()


def _absl_seconds(text, name):
    m = re.search(name + r"\s*=\s*absl::(Seconds|Minutes)\((\d+)\)", text)
    if m is None:
        raise SystemExit(f"stop_budget: {name} not found in src/config/config.h")
    return int(m.group(2)) * (60 if m.group(1) == "Minutes" else 1)


DEFAULT_STOP_FLUSH_TIMEOUT_S = _absl_seconds(_config_h(), r"absl::Duration stop_flush_timeout")
MARGIN_S = _absl_seconds(_config_h(), r"kStopMargin")


def duration_s(text):
    """An outboxd duration ("30s", "2m", "1m30s", "500ms") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def stop_flush_timeout_s(toml_text):
    """[shutdown] stop_flush_timeout of a config (${NAME} left as is), or the default."""
    config = tomllib.loads(toml_text)
    value = config.get("shutdown", {}).get("stop_flush_timeout")
    return DEFAULT_STOP_FLUSH_TIMEOUT_S if value is None else duration_s(value)


def required_grace_s(toml_text):
    """The shortest grace period a supervisor may give an outboxd running this config."""
    return stop_flush_timeout_s(toml_text) + MARGIN_S


def describe(grace_s, toml_text):
    return (f"grace period {grace_s:g} s >= stop_flush_timeout {stop_flush_timeout_s(toml_text):g} s "
            f"+ margin {MARGIN_S} s")
