"""The env spec: which states the agent sees, which actions it sets, reward, lessons.

Two styles load into the same ``EnvSpec`` (both described in docs/spec.md):

* declarative YAML (``sim``, ``observations``, ``actions``, ``reward``, ``log_states``,
  ``lessons``; see ``examples/cstr/spec.yaml``);
* reference style: a folder with ``sim/simulator_model.py``,
  ``training_setup/rl_sim_spec.py`` and ``training_setup/rl_lesson.yml``, used
  unedited (or a YAML with ``rl_sim_spec:`` and ``lessons_file:`` keys).

Everything is validated once, at load time; errors name the file and the key.
"""

from __future__ import annotations

import ipaddress
import math
import os
import shlex
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gymclient.actions import ActionSpec
from gymclient.errors import SimgymError, SpecError
from gymclient.goals import GoalSpec, check_expression, expression_text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Model):
    """A declared range, mapped linearly to [-1, 1].

    For an observation, ``expr`` derives the value from states (``Cr - Cref``);
    without it the observation's name is a state name. An observation may leave out
    ``min``/``max`` (``Tout: {}``): ``simgym train`` then estimates them from seeded episodes
    (``launcher.ranges``); actions always need them.
    """

    min: float | None = None
    # validate_default: a min without a max is reported at `<name>.max`, as a missing key.
    max: float | None = Field(None, validate_default=True)
    expr: str | None = None

    @field_validator("max")
    @classmethod
    def _max_with_min(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None and info.data.get("min") is not None:
            raise ValueError("Field required")
        return value

    @field_validator("expr")
    @classmethod
    def _expr(cls, value: str | None) -> str | None:
        if value is not None:
            from gymclient.expr import parse_derived

            parse_derived(value)  # arithmetic only: the exported ONNX graph computes it
        return value

    @property
    def ranged(self) -> bool:
        """True when min and max are given (False: estimated from statistics)."""
        return self.min is not None and self.max is not None

    def bounds(self) -> tuple[float, float]:
        """(min, max), for code that needs a range (export, a filled-in run spec).

        Raises:
            ValueError: The range is not given and was not estimated yet (launcher.ranges).
        """
        if self.min is None or self.max is None:
            raise ValueError("no min/max: estimated by simgym train, or give them in the spec")
        return self.min, self.max

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None or self.max is None:
            if (self.min is None) != (self.max is None):
                raise ValueError("give both min and max, or neither (estimated from episodes)")
            return self
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ValueError("min and max must be finite numbers")
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be greater than min ({self.min})")
        return self


class Lesson(_Model):
    """One scenario-config parameter: uniform in [min, max], a grid, or one of ``values``.

    With ``step``, the draw is ``min + k * step`` for a uniform integer ``k`` (the grid from
    ``min`` up to ``max``); ints when ``min``, ``max`` and ``step`` are all written as ints
    (``{min: 18, max: 24, step: 1}`` draws 18, 19, ..., 24).
    """

    # `int | float`: pydantic keeps a YAML int an int, so integer grids draw Python ints.
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = Field(None, gt=0, allow_inf_nan=False)
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Lesson:
        if self.values is not None:
            if self.min is not None or self.max is not None or self.step is not None:
                raise ValueError("give either values or min/max(/step), not both")
            if not self.values:
                raise ValueError("values must not be empty")
        else:
            if self.min is None or self.max is None:
                raise ValueError(
                    "give min and max (uniform draw; with step: a grid, ints when all are "
                    "ints) or values (a list to choose from)"
                )
            if not (math.isfinite(self.min) and math.isfinite(self.max)):
                raise ValueError("min and max must be finite numbers")
            if self.max < self.min:
                raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self

    @property
    def integer(self) -> bool:
        """True when the draw gives ints (``min``, ``max`` and ``step`` are ints)."""
        return all(
            isinstance(v, int) and not isinstance(v, bool) for v in (self.min, self.max, self.step)
        )

    def grid_size(self) -> int:
        """How many values a ``step`` draw chooses from (``min`` + k * ``step`` <= ``max``)."""
        assert self.min is not None and self.max is not None and self.step is not None
        # A tolerance so that 0.1-steps reach a max of 0.3 despite float rounding.
        return math.floor((self.max - self.min) / self.step + 1e-9) + 1


def _lesson(value: Any) -> Any:
    # A bare scalar is a constant: `Cref_signal: 5` means always 5.
    if isinstance(value, (int, float, str, bool)):
        return {"values": [value]}
    return value


def _lesson_map(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _lesson(v) for k, v in value.items()}
    return value


class Advance(_Model):
    """When training moves on from a lesson to the next one.

    Over the lesson's last ``min_episodes`` episodes (and not before it has had that many):
    the mean episode return reaches ``reward`` and the share of episodes that satisfied
    every goal (``goal_success`` at their end) reaches ``success``; both when both are given.
    """

    reward: float | None = Field(None, allow_inf_nan=False)
    success: float | None = Field(None, ge=0, le=1)
    min_episodes: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _some(self) -> Advance:
        if self.reward is None and self.success is None:
            raise ValueError(
                "give reward (episode_reward_mean threshold) and/or success (goal-satisfaction "
                "rate, 0..1)"
            )
        return self


class LessonStage(_Model):
    """One lesson of several: its name, its scenario config, and when to move on."""

    name: str = Field(min_length=1)
    config: dict[str, Lesson] = Field(default_factory=dict)
    advance: Advance | None = None

    @field_validator("config", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _lesson_map(value)


def _lessons_kind(value: Any) -> str:
    return "tag:several" if isinstance(value, list) else "tag:one"


#: ``lessons:`` as one mapping of config parameters, or a list of named lessons.
Lessons = Annotated[
    Annotated[dict[str, Lesson], Tag("tag:one")] | Annotated[list[LessonStage], Tag("tag:several")],
    Discriminator(_lessons_kind),
]


def _checked_address(address: str) -> str:
    check_address(address)
    return address


#: A sim server's address, its port checked (env and training specs alike).
Address = Annotated[str, AfterValidator(_checked_address)]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) → (host, port); port 0 lets the OS pick.

    Raises:
        ValueError: Not ``host:port`` with a port in 0-65535.
    """
    host, sep, port = listen.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{listen!r} is not host:port (e.g. 0.0.0.0:5000; port 0: any free one)")
    return host, int(port)


def _env_text(value: Any) -> Any:
    """A scalar as an environment variable's text (``true``, ``3``); anything else as is."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, (int, float)) else value


class BonsaiSims(_Model):
    """Bonsai SDK sims: ``copies`` of ``command`` simgym starts and serves a Bonsai endpoint to.

    Each copy runs with the spec's folder as its working folder and ``SIM_API_HOST``,
    ``SIM_WORKSPACE`` and ``SIM_ACCESS_KEY`` set; the launcher supervises and restarts it
    (``max_restarts`` per copy, ``restart_backoff`` doubled per restart of that copy).
    ``listen`` is where the endpoint listens; sims started elsewhere join there with the
    access key (``token``, or the variable ``token_env``; without either simgym makes one per
    run, which only its own copies know). ``copies: 0``: every sim joins from elsewhere.
    """

    command: str
    copies: int | None = Field(None, ge=0, le=4096)  # None: the sessions the run needs
    env: dict[str, str] = Field(default_factory=dict)
    max_restarts: int = Field(5, ge=0)
    restart_backoff: float = Field(1.0, ge=0, allow_inf_nan=False)
    listen: str = "127.0.0.1:0"
    token: str | None = None
    token_env: str | None = None
    # Each copy's log is kept under this many MiB (plus its previous part, `<log>.1`).
    log_mb: float = Field(8.0, gt=0, le=4096, allow_inf_nan=False)

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} cannot be split into words: {exc}") from None
        if not words:
            raise ValueError("give the command that starts one sim, e.g. 'python main.py'")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        # YAML reads `SEED: 3` as a number: an environment variable is its text.
        if isinstance(value, Mapping):
            return {k: _env_text(v) for k, v in value.items()}
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @model_validator(mode="after")
    def _reachable(self) -> BonsaiSims:
        host, port = split_listen(self.listen)
        keyed = bool(self.token or self.token_env)
        if not _is_loopback(host) and not keyed:
            raise ValueError(
                f"listen {self.listen} is off loopback: give token or token_env (the sims' "
                "SIM_ACCESS_KEY), so that only sims with the key can join"
            )
        if self.copies == 0 and (port == 0 or not keyed):
            raise ValueError(
                "with copies: 0 (every sim joins from elsewhere), give listen with a fixed port "
                "and token or token_env: the address and key those sims are given"
            )
        return self

    def words(self) -> list[str]:
        """``command`` split as a shell would split it (no shell runs it)."""
        return shlex.split(self.command)

    def resolved_token(self) -> str | None:
        """The access key from ``token`` or the variable ``token_env`` (None: make one)."""
        if self.token_env:
            return os.environ.get(self.token_env) or self.token
        return self.token


def _checked_shape(value: str) -> str:
    from simgym.targets import LoadError, parse_shape

    try:
        parse_shape(value)
    except LoadError as exc:
        raise ValueError(str(exc).removeprefix("--shape ")) from None
    return value


#: ``simserver --shape`` text (``reset=constructor,step=scalar``), checked when loaded.
ShapeText = Annotated[str, AfterValidator(_checked_shape)]


class SimSection(_Model):
    """Where the sim runs: a ``target`` or ``bonsai`` sims simgym starts, or ``address``(es)."""

    target: str | None = None
    bonsai: BonsaiSims | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # How simserver drives the target where its shape cannot be detected (simserver --shape).
    shape: ShapeText | None = None
    workdir: str | None = None
    address: Address | None = None
    addresses: list[Address] | None = None
    token: str | None = None
    token_env: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_server_name: str | None = None
    timeout: float = Field(10.0, gt=0)
    reset_timeout: float = Field(30.0, gt=0)
    connect_timeout: float = Field(30.0, gt=0)
    packed_socket: bool = True

    @model_validator(mode="after")
    def _where(self) -> SimSection:
        given = [k for k in ("target", "bonsai", "address", "addresses") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(
                f"give only one of target, bonsai, address, addresses (got {', '.join(given)})"
            )
        return self

    def resolved_token(self) -> str | None:
        """The token, from ``token`` or the environment variable ``token_env``."""
        if self.token_env:
            return os.environ.get(self.token_env) or self.token
        return self.token

    def address_list(self) -> list[str]:
        """Addresses of servers that are already running (empty for ``target``)."""
        if self.addresses:
            return list(self.addresses)
        return [self.address] if self.address else []


class RewardSpec(_Model):
    """Reward per step: ``function``, ``state``, ``expr`` or ``constant``, times ``scale``.

    ``terminal`` is added once, on the step that ends the episode as terminated (by the
    sim, a ``terminal:`` condition or a goal); docs/spec.md, "Rewards, terminals and goals".
    """

    function: str | None = None
    state: str | None = None
    expr: str | None = None
    constant: float | None = Field(None, allow_inf_nan=False)
    scale: float = 1.0
    terminal: float = 0.0

    @field_validator("expr", mode="before")
    @classmethod
    def _expr_text(cls, value: Any) -> Any:
        return expression_text(value)

    @field_validator("expr")
    @classmethod
    def _expr(cls, value: str | None) -> str | None:
        return check_expression(value)

    @model_validator(mode="after")
    def _one(self) -> RewardSpec:
        given = [
            k for k in ("function", "state", "expr", "constant") if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of function, state, expr or constant")
        return self


class EnvSpec(_Model):
    """A validated env spec (declarative or reference style)."""

    name: str = ""
    sim: SimSection = Field(default_factory=SimSection)
    observations: dict[str, Range] = Field(default_factory=dict)
    # Continuous ranges or discrete choices (gymclient.actions).
    actions: dict[str, ActionSpec] = Field(default_factory=dict)
    reward: RewardSpec | None = None
    log_states: list[str] = Field(default_factory=list)
    # One lesson (a mapping of config parameters) or several ({name, config, advance} each).
    lessons: Lessons = Field(default_factory=dict)
    # What to do with NaN/inf states: end the episode as truncated, or raise.
    on_nonfinite: Literal["truncate", "raise"] = "truncate"
    # What to do when the sim or server fails mid-episode: raise, or end it as truncated.
    on_error: Literal["raise", "truncate"] = "raise"
    max_episode_steps: int | None = Field(None, gt=0)
    # Expressions (gymclient.expr): true ends the episode as terminated / truncated.
    terminal: str | None = None
    truncate: str | None = None
    # Bonsai-style goals (gymclient.goals): reward and termination from target regions.
    goals: dict[str, GoalSpec] = Field(default_factory=dict)
    # Reference style.
    rl_sim_spec: str | None = None
    lessons_file: str | None = None
    # Folder relative paths resolve against (the spec file's folder); set by the loader.
    base_dir: str = "."
    source: str = "<spec>"

    @field_validator("reward", mode="before")
    @classmethod
    def _reward_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"function": value} if ":" in value else {"state": value}
        return value

    @field_validator("terminal", "truncate", mode="before")
    @classmethod
    def _condition_text(cls, value: Any) -> Any:
        return expression_text(value)

    @field_validator("terminal", "truncate")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        return check_expression(value)

    @field_validator("lessons", mode="before")
    @classmethod
    def _lesson_shorthand(cls, value: Any) -> Any:
        return {} if value is None else _lesson_map(value)

    @field_validator("observations", mode="before")
    @classmethod
    def _bare_observations(cls, value: Any) -> Any:
        # `Tout:` (null) or a bare name in a list: an observation without a range.
        if isinstance(value, list) and all(isinstance(i, (str, Mapping)) for i in value):
            out: dict[Any, Any] = {}
            for item in value:
                out.update(item if isinstance(item, Mapping) else {item: None})
            value = out
        if isinstance(value, Mapping):
            return {k: {} if v is None else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _several_lessons(self) -> EnvSpec:
        if isinstance(self.lessons, list):
            if not self.lessons:
                raise ValueError("lessons: give at least one lesson (or leave lessons out)")
            names = [stage.name for stage in self.lessons]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"lessons: each lesson needs its own name ({twice[0]!r} twice)")
            for i, stage in enumerate(self.lessons[:-1]):
                if stage.advance is None:
                    raise ValueError(
                        f"lessons.{i}.advance: lesson {stage.name!r} needs an advance rule "
                        "(reward and/or success) to move on to the next one"
                    )
        return self

    @model_validator(mode="after")
    def _style(self) -> EnvSpec:
        if self.rl_sim_spec:
            if self.observations or self.actions:
                raise ValueError(
                    "a reference-style spec (rl_sim_spec) takes no observations/actions"
                )
        else:
            derived = [name for name, r in self.actions.items() if r.expr]
            if derived:
                raise ValueError(f"actions.{derived[0]}: expr is for observations only")
            if not self.observations:
                raise ValueError("observations: give at least one state name with min/max")
            if not self.actions:
                raise ValueError("actions: give at least one action name with min/max")
        return self

    @property
    def is_reference(self) -> bool:
        """True for an ``RLSimSpec``-driven spec."""
        return self.rl_sim_spec is not None

    # ------------------------------------------------------------------ lessons

    def lesson_stages(self) -> list[LessonStage]:
        """The lessons in order, each with its full config.

        A lesson's config starts from the previous lesson's: keys it leaves out keep their
        earlier draw. One mapping of parameters (the single-lesson form) is one lesson,
        named ``lesson``.
        """
        if not isinstance(self.lessons, list):
            return [LessonStage(name="lesson", config=dict(self.lessons))]
        stages: list[LessonStage] = []
        config: dict[str, Lesson] = {}
        for stage in self.lessons:
            config = {**config, **stage.config}
            stages.append(stage.model_copy(update={"config": config}))
        return stages

    def lesson_config(self, index: int = 0) -> dict[str, Lesson]:
        """The config parameters lesson ``index`` (0-based) draws from."""
        stages = self.lesson_stages()
        return dict(stages[max(0, min(index, len(stages) - 1))].config)

    def lesson_names(self) -> set[str]:
        """Every config parameter name any lesson sets (names expressions may use)."""
        return {key for stage in self.lesson_stages() for key in stage.config}

    def lesson_index(self, ref: str | int | None = None) -> int:
        """The 0-based index of the lesson named ``ref``, or numbered ``ref`` (1-based).

        None: the last lesson (what evaluation uses by default).

        Raises:
            SpecError: No such lesson.
        """
        stages = self.lesson_stages()
        if ref is None:
            return len(stages) - 1
        names = [stage.name for stage in stages]
        if isinstance(ref, str) and ref in names:
            return names.index(ref)
        if str(ref).isdigit() and 1 <= int(ref) <= len(stages):
            return int(ref) - 1
        raise SpecError(
            self.source,
            "lessons",
            f"no lesson {ref!r} (the lessons: "
            + ", ".join(f"{i + 1} {n}" for i, n in enumerate(names))
            + ")",
        )

    def path(self, relative: str) -> Path:
        """Resolve a path written in the spec against the spec's folder."""
        p = Path(relative)
        return p if p.is_absolute() else (Path(self.base_dir) / p)

    @property
    def workdir(self) -> Path:
        """Folder the sim server runs from: ``sim.workdir`` (against the spec's folder), else it."""
        return self.path(self.sim.workdir) if self.sim.workdir else Path(self.base_dir)


def _key(loc: tuple[Any, ...]) -> str:
    parts = [
        str(p)
        for p in loc
        if not (isinstance(p, str) and ("[" in p or p.startswith(("function-", "tag:"))))
    ]
    return ".".join(parts)


def problems(exc: ValidationError, fields_at: Any = None) -> list[tuple[str, str]]:
    """Every problem of a failed validation as (key, message), unknown keys first.

    An unknown key first: a typo (`maxx`) also makes the real key (`max`) "missing", and
    the typo is what the user has to fix; the real key's "missing" then goes (it would only
    repeat the typo). A problem the model validator of an enclosing section reports with
    its own key (``lessons.0.advance: ...``) keeps that key.
    """
    import difflib

    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    unknown: dict[tuple[Any, ...], list[str]] = {}
    for e in errors:
        if e["type"] == "extra_forbidden":
            unknown.setdefault(tuple(e["loc"][:-1]), []).append(str(e["loc"][-1]))
    out: list[tuple[str, str]] = []
    for err in errors:
        loc = tuple(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        typos = unknown.get(loc[:-1], [])
        if msg == "Field required" and difflib.get_close_matches(str(loc[-1]), typos, cutoff=0.6):
            continue  # the typo's own line says it (`maxx` for `max`)
        if (
            len(loc) > 1
            and loc[-1] in ("int", "float")
            and err["type"].startswith(("int_", "float_"))
        ):
            # `int | float` reports each member: one problem, "not a number".
            loc, msg = loc[:-1], "Input should be a number"
        key = _key(loc)
        if err["type"] == "extra_forbidden":
            msg = _unknown_key(loc, fields_at)
        elif ": " in msg and " " not in msg.split(": ", 1)[0]:
            # "lessons.0.advance: ..." from a section's own check: that key, under this one.
            inner, msg = msg.split(": ", 1)
            key = ".".join(k for k in (key, inner) if k)
        if (key, msg) not in out:
            out.append((key, msg))
    return out


def _from_mapping(data: Any, source: str, base_dir: Path) -> EnvSpec:
    if not isinstance(data, Mapping):
        raise SpecError(
            source, "", f"expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return EnvSpec.model_validate({**data, "base_dir": str(base_dir), "source": source})
    except ValidationError as exc:
        found = problems(exc)
        raise SpecError(source, *found[0], more=found[1:]) from None


def _unknown_key(loc: tuple[Any, ...], fields_at: Any = None) -> str:
    """The message for an unknown key, with the nearest known one if it looks like a typo."""
    import difflib

    known = (fields_at or _fields_at)(loc[:-1])
    if {"min", "max", "step", "values"} <= set(known) and str(loc[-1]) in _INT_WORDS:
        return "unknown key (integers: give step, e.g. {min: 18, max: 24, step: 1})"
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    if known:
        return f"unknown key (known keys: {', '.join(known)})"
    return "unknown key (check its spelling)"


_INT_WORDS = ("int", "integer", "integers", "type", "dtype", "discrete")


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys a spec accepts at ``loc`` (a pydantic error location), or [] if unknown."""
    tp: Any = EnvSpec
    for part in (*loc, None):
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        # Unwrap `X | None`.
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
            tp = args[0]
        if isinstance(part, str) and part.startswith("tag:"):
            # A tagged union's member (`lessons`: one mapping or a list of lessons).
            for member in args:
                if any(
                    getattr(m, "tag", None) == part for m in getattr(member, "__metadata__", ())
                ):
                    tp = typing.get_args(member)[0]
            continue
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue  # a validator's wrapper, not a key
        if part is None:
            break
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            return []
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [name for name in tp.model_fields if name not in ("base_dir", "source")]
    return []


def check_address(address: str) -> None:
    """``check_port`` for validators: its message as a ``ValueError`` (pydantic adds the key)."""
    from gymclient.connection import check_port

    try:
        check_port(address)
    except SimgymError as exc:
        raise ValueError(str(exc)) from None


def read_text(path: Path, source: str | None = None) -> str:
    """A spec file's text, or one line naming the file (not UTF-8, unreadable).

    Raises:
        SpecError: The file cannot be read or is not UTF-8 text.
    """
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            source or str(path),
            "",
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8",
        ) from None
    except OSError as exc:
        raise SpecError(source or str(path), "", f"cannot read it: {exc.strerror or exc}") from None


def reference_folder_spec(folder: Path) -> EnvSpec:
    """Build a spec for an unedited reference-style folder.

    Raises:
        SpecError: A required file is missing.
    """
    folder = folder.resolve()
    needed = {
        "sim/simulator_model.py": folder / "sim" / "simulator_model.py",
        "training_setup/rl_sim_spec.py": folder / "training_setup" / "rl_sim_spec.py",
    }
    for rel, path in needed.items():
        if not path.is_file():
            raise SpecError(str(folder), rel, "missing: a reference-style folder needs this file")
    lessons = folder / "training_setup" / "rl_lesson.yml"
    data = {
        "name": folder.name,
        "sim": {"target": "sim/simulator_model.py:SimulatorModel", "workdir": "."},
        "rl_sim_spec": "training_setup/rl_sim_spec.py:RLSimSpec",
        "lessons_file": "training_setup/rl_lesson.yml" if lessons.is_file() else None,
    }
    return _from_mapping(data, str(folder), folder)


def load_spec(path: str | os.PathLike[str]) -> EnvSpec:
    """Load and validate a spec file (YAML), or a reference-style folder.

    Raises:
        SpecError: Naming the file and the key at fault.
    """
    p = Path(path)
    if p.is_dir():
        return reference_folder_spec(p)
    if not p.is_file():
        raise SpecError(str(p), "", "no such file")
    try:
        data = yaml.safe_load(read_text(p))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise SpecError(str(p), where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    spec = _from_mapping(data, str(p), p.resolve().parent)
    _check_files(spec)
    return spec


def _check_files(spec: EnvSpec) -> None:
    """Fail at load time, not in a Ray worker, when a referenced file is missing."""
    refs: list[tuple[str, str | None]] = [
        ("reward.function", spec.reward.function if spec.reward else None),
        ("rl_sim_spec", spec.rl_sim_spec),
        ("lessons_file", spec.lessons_file),
        ("sim.target", spec.sim.target),
    ]
    for key, ref in refs:
        if not ref or ref.startswith(("gymnasium:", "gym:")):
            continue
        file_part = (
            ref.rpartition(":")[0] if ":" in ref and not ref.endswith((".yml", ".yaml")) else ref
        )
        if file_part.endswith((".py", ".yml", ".yaml")):
            base = spec.workdir if key == "sim.target" else Path(spec.base_dir)
            target = Path(file_part) if Path(file_part).is_absolute() else base / file_part
            if not target.is_file():
                raise SpecError(spec.source, key, f"file not found: {target}")
    if spec.sim.bonsai is not None:
        check_script(spec.sim.bonsai, spec.workdir, spec.source, "sim.bonsai.command")


def check_script(bonsai: BonsaiSims, workdir: Path, source: str, key: str) -> None:
    """The script of ``python main.py`` must exist where the copies will run.

    Raises:
        SpecError: It does not.
    """
    scripts = [w for w in bonsai.words()[1:] if w.endswith(".py") and not w.startswith("-")]
    if scripts and not (workdir / scripts[0]).is_file():
        raise SpecError(source, key, f"file not found: {workdir / scripts[0]}")


def load_lessons(path: Path, source: str | None = None) -> dict[str, Lesson]:
    """Load a reference ``rl_lesson.yml``.

    Raises:
        SpecError: The file is malformed.
    """
    src = source or str(path)
    try:
        data = yaml.safe_load(read_text(path, src)) or {}
    except yaml.YAMLError as exc:
        raise SpecError(src, "", f"cannot read lessons: {exc}") from None
    if not isinstance(data, Mapping):
        raise SpecError(src, "", "expected a mapping of config name → {min, max} or {values}")
    lessons: dict[str, Lesson] = {}
    found: list[tuple[str, str]] = []  # every problem of the file, not only the first
    for key, value in data.items():
        try:
            lessons[str(key)] = Lesson.model_validate(_lesson(value))
        except ValidationError as exc:
            found += [
                (".".join(k for k in (str(key), sub) if k), msg) for sub, msg in problems(exc)
            ]
    if found:
        raise SpecError(src, *found[0], more=found[1:])
    return lessons
