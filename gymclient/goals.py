"""Rewards, terminals and goals written in the spec, applied step by step.

The spec's ``reward: {expr: ...}`` / ``{constant: c}``, ``terminal:``, ``truncate:`` and
``goals:`` (Bonsai-style ``avoid``/``drive``/``reach``/``minimize``/``maximize``) are
expressions of ``gymclient.expr`` over the sim's states, the spec's derived observations,
the episode's config and ``steps``. ``StepRules`` compiles all of them, for one session's
names, into ONE generated function called once per step, and keeps the per-episode goal
bookkeeping. The formulas are in docs/spec.md ("Rewards, terminals and goals"); the
constants they use are named here.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gymclient.errors import RewardError, SpecMismatch
from gymclient.expr import build_function, parse, parse_derived, rewrite

KINDS = ("avoid", "drive", "reach", "minimize", "maximize")

#: The horizon H of the reach bonus when the spec sets no ``max_episode_steps``
#: (Bonsai's default EpisodeIterationLimit).
DEFAULT_HORIZON = 1000

# The logistic of minimize/maximize is flat beyond |z| = 50 (e^-50 ~ 2e-22): clip z there
# so that exp never overflows.
_Z_MAX = 50.0


def expression_text(value: Any) -> Any:
    """A pydantic before-validator: a number is an expression's text (``drive: 3``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def check_expression(value: str | None) -> str | None:
    """A pydantic validator: the expression parses (the error names the key)."""
    if value is not None:
        parse(value)
    return value


class GoalSpec(BaseModel):
    """One goal: a kind with its expression, a target region, ``within``, ``weight``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    avoid: str | None = None
    drive: str | None = None
    reach: str | None = None
    minimize: str | None = None
    maximize: str | None = None
    # Bounds are numbers, or expressions evaluated every step (a target that moves: Inkling's
    # Goal.Sphere(c, r) is `range: ["c - r", "c + r"]`); avoid, drive and reach only.
    range: list[float | str] | None = None
    above: float | str | None = None
    below: float | str | None = None
    within: int | None = Field(None, gt=0)
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    scale: float | None = Field(None, gt=0, allow_inf_nan=False)

    @field_validator(*KINDS, mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return expression_text(value)

    @field_validator(*KINDS)
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        return check_expression(value)

    @field_validator("range")
    @classmethod
    def _pair(cls, value: list[float | str] | None) -> list[float | str] | None:
        if value is not None:
            if len(value) != 2:
                raise ValueError(f"give [lo, hi], got {len(value)} number(s)")
            for bound in value:
                _bound(bound)
        return value

    @field_validator("above", "below")
    @classmethod
    def _threshold(cls, value: float | str | None) -> float | str | None:
        return None if value is None else _bound(value)

    @model_validator(mode="after")
    def _consistent(self) -> GoalSpec:
        kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = f" (got {', '.join(kinds)})" if kinds else ""
            raise ValueError(f"give exactly one of {', '.join(KINDS)}{got}")
        regions = [k for k in ("range", "above", "below") if getattr(self, k) is not None]
        if len(regions) != 1:
            got = f" (got {', '.join(regions)})" if regions else ""
            raise ValueError(f"give exactly one of range: [lo, hi], above: x, below: x{got}")
        lo, hi = self.bounds
        if isinstance(lo, float) and isinstance(hi, float) and hi < lo:
            raise ValueError(f"range {list(self.range or [])}: give [lo, hi] with lo <= hi")
        kind = kinds[0]
        if self.moving and kind in ("minimize", "maximize"):
            raise ValueError(f"{kind} takes numbers as bounds (an episode mean is judged by them)")
        if kind == "minimize" and self.above is not None:
            raise ValueError("minimize takes below: x or range: [lo, hi], not above")
        if kind == "maximize" and self.below is not None:
            raise ValueError("maximize takes above: x or range: [lo, hi], not below")
        if self.within is not None and kind not in ("drive", "reach"):
            raise ValueError(f"within is for drive and reach goals, not {kind}")
        return self

    @property
    def kind(self) -> str:
        """Which of ``KINDS`` the goal is."""
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def text(self) -> str:
        """The goal's expression."""
        return str(getattr(self, self.kind))

    @property
    def bounds(self) -> tuple[float | str, float | str]:
        """The region [lo, hi] (to stay out of, for avoid): numbers (maybe infinite) or texts."""
        if self.range is not None:
            lo, hi = self.range
            return _as_float(lo), _as_float(hi)
        if self.above is not None:
            return _as_float(self.above), math.inf
        assert self.below is not None
        return -math.inf, _as_float(self.below)

    @property
    def moving(self) -> bool:
        """True when a bound is an expression (evaluated every step)."""
        return any(isinstance(b, str) for b in self.bounds)

    @property
    def region(self) -> tuple[float, float]:
        """The region of a goal with number bounds."""
        lo, hi = self.bounds
        assert isinstance(lo, float) and isinstance(hi, float), "moving bounds: see StepRules"
        return lo, hi


def _bound(value: float | str) -> float | str:
    """A bound: a finite number, or an expression (checked)."""
    if isinstance(value, str):
        check_expression(value)
    elif not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


def _as_float(value: float | str) -> float | str:
    return value if isinstance(value, str) else float(value)


def default_scale(scale: float | None, lo: float, hi: float) -> float:
    """``scale``, else the range's width, else |threshold|, else 1 (see docs/spec.md)."""
    if scale is not None:
        return float(scale)
    if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
        return hi - lo
    edge = lo if math.isfinite(lo) else hi
    return abs(edge) if edge != 0 else 1.0


def _static(goal: GoalSpec) -> tuple[float, float, float]:
    """A goal's number bounds and scale (a moving bound's placeholders: ±inf, 1)."""
    lo, hi = goal.bounds
    lo_f = lo if isinstance(lo, float) else -math.inf
    hi_f = hi if isinstance(hi, float) else math.inf
    if goal.moving:
        return lo_f, hi_f, 1.0
    return lo_f, hi_f, default_scale(goal.scale, lo_f, hi_f)


def derived_names(spec: Any) -> dict[str, str]:
    """The spec's derived observations: name → expression."""
    observations = getattr(spec, "observations", {}) or {}
    return {n: r.expr for n, r in observations.items() if getattr(r, "expr", None)}


def config_names(spec: Any, lessons: Any) -> list[str]:
    """Config names an episode may carry: every lesson's, and the codec's (reference style)."""
    names: set[str] = set()
    lesson_names = getattr(spec, "lesson_names", None)
    if callable(lesson_names):  # one lesson or several (gymclient.spec)
        names.update(lesson_names())
    if isinstance(lessons, Mapping):  # a reference spec's rl_lesson.yml
        names.update(str(k) for k in lessons)
    return sorted(names)


def uses_rules(spec: Any) -> bool:
    """True when the spec has anything ``StepRules`` applies (else the env's fast path)."""
    reward = getattr(spec, "reward", None)
    return bool(
        getattr(spec, "goals", None)
        or getattr(spec, "terminal", None)
        or getattr(spec, "truncate", None)
        or (reward is not None and (reward.expr is not None or reward.constant is not None))
    )


class _Names:
    """Resolves names in order: state, derived observation, config, ``steps``."""

    def __init__(self, states: Iterable[str], derived: Mapping[str, str], config: Iterable[str]):
        self.states = list(states)
        self._state_set = set(self.states)
        self.derived = dict(derived)
        self.config = [c for c in config]
        self._config_set = set(self.config)
        self._inlined: dict[str, ast.expr] = {}

    def known(self) -> str:
        groups = [
            ("states", self.states),
            ("derived", list(self.derived)),
            ("config", self.config),
        ]
        text = "; ".join(f"{g}: {', '.join(n)}" for g, n in groups if n)
        return f"{text}; steps" if text else "steps"

    def resolve(self, name: str) -> ast.expr:
        if name in self._state_set:
            return ast.Subscript(ast.Name("s", ast.Load()), ast.Constant(name), ast.Load())
        if name in self.derived:
            # Inlined: a derived observation is arithmetic over states (parse_derived).
            parse_derived(self.derived[name])
            return rewrite(self.derived[name], self._state_only)
        if name in self._config_set:
            return ast.Subscript(ast.Name("c", ast.Load()), ast.Constant(name), ast.Load())
        if name == "steps":
            return ast.Name("steps", ast.Load())
        raise KeyError(name)

    def _state_only(self, name: str) -> ast.expr:
        if name in self._state_set:
            return ast.Subscript(ast.Name("s", ast.Load()), ast.Constant(name), ast.Load())
        raise KeyError(name)


class StepRules:
    """The spec's reward/terminal/truncate expressions and goals for one session.

    Args:
        spec: The env spec.
        state_names: The session's state names.
        lessons: The codec's lessons (their config names are known names).
        base_reward: The codec's reward (``reward: file.py:function`` / ``state`` / the
            sim's / a reference spec's), used when the spec gives no ``expr``/``constant``
            reward and either gives some reward or has no goals.

    Raises:
        SpecMismatch: An expression reads a name the session does not know (naming the key).
    """

    def __init__(
        self,
        spec: Any,
        state_names: Sequence[str],
        lessons: Any,
        base_reward: Callable[..., tuple[float, bool, bool]],
    ) -> None:
        self.source = spec.source
        self._names = _Names(state_names, derived_names(spec), config_names(spec, lessons))
        reward = spec.reward
        self._scale = float(reward.scale) if reward is not None else 1.0
        self._terminal_bonus = (
            float(reward.terminal) if reward is not None and not spec.is_reference else 0.0
        )
        self._constant: float | None = None
        self._base = None
        entries: list[tuple[str, str]] = []  # (spec key, expression), in the tuple's order
        if reward is not None and reward.expr is not None:
            entries.append(("reward.expr", reward.expr))
        elif reward is not None and reward.constant is not None:
            self._constant = float(reward.constant)
        elif reward is not None or spec.is_reference or not spec.goals:
            self._base = base_reward
        self._reward_slot = 0 if entries else -1
        self._terminal_slot = self._truncate_slot = -1
        if spec.terminal:
            self._terminal_slot = len(entries)
            entries.append(("terminal", spec.terminal))
        if spec.truncate:
            self._truncate_slot = len(entries)
            entries.append(("truncate", spec.truncate))
        self._goal_start = len(entries)
        goals: dict[str, GoalSpec] = dict(spec.goals or {})
        for name, goal in goals.items():
            entries.append((f"goals.{name}.{goal.kind}", goal.text))
        # Moving bounds: (lo slot, hi slot) in the tuple (-1: a number), after the values.
        self._moving: list[tuple[int, int] | None] = []
        for name, goal in goals.items():
            slots = []
            key = (
                "range"
                if goal.range is not None
                else "above"
                if goal.above is not None
                else "below"
            )
            for bound in goal.bounds:
                if isinstance(bound, str):
                    slots.append(len(entries))
                    entries.append((f"goals.{name}.{key}", bound))
                else:
                    slots.append(-1)
            self._moving.append((slots[0], slots[1]) if goal.moving else None)
        self._entries = entries
        bodies = [self._tree(key, text) for key, text in entries]
        self._fn = build_function(
            ["s", "c", "steps"], ast.Tuple(bodies, ast.Load()), filename=f"<{spec.source}>"
        )
        self._goal_names = list(goals)
        self._goals = [
            (goal.kind, *_static(goal), goal.weight, goal.within or 0) for goal in goals.values()
        ]
        self._scales = [goal.scale for goal in goals.values()]
        self._weights = sum(goal.weight for goal in goals.values()) or 1.0
        self._reach = [j for j, g in enumerate(goals.values()) if g.kind == "reach"]
        self._horizon = spec.max_episode_steps or DEFAULT_HORIZON
        self.config: Mapping[str, Any] = {}
        self.reset({})

    def _tree(self, key: str, text: str) -> ast.expr:
        try:
            return rewrite(text, self._names.resolve)
        except KeyError as exc:
            raise SpecMismatch(
                f"{self.source}: {key}: name {exc.args[0]!r} is not a state, derived "
                f"observation or config ({self._names.known()})"
            ) from None

    @property
    def has_goals(self) -> bool:
        """True when the spec has goals (its episode ends carry ``goals``)."""
        return bool(self._goals)

    def reset(self, config: Mapping[str, Any]) -> None:
        """A new episode with this config: the goals' bookkeeping starts over."""
        self.config = config
        n = len(self._goals)
        self._done = [False] * n  # avoid: hit; reach: reached
        self._stayed = [True] * n  # drive: in its region at every step from `within` on
        self._last_in = [False] * n  # drive: in its region at the last step
        self._sums = [0.0] * n  # minimize/maximize: sum of the values
        self._count = 0

    def step(
        self,
        states: Mapping[str, float],
        terminated: bool,
        truncated: bool,
        sim_reward: float | None,
        steps: int,
    ) -> tuple[float, bool, bool]:
        """Reward, terminated, truncated of a step (finite states).

        Raises:
            RewardError: An expression failed (x/0, log(-1), a missing config value...) or a
                goal's value is NaN; the message names the spec key and the step.
        """
        try:
            out = self._fn(states, self.config, steps)
        except Exception as exc:  # the user's expression: report which one, where
            raise self._failed(states, steps, exc) from exc
        reward = 0.0
        added = False
        if self._reward_slot == 0:
            try:
                reward = float(out[0]) * self._scale
            except (TypeError, ValueError) as exc:
                raise self._error("reward.expr", steps, f"gave {out[0]!r}: {exc}") from None
        elif self._constant is not None:
            reward = self._constant * self._scale
        elif self._base is not None:
            reward, terminated, truncated = self._base(states, terminated, truncated, sim_reward)
            added = terminated  # the codec added `terminal` already
        if self._terminal_slot >= 0 and out[self._terminal_slot]:
            terminated = True
        if self._truncate_slot >= 0 and out[self._truncate_slot]:
            truncated = True
        if self._goals:
            goal_reward, ended = self._step_goals(out, steps)
            reward += goal_reward
            terminated = terminated or ended
        if terminated and not added:
            reward += self._terminal_bonus
        return reward, terminated, truncated

    def _step_goals(self, out: Sequence[Any], steps: int) -> tuple[float, bool]:
        """Σ weight·r / Σ weight over the goals, and whether a goal ends the episode."""
        total = 0.0
        ended = False
        hit = False
        done, stayed, last_in, sums = self._done, self._stayed, self._last_in, self._sums
        self._count += 1
        for j, (kind, lo, hi, s, w, within) in enumerate(self._goals):
            v = out[self._goal_start + j]
            if v.__class__ is not float:  # bool, int (steps) or a config value
                v = self._number(v, j, steps)
            if v != v:
                raise self._error(
                    f"goals.{self._goal_names[j]}.{kind}", steps, "gave NaN"
                ) from None
            if self._moving[j] is not None:
                lo, hi, s = self._moved(j, out, steps)
            d = lo - v if v < lo else v - hi if v > hi else 0.0
            if kind == "avoid":
                if d == 0.0:
                    done[j] = hit = ended = True
                    r = 0.0
                else:
                    r = d / s if d < s else 1.0
            elif kind == "drive":
                r = 1.0 if d == 0.0 else s / (s + d)
                last_in[j] = d == 0.0
                if within and steps >= within and d != 0.0:
                    stayed[j] = False
            elif kind == "reach":
                if done[j] or d == 0.0:
                    done[j] = True
                    r = 1.0
                else:
                    r = s / (s + d)
                    if within and steps >= within:
                        ended = True  # missed its deadline: a failure that ends the episode
            else:
                sums[j] += v
                z = ((v - hi) if kind == "minimize" else (lo - v)) / s
                z = _Z_MAX if z > _Z_MAX else -_Z_MAX if z < -_Z_MAX else z
                r = 1.0 / (1.0 + math.exp(z))
            total += w * r
        reward = total / self._weights
        if self._reach and all(done[j] for j in self._reach):
            ended = True
            if not hit:
                # Every remaining step of the horizon at the best per-step reward (1): reaching
                # is never worse than going on (docs/spec.md).
                reward += max(self._horizon - steps, 0)
        return reward, ended

    def _moved(self, j: int, out: Sequence[Any], steps: int) -> tuple[float, float, float]:
        """A moving region's bounds at this step, and its scale."""
        lo_slot, hi_slot = self._moving[j] or (-1, -1)
        _, lo, hi, *_ = self._goals[j]
        key = f"goals.{self._goal_names[j]}"
        try:
            lo = float(out[lo_slot]) if lo_slot >= 0 else lo
            hi = float(out[hi_slot]) if hi_slot >= 0 else hi
        except (TypeError, ValueError) as exc:
            raise self._error(f"{key}.range", steps, f"a bound is not a number: {exc}") from None
        if not lo <= hi:  # NaN too
            raise self._error(f"{key}.range", steps, f"gave [{lo}, {hi}]: lo > hi") from None
        return lo, hi, default_scale(self._scales[j], lo, hi)

    def _number(self, v: Any, j: int, steps: int) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            key = f"goals.{self._goal_names[j]}.{self._goals[j][0]}"
            raise self._error(key, steps, f"gave {v!r}, not a number") from None

    def end_info(self) -> dict[str, Any]:
        """``goals`` {name: satisfied} and ``goal_success`` of the episode that just ended."""
        satisfied: dict[str, bool] = {}
        for j, (name, (kind, lo, hi, *_)) in enumerate(
            zip(self._goal_names, self._goals, strict=True)
        ):
            if kind == "avoid":
                ok = not self._done[j]
            elif kind == "drive":
                ok = self._last_in[j] and self._stayed[j]
            elif kind == "reach":
                ok = self._done[j]
            else:
                ok = self._count > 0 and lo <= self._sums[j] / self._count <= hi
            satisfied[name] = bool(ok)
        return {"goals": satisfied, "goal_success": all(satisfied.values())}

    def _failed(self, states: Mapping[str, float], steps: int, exc: Exception) -> RewardError:
        """The error of the one expression that failed (re-run one by one to find it)."""
        for key, text in self._entries:
            fn = build_function(["s", "c", "steps"], self._tree(key, text))
            try:
                fn(states, self.config, steps)
            except KeyError as missing:
                return self._error(key, steps, f"the episode's config has no {missing.args[0]!r}")
            except Exception as err:
                return self._error(key, steps, f"{type(err).__name__}: {err}")
        return self._error(self._entries[0][0], steps, f"{type(exc).__name__}: {exc}")

    def _error(self, key: str, steps: int, problem: str) -> RewardError:
        text = dict(self._entries).get(key, "")
        return RewardError(f"{self.source}: {key}: {text!r} {problem} (at step {steps})")
