#!/usr/bin/env python3
"""Full locks for simgym's images: every distribution each image installs, pinned.

``constraints.txt`` pins the packages simgym asks for; their dependencies would float. This
script resolves each image's exact install (the one ``install.sh`` runs) in a fresh venv and
writes the result — every distribution, top-level or transitive — to ``lock-<kind>.txt``,
which ``install.sh`` then installs through:

    python docker/lock.py                  # all kinds, from a source checkout
    python docker/lock.py --kind train     # one kind
    python lock.py check LOCK REPORT       # install.sh: fail if the install left the lock

Resolution runs pip's own resolver (``pip install --dry-run --report``) with the
interpreter given by ``--python`` (default: this one's base), so a lock is made for one
Python minor version and platform: CPython 3.11 on Linux x86_64, what the images run.
``sim`` and ``train`` resolve with pip's configuration as it is (the CPU build of torch comes
from its index or a local mirror); ``train-gpu`` resolves in pip's isolated mode against
PyPI alone, which serves the CUDA build, as the GPU image's build does.

Standard library only: the ``check`` mode runs inside a fresh image venv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = {
    # kind: (simgym extras, more packages, pip options)
    "sim": ("", [], []),
    "train": ("[train]", ["azureml-mlflow"], []),
    "train-gpu": ("[train]", ["azureml-mlflow"], ["--isolated"]),
}
PLATFORM = "CPython 3.11, Linux x86_64"


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``name==version`` lines of a lock (or constraints) file, by normalized name."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise SystemExit(f"{path}: not an exact pin: {raw!r}")
            pins[normalize(name)] = version.strip()
    return pins


def installed(report: dict) -> dict[str, str]:
    """What a pip ``--report`` says was (or would be) installed, by normalized name."""
    return {normalize(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}


def outside(lock: dict[str, str], report: dict, own: str = "simgym") -> list[str]:
    """Distributions of the report that the lock does not pin at that version."""
    problems = []
    for name, version in sorted(installed(report).items()):
        if name == own:
            continue
        if name not in lock:
            problems.append(f"{name}=={version} (not in the lock)")
        elif lock[name] != version:
            problems.append(f"{name}=={version} (the lock pins {lock[name]})")
    return problems


def check(lock_path: Path, report_path: Path) -> int:
    """``check`` mode: exit 1 listing every distribution installed outside the lock."""
    problems = outside(read_lock(lock_path), json.loads(report_path.read_text()))
    if problems:
        where = f"lock.py: the install left {lock_path.name}:"
        print(where, *problems, sep="\n  ", file=sys.stderr)
        print("regenerate the locks with docker/lock.py (see docs/docker.md)", file=sys.stderr)
        return 1
    print(f"lock.py: every installed distribution is pinned by {lock_path.name}")
    return 0


def build_wheel(work: Path) -> Path:
    """A wheel of the checkout this script lies in (docker/ → the project root)."""
    root = HERE.parent  # HERE is resolved: launcher/docker links to docker/ in a checkout
    if not (root / "pyproject.toml").is_file():
        raise SystemExit(f"{root}: not a simgym checkout; pass --wheel")
    out = work / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(root)],
        check=True,
    )
    return next(out.glob("simgym-*.whl"))


def resolve(kind: str, wheel: Path, python: str, work: Path, lock: Path | None = None) -> dict:
    """The pip report of what ``install.sh KIND`` installs into a fresh venv."""
    extras, more, options = KINDS[kind]
    venv = work / f"venv-{kind}"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    report = work / f"report-{kind}.json"
    pins = lock or HERE / "constraints.txt"
    cmd = [str(venv / "bin" / "python"), "-m", "pip", *options, "install", "--quiet",
           "--dry-run", "--report", str(report), "-c", str(pins),
           f"{wheel}{extras}", *more]  # fmt: skip
    if "--isolated" in options and os.environ.get("PIP_CERT"):
        cmd += ["--cert", os.environ["PIP_CERT"]]  # isolated mode drops the env's settings
    subprocess.run(cmd, check=True)
    return json.loads(report.read_text())


def write_lock(kind: str, report: dict, path: Path) -> None:
    """Write ``lock-<kind>.txt`` from a resolution report."""
    pins = {n: v for n, v in installed(report).items() if n != "simgym"}
    lines = [
        f"# Every distribution the {kind} image installs, pinned ({PLATFORM}).",
        "# Generated by docker/lock.py from constraints.txt: do not edit, regenerate.",
        *(f"{name}=={version}" for name, version in sorted(pins.items())),
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command line: generate locks (default) or ``check LOCK REPORT``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        if len(argv) != 3:
            raise SystemExit("usage: lock.py check LOCK REPORT")
        return check(Path(argv[1]), Path(argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", action="append", choices=sorted(KINDS))
    parser.add_argument("--python", default=getattr(sys, "_base_executable", sys.executable))
    parser.add_argument("--wheel", type=Path, help="simgym's wheel (default: build one)")
    parser.add_argument("--out", type=Path, default=HERE, help="where lock-<kind>.txt go")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="simgym-lock-") as tmp:
        work = Path(tmp)
        wheel = args.wheel or build_wheel(work)
        for kind in args.kind or list(KINDS):
            report = resolve(kind, wheel, args.python, work)
            path = args.out / f"lock-{kind}.txt"
            write_lock(kind, report, path)
            # The lock must reproduce itself: resolving through it installs nothing else.
            problems = outside(read_lock(path), resolve(kind, wheel, args.python, work, path))
            if problems:
                raise SystemExit(f"{path}: does not reproduce: {problems}")
            print(f"wrote {path} ({len(installed(report)) - 1} distributions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
