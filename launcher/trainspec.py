"""The training spec: one YAML file from env spec to stop conditions, validated at load time.

Its keys (``env``, ``sim``, ``algorithm``, ``config``, ``resources``, ``stop``, ``checkpoint``,
``seed``, ``output``, ``experiment``, ``tracking_uri``) are described, with an example, in
docs/training.md; its ``aml`` section in docs/azure.md.
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from gymclient.errors import SpecError
from gymclient.spec import (
    Address,
    BonsaiSims,
    EnvSpec,
    ShapeText,
    check_script,
    load_spec,
    read_text,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*$")
_UNIT = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"2h"``.

    Raises:
        ValueError: Not a duration.
    """
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration (examples: 90, 90s, 10m, 2h)")
    return float(match.group(1)) * _UNIT[match.group(2)]


class Launch(_Model):
    """Sim servers simgym starts as supervised sidecar processes on loopback."""

    target: str | None = None  # default: the env spec's sim.target
    kwargs: dict[str, Any] | None = None
    shape: ShapeText | None = None  # simserver --shape; default: the env spec's sim.shape
    servers: int = Field(1, ge=1, le=256)
    sessions_per_server: int = Field(64, ge=1)
    transport: Literal["unix", "tcp"] = "unix"
    max_restarts: int = Field(5, ge=0)  # per server, over the run
    restart_backoff: float = Field(1.0, ge=0)  # seconds, doubled per restart of the same server
    # Health checks (grpc.health.v1): every `health_every` seconds (0: none), each with a
    # `health_timeout` deadline; a server that fails `health_failures` in a row (no answer,
    # or NOT_SERVING) is killed and restarted like one that exited.
    health_every: float = Field(2.0, ge=0, allow_inf_nan=False)
    health_timeout: float = Field(2.0, gt=0, allow_inf_nan=False)
    health_failures: int = Field(3, ge=1)
    # Where the servers run their sims (simserver --isolate; None: simserver's default) and
    # the MiB a sim's worker process may use (--max-sim-rss, with isolate: process).
    isolate: Literal["thread", "process"] | None = None
    max_sim_rss: float | None = Field(None, gt=0, allow_inf_nan=False)
    # A server of your own that takes simserver's flags (a sim image's `simserver`, the Node.js
    # kit's `npm run sample --`), run instead of `python -m simserver <target>` from `cwd`
    # (relative to the training spec; default: its folder); simgym appends the transport
    # flags (launcher.simcommand).
    command: list[str] | None = None
    cwd: str | None = None

    @model_validator(mode="after")
    def _rss_needs_processes(self) -> Launch:
        if self.max_sim_rss is not None and self.isolate != "process":
            raise ValueError("max_sim_rss needs isolate: process (a worker process to bound)")
        return self

    @model_validator(mode="after")
    def _command(self) -> Launch:
        if self.command is None:
            if self.cwd is not None:
                raise ValueError("cwd: is the folder of sim.launch.command; give the command")
            return self
        if not self.command or not all(isinstance(w, str) and w.strip() for w in self.command):
            raise ValueError("command: give the program and its arguments, a list of words")
        # simserver's own options: a command passes them itself, in its words.
        for key in ("target", "kwargs", "shape", "isolate", "max_sim_rss"):
            if getattr(self, key) is not None:
                raise ValueError(
                    f"{key}: the command starts its own server; give {key} or command, not "
                    "both (put the server's arguments in the command)"
                )
        return self


class SimPlacement(_Model):
    """Where the sims are: ``launch`` sidecars, ``bonsai`` SDK sims, or ``address(es)``."""

    launch: Launch | None = None
    bonsai: BonsaiSims | None = None
    address: Address | None = None
    addresses: list[Address] | None = None
    token: str | None = None
    token_env: str | None = None
    tls: bool | None = None
    tls_ca: str | None = None
    # A sim that ships as its own image (`simgym submit --sim-image`): the job's environment
    # is built from it, and its command runs as the launch sidecars (docs/azure.md).
    image: str | None = None

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*", value):
            raise ValueError(f"{value!r} is not an image reference (registry/name:tag)")
        return value

    @model_validator(mode="after")
    def _one(self) -> SimPlacement:
        given = [k for k in ("launch", "bonsai", "address", "addresses") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(
                f"give one of launch, bonsai, address, addresses (got {', '.join(given)})"
            )
        elsewhere = [k for k in ("bonsai", "address", "addresses") if getattr(self, k)]
        if self.image is not None and elsewhere:
            raise ValueError(
                f"image: the image's sims run as launch sidecars; give image or {elsewhere[0]}, "
                "not both"
            )
        return self


class Resources(_Model):
    """How much parallelism training uses."""

    env_runners: int = Field(1, ge=0)
    envs_per_runner: int = Field(8, ge=1)
    cpus: int | None = Field(None, ge=1)  # Ray's num_cpus (default: all)
    object_store_mb: int | None = Field(None, ge=64)


class Stop(_Model):
    """Stop conditions; training stops at the first one reached."""

    max_time: float | None = None  # seconds (accepts "10m", "2h"): the invocation's wall time
    env_steps: int | None = Field(None, ge=1)
    iterations: int | None = Field(None, ge=1)
    episode_reward_mean: float | None = None
    # Failures rather than stops (launcher.watchdog): iterations in a row that sample no env
    # step, and failed sim calls per env step over the last 1000 steps (null: no budget).
    max_empty_iterations: int = Field(10, ge=1)
    max_sim_error_rate: float | None = Field(0.5, gt=0, le=1)

    @field_validator("max_time", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if value is None:
            return None
        seconds = parse_duration(value)
        if not seconds > 0 or seconds == float("inf"):
            raise ValueError(f"{value!r} is not a positive, finite duration")
        return seconds

    @model_validator(mode="after")
    def _some(self) -> Stop:
        if all(
            v is None
            for v in (self.max_time, self.env_steps, self.iterations, self.episode_reward_mean)
        ):
            raise ValueError(
                "give at least one of max_time, env_steps, iterations, episode_reward_mean"
            )
        return self


class Checkpointing(_Model):
    """Checkpoint frequency (iterations) and how many to keep."""

    every: int = Field(5, ge=1)
    keep: int = Field(3, ge=1)


class TrainSpec(_Model):
    """A validated training spec."""

    env: str
    sim: SimPlacement = Field(default_factory=SimPlacement)
    algorithm: Literal["IMPALA", "PPO", "APPO"] = "IMPALA"
    config: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    stop: Stop = Field(default_factory=lambda: Stop(max_time=600.0))
    checkpoint: Checkpointing = Field(default_factory=Checkpointing)
    seed: int | None = 0
    output: str = "runs"
    # Default: the env spec's `name` (load_train_spec), else "simgym"; names the run folder.
    experiment: str = "simgym"
    tracking_uri: str | None = None
    aml: dict[str, Any] | None = None  # Azure ML submission settings (launcher.aml validates)
    base_dir: str = "."
    source: str = "<train spec>"
    # True when the file given was an env spec and this is the training spec it implies.
    _implied: bool = PrivateAttr(default=False)

    @property
    def implied(self) -> bool:
        """True when ``simgym train`` was given an env spec (``ENV_SPEC_DEFAULTS`` apply)."""
        return self._implied

    @field_validator("algorithm", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    def path(self, relative: str) -> Path:
        """Resolve a path written in the spec against the spec's folder."""
        p = Path(relative)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def load_env_spec(self) -> EnvSpec:
        """The env spec this training uses, with the ``sim`` placement applied."""
        env = load_spec(self.path(self.env))
        s = self.sim
        updates: dict[str, Any] = {}
        if s.address or s.addresses or s.bonsai:
            updates.update(address=s.address, addresses=s.addresses, bonsai=s.bonsai, target=None)
        for key in ("token", "token_env", "tls", "tls_ca"):
            if getattr(s, key) is not None:
                updates[key] = getattr(s, key)
        if updates:
            env = env.model_copy(update={"sim": env.sim.model_copy(update=updates)})
        return env

    def bonsai(self, env: EnvSpec) -> tuple[BonsaiSims, Path] | None:
        """The Bonsai SDK sims to start and the folder they run in, if the sims are those.

        ``sim.bonsai`` of this spec (run from its folder), else the env spec's (from its
        ``workdir``) unless this spec names ``launch`` or ``address(es)``.
        """
        if self.sim.bonsai is not None:
            return self.sim.bonsai, Path(self.base_dir)
        if self.sim.launch or self.sim.address or self.sim.addresses or env.sim.bonsai is None:
            return None
        return env.sim.bonsai, env.workdir

    def launch(self, env: EnvSpec) -> Launch | None:
        """The sidecar plan: explicit ``sim.launch``, else the env spec's target (1 server)."""
        if self.sim.address or self.sim.addresses or self.bonsai(env) is not None:
            return None
        launch = self.sim.launch or Launch()
        if launch.command is None and launch.target is None:
            launch = self._image_launch(launch)
        if launch.command is not None:
            cwd = self.path(launch.cwd or ".").resolve()
            return launch.model_copy(update={"cwd": str(cwd)})
        if launch.target is None:
            if not env.sim.target:
                raise SpecError(self.source, "sim", "give sim.launch.target or sim.address(es)")
            # The env spec's target comes with its constructor arguments.
            kwargs = env.sim.kwargs if launch.kwargs is None else launch.kwargs
            shape = env.sim.shape if launch.shape is None else launch.shape
            update = {"target": env.sim.target, "kwargs": kwargs, "shape": shape}
            launch = launch.model_copy(update=update)
        return launch

    def _image_launch(self, launch: Launch) -> Launch:
        """``launch`` running the command a combined image carries (``SIMGYM_SIM_COMMAND``).

        Unchanged outside such an image, unless ``sim.image`` says the sims are an image's:
        then its command must be given.
        """
        from launcher.simcommand import COMMAND_VAR, image_command

        found = image_command()
        if found is not None:
            return launch.model_copy(update={"command": found[0], "cwd": found[1]})
        if self.sim.image is not None:
            raise SpecError(
                self.source,
                "sim.launch.command",
                f"sim.image {self.sim.image}: the image's sim command is not known here "
                f"({COMMAND_VAR} is not set): give sim.launch.command (and cwd), as the image's "
                "ENTRYPOINT + CMD would run it",
            )
        return launch


#: The training spec an env spec given to ``simgym train`` implies (docs/training.md,
#: "Training an env spec directly"): PPO (what learns on a small machine, as the CSTR
#: recipe found), one env runner stepping 8 sims, 10 minutes; every other key its default.
ENV_SPEC_DEFAULTS: dict[str, Any] = {
    "algorithm": "PPO",
    "resources": {"env_runners": 1, "envs_per_runner": 8},
    "stop": {"max_time": "10m"},
}
# Keys only an env spec has: a file with one of them (and no `env`) is an env spec.
_ENV_SPEC_KEYS = ("observations", "actions", "rl_sim_spec", "reward", "lessons", "goals")


def is_env_spec(data: Any) -> bool:
    """True for a mapping that is an env spec rather than a training spec."""
    return isinstance(data, dict) and "env" not in data and any(k in data for k in _ENV_SPEC_KEYS)


def experiment_name(name: str) -> str:
    """An env spec's ``name`` as an MLflow experiment and run-folder prefix ("" if none)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")


def _default_experiment(env_path: Path) -> str | None:
    """The env spec's name, if it loads and has one (its problems are reported later)."""
    try:
        return experiment_name(load_spec(env_path).name) or None
    except SpecError:
        return None


def load_train_spec(path: str | os.PathLike[str]) -> TrainSpec:
    """Load and validate a training spec, or an env spec (with ``ENV_SPEC_DEFAULTS``).

    Raises:
        SpecError: Naming the file and the key (every problem, one line each).
    """
    from gymclient.spec import problems

    p = Path(path)
    if p.is_dir():  # a reference-style folder is an env spec
        data: Any = {"env": p.name, **ENV_SPEC_DEFAULTS}
        base = p.resolve().parent
    else:
        if not p.is_file():
            raise SpecError(str(p), "", "no such file")
        try:
            data = yaml.safe_load(read_text(p))
        except yaml.YAMLError as exc:
            raise SpecError(str(p), "", f"not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise SpecError(str(p), "", "expected a mapping at the top level")
        if is_env_spec(data):
            data = {"env": p.name, **ENV_SPEC_DEFAULTS}
        base = p.resolve().parent
    implied = data.get("env") == p.name and set(data) <= {"env", *ENV_SPEC_DEFAULTS}
    if "experiment" not in data and isinstance(data.get("env"), str):
        named = _default_experiment(base / data["env"])
        if named:
            data = {**data, "experiment": named}
    try:
        spec = TrainSpec.model_validate({**data, "base_dir": str(base), "source": str(p)})
    except ValidationError as exc:
        found = [
            (key, f"{msg} (the env spec to train on; simgym train also takes an env spec "
             "itself, with the defaults of docs/training.md)")
            if key == "env" and msg == "Field required" else (key, msg)
            for key, msg in problems(exc, _train_fields_at)
        ]  # fmt: skip
        raise SpecError(str(p), *found[0], more=found[1:]) from None
    spec._implied = implied
    env_path = spec.path(spec.env)
    if not env_path.exists():
        raise SpecError(str(p), "env", f"not found: {env_path}")
    if spec.sim.bonsai is not None:
        check_script(spec.sim.bonsai, Path(spec.base_dir), str(p), "sim.bonsai.command")
    return spec


def _train_fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys a training spec accepts at ``loc`` ([] if unknown), for typo hints."""
    model: Any = TrainSpec
    for part in loc:
        fields: dict[str, Any] = getattr(model, "model_fields", {})
        field = fields.get(str(part))
        if field is None:
            return []
        args = [a for a in typing.get_args(field.annotation) if a is not type(None)]
        model = args[0] if args else field.annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [n for n in model.model_fields if n not in ("base_dir", "source")]
    return []
