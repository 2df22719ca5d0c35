"""Stage an image's Docker build context: simgym's Docker files, the sim's requirements, a wheel.

simgym is not published on a package index, so every image installs it from a wheel put in
its build context: built from the source checkout this code runs from (so an image gets your
working tree's simgym), or, from a plain install, the installed simgym packed back into one.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from launcher.aml.errors import AmlError

# The image files ship inside the package (package data), so a plain `pip install simgym`
# can stage a build context; a source checkout's top-level docker/ links to this folder.
DOCKER_DIR = Path(__file__).resolve().parent.parent / "docker"
# Where a source checkout would have simgym's pyproject.toml (site-packages in an install).
SOURCE_ROOT = Path(__file__).resolve().parent.parent.parent
# What a wheel built from a checkout holds of simgym: its packages and build metadata.
SOURCE_ITEMS = ("pyproject.toml", "README.md", "simserver", "gymclient", "launcher", "simgym")
DOCKERFILES = {
    "sim": "sim.Dockerfile",
    "train": "train.Dockerfile",
    "train-gpu": "train-gpu.Dockerfile",
    # A sim's own image + simgym's training layer (ARG SIM_IMAGE; launcher.aml.simimage).
    "sim-train": "sim-train.Dockerfile",
}
# Copied into every build context beside the Dockerfile (lock-<kind>.txt is added per kind).
CONTEXT_FILES = ("install.sh", "lock.py", "constraints.txt", ".dockerignore")
# The lock a kind installs through (its own, unless named here) and its further files.
LOCK_OF = {"sim-train": "train"}
KIND_FILES = {"sim-train": ("sim-train.sh",)}
# ARGs a kind's Dockerfile cannot be built without (staged as the ARG's default).
REQUIRED_ARGS = {"sim-train": ("SIM_IMAGE",)}
# pip building the wheel: seconds with the running environment's setuptools, a minute or
# two when it has to fetch a build backend; past this it is stuck (an index that hangs).
WHEEL_BUILD_TIMEOUT = 600.0
# A date for every file of a repacked wheel: the same install packs into the same bytes.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# Wheels built from the checkout in this process, by the digest of the sources they hold.
_BUILT: dict[str, Path] = {}


def stage_build_context(
    dest: Path,
    kind: str,
    requirements: Path | None = None,
    build_args: Mapping[str, str] | None = None,
) -> Path:
    """A Docker build context for one of simgym's images, ready for ``docker build``/Azure ML.

    ``dest`` gets ``Dockerfile`` (the kind's), ``install.sh``, ``lock.py``,
    ``constraints.txt``, ``lock-<kind>.txt`` (every package the image installs, pinned),
    ``requirements.txt`` (the sim's, possibly empty) and ``simgym-<version>-*.whl``.
    ``build_args`` become the defaults of the Dockerfile's ``ARG`` lines of those names
    (Azure ML builds an environment's context without build arguments): the ``sim-train``
    kind needs ``SIM_IMAGE``.

    Raises:
        AmlError: An unknown kind, a missing or unknown build argument, or simgym's wheel
            cannot be made.
    """
    if kind not in DOCKERFILES:
        raise AmlError(f"unknown image kind {kind!r} (one of {', '.join(DOCKERFILES)})")
    args = dict(build_args or {})
    missing = [a for a in REQUIRED_ARGS.get(kind, ()) if not args.get(a)]
    if missing:
        raise AmlError(f"the {kind} image needs {', '.join(missing)} (--sim-image)")
    dockerfile = set_arg_defaults((DOCKER_DIR / DOCKERFILES[kind]).read_text(), args)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Dockerfile").write_text(dockerfile)
    lock = f"lock-{LOCK_OF.get(kind, kind)}.txt"
    for name in (*CONTEXT_FILES, lock, *KIND_FILES.get(kind, ())):
        shutil.copy2(DOCKER_DIR / name, dest / name)
    (dest / "requirements.txt").write_text(requirements.read_text() if requirements else "")
    for old in dest.glob("simgym-*.whl"):
        old.unlink()
    shutil.rmtree(dest / "simgym-src", ignore_errors=True)  # from an older simgym
    stage_simgym_wheel(dest)
    return dest


def set_arg_defaults(dockerfile: str, values: Mapping[str, str]) -> str:
    """``dockerfile`` with ``ARG NAME[=...]`` lines set to ``ARG NAME='value'``.

    Single quotes: Docker takes the value literally (no ``$`` substitution, no escapes).

    Raises:
        AmlError: A name the Dockerfile has no ``ARG`` for, or a value with a single quote.
    """
    out = dockerfile
    for name, value in values.items():
        if "'" in value or "\n" in value:
            raise AmlError(f"build argument {name}={value!r}: no quotes or line breaks")
        pattern = re.compile(rf"^ARG {re.escape(name)}(=.*)?$", re.M)
        if not pattern.search(out):
            raise AmlError(f"the Dockerfile has no ARG {name}")
        # Backslashes doubled: re.sub reads its replacement as a template.
        out = pattern.sub(f"ARG {name}='{value}'".replace("\\", "\\\\"), out)
    return out


def stage_simgym_wheel(dest: Path) -> Path:
    """Put a wheel of this simgym in ``dest``: built from the checkout, or repacked."""
    root = source_checkout()
    if root is None:
        return repack_installed_wheel(dest)
    built = _build_wheel(root)
    dest.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(built, dest / built.name))


def source_checkout() -> Path | None:
    """The source tree of simgym when this code runs from one (editable install), else None."""
    pyproject = SOURCE_ROOT / "pyproject.toml"
    if pyproject.is_file() and re.search(r'^name\s*=\s*"simgym"', pyproject.read_text(), re.M):
        return SOURCE_ROOT
    return None


def folder_digest(folder: Path) -> str:
    """A digest of a folder's content: a staged build context, or the sources of a wheel.

    A wheel counts by what is in it (its zip carries dates): see ``wheel_digest``.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        content = wheel_digest(path) if rel.endswith(".whl") else hashlib.sha256(
            path.read_bytes()).hexdigest()  # fmt: skip
        digest.update(f"{rel}\0{content}\n".encode())
    return digest.hexdigest()


def wheel_digest(path: Path) -> str:
    """A wheel's content digest: its RECORD (every file's hash), not the zip's bytes."""
    with zipfile.ZipFile(path) as whl:
        record = next(n for n in whl.namelist() if n.endswith(".dist-info/RECORD"))
        lines = sorted(ln for ln in whl.read(record).decode().splitlines() if ln)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _build_wheel(root: Path, timeout: float = WHEEL_BUILD_TIMEOUT) -> Path:
    """A wheel of the checkout's simgym (built once per content; pip and setuptools do it).

    Raises:
        AmlError: The copy or the build failed or took longer than ``timeout`` seconds (the
            temporary folder is removed either way).
    """
    work = Path(tempfile.mkdtemp(prefix="simgym-wheel-"))
    try:
        wheel = _build_wheel_in(root, work, timeout)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # nothing in it is kept: no wheel
        raise
    if wheel.parent != work:  # a wheel built earlier from the same sources
        shutil.rmtree(work, ignore_errors=True)
    return wheel


def _build_wheel_in(root: Path, work: Path, timeout: float) -> Path:
    src = work / "src"
    src.mkdir()
    # A copy, so the build neither writes build/ and egg-info into the checkout nor picks up
    # whatever else lies there (run folders, venvs).
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    try:
        for name in SOURCE_ITEMS:
            item = root / name
            if item.is_dir():
                shutil.copytree(item, src / name, ignore=ignore)
            else:
                shutil.copy2(item, src / name)
    except OSError as exc:
        raise AmlError(f"copying simgym's sources from {root} failed: {exc}") from None
    digest = folder_digest(src)
    cached = _BUILT.get(digest)
    if cached is not None and cached.is_file():
        return cached
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work), str(src)]
    if _setuptools_major() >= 69:
        # The running environment's backend builds in seconds and needs no index.
        cmd.insert(4, "--no-build-isolation")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AmlError(
            f"building simgym's wheel from {root} did not finish within {timeout:.0f} s "
            "(pip wheel; is a package index unreachable?)"
        ) from None
    wheels = list(work.glob("simgym-*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise AmlError(f"building simgym's wheel from {root} failed: {tail}")
    shutil.rmtree(src, ignore_errors=True)
    _BUILT[digest] = wheels[0]
    return wheels[0]


def _setuptools_major() -> int:
    """The running environment's setuptools major version (0 when it has none)."""
    try:
        import setuptools

        return int(setuptools.__version__.split(".")[0])
    except (ImportError, ValueError):
        return 0


def repack_installed_wheel(dest: Path) -> Path:
    """The installed simgym (a regular, non-editable install) packed back into a wheel.

    A wheel install's RECORD lists every file it put in site-packages; those files, with
    the dist-info pip wrote (less its install-time notes), make the same wheel again. This
    is what lets a plain ``pip install simgym`` stage a build context with no source tree
    and no package index that serves simgym.

    Raises:
        AmlError: simgym's files are not where its RECORD says (an editable or broken install).
    """
    dist = importlib.metadata.distribution("simgym")
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct.get("dir_info", {}).get("editable"):
        raise AmlError(
            "simgym is installed in editable mode but its source tree is gone: reinstall it, "
            "or pass --image with an image you built"
        )
    files = [f for f in dist.files or [] if not str(f).startswith("..")]
    info_dir = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    this_file = __name__.replace(".", "/") + ".py"
    if info_dir is None or not any(f.as_posix() == this_file for f in files):
        raise AmlError(
            "cannot find the installed simgym's files (its RECORD lists none): reinstall "
            "simgym, or pass --image with an image you built"
        )
    skip = {f"{info_dir}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    tag = next((ln.split(":", 1)[1].strip() for ln in (dist.read_text("WHEEL") or "").splitlines()
                if ln.startswith("Tag:")), "py3-none-any")  # fmt: skip
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"simgym-{dist.version}-{tag}.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as whl:
        for f in sorted(files, key=lambda f: f.as_posix()):
            path = f.as_posix()
            if path in skip or "__pycache__" in f.parts or path.endswith(".pyc"):
                continue
            data = Path(str(dist.locate_file(f))).read_bytes()
            whl.writestr(zipfile.ZipInfo(path, ZIP_DATE), data)
            sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={sha},{len(data)}")
        record.append(f"{info_dir}/RECORD,,")
        whl.writestr(zipfile.ZipInfo(f"{info_dir}/RECORD", ZIP_DATE), "\n".join(record) + "\n")
    return wheel
