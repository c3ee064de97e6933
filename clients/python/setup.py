"""Build hook: generate the outbox.v1.Envelope classes from proto/ when the package is built.

The generated modules (``outboxd/envelope_pb2.py`` and its ``.pyi``) are written into the build
tree, or into ``src/outboxd`` for an editable install, and are never committed. The .proto comes
from ``proto/`` beside this file (a symlink to the repository's ``proto/`` in a checkout, a copy
in an sdist). protoc is taken from grpcio-tools (a build requirement), or else from PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py

HERE = Path(__file__).resolve().parent
PROTO_FILE = "outbox/v1/envelope.proto"


def _proto_root() -> Path:
    for root in (HERE / "proto", HERE.parent.parent / "proto"):
        if (root / PROTO_FILE).is_file():
            return root
    raise SystemExit(
        f"outboxd build: {PROTO_FILE} not found under {HERE / 'proto'} or {HERE.parent.parent / 'proto'}; "
        "build from a checkout of the outboxd repository or from its sdist"
    )


def _protoc(args: list[str]) -> None:
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        exe = shutil.which("protoc")
        if exe is None:
            raise SystemExit("outboxd build: needs grpcio-tools (pip install grpcio-tools) or protoc on PATH")
        subprocess.run([exe, *args], check=True)
        return
    # grpc_tools ships google/protobuf/*.proto (timestamp.proto is imported by the envelope).
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    if protoc.main(["protoc", f"-I{well_known}", *args]) != 0:
        raise SystemExit(f"outboxd build: protoc failed on {PROTO_FILE}")


def generate(package_dir: Path) -> None:
    """Writes envelope_pb2.py and envelope_pb2.pyi into ``package_dir``."""
    root = _proto_root()
    with tempfile.TemporaryDirectory() as tmp:
        _protoc([f"-I{root}", f"--python_out={tmp}", f"--pyi_out={tmp}", str(root / PROTO_FILE)])
        package_dir.mkdir(parents=True, exist_ok=True)
        for suffix in (".py", ".pyi"):
            generated = Path(tmp) / f"outbox/v1/envelope_pb2{suffix}"
            shutil.copyfile(generated, package_dir / f"envelope_pb2{suffix}")
    print(f"outboxd build: generated {package_dir / 'envelope_pb2.py'} from {root / PROTO_FILE}", file=sys.stderr)


class build_py(_build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            generate(HERE / "src" / "outboxd")
        else:
            generate(Path(self.build_lib) / "outboxd")


setup(cmdclass={"build_py": build_py})
