"""Adapters: one ``SimInstance`` interface over the kinds of simulators we host.

* ``ClassSim`` — any sim class in a shape ``simserver.shapes`` finds: a reference-style
  ``SimulatorModel`` (``reset(config) -> dict``, ``step(action: dict) -> dict``,
  ``termination()``, ``truncation()``, ``sim_name``), a plain class, a Bonsai session class
  (``episode_start``/``episode_step``/``get_state``/``halted``), ``reset(**config)``,
  ``step(one number)``, a class rebuilt per episode.
* ``GymSim`` — any Gymnasium env (by registry id or class).

A ``SimFactory`` describes the simulator once (names, bounds, seedability, shape) and
builds one instance per session. Names are learned from class attributes when
the sim declares them (``state_names``, ``action_names``, ``config_keys``,
``bounds``), or from a Bonsai session's ``get_interface()``, otherwise by *probing*: one
instance is built and reset with an empty config at start-up, which also proves the sim
works before any client connects.
"""

from __future__ import annotations

import math
import operator
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from simserver.errors import InvalidArgument, LoadError, SimCallFailed
from simserver.shapes import (
    FLAG_KEYS,
    STATE_SOURCES,
    Interface,
    Shape,
    ShapeChoice,
    find_shape,
    interface_of,
    reader,
    state_source,
)


@dataclass(frozen=True)
class Variable:
    """A named scalar (state, action or config key) with optional bounds."""

    name: str
    low: float | None = None
    high: float | None = None
    description: str = ""
    # The only values it takes (a Gymnasium Discrete's), in index order; () = any in range.
    values: tuple[float, ...] = ()


@dataclass(slots=True)
class Outcome:
    """What a reset or step produced, before it is put on the wire."""

    states: list[float]
    terminated: bool
    truncated: bool
    reward: float | None = None
    sim_seconds: float = 0.0
    nonfinite: list[int] = field(default_factory=list)


class SimInstance(Protocol):
    """One simulator instance, owned by exactly one session."""

    def reset(self, config: dict[str, Any], seed: int | None) -> Outcome:
        """Start a new episode."""
        ...

    def step(self, action: Sequence[float]) -> Outcome:
        """Advance one control step; ``action`` follows the factory's action order."""
        ...

    def states(self) -> list[float]:
        """Current states in the factory's state order."""
        ...

    def termination(self) -> tuple[bool, bool]:
        """Current (terminated, truncated) flags."""
        ...

    def close(self) -> None:
        """Free the simulator's resources."""
        ...


@dataclass(frozen=True)
class SimRecipe:
    """How to build the sim again in another process (``simserver.isolation``): all picklable.

    Attributes:
        target: The target string the server was started with (``simserver.loader``).
        kwargs: Constructor (or ``gymnasium.make``) keyword arguments.
        workdir: The folder the server loaded the target from (its imports are relative to it).
        states: State names in wire order (so a worker never probes).
        module: The module that defines the sim, imported ahead by the worker pool ("" if none).
        shape: How the sim class is driven (so a worker never detects it again).
    """

    target: str
    kwargs: dict[str, Any]
    workdir: str
    states: tuple[str, ...]
    module: str = ""
    shape: Shape | None = None


@dataclass
class SimFactory:
    """Describes a simulator and builds instances of it.

    Attributes:
        sim_name: Name reported in the handshake.
        states: State variables in wire order.
        actions: Action variables in wire order; empty when the sim does not
            declare them (clients then declare them in ``Open``).
        config: Config keys the sim declares; empty means "any key".
        seedable: Whether reset forwards a seed to the simulator.
        create: Builds one instance; ``action_names`` are the session's.
        recipe: How to build it in a worker process (set by ``simserver.loader``).
        isolated: Whether ``create`` builds ``simserver.isolation.WorkerSim`` instances.
        shape: How a sim class is driven (``simserver.shapes``); None for Gymnasium envs.
    """

    sim_name: str
    states: list[Variable]
    actions: list[Variable]
    config: list[Variable]
    seedable: bool
    create: Callable[[list[str]], SimInstance]
    recipe: SimRecipe | None = None
    isolated: bool = False
    shape: Shape | None = None


def _finite_check(values: list[float]) -> list[int]:
    # One C-level sum proves every value finite in the common case (NaN and inf propagate);
    # only a non-finite sum, which finite values can also give by overflowing, needs the scan.
    # math.isfinite on Python floats beats numpy for the ~10 values a step carries.
    if math.isfinite(sum(values)):
        return []
    return [i for i, v in enumerate(values) if not math.isfinite(v)]


def _as_float(value: Any, name: str, call: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise SimCallFailed(
            call, TypeError(f"state {name!r} is {type(value).__name__}, not a number")
        ) from exc


def _call(call: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a sim method, turning any exception into ``SimCallFailed`` naming the call."""
    try:
        return fn(*args, **kwargs)
    except (SimCallFailed, InvalidArgument):
        raise
    except Exception as exc:
        raise SimCallFailed(call, exc) from exc


# --------------------------------------------------------------------------- class sims


# The call a sim rebuilt per episode makes at each reset, as error messages name it.
_REBUILD = "reset() (the constructor)"


class NoStateError(TypeError):
    """A sim call returned no state dict, and the sim has nowhere else to read it from."""

    def __init__(self, call: str, result: Any) -> None:
        sources = ", ".join(STATE_SOURCES)
        if call == _REBUILD:
            super().__init__(
                f"it has no reset() or episode_start(), so its constructor starts each episode, "
                f"and then it needs one of {sources} to read the first state from"
            )
        else:
            super().__init__(
                f"{call} returned {type(result).__name__}, not a dict of states, and the sim "
                f"has none of {sources} to read its state from"
            )


def _split_result(
    result: Any, call: str
) -> tuple[Mapping[str, Any] | None, bool | None, bool | None]:
    """Accept ``dict``, ``(dict, terminated, truncated)`` or ``(dict, info)`` results."""
    if result is None:
        return None, None, None
    if isinstance(result, Mapping):
        return result, None, None
    if isinstance(result, tuple) and result and isinstance(result[0], Mapping):
        flags = [r for r in result[1:] if isinstance(r, (bool, np.bool_))]
        term = bool(flags[0]) if len(flags) >= 1 else None
        trunc = bool(flags[1]) if len(flags) >= 2 else None
        return result[0], term, trunc
    raise SimCallFailed(
        call, TypeError(f"returned {type(result).__name__}; expected a dict of states")
    )


class ClassSim:
    """Adapter for any sim class ``simserver.shapes`` can drive.

    Reference ``SimulatorModel``s, plain classes, Bonsai session classes, sims rebuilt per
    episode.

    Args:
        sim: The sim object (for a sim rebuilt per episode: the current one).
        state_names: States in wire order.
        action_names: The session's action names.
        shape: How to drive it (found from ``sim`` when None).
        rebuild: Builds a new sim from the episode's config (a sim whose constructor is its
            reset); None otherwise.
    """

    def __init__(
        self,
        sim: Any,
        state_names: list[str],
        action_names: list[str],
        shape: Shape | None = None,
        rebuild: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self._shape = shape or find_shape(type(sim), sim)
        self._rebuild = rebuild
        self._state_names = state_names
        self._action_names = action_names
        self._scalar = self._shape.scalar_action(action_names)
        self._last: Mapping[str, Any] = {}
        self._flags = (False, False)
        # itemgetter of one key returns the value, not a tuple; of none, it cannot be built.
        self._get_values: Callable[[Mapping[str, Any]], Sequence[Any]]
        if len(state_names) > 1:
            self._get_values = operator.itemgetter(*state_names)
        else:
            names = tuple(state_names)
            self._get_values = lambda d: tuple(d[n] for n in names)
        self._bind(sim)

    def _bind(self, sim: Any) -> None:
        """Read the shape's methods off ``sim`` once, not at every call."""
        shape = self._shape
        self._sim = sim
        self._start = getattr(sim, shape.start) if shape.start else None
        self._step = getattr(sim, shape.step)
        self._term = reader(sim, shape.terminated)
        self._trunc = reader(sim, shape.truncated)
        self._get_state = reader(sim, shape.state)
        # Names for error messages, built once: the step's is on every step's error path.
        self._step_call = f"{shape.step}()"
        state_is_method = callable(getattr(type(sim), shape.state, None))
        self._state_call = f"{shape.state}()" if state_is_method else shape.state

    def _outcome(self, result: Any, call: str, started: float) -> Outcome:
        term_fn, trunc_fn = self._term, self._trunc
        if type(result) is dict and term_fn is not None and trunc_fn is not None:
            # Fast path for the reference shape (a plain dict, flags from termination() and
            # truncation()): what _split_result and _call would do, without their generality.
            states_dict: Mapping[str, Any] = result
            try:
                term = bool(term_fn())
            except (SimCallFailed, InvalidArgument):
                raise
            except Exception as exc:
                raise SimCallFailed(f"{self._shape.terminated}()", exc) from exc
            try:
                trunc = bool(trunc_fn())
            except (SimCallFailed, InvalidArgument):
                raise
            except Exception as exc:
                raise SimCallFailed(f"{self._shape.truncated}()", exc) from exc
        else:
            term, trunc, states_dict = self._flags_of(result, call)
        self._last = states_dict
        self._flags = (term, trunc)
        try:
            # itemgetter + map(float): the same values as a comprehension, in half the time.
            values = list(map(float, self._get_values(states_dict)))
        except KeyError as exc:
            raise SimCallFailed(call, KeyError(f"no value for state {exc.args[0]!r}")) from exc
        except (TypeError, ValueError):
            values = [_as_float(states_dict[n], n, call) for n in self._state_names]
        return Outcome(
            states=values,
            terminated=term,
            truncated=trunc,
            sim_seconds=time.perf_counter() - started,
            nonfinite=_finite_check(values),
        )

    def _flags_of(self, result: Any, call: str) -> tuple[bool, bool, Mapping[str, Any]]:
        """Flags and state dict of any result shape ``_split_result`` accepts.

        A call that returns no state dict (None, or anything else: a reward, ``self``) has
        its state read from the shape's state source, if the sim has one.
        """
        shape = self._shape
        try:
            states_dict, term, trunc = _split_result(result, call)
        except SimCallFailed:
            if self._get_state is None:
                raise
            states_dict, term, trunc = None, None, None
        if states_dict is None:
            if self._get_state is None and state_source(self._sim):
                # A state attribute that the sim's reset created, not its constructor.
                self._shape = replace(shape, state=state_source(self._sim))
                self._bind(self._sim)
            if self._get_state is None:
                raise SimCallFailed(call, NoStateError(call, result))
            source = self._state_call
            states_dict, _, _ = _split_result(_call(source, self._get_state), source)
            if states_dict is None:
                raise SimCallFailed(source, TypeError("is None; expected a dict of states"))
        if term is None:
            term = (
                bool(_call(f"{shape.terminated}()", self._term))
                if self._term
                else bool(
                    states_dict.get(
                        "terminated", states_dict.get("done", states_dict.get("halted", False))
                    )
                )
            )
        if trunc is None:
            trunc = (
                bool(_call(f"{shape.truncated}()", self._trunc))
                if self._trunc
                else bool(states_dict.get("truncated", False))
            )
        return term, trunc, states_dict

    def reset(self, config: dict[str, Any], seed: int | None) -> Outcome:
        """Start an episode (see ``SimInstance``)."""
        started = time.perf_counter()
        shape = self._shape
        kwargs: dict[str, Any] = {}
        if shape.seed and seed is not None:
            kwargs["seed"] = seed
        elif seed is not None:
            # Legacy sims draw from the global generators (the reference CSTR uses
            # `random`): seeding them makes a session's episode reproducible. Best
            # effort: sessions of one server share these generators.
            random.seed(seed)
            np.random.seed(seed % 2**32)
        if self._start is None:  # the constructor is the reset: a new object per episode
            assert self._rebuild is not None, "a sim rebuilt per episode needs its rebuild"
            self.close()
            self._bind(_call(_REBUILD, self._rebuild, {**config, **kwargs}))
            return self._outcome(None, _REBUILD, started)
        call = f"{shape.start}()"
        if shape.config == "dict":
            if shape.config_param:
                kwargs[shape.config_param] = config
                result = _call(call, self._start, **kwargs)
            else:
                result = _call(call, self._start, config, **kwargs)
        elif shape.config == "kwargs":
            result = _call(call, self._start, **{**config, **kwargs})
        else:
            if config:
                raise InvalidArgument(f"this sim's {call} takes no config; send an empty config")
            result = _call(call, self._start, **kwargs)
        return self._outcome(result, call, started)

    def step(self, action: Sequence[float]) -> Outcome:
        """Advance one step (see ``SimInstance``)."""
        started = time.perf_counter()
        names = self._action_names
        # The hot path of every step: the dict built directly and the sim called inline
        # (what _call does, without its extra frame and argument packing).
        act: Any
        if self._scalar:
            if len(action) != 1:
                raise InvalidArgument(
                    f"this sim's {self._shape.step}({self._shape.action_param}) takes one "
                    f"number; got {len(action)} actions"
                )
            act = action[0]
        elif len(names) == 1 and len(action) == 1:
            act = {names[0]: action[0]}
        else:
            act = dict(zip(names, action, strict=True))
        try:
            result = self._step(act)
        except (SimCallFailed, InvalidArgument):
            raise
        except Exception as exc:
            raise SimCallFailed(self._step_call, exc) from exc
        return self._outcome(result, self._step_call, started)

    def states(self) -> list[float]:
        """Current states (see ``SimInstance``)."""
        return [float(self._last[n]) for n in self._state_names]

    def termination(self) -> tuple[bool, bool]:
        """Current flags (see ``SimInstance``)."""
        return self._flags

    def close(self) -> None:
        """Free the sim (see ``SimInstance``)."""
        close = getattr(self._sim, "close", None)
        if callable(close):
            _call("close()", close)


def _declared(obj: Any, attr: str) -> list[str] | None:
    value = getattr(obj, attr, None)
    if value is None or callable(value):
        return None
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    return [str(v) for v in value]


def _sim_name(obj: Any, default: str) -> str:
    name = getattr(obj, "sim_name", None)
    if callable(name):
        name = name()
    return str(name) if name else default


def rebuilder(cls: type, kwargs: Mapping[str, Any]) -> Callable[[dict[str, Any]], Any]:
    """A new ``cls`` per episode, the episode's config (and seed) over the constructor kwargs."""

    def rebuild(config: dict[str, Any]) -> Any:
        return cls(**{**kwargs, **config})

    return rebuild


def _describer(probe: Any, interface: Interface | None) -> Callable[[str], Variable]:
    """A name as a ``Variable`` with the bounds and description the sim declares, if any."""
    bounds: Mapping[str, Any] = {
        **(interface.bounds if interface else {}),
        **(getattr(probe, "bounds", None) or {}),
    }
    descriptions: Mapping[str, str] = {
        **(interface.descriptions if interface else {}),
        **(getattr(probe, "descriptions", None) or {}),
    }

    def var(name: str) -> Variable:
        lo, hi = bounds.get(name, (None, None))
        return Variable(
            name,
            None if lo is None else float(lo),
            None if hi is None else float(hi),
            str(descriptions.get(name, "")),
        )

    return var


def _probe(cls: type, adapter: ClassSim) -> list[str]:
    """State names from one reset with an empty config (``class_factory`` without names)."""
    try:
        adapter.reset({}, None)
    except SimCallFailed as exc:
        if isinstance(exc.exc, NoStateError):
            raise LoadError(f"{cls.__qualname__} cannot be hosted: {exc.exc}") from exc
        raise LoadError(
            f"probing {cls.__qualname__} with an empty config: {exc.message}. "
            "Declare `state_names` on the class to skip probing."
        ) from exc
    except Exception as exc:
        raise LoadError(
            f"probing {cls.__qualname__} with an empty config: {type(exc).__name__}: {exc}. "
            "Declare `state_names` on the class to skip probing."
        ) from exc
    if not adapter._last:
        raise LoadError(f"probing {cls.__qualname__}: reset with an empty config gave no states")
    return [k for k in adapter._last if k not in FLAG_KEYS]


def class_factory(
    cls: type,
    kwargs: Mapping[str, Any],
    *,
    action_names: Sequence[str] = (),
    choice: ShapeChoice | None = None,
) -> SimFactory:
    """Describe a simulator class, probing one instance when it declares no state names.

    How the class is driven is found by ``simserver.shapes.find_shape`` (``choice``: what
    the user picked where it cannot be detected). Names come from class attributes, else a
    Bonsai session's ``get_interface()``, else probing (states) or ``action_names``.

    Args:
        cls: The simulator class.
        kwargs: Constructor keyword arguments.
        action_names: Action names given on the command line, used when the class
            declares none.
        choice: The user's shape choices.

    Raises:
        LoadError: The class cannot be built, hosted (one line saying what was looked for)
            or probed.
    """

    def build() -> Any:
        try:
            return cls(**kwargs)
        except Exception as exc:
            args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            raise LoadError(
                f"{cls.__qualname__}({args}) raised {type(exc).__name__}: {exc}"
            ) from exc

    probe = build()
    shape = find_shape(cls, probe, choice)
    rebuild = None if shape.start else rebuilder(cls, kwargs)
    interface = interface_of(probe)
    states = _declared(probe, "state_names")
    if states is None:
        adapter = ClassSim(probe, [], [], shape, rebuild)
        states = _probe(cls, adapter)
        probe = adapter._sim  # the constructor-per-episode kind built a new one
        shape = adapter._shape  # with the state attribute its reset created, if so
    actions = (
        _declared(probe, "action_names")
        or list(action_names)
        or list(interface.actions if interface else ())
    )
    config = _declared(probe, "config_keys") or list(shape.config_keys)
    var = _describer(probe, interface)
    spare = [probe]  # the probed instance serves the first session: sims can be slow to build

    def create(session_actions: list[str]) -> SimInstance:
        sim = spare.pop() if spare else build()
        return ClassSim(sim, states, session_actions, shape, rebuild)

    return SimFactory(
        sim_name=_sim_name(probe, (interface.name if interface else "") or cls.__name__),
        states=[var(n) for n in states],
        actions=[var(n) for n in actions],
        config=[var(n) for n in config],
        seedable=shape.seed,
        create=create,
        shape=shape,
    )


# --------------------------------------------------------------------------- gymnasium


def _space_names(space: Any, prefix: str) -> list[str]:
    """Flat names for a Gymnasium space, matching ``gymnasium.spaces.flatten`` order."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        names: list[str] = []
        for key, sub in space.spaces.items():
            names += _space_names(sub, str(key))
        return names
    if isinstance(space, spaces.Tuple):
        names = []
        for i, sub in enumerate(space.spaces):
            names += _space_names(sub, f"{prefix}[{i}]")
        return names
    size = int(spaces.flatdim(space))
    if isinstance(space, spaces.Box) and space.shape in ((), (1,)):
        return [prefix]
    if isinstance(space, spaces.Discrete):
        # flatten() one-hot encodes a Discrete space.
        return [f"{prefix}=={int(space.start) + i}" for i in range(size)]
    return [f"{prefix}[{i}]" for i in range(size)]


class GymSim:
    """Adapter for a Gymnasium env: flattened observation as states, env reward passed on."""

    def __init__(self, env: Any) -> None:
        from gymnasium import spaces

        self._env = env
        self._spaces = spaces
        self._obs_space = env.observation_space
        self._act_space = env.action_space
        self._last: list[float] = []
        self._flags = (False, False)

    def _flat(self, obs: Any) -> list[float]:
        return [float(v) for v in self._spaces.flatten(self._obs_space, obs)]

    def reset(self, config: dict[str, Any], seed: int | None) -> Outcome:
        """Start an episode (see ``SimInstance``)."""
        started = time.perf_counter()
        obs, _info = _call("reset()", self._env.reset, seed=seed, options=config or None)
        self._last = self._flat(obs)
        self._flags = (False, False)
        return Outcome(
            self._last, False, False, None, time.perf_counter() - started, _finite_check(self._last)
        )

    def step(self, action: Sequence[float]) -> Outcome:
        """Advance one step (see ``SimInstance``)."""
        started = time.perf_counter()
        space = self._act_space
        if isinstance(space, self._spaces.Discrete):
            # A discrete-aware client sends the value itself; an older one any number,
            # rounded to the nearest value (what the wire contract promises it).
            act: Any = round(action[0])
            if not space.contains(act):
                raise InvalidArgument(
                    f"action {act} outside Discrete({space.n}, start={space.start})"
                )
        elif isinstance(space, self._spaces.MultiDiscrete):
            act = np.array([round(a) for a in action], dtype=space.dtype).reshape(space.shape)
            if not space.contains(act):
                raise InvalidArgument(
                    f"action {act.tolist()} outside MultiDiscrete({space.nvec.tolist()}, "
                    f"start={space.start.tolist()})"
                )
        else:
            act = self._spaces.unflatten(space, np.asarray(action, dtype=np.float64))
            if isinstance(space, self._spaces.Box):
                act = act.astype(space.dtype)
        obs, reward, term, trunc, _info = _call("step()", self._env.step, act)
        self._last = self._flat(obs)
        self._flags = (bool(term), bool(trunc))
        return Outcome(
            self._last,
            bool(term),
            bool(trunc),
            float(reward),
            time.perf_counter() - started,
            _finite_check(self._last),
        )

    def states(self) -> list[float]:
        """Current states (see ``SimInstance``)."""
        return list(self._last)

    def termination(self) -> tuple[bool, bool]:
        """Current flags (see ``SimInstance``)."""
        return self._flags

    def close(self) -> None:
        """Free the sim (see ``SimInstance``)."""
        _call("close()", self._env.close)


def _bounds(space: Any) -> list[tuple[float | None, float | None]]:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return [(float(int(space.start)), float(int(space.start) + int(space.n) - 1))]
    flat = spaces.flatten_space(space)
    if isinstance(flat, spaces.Box):
        lows, highs = flat.low.astype(float).ravel(), flat.high.astype(float).ravel()
        return [
            (lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None)
            for lo, hi in zip(lows, highs, strict=True)
        ]
    return [(None, None)] * int(spaces.flatdim(space))


def _discrete_actions(space: Any) -> list[Variable] | None:
    """A ``Discrete`` or ``MultiDiscrete`` action space as variables with their values.

    ``Discrete(n, start)``: one action ``action`` taking start .. start+n-1;
    ``MultiDiscrete``: one action per entry (``action[i]``, row-major), each with its values.
    The client's agent then chooses among the values (``Variable.values`` on the wire).
    None for any other space.
    """
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        start, n = int(space.start), int(space.n)
        return [Variable("action", start, start + n - 1, values=tuple(range(start, start + n)))]
    if isinstance(space, spaces.MultiDiscrete):
        nvec, starts = space.nvec.reshape(-1).tolist(), space.start.reshape(-1).tolist()
        single = len(nvec) == 1
        return [
            Variable(
                "action" if single else f"action[{i}]",
                int(s),
                int(s) + int(n) - 1,
                values=tuple(range(int(s), int(s) + int(n))),
            )
            for i, (n, s) in enumerate(zip(nvec, starts, strict=True))
        ]
    return None


def gym_factory(make: Callable[[], Any], name: str) -> SimFactory:
    """Describe a Gymnasium env built by ``make`` (one call per session).

    Raises:
        LoadError: The env cannot be built.
    """
    try:
        probe = make()
    except Exception as exc:
        raise LoadError(f"building env {name} raised {type(exc).__name__}: {exc}") from exc
    obs_space, act_space = probe.observation_space, probe.action_space
    state_names = _space_names(obs_space, "obs")
    states = [
        Variable(n, lo, hi) for n, (lo, hi) in zip(state_names, _bounds(obs_space), strict=True)
    ]
    actions = _discrete_actions(act_space)
    if actions is None:
        action_names = _space_names(act_space, "action")
        actions = [
            Variable(n, lo, hi)
            for n, (lo, hi) in zip(action_names, _bounds(act_space), strict=True)
        ]
    spare = [probe]

    def create(_session_actions: list[str]) -> SimInstance:
        return GymSim(spare.pop() if spare else make())

    spec = getattr(probe, "spec", None)
    return SimFactory(
        sim_name=(spec.id if spec is not None else name),
        states=states,
        actions=actions,
        config=[],
        seedable=True,
        create=create,
    )
