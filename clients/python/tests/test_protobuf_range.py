"""The package installs and imports beside the lowest and the highest protobuf it accepts, and works
without its optional extras (no OpenTelemetry, prometheus_client, pydantic or Flask in those venvs).

Each end gets a venv under .run/protobuf-range/ (kept between runs; pip from PyPI), the wheel
built from this checkout, and the exact protobuf: ``==`` the floor of pyproject.toml's
specifier, and the newest release the specifier allows (pip resolves it on every run, so a new
release inside the range is tested as soon as it exists). The import runs with ``-W error``:
protobuf's "gencode is one major version older" warning fails it too.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
REPO = PACKAGE.parents[1]
VENVS = REPO / ".run" / "protobuf-range"

CHECK = r"""
import sys, uuid
import google.protobuf
import outboxd
from outboxd.envelope import Envelope, Header, decode
env = Envelope(id=str(uuid.uuid4()), aggregate_type="order", aggregate_id="1", event_type="E",
               payload=b"{}", headers=[Header(key="k", value=b"v")])
env.created_at.FromSeconds(1700000000)
event = decode(env.SerializeToString(), topic="t", partition=0, offset=1)
assert event.header("k") == "v" and event.created_at is not None, event
# Without the extras: emit's payload handling, the consumer's semantics (FakeConsumer on SQLite).
import dataclasses, importlib.util
missing = [m for m in ("opentelemetry", "prometheus_client", "pydantic", "flask") if importlib.util.find_spec(m)]
assert not missing, f"extras installed: {missing}"
from outboxd import Outcome
from outboxd.testing import FakeConsumer, make_event, sqlite_memory_engine
@dataclasses.dataclass
class Paid:
    n: int
fake = FakeConsumer(handler=lambda session, event: None, session_factory=sqlite_memory_engine())
fake.create_schema()
paid = make_event("order", 1, "Paid", Paid(1))
assert fake.deliver(paid, paid) == [Outcome.PROCESSED, Outcome.DUPLICATE] and paid.payload_as(Paid) == Paid(1)
print(f"protobuf {google.protobuf.__version__} ({sys.argv[1]}): import outboxd {outboxd.__version__}, "
      f"Envelope round trip and FakeConsumer without extras OK")
"""


def protobuf_specifier() -> str:
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    (spec,) = [d for d in project["dependencies"] if re.match(r"protobuf\b", d)]
    return spec[len("protobuf"):].strip()


def pip(venv: Path, *args: str) -> None:
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--only-binary=:all:", *args], check=True, timeout=600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(PACKAGE)], check=True, timeout=600)
    (built,) = out.glob("outboxd-*.whl")
    return built


@pytest.mark.parametrize("end", ["lowest", "highest"])
def test_imports_beside_protobuf(end: str, wheel: Path, report: Callable[[str], None]) -> None:
    spec = protobuf_specifier()
    floor = re.search(r">=\s*([0-9][0-9.]*)", spec)
    assert floor and "<" in spec, f"protobuf{spec}: the range needs a floor and an upper bound to test"
    requirement = f"protobuf=={floor.group(1)}" if end == "lowest" else f"protobuf{spec}"
    venv = VENVS / end
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    # The wheel with its dependencies, then protobuf pinned to this end of the range.
    pip(venv, "--force-reinstall", "--no-deps", str(wheel))
    pip(venv, str(wheel), requirement, *(["--upgrade"] if end == "highest" else []))
    result = subprocess.run([str(venv / "bin" / "python"), "-W", "error", "-c", CHECK, f"{end} of protobuf{spec}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report(result.stdout.strip())
