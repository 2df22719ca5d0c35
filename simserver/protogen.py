"""Regenerate the committed Python code in ``simgym/v1`` from ``proto/``.

Run ``make proto`` (or ``python -m simserver.protogen``) after editing a ``.proto``
file and commit the result; ``tests/test_protocol.py`` fails while they differ.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILES = ("simgym/v1/simulator.proto",)


def generate(out_dir: Path) -> list[Path]:
    """Generate Python messages, stubs and type stubs for every contract file.

    Args:
        out_dir: Folder that receives ``simgym/v1/...`` (the repository root to
            update the committed copy, a temporary folder to compare).

    Returns:
        The generated files.

    Raises:
        RuntimeError: grpcio-tools is missing or protoc rejected a file.
    """
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "grpcio-tools is needed to regenerate code: pip install 'simgym[dev]'"
        ) from exc
    # The well-known types (google/protobuf/struct.proto) ship inside grpc_tools.
    include = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    for rel in PROTO_FILES:
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"-I{include}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                str(PROTO_ROOT / rel),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed on {rel} (exit {rc})")
    return sorted(p for p in (out_dir / "simgym" / "v1").glob("*_pb2*.py*"))


def main() -> None:
    """Regenerate the committed code in place."""
    for path in generate(REPO_ROOT):
        print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
