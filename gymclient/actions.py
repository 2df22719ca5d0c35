"""The spec's ``actions:`` entries: continuous ranges and discrete choices.

Forms (docs/spec.md, "Actions"):

* ``{min: -1, max: 1}`` — continuous: the agent's [-1, 1] maps linearly onto the range;
* ``{values: [0, 1]}`` — discrete: the agent picks one of the values;
* ``{values: {off: 0, heat: 1, cool: 2}}`` — named values: the sim receives the number;
* ``{min: 0, max: 4, step: 1}`` — an integer (or evenly stepped) range: a discrete choice of
  ``min, min + step, ..., max`` (integers when min, max and step are);
* ``{}`` — whatever the sim declares for it (a hosted Gymnasium env's ``Discrete`` values or
  its ``Box`` bounds), learned when the env connects.

One discrete action makes the agent's action space ``Discrete(n)``, several make it
``MultiDiscrete``; the agent picks indices and the codec hands the sim the values
(``gymclient.codec``). Continuous actions make a ``Box(-1, 1)``; discrete and continuous
actions together a ``Tuple`` of the two (``ActionMap``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

#: The most values one discrete action may have (an RLlib categorical over more is rarely meant).
MAX_VALUES = 10_000

Number = int | float


def _is_number(value: Any) -> bool:
    # YAML's `true` is a bool, which Python counts as an int: no action value is a bool.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ActionSpec(BaseModel):
    """One action of the spec: a continuous range, a discrete choice, or the sim's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: list[Any] | dict[str, Any] | None = None
    step: Number | None = None
    min: Number | None = None
    # validate_default: a missing max is reported at `actions.<name>.max`, as any missing key.
    max: Number | None = Field(None, validate_default=True)
    expr: str | None = None  # refused by EnvSpec with a message (expr is for observations)

    @field_validator("values", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML 1.1 reads the bare keys `off`/`on` (also no/yes) as booleans: {off: 0, on: 1}
        # arrives as {False: 0, True: 1}. Named values are names: give them back theirs.
        if isinstance(value, Mapping):
            return {
                ("on" if k else "off") if isinstance(k, bool) else str(k): v
                for k, v in value.items()
            }
        return value

    @field_validator("values")
    @classmethod
    def _values(cls, value: list[Any] | dict[str, Any] | None) -> Any:
        if value is None:
            return value
        if not value:
            raise ValueError("values must not be empty (give the values the sim may receive)")
        items = list(value.items()) if isinstance(value, Mapping) else list(enumerate(value))
        for key, v in items:
            if not _is_number(v):
                where = f"values.{key}" if isinstance(value, Mapping) else f"values[{key}]"
                hint = (
                    " (named values map a name to the number the sim receives: off: 0)"
                    if isinstance(value, Mapping)
                    else ""
                )
                raise ValueError(f"{where} is {v!r}, not a number{hint}")
            if not math.isfinite(v):
                raise ValueError(f"{v} is not a finite number (the sim receives numbers)")
        numbers = list(value.values()) if isinstance(value, Mapping) else list(value)
        seen: set[float] = set()
        for v in numbers:
            if float(v) in seen:
                raise ValueError(f"{v} is given twice (each value once)")
            seen.add(float(v))
        if len(numbers) > MAX_VALUES:
            raise ValueError(f"{len(numbers)} values; at most {MAX_VALUES}")
        return value

    @field_validator("max")
    @classmethod
    def _max_given(cls, value: Number | None, info: ValidationInfo) -> Number | None:
        if value is None and info.data.get("min") is not None:
            raise PydanticCustomError("missing", "Field required")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> ActionSpec:
        if self.values is not None:
            given = [k for k in ("min", "max", "step") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"give either values or min/max(/step), not both ({given[0]})")
            return self
        if self.min is None and self.max is not None:
            raise ValueError("give min as well as max")
        if self.min is None:
            if self.step is not None:
                raise ValueError("step needs min and max (an evenly stepped range)")
            return self  # {}: the sim's own declaration, resolved when the env connects
        assert self.max is not None
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ValueError("min and max must be finite numbers")
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be greater than min ({self.min})")
        if self.step is not None:
            if not (math.isfinite(self.step) and self.step > 0):
                raise ValueError(f"step ({self.step}) must be a positive number")
            count = (self.max - self.min) / self.step
            if abs(count - round(count)) > 1e-9 * max(1.0, abs(count)):
                raise ValueError(
                    f"step ({self.step}) does not divide the range {self.min}..{self.max} "
                    f"({count:g} steps): pick a step that lands on max"
                )
            if round(count) + 1 > MAX_VALUES:
                raise ValueError(f"{round(count) + 1} values; at most {MAX_VALUES}")
        return self

    # ------------------------------------------------------------------ what it means

    @property
    def is_discrete(self) -> bool:
        """A choice among values (``values`` or ``step``), not a continuous range."""
        return self.values is not None or self.step is not None

    @property
    def from_sim(self) -> bool:
        """``{}``: the sim's declaration decides (resolved by the codec)."""
        return self.values is None and self.min is None

    def choices(self) -> list[Number] | None:
        """The values the sim may receive, in index order; None for a continuous action."""
        if isinstance(self.values, Mapping):
            return list(self.values.values())
        if self.values is not None:
            return list(self.values)
        if self.step is None or self.min is None or self.max is None:
            return None
        n = round((self.max - self.min) / self.step) + 1
        if all(isinstance(v, int) for v in (self.min, self.max, self.step)):
            return [int(self.min + k * self.step) for k in range(n)]
        # Rounded to 12 digits: 0.1 * 3 is 0.30000000000000004, and the sim gets 0.3.
        return [round(self.min + k * self.step, 12) for k in range(n)]

    def labels(self) -> list[str] | None:
        """The names of named values (``{off: 0, on: 1}``), in index order; else None."""
        return [str(k) for k in self.values] if isinstance(self.values, Mapping) else None

    def integer(self) -> bool:
        """Discrete with integer values only: the sim receives Python ints."""
        choices = self.choices()
        return choices is not None and all(isinstance(v, int) for v in choices)


# ---------------------------------------------------------------------- a session's actions


class ActionMap:
    """The agent's action space and the map from its actions to the sim's values.

    Built once a session's action names (and the values its sim declares, ``Variable.values``)
    are known; rows and indices follow the session's action order.

    * all continuous: ``Box(-1, 1, (n,))``;
    * all discrete: ``Discrete(n)`` for one action, ``MultiDiscrete`` for several;
    * both: ``Tuple((Box(-1, 1, (c,)), Discrete | MultiDiscrete))``, the continuous actions
      then the discrete ones, each part in session order (RLlib's new API stack builds one
      distribution per part: a Gaussian and categoricals).

    Args:
        source: The spec file (error messages name it).
        actions: The spec's ``actions:``.
        names: The session's action names, in wire order.
        sim_values: Values the sim declares per action name (a hosted ``Discrete``'s).
        sim_bounds: (low, high) the sim declares per action name, for ``{}`` actions.

    Raises:
        SpecMismatch: An action does not fit what the sim declares.
    """

    def __init__(
        self,
        source: str,
        actions: Mapping[str, ActionSpec],
        names: Sequence[str],
        sim_values: Mapping[str, Sequence[float]] | None = None,
        sim_bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
    ) -> None:
        from gymclient.errors import SpecMismatch

        sim_values = sim_values or {}
        sim_bounds = sim_bounds or {}
        self.names = list(names)
        choices: list[list[Number] | None] = []
        ranges: list[tuple[float, float]] = []
        for name in self.names:
            spec = actions[name]
            declared = [_plain(v) for v in sim_values.get(name, ())]
            mine = spec.choices()
            if spec.from_sim:
                low, high = sim_bounds.get(name, (None, None))
                if declared:
                    mine = declared
                elif low is not None and high is not None and high > low:
                    ranges.append((low, high))
                else:
                    raise SpecMismatch(
                        f"{source}: actions.{name}: the sim declares no values or range for "
                        "it; give {min: .., max: ..} or {values: [...]}"
                    )
            elif declared and mine is None:
                raise SpecMismatch(
                    f"{source}: actions.{name}: the sim takes one of {_short(declared)} (a "
                    f"discrete action), not a range: write `{name}: {{values: "
                    f"{_short(declared)}}}`, or `{name}: {{}}` to take the sim's values"
                )
            elif declared and mine is not None and not set(mine) <= set(declared):
                extra = [v for v in mine if v not in set(declared)]
                raise SpecMismatch(
                    f"{source}: actions.{name}: the sim takes only {_short(declared)}; "
                    f"{_short(extra)} is not among them"
                )
            elif mine is None:
                assert spec.min is not None and spec.max is not None
                ranges.append((float(spec.min), float(spec.max)))
            choices.append(mine)
        n_discrete = sum(c is not None for c in choices)
        #: Every action discrete / both kinds (a Tuple space) / (neither: every one continuous).
        self.discrete = 0 < n_discrete == len(choices)
        self.mixed = 0 < n_discrete < len(choices)
        # Per session action: ("c", j) the j-th continuous one, or ("d", k) the k-th discrete.
        self.kinds: list[tuple[str, int]] = []
        for c in choices:
            kind = "c" if c is None else "d"
            self.kinds.append((kind, sum(k == kind for k, _ in self.kinds)))
        self.choices: list[list[Number]] = [c for c in choices if c is not None]
        self.ranges = ranges
        self.labels = [actions[n].labels() for n in self.names]
        self.integer = [
            n
            for n, c in zip(self.names, choices, strict=True)
            if c and all(isinstance(v, int) for v in c)
        ]
        self.sizes = [len(c) for c in self.choices]
        # Index -> value tables, as numpy rows for the batched path.
        self._tables = [np.asarray(c, dtype=np.float64) for c in self.choices]
        self._lo = np.array([lo for lo, _ in ranges], dtype=np.float64)
        self._half = np.array([(hi - lo) / 2.0 for lo, hi in ranges], dtype=np.float64)

    def _discrete_space(self) -> Any:
        from gymnasium import spaces

        if len(self.sizes) == 1:
            return spaces.Discrete(self.sizes[0])
        return spaces.MultiDiscrete(self.sizes)

    def space(self) -> Any:
        """The agent's action space: ``Box(-1, 1)``, ``Discrete``, ``MultiDiscrete`` or a Tuple."""
        from gymnasium import spaces

        box = spaces.Box(-1.0, 1.0, (len(self.ranges),), np.float32)
        if self.mixed:
            return spaces.Tuple((box, self._discrete_space()))
        return self._discrete_space() if self.discrete else box

    def indices(self, action: Any) -> list[int]:
        """The agent's discrete action (an int, or one per action) as a list of indices.

        Raises:
            ValueError: Not one index per action, or an index out of range.
        """
        flat = np.asarray(action).reshape(-1)
        if flat.shape[0] != len(self.sizes):
            raise ValueError(f"action has {flat.shape[0]} values; expected {len(self.sizes)}")
        out = []
        discrete = [n for n, (kind, _) in zip(self.names, self.kinds, strict=True) if kind == "d"]
        for k, (i, n) in enumerate(zip(flat.tolist(), self.sizes, strict=True)):
            if not float(i).is_integer() or not 0 <= i < n:
                raise ValueError(f"action {discrete[k]!r}: index {i} is not one of 0..{n - 1}")
            out.append(int(i))
        return out

    def _split(self, action: Any) -> tuple[Any, Any]:
        """A Tuple action's (continuous part, discrete part)."""
        if not (isinstance(action, (tuple, list)) and len(action) == 2):
            raise ValueError(
                "action must be a (continuous array, discrete indices) pair: the action space "
                f"is {self.space()}"
            )
        return action[0], action[1]

    def values(self, action: Any) -> list[Number]:
        """What the sim receives, in session order.

        The chosen values (ints kept ints) and, in a Tuple action, the continuous part scaled
        to its ranges.
        """
        if not self.mixed:
            return [c[i] for c, i in zip(self.choices, self.indices(action), strict=True)]
        box, disc = self._split(action)
        a = np.clip(np.asarray(box, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if a.shape[0] != len(self.ranges):
            raise ValueError(
                f"continuous part has {a.shape[0]} values; expected {len(self.ranges)}"
            )
        scaled = ((a + 1.0) * self._half + self._lo).tolist()
        picked = [c[i] for c, i in zip(self.choices, self.indices(disc), strict=True)]
        return [scaled[j] if kind == "c" else picked[j] for kind, j in self.kinds]

    def values_batch(self, actions: Any) -> np.ndarray:
        """``values`` for a batch.

        ``actions``: (sessions × actions) indices (or (sessions,) for one), or for a Tuple
        space a (continuous rows, discrete rows) pair.
        """
        if self.mixed:
            box, disc = self._split(actions)
            idx = np.asarray(disc).reshape(-1, len(self.sizes))
            a = np.clip(np.asarray(box, dtype=np.float64).reshape(idx.shape[0], -1), -1.0, 1.0)
            scaled = (a + 1.0) * self._half + self._lo
            picked = self._pick(idx)
            columns = [scaled[:, j] if kind == "c" else picked[:, j] for kind, j in self.kinds]
            return np.stack(columns, axis=1)
        return self._pick(np.asarray(actions).reshape(-1, len(self.sizes)))

    def _pick(self, idx: np.ndarray) -> np.ndarray:
        idx = idx.astype(np.int64)
        sizes = np.asarray(self.sizes)
        if ((idx < 0) | (idx >= sizes)).any():
            bad = np.argwhere((idx < 0) | (idx >= sizes))[0]
            discrete = [n for n, (k, _) in zip(self.names, self.kinds, strict=True) if k == "d"]
            raise ValueError(
                f"action {discrete[int(bad[1])]!r}: index {int(idx[tuple(bad)])} is not one "
                f"of 0..{self.sizes[int(bad[1])] - 1}"
            )
        return np.stack([t[idx[:, k]] for k, t in enumerate(self._tables)], axis=1)

    def argmax(self, logits: np.ndarray) -> Any:
        """Each discrete action's most likely index, from its slices of the logits."""
        out, at = [], 0
        for n in self.sizes:
            out.append(int(np.argmax(logits[at : at + n])))
            at += n
        return out[0] if len(out) == 1 else np.asarray(out, dtype=np.int64)

    def deterministic(self, dist_inputs: np.ndarray) -> Any:
        """The greedy action from an RLlib module's ``action_dist_inputs`` (one row).

        Box: the Gaussian's mean (the first half); Discrete: the argmax of the logits;
        MultiDiscrete: the argmax of each action's logits, in order; Tuple: the Box part's
        mean (its inputs are the means then the log-stds) and the argmaxes after them.
        """
        row = np.asarray(dist_inputs).reshape(-1)
        nc = len(self.ranges)
        if self.mixed:
            return row[:nc].astype(np.float32), self.argmax(row[2 * nc :])
        if self.discrete:
            return self.argmax(row)
        return row[:nc]


def _plain(value: float) -> Number:
    """A wire double as the number it stands for: 1.0 -> 1 (a Discrete's values are ints)."""
    return int(value) if float(value).is_integer() else float(value)


def _short(values: Sequence[Any]) -> str:
    text = "[" + ", ".join(str(v) for v in values[:8]) + (", ...]" if len(values) > 8 else "]")
    return text


__all__ = ["MAX_VALUES", "ActionMap", "ActionSpec"]
