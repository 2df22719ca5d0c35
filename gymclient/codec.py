"""Codecs: the spec applied to one session's names.

A codec turns the sim's packed state array into the agent's observation (in
[-1, 1], with clip counts), the agent's action in [-1, 1] into the sim's packed
action array, and states into a reward. ``DeclarativeCodec`` implements the YAML
spec with precomputed index and scale arrays (no per-step name lookups);
``ReferenceCodec`` drives an unedited ``RLSimSpec`` class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gymclient.actions import ActionMap
from gymclient.errors import RewardError, SpecError, SpecMismatch
from gymclient.expr import compile_expr
from gymclient.spec import EnvSpec, Lesson, load_lessons
from simgym.targets import LoadError, resolve_class

RewardFn = Callable[[dict[str, float], bool, bool], Any]


class Codec(Protocol):
    """What the env needs from a spec once it knows the session's names."""

    obs_names: list[str]
    action_names: list[str]
    lessons: dict[str, Lesson]
    log_states: list[str]

    def action_space(self) -> Any:
        """The agent's action space: ``Box(-1, 1)``, ``Discrete`` or ``MultiDiscrete``."""
        ...

    def deterministic(self, dist_inputs: np.ndarray) -> Any:
        """The greedy action from one row of an RLlib module's ``action_dist_inputs``."""
        ...

    def encode(
        self, states: dict[str, float], values: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Observation (float32 in [-1, 1]) and a bool mask of clipped entries."""
        ...

    def observe(
        self, states: dict[str, float], values: Sequence[float]
    ) -> tuple[np.ndarray, list[int]]:
        """``encode`` for one env step: NaN entries replaced by 0, clipped entries by index.

        The single-env hot path; what ``SimEnv`` feeds the agent.
        """
        ...

    def decode(self, action: Any) -> list[float]:
        """Agent action → sim action values in the session's action order."""
        ...

    def encode_batch(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``encode`` for a (sessions × states) array; rows are sessions."""
        ...

    def decode_batch(self, actions: np.ndarray) -> np.ndarray:
        """``decode`` for a (sessions × actions) array."""
        ...

    def reward(
        self, states: dict[str, float], terminated: bool, truncated: bool, sim_reward: float | None
    ) -> tuple[float, bool, bool]:
        """Reward and possibly adjusted flags."""
        ...


def load_attr(spec: EnvSpec, ref: str, key: str) -> Any:
    """Load ``file.py:name`` (relative to the spec's folder) or ``module:name``.

    Raises:
        SpecError: Naming the spec key when the file or attribute cannot be loaded.
    """
    module_part, _, attr = ref.rpartition(":")
    if module_part.endswith(".py"):
        ref = f"{spec.path(module_part).resolve()}:{attr}"
    try:
        return resolve_class(ref)
    except LoadError as exc:
        raise SpecError(spec.source, key, str(exc)) from None


def declared_integer_actions(spec: EnvSpec) -> list[str]:
    """Discrete actions with integer values: the server hands them to the sim as ints."""
    if spec.is_reference:
        return []
    return [name for name, a in spec.actions.items() if a.integer()]


def declared_action_names(spec: EnvSpec) -> list[str]:
    """Action names the client announces in ``Open``."""
    if not spec.is_reference:
        return list(spec.actions)
    rl_spec = load_attr(spec, spec.rl_sim_spec or "", "rl_sim_spec")()
    n = int(getattr(rl_spec, "action_len", 1))
    return list(rl_spec.gym_action_to_sim(np.zeros(n, dtype=np.float32)))


class DeclarativeCodec:
    """The YAML spec: ranges → linear maps to [-1, 1]."""

    def __init__(
        self,
        spec: EnvSpec,
        state_names: list[str],
        action_names: list[str],
        action_values: Mapping[str, Sequence[float]] | None = None,
        action_bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
    ) -> None:
        self.spec = spec
        index = {name: i for i, name in enumerate(state_names)}
        # Derived observations (expr) are computed per step; plain ones are gathered by index.
        self._derived: list[tuple[int, Callable[[Sequence[float]], float]]] = []
        for j, (name, r) in enumerate(spec.observations.items()):
            if r.expr:
                try:
                    self._derived.append((j, compile_expr(r.expr, index)))
                except KeyError as exc:
                    raise SpecMismatch(
                        f"{spec.source}: observations.{name}.expr: the sim has no state "
                        f"{exc.args[0]!r} (it has: {', '.join(state_names)})"
                    ) from None
            elif name not in index:
                raise SpecMismatch(
                    f"{spec.source}: observations.{name}: the sim has no state {name!r} "
                    f"(it has: {', '.join(state_names)})"
                )
        for name in spec.log_states:
            if name not in index:
                raise SpecMismatch(
                    f"{spec.source}: log_states: the sim has no state {name!r} "
                    f"(it has: {', '.join(state_names)})"
                )
        if set(spec.actions) != set(action_names):
            raise SpecMismatch(
                f"{spec.source}: actions: the spec names {sorted(spec.actions)} but the sim "
                f"takes {sorted(action_names)}"
            )
        self.obs_names = list(spec.observations)
        self.action_names = list(action_names)
        self.lessons = spec.lesson_config(0)  # training's first lesson; set_lesson moves on
        self.log_states = list(spec.log_states)
        self._idx = np.array(
            [index.get(n, 0) if not r.expr else 0 for n, r in spec.observations.items()],
            dtype=np.intp,
        )
        # An observation without a range (estimated by launcher.ranges before training)
        # passes through as is, clipped to [-1, 1], until its range is filled in.
        lo = np.array([-1.0 if r.min is None else r.min for r in spec.observations.values()])
        hi = np.array([1.0 if r.max is None else r.max for r in spec.observations.values()])
        self._obs_lo, self._obs_scale = lo, 2.0 / (hi - lo)
        # Discrete actions (an index per action -> the value the sim receives), or ranges.
        self.actions = ActionMap(
            spec.source, spec.actions, action_names, action_values, action_bounds
        )
        alo = np.array([lo for lo, _ in self.actions.ranges])
        ahi = np.array([hi for _, hi in self.actions.ranges])
        self._act_lo, self._act_half = alo, (ahi - alo) / 2.0
        # The same maps as Python floats, for the single-env path: on a handful of values,
        # plain float arithmetic is several times cheaper than numpy's per-call overhead
        # (and gives the same float64 results, operation for operation).
        self._obs_map = list(
            zip(self._idx.tolist(), lo.tolist(), self._obs_scale.tolist(), strict=True)
        )
        self._act_map = list(zip(alo.tolist(), self._act_half.tolist(), strict=True))
        self._reward_fn: RewardFn | None = None
        self._reward_state: str | None = None
        if spec.reward is not None:
            if spec.reward.function:
                self._reward_fn = load_attr(spec, spec.reward.function, "reward.function")
                if not callable(self._reward_fn):
                    raise SpecError(
                        spec.source, "reward.function", f"{spec.reward.function} is not callable"
                    )
            elif spec.reward.state is not None:  # expr/constant: gymclient.goals computes it
                self._reward_state = spec.reward.state
                if self._reward_state not in index:
                    raise SpecMismatch(
                        f"{spec.source}: reward.state: the sim has no state {self._reward_state!r}"
                    )

    def encode(
        self, states: dict[str, float], values: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        raw = self.raw_observations(values)
        obs = (raw - self._obs_lo) * self._obs_scale - 1.0
        clipped = (obs < -1.0) | (obs > 1.0)
        np.clip(obs, -1.0, 1.0, out=obs)
        return obs.astype(np.float32), clipped

    def observe(
        self, states: dict[str, float], values: Sequence[float]
    ) -> tuple[np.ndarray, list[int]]:
        obs: list[float] = []
        clipped: list[int] = []
        raw = [values[i] for i, _, _ in self._obs_map]
        for j, fn in self._derived:
            try:
                raw[j] = fn(values)
            except (ArithmeticError, ValueError):  # e.g. log of a negative: not a number
                raw[j] = math.nan
        for j, (x, (_, lo, scale)) in enumerate(zip(raw, self._obs_map, strict=True)):
            y = (x - lo) * scale - 1.0
            if y > 1.0:
                y = 1.0
                clipped.append(j)
            elif y < -1.0:
                y = -1.0
                clipped.append(j)
            elif y != y:  # NaN: 0 for the agent (what np.nan_to_num does); never "clipped"
                y = 0.0
            obs.append(y)
        return np.array(obs, np.float32), clipped

    def raw_observations(self, values: Sequence[float]) -> np.ndarray:
        """Observed quantities in physical units, before normalisation."""
        raw = np.asarray(values, dtype=np.float64)[self._idx]
        for j, fn in self._derived:
            try:
                raw[j] = fn(values)
            except (ArithmeticError, ValueError):  # e.g. log of a negative: not a number
                raw[j] = np.nan
        return raw

    def action_space(self) -> Any:
        return self.actions.space()

    def deterministic(self, dist_inputs: np.ndarray) -> Any:
        return self.actions.deterministic(dist_inputs)

    def decode(self, action: Any) -> list[float]:
        if self.actions.discrete or self.actions.mixed:
            # The chosen values themselves (ints stay ints): what the sim receives.
            return self.actions.values(action)  # type: ignore[return-value]
        if isinstance(action, np.ndarray) and action.ndim == 1 and action.dtype.kind == "f":
            values = action.tolist()  # float32 → the same values as float64, as astype does
            if len(values) == len(self._act_map):
                # min/max clip like np.clip, NaN included (it stays NaN: the server refuses it).
                return [
                    (min(max(v, -1.0), 1.0) + 1.0) * half + lo
                    for v, (lo, half) in zip(values, self._act_map, strict=True)
                ]
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if a.shape[0] != len(self.action_names):
            raise ValueError(f"action has {a.shape[0]} values; expected {len(self.action_names)}")
        return ((a + 1.0) * self._act_half + self._act_lo).tolist()

    def encode_batch(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # One numpy pass for all sessions: per-row calls cost ~10 µs each in overhead.
        raw = values[:, self._idx]
        if self._derived:
            # Expressions run on Python floats, as in `encode` (a numpy row would make every
            # index and operation a numpy scalar call, and turn x/0 into inf, not NaN).
            rows = values.tolist()
            for j, fn in self._derived:
                column = []
                for row in rows:
                    try:
                        column.append(fn(row))
                    except (ArithmeticError, ValueError):
                        column.append(math.nan)
                raw[:, j] = column
        obs = (raw - self._obs_lo) * self._obs_scale - 1.0
        clipped = (obs < -1.0) | (obs > 1.0)
        np.clip(obs, -1.0, 1.0, out=obs)
        return obs.astype(np.float32), clipped

    def decode_batch(self, actions: np.ndarray) -> np.ndarray:
        if self.actions.discrete or self.actions.mixed:
            return self.actions.values_batch(actions)
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        return (a + 1.0) * self._act_half + self._act_lo

    def reward(
        self, states: dict[str, float], terminated: bool, truncated: bool, sim_reward: float | None
    ) -> tuple[float, bool, bool]:
        spec = self.spec.reward
        if spec is None:
            if sim_reward is None:
                raise SpecMismatch(
                    f"{self.spec.source}: reward: the sim computes no reward; give "
                    "`reward: file.py:function` or `reward: <state name>`"
                )
            return sim_reward, terminated, truncated
        if self._reward_fn is not None:
            # A user's function: any exception, or a result that is no number, is a spec
            # problem to report as such, not a traceback from deep inside the env.
            try:
                out = self._reward_fn(states, terminated, truncated)
            except Exception as exc:
                raise self._reward_error(_raised(exc)) from exc
            try:
                if isinstance(out, tuple):  # reference-compatible (reward, terminated, truncated)
                    r, terminated, truncated = float(out[0]), bool(out[1]), bool(out[2])
                else:
                    r = float(out)
            except (TypeError, ValueError, IndexError):
                raise self._reward_error(_not_a_reward(out)) from None
        else:
            assert self._reward_state is not None
            r = float(states[self._reward_state])
        r *= spec.scale
        if terminated:
            r += spec.terminal
        return r, terminated, truncated

    def _reward_error(self, problem: str) -> RewardError:
        function = self.spec.reward.function if self.spec.reward else ""
        return RewardError(f"{self.spec.source}: reward.function: {function} {problem}")


class ReferenceCodec:
    """An unedited reference ``RLSimSpec`` plus ``rl_lesson.yml``."""

    def __init__(self, spec: EnvSpec, state_names: list[str], action_names: list[str]) -> None:
        self.spec = spec
        self._rl = load_attr(spec, spec.rl_sim_spec or "", "rl_sim_spec")()
        n_obs = int(getattr(self._rl, "obs_state_len", 0))
        if n_obs <= 0:
            raise SpecError(
                spec.source, "rl_sim_spec", "RLSimSpec.obs_state_len must be a positive int"
            )
        self.obs_names = [f"obs[{i}]" for i in range(n_obs)]
        self.action_names = list(action_names)
        self._n_act = int(getattr(self._rl, "action_len", len(action_names)))
        self.log_states = list(getattr(self._rl, "sim_states_to_log", []) or [])
        self.lessons = (
            load_lessons(spec.path(spec.lessons_file), spec.lessons_file)
            if spec.lessons_file
            else {}
        )
        self._state_names = state_names

    def action_space(self) -> Any:
        from gymnasium import spaces

        return spaces.Box(-1.0, 1.0, (len(self.action_names),), np.float32)

    def deterministic(self, dist_inputs: np.ndarray) -> Any:
        return np.asarray(dist_inputs).reshape(-1)[: len(self.action_names)]

    def encode(
        self, states: dict[str, float], values: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        obs = np.asarray(self._rl.sim_state_to_gym(states), dtype=np.float64).reshape(-1)
        if obs.shape[0] != len(self.obs_names):
            raise SpecMismatch(
                f"RLSimSpec.sim_state_to_gym returned {obs.shape[0]} values; "
                f"obs_state_len is {len(self.obs_names)}"
            )
        clipped = (obs < -1.0) | (obs > 1.0)
        np.clip(obs, -1.0, 1.0, out=obs)
        return obs.astype(np.float32), clipped

    def observe(
        self, states: dict[str, float], values: Sequence[float]
    ) -> tuple[np.ndarray, list[int]]:
        obs, clipped = self.encode(states, values)
        if not np.isfinite(obs).all():
            obs = np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=-1.0)
        return obs, np.flatnonzero(clipped).tolist()

    def encode_batch(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = [
            self.encode(dict(zip(self._state_names, v, strict=True)), v) for v in values.tolist()
        ]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

    def decode_batch(self, actions: np.ndarray) -> np.ndarray:
        return np.array([self.decode(a) for a in actions], dtype=np.float64)

    def decode(self, action: Any) -> list[float]:
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), -1.0, 1.0)
        action_dict = self._rl.gym_action_to_sim(a)
        try:
            return [float(action_dict[n]) for n in self.action_names]
        except KeyError as exc:
            raise SpecMismatch(
                f"RLSimSpec.gym_action_to_sim returned no value for action {exc.args[0]!r}"
            ) from None

    def reward(
        self, states: dict[str, float], terminated: bool, truncated: bool, sim_reward: float | None
    ) -> tuple[float, bool, bool]:
        where = f"{self.spec.source}: rl_sim_spec: {self.spec.rl_sim_spec}"
        try:
            out = self._rl.compute_reward_term_and_trun(states, terminated, truncated)
        except Exception as exc:
            raise RewardError(f"{where} compute_reward_term_and_trun {_raised(exc)}") from exc
        try:
            r, terminated, truncated = out
            return float(r), bool(terminated), bool(truncated)
        except (TypeError, ValueError):
            raise RewardError(
                f"{where} compute_reward_term_and_trun returned {_short(out)}; it must return "
                "(reward, terminated, truncated)"
            ) from None


def _raised(exc: Exception) -> str:
    return f"raised {type(exc).__name__}: {exc}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _not_a_reward(out: Any) -> str:
    return (
        f"returned {_short(out)}; a reward function returns a number or "
        "(reward, terminated, truncated)"
    )


def build_codec(
    spec: EnvSpec,
    state_names: list[str],
    action_names: list[str],
    action_values: Mapping[str, Sequence[float]] | None = None,
    action_bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> Codec:
    """The codec for a spec and a session's names (and what its sim declares of actions)."""
    if spec.is_reference:
        return ReferenceCodec(spec, state_names, action_names)
    return DeclarativeCodec(spec, state_names, action_names, action_values, action_bounds)


def session_codec(spec: EnvSpec, session: Any) -> Codec:
    """``build_codec`` for an open ``RemoteSession``.

    With its names, and the values and bounds its sim declares for actions (a hosted
    Gymnasium ``Discrete``'s values).
    """
    values = {v.name: list(v.values) for v in session.info.actions if v.values}
    bounds = {
        v.name: (
            v.low if v.HasField("low") else None,
            v.high if v.HasField("high") else None,
        )
        for v in session.info.actions
    }
    return build_codec(spec, session.state_names, session.action_names, values, bounds)


def sample_config(lessons: dict[str, Lesson], rng: np.random.Generator) -> dict[str, Any]:
    """Draw one scenario config from lessons (reproducible for a seeded ``rng``)."""
    config: dict[str, Any] = {}
    for key, lesson in lessons.items():
        if lesson.values is not None:
            config[key] = lesson.values[int(rng.integers(len(lesson.values)))]
        elif lesson.step is not None:
            k = int(rng.integers(lesson.grid_size()))
            assert lesson.min is not None
            if lesson.integer:  # `{min: 18, max: 24, step: 1}`: a sim may index with it
                config[key] = int(lesson.min) + k * int(lesson.step)
            else:  # rounded, so that 0.1-steps give 0.3, not 0.30000000000000004
                config[key] = round(float(lesson.min) + k * float(lesson.step), 12)
        else:
            assert lesson.min is not None and lesson.max is not None
            config[key] = float(rng.uniform(lesson.min, lesson.max))
    return config


__all__ = [
    "Codec",
    "Path",
    "build_codec",
    "declared_action_names",
    "declared_integer_actions",
    "sample_config",
    "session_codec",
]
