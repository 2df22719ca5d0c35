"""Azure ML submission (azure-ai-ml v2): cluster, environment, experiment and a multi-node job.

``plan_submission`` turns a training spec (plus its optional ``aml:`` section and command-line
options) into real SDK entities — ``AmlCompute``, ``Environment``, ``CommandJob`` — without
touching the network. ``write_dry_run`` dumps them as YAML that ``az ml ... create -f`` and
the SDK's ``load_*`` accept. ``submit`` checks the workspace config and the credentials
first (one clear error, before anything is uploaded), then creates the cluster if missing,
registers the environment unless it exists (or ``rebuild_environment``), and submits the job.

The job's command is ``simgym node SPEC`` on every node (MPI distribution, one process per
node): see ``launcher.node``. The job's code is the user's project folder (their sim and
specs), not simgym's source; simgym itself is installed in the environment's image.

``azure-ai-ml`` is the ``aml`` extra and imported lazily.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gymclient.errors import SimgymError, SpecError
from launcher.trainspec import TrainSpec, load_train_spec, parse_duration

INSTALL_HINT = 'Azure ML support needs the aml extra: pip install "simgym[aml]"'
# The image files ship inside the package (package data), so a plain `pip install simgym`
# can stage a build context; a source checkout's top-level docker/ links to this folder.
DOCKER_DIR = Path(__file__).resolve().parent / "docker"
# Where a source checkout would have simgym's pyproject.toml (site-packages in an install).
SOURCE_ROOT = Path(__file__).resolve().parent.parent
# What a wheel built from a checkout holds of simgym: its packages and build metadata.
SOURCE_ITEMS = ("pyproject.toml", "README.md", "simserver", "gymclient", "launcher", "simgym")
DOCKERFILES = {
    "sim": "sim.Dockerfile",
    "train": "train.Dockerfile",
    "train-gpu": "train-gpu.Dockerfile",
}
# Copied into every build context beside the Dockerfile (lock-<kind>.txt is added per kind).
CONTEXT_FILES = ("install.sh", "lock.py", "constraints.txt", ".dockerignore")
# Leave the job this long after training stops (final checkpoint, uploads, shutdown).
WRAP_UP_SECONDS = 600.0


class AmlError(SimgymError):
    """A submission problem, in one line."""


def require_sdk() -> None:
    """Import check for ``azure-ai-ml`` and ``azure-identity``.

    Raises:
        AmlError: With the install command.
    """
    try:
        import azure.ai.ml
        import azure.identity  # noqa: F401
    except ImportError as exc:
        raise AmlError(f"{INSTALL_HINT} ({exc.name or exc} is missing)") from None


class AmlSettings(BaseModel):
    """The ``aml:`` section of a training spec; command-line options override it."""

    model_config = ConfigDict(extra="forbid")

    workspace_config: str = "config.json"  # relative to the current folder
    compute: str = "cpu-cluster"
    vm_size: str = "STANDARD_D4S_V3"
    nodes: int = Field(1, ge=1, le=1000)
    max_nodes: int | None = Field(None, ge=1)  # cluster size (default: nodes)
    tier: Literal["dedicated", "low_priority"] = "dedicated"
    idle_minutes: int = Field(10, ge=0)  # idle time before the cluster scales back to zero
    environment: str = "simgym"
    image: str | None = None  # an existing image instead of building docker/
    rebuild_environment: bool = False
    gpu: bool = False  # build the GPU training image
    requirements: str | None = None  # the sim's pip requirements, relative to the spec
    experiment: str | None = None  # default: the spec's experiment
    max_run_time: float = 7200.0  # seconds (accepts "90m", "2h")
    code: str | None = None  # project folder uploaded as the job's code (default: spec folder)
    shm_size: str = "8g"  # Ray's object store lives in /dev/shm
    cpus_per_node: int | None = Field(None, ge=1)
    ray_port: int = Field(6379, ge=1, le=65535)
    join_timeout: float = 600.0
    environment_variables: dict[str, str] = Field(default_factory=dict)
    display_name: str | None = None

    @field_validator("max_run_time", "join_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @field_validator("compute")
    @classmethod
    def _compute_name(cls, value: str) -> str:
        # Azure's rule for compute names.
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{1,31}", value):
            raise ValueError(f"{value!r}: 2-32 letters, digits or '-', starting with a letter")
        return value

    @field_validator("environment", "experiment")
    @classmethod
    def _asset_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}", value):
            raise ValueError(f"{value!r}: letters, digits, '-', '_' or '.'")
        return value


@dataclass
class Plan:
    """Everything a submission needs, built offline."""

    spec: TrainSpec
    spec_path: Path
    settings: AmlSettings
    code_dir: Path
    spec_rel: str  # the spec's path inside the code folder
    command: str
    compute: Any  # AmlCompute
    environment: Any  # Environment
    job: Any  # CommandJob
    image_kind: str  # train | train-gpu | image
    requirements: Path | None = None  # the sim's requirements, for the image
    context_dir: Path | None = None  # the staged docker build context, once staged
    notes: list[str] = field(default_factory=list)


def _settings(spec: TrainSpec, options: Mapping[str, Any]) -> AmlSettings:
    merged = {**(spec.aml or {}), **{k: v for k, v in options.items() if v is not None}}
    try:
        return AmlSettings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        in_cli = err["loc"] and str(err["loc"][0]) in options
        where = f"--{key.replace('_', '-')}" if in_cli else None
        msg = "unknown key (check its spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        if where:
            raise AmlError(f"{where}: {msg}") from None
        raise SpecError(spec.source, f"aml.{key}", msg) from None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _check_code_folder(spec: TrainSpec, spec_path: Path, code_dir: Path) -> None:
    """The job can only see the code folder: the spec, env spec and sim must be inside."""
    if not code_dir.is_dir():
        raise AmlError(f"--code {code_dir}: not a folder")
    env_spec = spec.load_env_spec()
    files = {"the training spec": spec_path, "the env spec": spec.path(spec.env)}
    target = (spec.sim.launch.target if spec.sim.launch else None) or env_spec.sim.target
    if target and ":" in target:
        module = target.rsplit(":", 1)[0]
        if module.endswith(".py"):
            files["the sim"] = env_spec.path(module)
    for what, path in files.items():
        if not _inside(path, code_dir):
            raise AmlError(
                f"{what} ({path}) is outside the code folder {code_dir}: the job would not "
                "see it; pass --code with a folder that holds both"
            )


def _code_folder_notes(code_dir: Path, warn_mb: float = 50.0) -> list[str]:
    """Warn about what would be uploaded needlessly (run folders, venvs, a large folder)."""
    ignored = any((code_dir / name).exists() for name in (".amlignore", ".gitignore"))
    notes = []
    if not ignored:
        heavy = [n for n in ("runs", "outputs", ".venv", "aml-logs") if (code_dir / n).is_dir()]
        if heavy:
            notes.append(
                f"the code folder {code_dir} has {', '.join(heavy)}: list them in a .amlignore "
                "file there, or they are uploaded with every job"
            )
    size = 0
    for root, dirs, files in os.walk(code_dir):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__")]
        size += sum((Path(root) / f).stat().st_size for f in files if (Path(root) / f).is_file())
        if size > warn_mb * 2**20:
            notes.append(f"the code folder {code_dir} holds more than {warn_mb:.0f} MB")
            break
    return notes


def _ray_token() -> str:
    from launcher.node import new_ray_token

    return new_ray_token()


def plan_submission(spec_path: str | os.PathLike[str], options: Mapping[str, Any]) -> Plan:
    """Build the SDK entities for a submission (offline).

    Raises:
        SpecError: A bad ``aml:`` key in the spec.
        AmlError: A bad option, a code folder that misses the spec's files, no SDK.
    """
    require_sdk()
    from azure.ai.ml import MpiDistribution
    from azure.ai.ml.entities import (
        AmlCompute,
        BuildContext,
        CommandJob,
        CommandJobLimits,
        Environment,
        JobResourceConfiguration,
    )

    from simgym import __version__

    path = Path(spec_path)
    spec = load_train_spec(path)
    settings = _settings(spec, options)
    code_dir = Path(settings.code).resolve() if settings.code else path.resolve().parent
    _check_code_folder(spec, path, code_dir)
    spec_rel = path.resolve().relative_to(code_dir).as_posix()
    experiment = settings.experiment or spec.experiment
    notes = _code_folder_notes(code_dir)

    # Training stops early enough to checkpoint and upload before the job's limit.
    limit = settings.max_run_time
    train_time = max(limit - min(WRAP_UP_SECONDS, 0.1 * limit), 0.5 * limit)
    if spec.stop.max_time is not None and spec.stop.max_time <= train_time:
        train_time = spec.stop.max_time
    elif spec.stop.max_time is not None:
        notes.append(
            f"stop.max_time ({spec.stop.max_time:.0f} s) is past the job's limit "
            f"({limit:.0f} s): training stops after {train_time:.0f} s instead"
        )
    args = [
        "simgym", "node", spec_rel,
        "--output", "outputs",
        "--experiment", experiment,
        "--max-time", f"{train_time:.0f}s",
        "--ray-port", str(settings.ray_port),
        "--join-timeout", f"{settings.join_timeout:.0f}s",
    ]  # fmt: skip
    if settings.cpus_per_node:
        args += ["--cpus", str(settings.cpus_per_node)]
    command = shlex.join(args)

    compute = AmlCompute(
        name=settings.compute,
        size=settings.vm_size,
        min_instances=0,
        max_instances=max(settings.max_nodes or settings.nodes, settings.nodes),
        idle_time_before_scale_down=settings.idle_minutes * 60,
        tier=settings.tier,
        description="simgym training cluster (scales to zero when idle)",
    )

    tags = {"simgym": __version__, "spec": spec_rel}
    if settings.image:
        kind = "image"
        environment = Environment(
            name=settings.environment,
            image=settings.image,
            description=f"simgym {__version__} training environment (existing image)",
            tags={**tags, SOURCE_TAG: f"image:{settings.image}"},
        )
        requirements = None
    else:
        kind = "train-gpu" if settings.gpu else "train"
        requirements = spec.path(settings.requirements) if settings.requirements else None
        if requirements is not None and not requirements.is_file():
            raise SpecError(spec.source, "aml.requirements", f"not found: {requirements}")
        # Points at the packaged docker/ files until a submission or a dry run stages the
        # real build context (with simgym's wheel and the sim's requirements).
        environment = Environment(
            name=settings.environment,
            build=BuildContext(path=str(DOCKER_DIR), dockerfile_path=DOCKERFILES[kind]),
            description=f"simgym {__version__} {kind} image (built from simgym's docker/)",
            tags={**tags, "kind": kind},
        )

    env_vars = {
        "PYTHONUNBUFFERED": "1",
        # One Ray auth token per job, shared by its nodes (see launcher.node.ray_auth_env).
        "SIMGYM_RAY_TOKEN": _ray_token(),
        **settings.environment_variables,
    }
    job = CommandJob(
        code=str(code_dir),
        command=command,
        environment=f"azureml:{settings.environment}@latest",
        compute=settings.compute,
        distribution=MpiDistribution(process_count_per_instance=1),
        resources=JobResourceConfiguration(
            instance_count=settings.nodes, shm_size=settings.shm_size
        ),
        limits=CommandJobLimits(timeout=int(limit)),
        experiment_name=experiment,
        display_name=settings.display_name or f"{experiment} ({settings.nodes} node(s))",
        environment_variables=env_vars,
        tags=tags,
        description=f"simgym train {spec_rel} on {settings.nodes} node(s)",
    )
    return Plan(
        spec=spec, spec_path=path.resolve(), settings=settings, code_dir=code_dir,
        spec_rel=spec_rel, command=command, compute=compute, environment=environment,
        job=job, image_kind=kind, requirements=requirements, notes=notes,
    )  # fmt: skip


# ----------------------------------------------------------------------------- build context


def source_checkout() -> Path | None:
    """The source tree of simgym when this code runs from one (editable install), else None."""
    pyproject = SOURCE_ROOT / "pyproject.toml"
    if pyproject.is_file() and re.search(r'^name\s*=\s*"simgym"', pyproject.read_text(), re.M):
        return SOURCE_ROOT
    return None


# Wheels built from the checkout in this process, by the digest of the sources they hold.
_BUILT: dict[str, Path] = {}


def _digest_tree(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


# pip building the wheel: seconds with the running environment's setuptools, a minute or
# two when it has to fetch a build backend; past this it is stuck (an index that hangs).
WHEEL_BUILD_TIMEOUT = 600.0


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
    digest = _digest_tree(src)
    cached = _BUILT.get(digest)
    if cached is not None and cached.is_file():
        return cached
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work), str(src)]
    try:
        import setuptools

        # The running environment's backend builds in seconds and needs no index.
        if int(setuptools.__version__.split(".")[0]) >= 69:
            cmd.insert(4, "--no-build-isolation")
    except (ImportError, ValueError):
        pass
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


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


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
    if info_dir is None or not any(f.as_posix() == "launcher/aml.py" for f in files):
        raise AmlError(
            "cannot find the installed simgym's files (its RECORD lists none): reinstall "
            "simgym, or pass --image with an image you built"
        )
    skip = {f"{info_dir}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    wheel_meta = dist.read_text("WHEEL") or ""
    tag = next((ln.split(":", 1)[1].strip() for ln in wheel_meta.splitlines()
                if ln.startswith("Tag:")), "py3-none-any")  # fmt: skip
    name = f"simgym-{dist.version}-{tag}.whl"
    dest.mkdir(parents=True, exist_ok=True)
    record = []
    with zipfile.ZipFile(dest / name, "w", zipfile.ZIP_DEFLATED) as whl:
        for f in sorted(files, key=lambda f: f.as_posix()):
            path = f.as_posix()
            if path in skip or "__pycache__" in f.parts or path.endswith(".pyc"):
                continue
            data = Path(str(dist.locate_file(f))).read_bytes()
            # A fixed date: the same install packs into the same bytes.
            whl.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), data)
            record.append(f"{path},{_record_hash(data)},{len(data)}")
        record.append(f"{info_dir}/RECORD,,")
        whl.writestr(zipfile.ZipInfo(f"{info_dir}/RECORD", (1980, 1, 1, 0, 0, 0)),
                     "\n".join(record) + "\n")  # fmt: skip
    return dest / name


def stage_simgym_wheel(dest: Path) -> Path:
    """Put a wheel of this simgym in ``dest``: built from the checkout, or repacked.

    From a source checkout the wheel is built from it (so an image gets your working
    tree's simgym); from a plain install it is the installed simgym repacked. simgym is not
    published on a package index, so an image cannot pin it from one.
    """
    root = source_checkout()
    built = _build_wheel(root) if root is not None else None
    if built is not None:
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(built, dest / built.name))
    return repack_installed_wheel(dest)


def stage_build_context(dest: Path, kind: str, requirements: Path | None = None) -> Path:
    """A Docker build context for one of simgym's images, ready for ``docker build``/Azure ML.

    ``dest`` gets ``Dockerfile`` (the kind's), ``install.sh``, ``lock.py``,
    ``constraints.txt``, ``lock-<kind>.txt`` (every package the image installs, pinned),
    ``requirements.txt`` (the sim's, possibly empty) and ``simgym-<version>-*.whl``.

    Raises:
        AmlError: An unknown kind, or simgym's wheel cannot be made.
    """
    if kind not in DOCKERFILES:
        raise AmlError(f"unknown image kind {kind!r} (one of {', '.join(DOCKERFILES)})")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(DOCKER_DIR / DOCKERFILES[kind], dest / "Dockerfile")
    for name in (*CONTEXT_FILES, f"lock-{kind}.txt"):
        shutil.copy2(DOCKER_DIR / name, dest / name)
    (dest / "requirements.txt").write_text(requirements.read_text() if requirements else "")
    for old in dest.glob("simgym-*.whl"):
        old.unlink()
    shutil.rmtree(dest / "simgym-src", ignore_errors=True)  # from an older simgym
    stage_simgym_wheel(dest)
    return dest


def wheel_digest(path: Path) -> str:
    """A wheel's content digest: its RECORD (every file's hash), not the zip's bytes."""
    with zipfile.ZipFile(path) as whl:
        record = next(n for n in whl.namelist() if n.endswith(".dist-info/RECORD"))
        lines = sorted(ln for ln in whl.read(record).decode().splitlines() if ln)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def context_digest(context: Path) -> str:
    """A digest of a staged build context's content (what the image would be built from)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        rel = path.relative_to(context).as_posix()
        # A wheel's zip carries dates: hash what is in it.
        content = wheel_digest(path) if rel.endswith(".whl") else hashlib.sha256(
            path.read_bytes()).hexdigest()  # fmt: skip
        digest.update(f"{rel}\0{content}\n".encode())
    return digest.hexdigest()


# What an environment version was made from: a build context's digest, or an image name.
SOURCE_TAG = "simgym_source"


def stage_environment(plan: Plan, dest: Path) -> Path:
    """Stage the plan's image build context in ``dest`` and point the environment at it."""
    context = stage_build_context(dest, plan.image_kind, plan.requirements).resolve()
    plan.environment.build.path = str(context)
    plan.environment.build.dockerfile_path = "Dockerfile"
    plan.environment.tags[SOURCE_TAG] = "context:" + context_digest(context)[:32]
    plan.context_dir = context
    return context


# ----------------------------------------------------------------------------- dry run


def write_dry_run(plan: Plan, out: Path) -> list[Path]:
    """Write ``job.yml``, ``environment.yml`` and ``compute.yml`` (and the build context)."""
    out.mkdir(parents=True, exist_ok=True)
    environment = plan.environment
    if plan.image_kind != "image":
        stage_environment(plan, out / "environment-context")
    written = []
    for name, entity in (
        ("compute.yml", plan.compute),
        ("environment.yml", environment),
        ("job.yml", plan.job),
    ):
        path = out / name
        path.unlink(missing_ok=True)  # dump() refuses to overwrite
        entity.dump(path)
        written.append(path)
    return written


def dry_run_hint(plan: Plan, out: Path) -> str:
    """How to submit the dry run's files with the Azure CLI."""
    lines = [*(f"note: {n}" for n in plan.notes), "submit them with the Azure CLI (ml extension):"]
    lines += [
        f"  az ml compute create -f {out / 'compute.yml'}",
        f"  az ml environment create -f {out / 'environment.yml'}",
        f"  az ml job create -f {out / 'job.yml'}",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- submission


def read_workspace_config(path: Path) -> dict[str, str]:
    """The workspace's ``config.json`` (as downloaded from the Azure portal).

    Raises:
        AmlError: Missing file or keys, named.
    """
    if not path.is_file():
        raise AmlError(
            f"workspace config {path} not found: download config.json from the workspace's "
            "page in the Azure portal, or pass --workspace-config"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AmlError(f"workspace config {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise AmlError(f"workspace config {path}: expected a JSON object")
    aliases = {
        "subscription_id": ("subscription_id", "subscriptionId"),
        "resource_group": ("resource_group", "resourceGroup", "resource_group_name"),
        "workspace_name": ("workspace_name", "workspaceName"),
    }
    found: dict[str, str] = {}
    for key, names in aliases.items():
        for name in names:
            if data.get(name):
                found[key] = str(data[name])
                break
    missing = [k for k in aliases if k not in found]
    if missing:
        raise AmlError(f"workspace config {path}: missing {', '.join(missing)}")
    return found


def default_credential() -> Any:
    """``azure-identity``'s default chain, checked by asking it for a token.

    Raises:
        AmlError: No credential in the chain works (what to do about it, in one line).
    """
    from azure.identity import DefaultAzureCredential

    # The chain logs every attempt as a warning: the one line below says it better.
    quiet = logging.getLogger("azure.identity")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        credential = DefaultAzureCredential()
        credential.get_token("https://management.azure.com/.default")
    except Exception as exc:
        tried = re.findall(r"^\s+(\w+?)Credential:", str(exc), re.MULTILINE)
        detail = f"tried {', '.join(tried)}" if tried else f"{type(exc).__name__}: {exc}"
        raise AmlError(
            "no usable Azure credentials: sign in with `az login`, or set AZURE_TENANT_ID, "
            "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal, or run where a "
            f"managed identity is assigned (DefaultAzureCredential {detail})"
        ) from None
    finally:
        quiet.setLevel(level)
    return credential


def ml_client(workspace_config: Path, credential: Any = None) -> Any:
    """An ``MLClient`` for the workspace (credentials checked first unless given)."""
    require_sdk()
    from azure.ai.ml import MLClient

    ws = read_workspace_config(workspace_config)
    if credential is None:
        credential = default_credential()
    return MLClient(credential, ws["subscription_id"], ws["resource_group"], ws["workspace_name"])


@dataclass
class Submitted:
    """What ``submit`` returns."""

    name: str
    studio_url: str
    environment: str
    compute_created: bool


def _network_error(exc: Exception, what: str) -> AmlError:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    if isinstance(exc, ClientAuthenticationError):
        return AmlError(f"{what}: Azure refused the credentials: {str(exc).splitlines()[0]}")
    if isinstance(exc, HttpResponseError):
        return AmlError(f"{what}: {str(exc).splitlines()[0]}")
    return AmlError(f"{what}: cannot reach Azure ({type(exc).__name__}: {exc})")


def ensure_compute(
    client: Any, compute: Any, echo: Callable[[str], None], nodes: int | None = None
) -> bool:
    """Create the cluster if it does not exist; returns whether it was created.

    Raises:
        AmlError: An existing compute cannot give the job ``nodes`` nodes (the job would
            wait in the queue for nodes that never come).
    """
    from azure.core.exceptions import ResourceNotFoundError

    try:
        existing = client.compute.get(compute.name)
    except ResourceNotFoundError:
        existing = None
    except Exception as exc:
        raise _network_error(exc, f"looking up compute {compute.name}") from None
    if existing is not None:
        kind = str(getattr(existing, "type", "") or "").lower()
        if kind and kind != "amlcompute":
            raise AmlError(
                f"compute {compute.name} is a {kind}, not a compute cluster (AmlCompute): "
                "pick a cluster with --compute, or a new name to have one created"
            )
        size = getattr(existing, "size", None)
        if size and size.lower() != str(compute.size).lower():
            echo(f"note: compute {compute.name} exists with VM size {size} (kept as it is)")
        most = getattr(existing, "max_instances", None)
        if nodes is not None and most is not None and int(most) < nodes:
            raise AmlError(
                f"compute {compute.name} scales to at most {most} node(s), the job asks for "
                f"{nodes}: it would wait for nodes that never come. Raise the cluster's maximum "
                "(Studio: Compute, or `az ml compute update --max-instances`), pass --nodes "
                f"{most}, or --compute with another name"
            )
        return False
    echo(f"creating compute cluster {compute.name} ({compute.size}, 0..{compute.max_instances})")
    try:
        client.compute.begin_create_or_update(compute).result()
    except Exception as exc:
        raise _network_error(exc, f"creating compute {compute.name}") from None
    return True


def ensure_environment(
    client: Any, environment: Any, rebuild: bool, echo: Callable[[str], None]
) -> str:
    """Reuse the named environment's latest version, or register one; returns its reference.

    The latest version is reused only when it was made from the same thing: its
    ``simgym_source`` tag (the staged build context's digest, or the image name) must match.
    Otherwise — another ``--image``, a new simgym, changed sim requirements — a new version
    is registered, so a job never runs on an image it did not ask for.
    """
    from azure.core.exceptions import ResourceNotFoundError

    latest = None
    try:
        latest = client.environments.get(environment.name, label="latest")
    except ResourceNotFoundError:
        latest = None
    except Exception as exc:
        raise _network_error(exc, f"looking up environment {environment.name}") from None
    wanted = (environment.tags or {}).get(SOURCE_TAG)
    if latest is not None and not rebuild:
        ref = f"{latest.name}:{latest.version}"
        have = (latest.tags or {}).get(SOURCE_TAG)
        if wanted is None or have == wanted:
            echo(f"using environment {ref} (--rebuild-environment registers a new version)")
            return f"azureml:{latest.name}:{latest.version}"
        echo(
            f"note: environment {ref} was made from {have or 'something simgym did not tag'}, "
            f"this job needs {wanted}: registering a new version"
        )
    version = "1"
    if latest is not None:
        current = str(latest.version)
        version = str(int(current) + 1) if current.isdigit() else time.strftime("%Y%m%d%H%M%S")
    environment.version = version
    echo(f"registering environment {environment.name}:{version} (the image builds on first use)")
    try:
        created = client.environments.create_or_update(environment)
    except Exception as exc:
        raise _network_error(exc, f"registering environment {environment.name}") from None
    return f"azureml:{created.name}:{created.version}"


def _one_line(exc: BaseException) -> str:
    """The first line of an SDK error (``Type`` when it has no message)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def validate_job(client: Any, job: Any) -> None:
    """The SDK's local checks of a job, with their errors surfaced.

    ``jobs.validate`` on a ``CommandJob`` only checks git code paths (it returns a result, and
    does not raise, unless asked); the schema and path checks — a code folder that does not
    exist, say — run on the job's command node. Both are asked, and every error is reported.

    Raises:
        AmlError: What the SDK found, one ``field: message`` per error.
    """
    # `_validate` and `_to_node` are the SDK's private methods: another SDK version may
    # lack them (then only `jobs.validate` runs) or fail in them in its own way. Whatever
    # the SDK raises (its ValidationException, marshmallow's ValidationError, a TypeError
    # from a malformed field...) is the job not validating, said in one line.
    checks: list[Any] = [job]
    try:
        own_check = getattr(job, "_validate", None)
        if callable(own_check):
            own_check()  # command and environment present (what create_or_update checks)
        to_node = getattr(job, "_to_node", None)
        if callable(to_node):
            checks.append(to_node())
        results = [client.jobs.validate(j) for j in checks]
        errors: dict[str, str] = {}
        for result in results:
            errors.update(getattr(result, "error_messages", None) or {})
    except Exception as exc:
        raise AmlError(f"the job does not validate: {_one_line(exc)}") from None
    if errors:
        detail = "; ".join(
            f"{key.removeprefix('component.')}: {str(msg).split(';')[0].strip()}"
            for key, msg in errors.items()
        )
        raise AmlError(f"the job does not validate: {detail}")


def studio_url(job: Any, client: Any) -> str:
    """The job's page in Azure ML Studio."""
    url = getattr(job, "studio_url", None)
    if url:
        return str(url)
    return (
        f"https://ml.azure.com/runs/{job.name}?wsid=/subscriptions/{client.subscription_id}"
        f"/resourcegroups/{client.resource_group_name}/workspaces/{client.workspace_name}"
    )


def submit(
    plan: Plan,
    *,
    credential: Any = None,
    client: Any = None,
    echo: Callable[[str], None] = print,
) -> Submitted:
    """Create what is missing and submit the job.

    Everything that can be checked offline (workspace config, credentials) is checked
    before anything is created or uploaded.

    Raises:
        AmlError: One line naming what is missing or what Azure refused.
    """
    staged = None
    try:
        if plan.image_kind != "image":
            staged = stage_environment(plan, Path(tempfile.mkdtemp(prefix="simgym-aml-")))
        return _submit(plan, credential, client, echo)
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)


def _submit(plan: Plan, credential: Any, client: Any, echo: Callable[[str], None]) -> Submitted:
    for note in plan.notes:
        echo(f"note: {note}")
    if client is None:
        client = ml_client(Path(plan.settings.workspace_config), credential)
    validate_job(client, plan.job)  # local checks: nothing is created when they fail
    created = ensure_compute(client, plan.compute, echo, plan.settings.nodes)
    env_ref = ensure_environment(client, plan.environment, plan.settings.rebuild_environment, echo)
    plan.job.environment = env_ref
    echo(f"submitting {plan.spec_rel} from {plan.code_dir} to {plan.settings.nodes} node(s)")
    try:
        job = client.jobs.create_or_update(plan.job, experiment_name=plan.job.experiment_name)
    except Exception as exc:
        raise _network_error(exc, "submitting the job") from None
    return Submitted(job.name, studio_url(job, client), env_ref, created)


# ----------------------------------------------------------------------------- status and logs


def _client_for(workspace_config: Path | None) -> Any:
    return ml_client(workspace_config or Path("config.json"))


def job_status(name: str, workspace_config: Path | None, client: Any = None) -> list[str]:
    """One line per fact: status, Studio URL, experiment, compute."""
    client = client or _client_for(workspace_config)
    try:
        job = client.jobs.get(name)
    except Exception as exc:
        raise _network_error(exc, f"looking up job {name}") from None
    lines = [
        f"job: {job.name}",
        f"status: {job.status}",
        f"experiment: {getattr(job, 'experiment_name', '')}",
        f"compute: {getattr(job, 'compute', '')}",
        f"studio: {studio_url(job, client)}",
    ]
    if str(job.status) in ("Failed", "Canceled", "NotResponding"):
        lines.append(f"see why: simgym logs {job.name}")
    return lines


def _find(root: Path, pattern: str) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob(pattern) if p.is_file())


def summarize_logs(root: Path, lines: int = 40) -> list[str]:
    """``error.txt`` files first, then each node's last lines, from a downloaded job folder."""
    out: list[str] = []
    for error in _find(root, "error.txt"):
        out += [f"=== {error.relative_to(root)} ===", error.read_text(errors="replace").rstrip()]
    logs = list(_find(root, "std_log*.txt"))
    for log_file in logs:
        text = log_file.read_text(errors="replace").splitlines()
        out += [f"=== {log_file.relative_to(root)} (last {min(lines, len(text))} lines) ==="]
        out += text[-lines:]
    if not out:
        out.append(f"no error.txt and no std_log*.txt under {root}")
    return out


def job_logs(
    name: str,
    workspace_config: Path | None,
    to: Path | None = None,
    lines: int = 40,
    client: Any = None,
) -> list[str]:
    """Download a job's logs and outputs, then summarize them."""
    client = client or _client_for(workspace_config)
    dest = to or Path("aml-logs") / name
    dest.mkdir(parents=True, exist_ok=True)
    try:
        client.jobs.download(name, download_path=str(dest), all=True)
    except Exception as exc:
        raise _network_error(exc, f"downloading job {name}") from None
    return [f"downloaded to {dest}", *summarize_logs(dest, lines)]
