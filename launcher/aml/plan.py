"""Plan an Azure ML job offline: settings, and the SDK's compute, environment and job objects.

``plan_submission`` turns a training spec (plus its optional ``aml:`` section and command-line
options) into real SDK entities — ``AmlCompute``, ``Environment``, ``CommandJob`` — without
touching the network. ``write_dry_run`` dumps them as YAML that ``az ml ... create -f`` and
the SDK's ``load_*`` accept.

The job's command is ``simgym node SPEC`` on every node (MPI distribution, one process per
node): see ``launcher.node``. The job's code is the user's project folder (their sim and
specs), not simgym's source; simgym itself is installed in the environment's image.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gymclient.errors import SpecError
from launcher.aml.errors import AmlError, require_sdk
from launcher.aml.image import DOCKER_DIR, DOCKERFILES, folder_digest, stage_build_context
from launcher.aml.simimage import TRAIN_PREFIX, SimImage, resolve_sim_image
from launcher.node import new_ray_token
from launcher.trainspec import TrainSpec, load_train_spec, parse_duration

# Leave the job this long after training stops (final checkpoint, uploads, shutdown).
WRAP_UP_SECONDS = 600.0
# What an environment version was made from: a build context's digest, or an image name.
SOURCE_TAG = "simgym_source"


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

    settings: AmlSettings
    code_dir: Path
    spec_rel: str  # the spec's path inside the code folder
    command: str
    compute: Any  # AmlCompute
    environment: Any  # Environment
    job: Any  # CommandJob
    image_kind: str  # train | train-gpu | sim-train | image
    requirements: Path | None = None  # the sim's requirements, for the image
    notes: list[str] = field(default_factory=list)
    sim_image: SimImage | None = None  # sim-train: the sim's own image and its command


def plan_submission(spec_path: str | os.PathLike[str], options: Mapping[str, Any]) -> Plan:
    """Build the SDK entities for a submission (offline).

    Raises:
        SpecError: A bad ``aml:`` key in the spec.
        AmlError: A bad option, a code folder that misses the spec's files, no SDK.
    """
    require_sdk()
    from simgym import __version__

    path = Path(spec_path)
    spec = load_train_spec(path)
    settings = _settings(spec, {k: v for k, v in options.items() if k != "sim_image"})
    sim_image = _sim_image(spec, settings, options.get("sim_image"))
    code_dir = Path(settings.code).resolve() if settings.code else path.resolve().parent
    _check_code_folder(spec, path, code_dir)
    spec_rel = path.resolve().relative_to(code_dir).as_posix()
    experiment = settings.experiment or spec.experiment
    notes = _code_folder_notes(code_dir)
    if sim_image is not None:
        notes.append(_sims_note(spec, sim_image))
    program = f"{TRAIN_PREFIX}/bin/simgym" if sim_image is not None else "simgym"
    command = _node_command(spec, settings, spec_rel, experiment, notes, program)
    tags = {"simgym": __version__, "spec": spec_rel}
    kind, requirements = _image(spec, settings)
    if sim_image is not None:
        kind, tags = "sim-train", {**tags, "sim_image": sim_image.name}
    return Plan(
        settings=settings,
        code_dir=code_dir,
        spec_rel=spec_rel,
        command=command,
        compute=_compute(settings),
        environment=_environment(settings, kind, tags),
        job=_job(settings, code_dir, command, experiment, tags),
        image_kind=kind,
        requirements=requirements,
        notes=notes,
        sim_image=sim_image,
    )


def _sim_image(spec: TrainSpec, settings: AmlSettings, option: str | None) -> SimImage | None:
    """The sim's own image (``--sim-image``, else ``sim.image``) and its command, or None.

    Raises:
        AmlError: It cannot go with the other settings, or its command cannot serve.
        SpecError: No command to be had (Docker is not at hand and the spec gives none).
    """
    name = option or spec.sim.image
    if name is None:
        return None
    where = "--sim-image" if option else f"{spec.source}: sim.image"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*", name):
        raise AmlError(f"{where} {name!r}: not an image reference (registry/name:tag)")
    if settings.image:
        raise AmlError(
            f"{where} {name} and --image/aml.image {settings.image}: the environment is built "
            "FROM the sim's image, or is an image you give, not both"
        )
    if settings.gpu:
        raise AmlError(f"{where} {name}: the sim-train image is CPU only (drop --gpu/aml.gpu)")
    elsewhere = [k for k in ("bonsai", "address", "addresses") if getattr(spec.sim, k)]
    if elsewhere:
        raise AmlError(
            f"{where} {name}: the training spec's sims are sim.{elsewhere[0]}; the image's "
            "sims run as sim.launch sidecars on every node"
        )
    launch = spec.sim.launch
    if launch is not None and launch.target is not None:
        raise SpecError(
            spec.source,
            "sim.launch.target",
            f"the sims come from the sim image {name}: drop the target (or give "
            "sim.launch.command, the image's server command)",
        )
    return resolve_sim_image(name, launch.command if launch else None, spec_source=spec.source)


def _sims_note(spec: TrainSpec, sim_image: SimImage) -> str:
    """What every node runs as its sims, and where that comes from."""
    launch = spec.sim.launch
    servers = launch.servers if launch else 1
    if sim_image.command is not None:
        words, cwd = sim_image.command, sim_image.cwd
    else:
        assert launch is not None and launch.command is not None
        words, cwd = launch.command, launch.cwd or "the spec's folder"
    return (
        f"the environment is built FROM the sim image {sim_image.name}; every node runs "
        f"{servers} sidecar(s) of `{shlex.join(words)}` in {cwd} ({sim_image.source})"
    )


def _settings(spec: TrainSpec, options: Mapping[str, Any]) -> AmlSettings:
    """The spec's ``aml:`` section with the options that are not None over it, validated."""
    given = {k: v for k, v in options.items() if v is not None}
    try:
        return AmlSettings.model_validate({**(spec.aml or {}), **given})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        in_cli = err["loc"] and str(err["loc"][0]) in given
        msg = "unknown key (check its spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        if in_cli:
            raise AmlError(f"--{key.replace('_', '-')}: {msg}") from None
        raise SpecError(spec.source, f"aml.{key}", msg) from None


def _check_code_folder(spec: TrainSpec, spec_path: Path, code_dir: Path) -> None:
    """The job can only see the code folder: the spec, env spec and sim must be inside."""
    if not code_dir.is_dir():
        raise AmlError(f"--code {code_dir}: not a folder")
    env_spec = spec.load_env_spec()
    files = {"the training spec": spec_path, "the env spec": spec.path(spec.env)}
    target = (spec.sim.launch.target if spec.sim.launch else None) or env_spec.sim.target
    if spec.sim.image or (spec.sim.launch and spec.sim.launch.command):
        target = None  # the sims are a command's (an image's): no sim file to upload
    if target and ":" in target:
        module = target.rsplit(":", 1)[0]
        if module.endswith(".py"):
            files["the sim"] = env_spec.path(module)
    for what, path in files.items():
        if not path.resolve().is_relative_to(code_dir.resolve()):
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


def _node_command(
    spec: TrainSpec,
    settings: AmlSettings,
    spec_rel: str,
    experiment: str,
    notes: list[str],
    program: str = "simgym",
) -> str:
    """``simgym node`` for every node, training short enough to wrap up before the limit.

    ``program``: the ``simgym`` to run (the sim-train image's own, by its path: the sim
    image may have a ``simgym`` of its own earlier on PATH).
    """
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
        program, "node", spec_rel,
        "--output", "outputs",
        "--experiment", experiment,
        "--max-time", f"{train_time:.0f}s",
        "--ray-port", str(settings.ray_port),
        "--join-timeout", f"{settings.join_timeout:.0f}s",
    ]  # fmt: skip
    if settings.cpus_per_node:
        args += ["--cpus", str(settings.cpus_per_node)]
    return shlex.join(args)


def _image(spec: TrainSpec, settings: AmlSettings) -> tuple[str, Path | None]:
    """The image kind (``image`` for an existing one) and the sim's requirements file."""
    if settings.image:
        return "image", None
    kind = "train-gpu" if settings.gpu else "train"
    requirements = spec.path(settings.requirements) if settings.requirements else None
    if requirements is not None and not requirements.is_file():
        raise SpecError(spec.source, "aml.requirements", f"not found: {requirements}")
    return kind, requirements


def _compute(settings: AmlSettings) -> Any:
    """The cluster, scaling to zero when idle."""
    from azure.ai.ml.entities import AmlCompute

    return AmlCompute(
        name=settings.compute,
        size=settings.vm_size,
        min_instances=0,
        max_instances=max(settings.max_nodes or settings.nodes, settings.nodes),
        idle_time_before_scale_down=settings.idle_minutes * 60,
        tier=settings.tier,
        description="simgym training cluster (scales to zero when idle)",
    )


def _environment(settings: AmlSettings, kind: str, tags: dict[str, str]) -> Any:
    """The environment: an existing image, or one built from simgym's Docker files."""
    from azure.ai.ml.entities import BuildContext, Environment

    version = tags["simgym"]
    if kind == "image":
        return Environment(
            name=settings.environment,
            image=settings.image,
            description=f"simgym {version} training environment (existing image)",
            tags={**tags, SOURCE_TAG: f"image:{settings.image}"},
        )
    # Points at the packaged docker/ files until a submission or a dry run stages the real
    # build context (with simgym's wheel and the sim's requirements): stage_environment.
    return Environment(
        name=settings.environment,
        build=BuildContext(path=str(DOCKER_DIR), dockerfile_path=DOCKERFILES[kind]),
        description=f"simgym {version} {kind} image (built from simgym's docker/"
        + (f", FROM the sim image {tags['sim_image']})" if "sim_image" in tags else ")"),
        tags={**tags, "kind": kind},
    )


def _job(
    settings: AmlSettings, code_dir: Path, command: str, experiment: str, tags: dict[str, str]
) -> Any:
    """The multi-node command job: one MPI process per node, each running ``command``."""
    from azure.ai.ml import MpiDistribution
    from azure.ai.ml.entities import CommandJob, CommandJobLimits, JobResourceConfiguration

    env_vars = {
        "PYTHONUNBUFFERED": "1",
        # One Ray auth token per job, shared by its nodes (see launcher.node.ray_auth_env).
        "SIMGYM_RAY_TOKEN": new_ray_token(),
        **settings.environment_variables,
    }
    return CommandJob(
        code=str(code_dir),
        command=command,
        environment=f"azureml:{settings.environment}@latest",
        compute=settings.compute,
        distribution=MpiDistribution(process_count_per_instance=1),
        resources=JobResourceConfiguration(
            instance_count=settings.nodes, shm_size=settings.shm_size
        ),
        limits=CommandJobLimits(timeout=int(settings.max_run_time)),
        experiment_name=experiment,
        display_name=settings.display_name or f"{experiment} ({settings.nodes} node(s))",
        environment_variables=env_vars,
        tags=tags,
        description=f"simgym train {tags['spec']} on {settings.nodes} node(s)",
    )


def stage_environment(plan: Plan, dest: Path) -> Path | None:
    """Stage the plan's image build context in ``dest`` and point the environment at it.

    Returns the context, or None for a plan that uses an existing image (nothing to stage).
    """
    if plan.image_kind == "image":
        return None
    args = plan.sim_image.build_args() if plan.sim_image is not None else None
    context = stage_build_context(dest, plan.image_kind, plan.requirements, args).resolve()
    plan.environment.build.path = str(context)
    plan.environment.build.dockerfile_path = "Dockerfile"
    plan.environment.tags[SOURCE_TAG] = "context:" + folder_digest(context)[:32]
    return context


def write_dry_run(plan: Plan, out: Path) -> list[Path]:
    """Write ``job.yml``, ``environment.yml`` and ``compute.yml`` (and the build context)."""
    out.mkdir(parents=True, exist_ok=True)
    stage_environment(plan, out / "environment-context")
    written = []
    for name, entity in (
        ("compute.yml", plan.compute),
        ("environment.yml", plan.environment),
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
