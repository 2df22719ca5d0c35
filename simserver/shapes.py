"""Shapes: how a sim class is driven, found from the class itself so common sims need no glue.

A ``Shape`` says which method starts an episode and how it takes the config and the seed,
which method steps it and whether the action goes as a dict or as one number, where the
state is read when those calls return nothing, and what says that the episode ended. What
is looked for, in order (docs/simserver.md, "What a sim can look like"):

* start an episode: ``reset``, else ``episode_start`` (a Bonsai session class), else the
  constructor, when the class has a step but neither (a new object per episode, the config
  as constructor arguments);
* the config: a dict when the first parameter is required, named like a config (``config``,
  ``scenario``, ``options`` ...) or annotated as a mapping; keyword arguments when it is
  ``**kwargs`` or an optional parameter named for what it sets (``reset(cart_mass=1.0, ...)``);
  none when there is no parameter;
* the seed: only to a parameter named ``seed``;
* step: ``step``, else ``episode_step``; the action as one number when the parameter is
  annotated as a number, or named as the session's only action (``step(command)``), else as
  a dict;
* the state: what reset and step return (a dict, or a tuple that starts with one), else
  ``get_state()``, ``get_states()``, ``state`` or ``states``, the first the sim has;
* the end: ``termination()`` or ``halted()`` (terminated) and ``truncation()`` (truncated),
  as methods or attributes, else ``terminated``/``done``/``halted``/``truncated`` keys of
  the state dict.

Where detection cannot be sure, the user picks (``ShapeChoice``, ``simserver --shape``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from simgym.targets import LoadError, parse_shape

#: Where the state is read when reset/step return no state dict, in order of preference.
STATE_SOURCES = ("get_state", "get_states", "state", "states")
#: Keys of a state dict that are episode-end flags, not states.
FLAG_KEYS = ("terminated", "truncated", "done", "halted")

_P = inspect.Parameter
_CONFIG_NAMES = {"cfg", "scenario", "options", "params", "parameters", "settings", "conf"}
_NUMBER_NAMES = {
    "float",
    "int",
    "Real",
    "numbers.Real",
    "SupportsFloat",
    "typing.SupportsFloat",
    "np.floating",
    "numpy.floating",
    "np.float64",
    "numpy.float64",
    "np.float32",
    "numpy.float32",
}
_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
_NAMED = (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)
_MAPPING = re.compile(r"\b(dict|Dict|Mapping|MutableMapping|TypedDict)\b")


@dataclass(frozen=True)
class ShapeChoice:
    """What the user picked where detection cannot be sure ("auto": detect).

    Attributes:
        reset: "method" (the class's reset or episode_start) or "constructor" (a new object
            per episode, the config as constructor arguments).
        config: How reset takes the config: "dict" or "kwargs".
        step: How step takes the action: "dict" or "scalar" (one number).
    """

    reset: Literal["auto", "method", "constructor"] = "auto"
    config: Literal["auto", "dict", "kwargs"] = "auto"
    step: Literal["auto", "dict", "scalar"] = "auto"


def parse_choice(text: str) -> ShapeChoice:
    """``"reset=constructor,step=scalar"`` as a ``ShapeChoice`` (``simserver --shape``).

    Raises:
        LoadError: An unknown key or value, naming what is accepted.
    """
    return ShapeChoice(**parse_shape(text))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Shape:
    """How one sim class is driven (see the module docstring); picklable.

    Attributes:
        start: The method that starts an episode ("reset", "episode_start"), or "" for the
            constructor.
        config: How it takes the config: "dict", "kwargs" or "none".
        config_param: The keyword a dict config goes to ("" for the first positional).
        config_keys: The keys it accepts, when its parameters name them all (else empty).
        seed: Whether it takes a ``seed`` keyword.
        step: The method that steps ("step", "episode_step").
        action: How step takes the action: "dict", "scalar", or "name" (one number when the
            session's only action is named ``action_param``, else a dict).
        action_param: Step's parameter.
        state: Where the state is read when a call returns none ("" for nowhere).
        terminated: What says the episode terminated ("termination", "halted" or "").
        truncated: What says it was truncated ("truncation" or "").
    """

    start: str
    config: str
    config_param: str
    config_keys: tuple[str, ...]
    seed: bool
    step: str
    action: str
    action_param: str
    state: str
    terminated: str
    truncated: str

    def scalar_action(self, action_names: list[str]) -> bool:
        """Whether the action goes to step as one number for a session with these actions."""
        return self.action == "scalar" or (
            self.action == "name" and action_names == [self.action_param]
        )

    def describe(self) -> str:
        """One line: how this sim is driven (logged at start-up)."""
        config = {"dict": "a dict", "kwargs": "keywords", "none": "nothing"}[self.config]
        start = f"{self.start}()" if self.start else "a new object (its constructor)"
        action = {"dict": "an action dict", "scalar": "one number"}.get(
            self.action, f"one number if the only action is {self.action_param!r}, else a dict"
        )
        seed = "; the seed by name" if self.seed else ""
        return (
            f"episodes start with {start}, the config as {config}{seed}; "
            f"{self.step}() takes {action}; state from "
            f"{self.state or 'what the calls return'}; terminated from "
            f"{self.terminated or 'the state dict'}, truncated from "
            f"{self.truncated or 'the state dict'}"
        )


def _params(fn: Any) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return [_P("config", _P.POSITIONAL_ONLY)]  # a builtin: today's reset(config)


def _annotation(p: inspect.Parameter) -> str:
    ann = p.annotation
    if ann is p.empty:
        return ""
    if isinstance(ann, str):
        return ann
    return ann.__name__ if isinstance(ann, type) else str(ann)


def _is_mapping(p: inspect.Parameter) -> bool:
    return bool(_MAPPING.search(_annotation(p)))


def _is_number(p: inspect.Parameter) -> bool:
    names = set(re.findall(r"[A-Za-z_][\w.]*", _annotation(p))) - {
        "None",
        "Optional",
        "Union",
        "typing.Optional",
        "typing.Union",
    }
    return bool(names) and names <= _NUMBER_NAMES


def _config_style(params: list[inspect.Parameter]) -> tuple[str, str, tuple[str, ...]]:
    """How a start method takes the config: (style, keyword for a dict, accepted keys)."""
    rest = [p for p in params if p.name != "seed"]
    if not rest:
        return "none", "", ()
    first = rest[0]
    if first.kind is _P.VAR_POSITIONAL:
        return "dict", "", ()
    if first.kind is not _P.VAR_KEYWORD and (
        "config" in first.name.lower()
        or first.name in _CONFIG_NAMES
        or _is_mapping(first)
        or (first.default is first.empty and first.kind is not _P.KEYWORD_ONLY)
    ):
        # By position when it is the first positional parameter (reset(config, seed=None)),
        # else by name: reset(seed=None, config=None) must not get the config as its seed.
        leading = next((p for p in params if p.kind in _POSITIONAL), None)
        return "dict", "" if first is leading else first.name, ()
    if any(p.kind is _P.VAR_KEYWORD for p in rest):
        return "kwargs", "", ()
    return "kwargs", "", tuple(p.name for p in rest if p.kind in _NAMED)


def _action_style(params: list[inspect.Parameter], choice: str) -> tuple[str, str]:
    positional = [p for p in params if p.kind in _POSITIONAL]
    name = positional[0].name if positional else ""
    if choice != "auto":
        return choice, name
    if not positional or _is_mapping(positional[0]):
        return "dict", name
    return ("scalar" if _is_number(positional[0]) else "name"), name


_MISSING = object()


def _static(obj: Any, name: str) -> Any:
    """``obj.name`` without running a property (it may need a reset first).

    The class's attribute (a function, a property) if it has one, else the instance's value,
    else ``_MISSING``.
    Never ``inspect.getattr_static(obj)``: reading an instance's ``__dict__`` makes CPython
    keep it as a real dict from then on, and every attribute access in the sim's own code
    slower (its step measurably so).
    """
    try:
        return inspect.getattr_static(type(obj), name)
    except AttributeError:
        return getattr(obj, name, _MISSING)


def has(obj: Any, name: str) -> bool:
    """Whether ``obj`` has ``name``, without running a property."""
    return _static(obj, name) is not _MISSING


def _first(obj: Any, names: tuple[str, ...]) -> str:
    """The first of ``names`` that ``obj`` has and that is not None (``termination = None``)."""
    return next((n for n in names if _static(obj, n) not in (_MISSING, None)), "")


def _start_method(cls: type, sim: Any, choice: ShapeChoice) -> str:
    """The method that starts an episode, or "" for the constructor."""
    method = _first(sim, ("reset", "episode_start"))
    if choice.reset == "constructor":
        return ""
    if method and callable(getattr(sim, method)):
        return method
    if choice.reset == "method":
        raise LoadError(
            f"{cls.__qualname__} cannot be hosted with --shape reset=method: "
            "it has no reset() or episode_start() method"
        )
    return ""


def find_shape(cls: type, sim: Any, choice: ShapeChoice | None = None) -> Shape:
    """The shape of ``cls``, read from its signatures and from ``sim``, one instance of it.

    Args:
        cls: The sim class.
        sim: One instance (attributes set by the constructor count).
        choice: What the user picked; "auto" detects.

    Raises:
        LoadError: The class cannot be hosted: one line saying what was looked for.
    """
    choice = choice or ShapeChoice()
    step = next((n for n in ("step", "episode_step") if callable(getattr(sim, n, None))), "")
    if not step:
        raise LoadError(
            f"{cls.__qualname__} cannot be hosted: it has no step() or episode_step() method "
            "(looked for reset/step, a Bonsai session's episode_start/episode_step, "
            "or a class built per episode that has a step)"
        )
    start = _start_method(cls, sim, choice)
    starter_params = _params(getattr(sim, start) if start else cls)
    config, param, keys = _config_style(starter_params)
    if not start:  # a constructor takes the config as its keyword arguments
        named = [p.name for p in starter_params if p.kind in _NAMED and p.name != "seed"]
        any_key = any(p.kind is _P.VAR_KEYWORD for p in starter_params)
        config, param, keys = "kwargs", "", () if any_key else tuple(named)
    elif choice.config != "auto":
        config, param, keys = choice.config, "", ()
    action, action_param = _action_style(_params(getattr(sim, step)), choice.step)
    return Shape(
        start=start,
        config=config,
        config_param=param,
        config_keys=keys,
        seed=any(p.name == "seed" and p.kind is not _P.VAR_KEYWORD for p in starter_params),
        step=step,
        action=action,
        action_param=action_param,
        state=state_source(sim),
        terminated=_first(sim, ("termination", "halted")),
        truncated=_first(sim, ("truncation",)),
    )


def reader(sim: Any, name: str) -> Callable[[], Any] | None:
    """A function that reads ``sim.name``: calls it if it is a method, else reads the value."""
    if not name:
        return None
    if callable(_static(sim, name)) or isinstance(_static(sim, name), staticmethod | classmethod):
        return getattr(sim, name)  # type: ignore[no-any-return]
    return lambda: getattr(sim, name)


@dataclass(frozen=True)
class Interface:
    """What a Bonsai session's ``get_interface()`` declares."""

    name: str
    states: tuple[str, ...]
    actions: tuple[str, ...]
    bounds: Mapping[str, tuple[float | None, float | None]]
    descriptions: Mapping[str, str]


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _fields(struct: Any) -> list[Any]:
    found = _get(struct, "fields") if struct is not None else None
    return list(found) if isinstance(found, list | tuple) else []


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def interface_of(sim: Any) -> Interface | None:
    """The sim's ``get_interface()`` read for names, bounds and comments, if it has one.

    Only a ``get_interface`` that needs no argument is called; one that fails, or returns
    something without a Bonsai interface's fields, is ignored (it is optional).
    """
    fn = getattr(sim, "get_interface", None)
    if not callable(fn) or any(
        p.default is p.empty and p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
        for p in _params(fn)
    ):
        return None
    try:
        interface = fn()
        description = _get(interface, "description") or {}
        bounds: dict[str, tuple[float | None, float | None]] = {}
        comments: dict[str, str] = {}
        names: dict[str, tuple[str, ...]] = {}
        for part in ("state", "action"):
            found = []
            for f in _fields(_get(description, part)):
                name, kind = str(_get(f, "name")), _get(f, "type") or {}
                found.append(name)
                lo, hi = _get(kind, "start"), _get(kind, "stop")
                if lo is not None or hi is not None:
                    bounds[name] = (
                        None if lo is None else float(lo),
                        None if hi is None else float(hi),
                    )
                if _get(kind, "comment"):
                    comments[name] = str(_get(kind, "comment"))
            names[part] = tuple(found)
        return Interface(
            str(_get(interface, "name") or ""), names["state"], names["action"], bounds, comments
        )
    except Exception:  # optional metadata: a sim that cannot describe itself still runs
        return None


__all__ = [
    "FLAG_KEYS",
    "STATE_SOURCES",
    "Interface",
    "Shape",
    "ShapeChoice",
    "find_shape",
    "has",
    "interface_of",
    "parse_choice",
    "reader",
    "state_source",
]


def state_source(sim: Any) -> str:
    """Where ``sim``'s state is read when its calls return none ("" if nowhere)."""
    return _first(sim, STATE_SOURCES)
