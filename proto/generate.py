"""Regenerate the Python messages and stubs from faceid/v1/*.proto.

Run from anywhere:  uv run python proto/generate.py
The generated modules are committed (the client must install without grpcio-tools);
tests/test_proto.py fails when they are out of date with the .proto files.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "faceid" / "v1"


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto under faceid/v1 into out_dir; returns the files written."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted(out_dir.rglob("*_pb2*.py*"))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for produced in generate(Path(tmp)):
            target = PROTO_ROOT / produced.relative_to(tmp)
            target.write_bytes(produced.read_bytes())
            print(f"wrote {target.relative_to(PROTO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
