"""Compiles protos/ into Python modules inside the package (paygress/v1/*_pb2*.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out: Path = ROOT) -> list[Path]:
    """Runs grpc_tools.protoc on every .proto file whose output is missing or older."""
    from grpc_tools import protoc  # build-time dependency only

    include = Path(protoc.__file__).parent / "_proto"
    written: list[Path] = []
    for proto in sorted(PROTOS.rglob("*.proto")):
        rel = proto.relative_to(PROTOS)
        target = out / rel.with_name(rel.stem + "_pb2.py")
        if target.exists() and target.stat().st_mtime >= proto.stat().st_mtime:
            continue
        args = [
            "protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(proto),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {rel}")
        init = target.parent / "__init__.py"
        init.touch()
        written.append(target)
    return written


if __name__ == "__main__":
    for path in generate():
        print(f"generated {path.relative_to(ROOT)}", file=sys.stderr)
