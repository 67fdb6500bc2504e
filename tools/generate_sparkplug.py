"""Generate the Sparkplug B protobuf module from ``sparkplug_b.proto``.

Usage::

    .venv/bin/python tools/generate_sparkplug.py            # rewrite the committed module
    .venv/bin/python tools/generate_sparkplug.py --check    # exit 1 if it is out of date
    .venv/bin/python tools/generate_sparkplug.py --out-dir DIR

It runs ``grpc_tools.protoc`` (the ``grpcio-tools`` package, a dev dependency) with
``--python_out`` and ``--pyi_out`` on ``src/tiangong/network/sparkplug/sparkplug_b.proto`` and
writes ``_generated_sparkplug_b_pb2.py`` and ``.pyi`` beside it, each headed by a comment naming
this command. The name starts with ``_generated_`` so that nobody mistakes it for hand-written
code; the test suite regenerates it and fails when the committed copy differs (the exact
``grpcio-tools`` release is pinned because protoc writes its own version into the output).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "src" / "tiangong" / "network" / "sparkplug"
PROTO = PACKAGE_DIR / "sparkplug_b.proto"
MODULE = "_generated_sparkplug_b_pb2"
HEADER = (
    "# GENERATED FILE, DO NOT EDIT. Made from sparkplug_b.proto by\n"
    "#     .venv/bin/python tools/generate_sparkplug.py\n"
    "# which runs grpc_tools.protoc --python_out --pyi_out; edit the .proto and rerun it.\n"
)


def generate(out_dir: Path) -> list[Path]:
    """Compile the schema into ``out_dir``; return the two files written.

    Raises:
        RuntimeError: protoc reported an error (it has printed it on stderr).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as scratch:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"--proto_path={PROTO.parent}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                PROTO.name,
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed with status {status}")
        for suffix in (".py", ".pyi"):
            produced = Path(scratch) / f"{PROTO.stem}_pb2{suffix}"
            target = out_dir / f"{MODULE}{suffix}"
            target.write_text(HEADER + produced.read_text(encoding="utf-8"), encoding="utf-8")
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out-dir", type=Path, default=PACKAGE_DIR, help="where to write")
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed files instead"
    )
    args = parser.parse_args(argv)
    if not args.check:
        for path in generate(args.out_dir):
            sys.stdout.write(f"wrote {path}\n")
        return 0
    with tempfile.TemporaryDirectory() as fresh:
        stale = [
            path.name
            for path in generate(Path(fresh))
            if not (PACKAGE_DIR / path.name).exists()
            or (PACKAGE_DIR / path.name).read_bytes() != path.read_bytes()
        ]
    if stale:
        sys.stderr.write(f"out of date: {', '.join(stale)}; run tools/generate_sparkplug.py\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
