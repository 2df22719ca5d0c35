"""Use an exported agent from plain Python: ``load_agent(path).act(states) -> actions``.

An agent folder is what ``simgym export`` writes::

    agent/
      agent.onnx        # named states in (float64, shape [batch]) → named actions out
      policy.onnx       # the network alone: normalised observations → actions in [-1, 1]
      manifest.json     # names, ranges, expressions, spec hash, simgym version, verification

The observation normalisation (ranges → [-1, 1], derived observations such as
``Cr - Cref``, clipping) and the action scaling ([-1, 1] → the declared ranges; for
discrete actions the argmax and the chosen value, e.g. 0/1) are inside the graph, so a
caller passes the sim's states in physical units and gets the actions in physical units.
``act`` (one state) does the scalar arithmetic around the network in Python from the
manifest and runs ``policy.onnx`` — the same operations, verified at export, at a fraction
of onnxruntime's per-node cost; ``act_batch`` runs ``agent.onnx``.
Needs ``onnxruntime`` only (``pip install simgym[infer]``):
neither Ray nor torch.

Example::

    from gymclient.agent import load_agent

    agent = load_agent("agent/")
    agent.act({"Cr": 8.57, "Tr": 311.3, "Tc": 298.0,
               "Cref_next": 8.57, "Tref_next": 311.26, "Cref_preview": 8.57})   # {"Tc_adjust": ...}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gymclient.errors import SimgymError

MANIFEST = "manifest.json"
MODEL = "agent.onnx"
CORE_MODEL = "policy.onnx"
FORMAT = "simgym-agent/1"
_PLAIN = {float}


class AgentError(SimgymError):
    """The agent folder is missing, malformed, or onnxruntime is not installed."""


class AgentInputError(SimgymError, ValueError):
    """A state given to ``act`` is missing, not a number, or not finite; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"state {field!r}: {problem}")
        self.field = field


def _number(name: str, value: Any) -> float:
    # bool is an int to Python, but True is no temperature.
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise AgentInputError(name, f"expected a number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond ~1.8e308 (JSON allows any number of digits)
        raise AgentInputError(
            name, "expected a finite number, got an integer too large for a float"
        ) from None
    if not math.isfinite(number):
        raise AgentInputError(name, f"expected a finite number, got {number!r}")
    return number


class Agent:
    """An exported policy: deterministic action for given states, via onnxruntime.

    Args:
        path: The agent folder (or its ``manifest.json``).
        threads: onnxruntime intra-op threads (1 is fastest for single states).

    Attributes:
        manifest: The manifest (dict).
        state_names: The states ``act`` needs, in the graph's input order.
        action_names: The actions ``act`` returns.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 1) -> None:
        folder = Path(path)
        if folder.is_file() and folder.name == MANIFEST:
            folder = folder.parent
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise AgentError(f"{folder}: not an agent folder (no {MANIFEST}; see `simgym export`)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise AgentError(f"{manifest_path}: cannot read the manifest: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise AgentError(f"{manifest_path}: not a {FORMAT} manifest")
        self.manifest: dict[str, Any] = manifest
        self.folder = folder
        self.state_names: list[str] = [i["name"] for i in manifest["inputs"]]
        self.action_names: list[str] = [o["name"] for o in manifest["outputs"]]
        model = folder / str(manifest.get("model", MODEL))
        if not model.is_file():
            raise AgentError(f"{folder}: the manifest names {model.name}, which is missing")
        try:
            import onnxruntime as ort
        except ImportError:
            raise AgentError(
                "onnxruntime is not installed: pip install 'simgym[infer]' (or onnxruntime)"
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(model), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise AgentError(f"{model}: onnxruntime cannot load it: {exc}") from None
        graph_inputs = [i.name for i in self._session.get_inputs()]
        if graph_inputs != self.state_names:
            raise AgentError(
                f"{model}: graph inputs {graph_inputs} differ from the manifest's "
                f"{self.state_names}"
            )
        self._run = self._session.run
        # Discrete actions with integer values: act() gives ints (what the sim receives).
        self._integer = {
            o["name"]: int
            for o in manifest["outputs"]
            if o.get("values") and all(isinstance(v, int) for v in o["values"])
        }
        self._core = self._load_core(folder, manifest, ort, options)

    def _load_core(self, folder: Path, manifest: dict[str, Any], ort: Any, options: Any) -> Any:
        """The single-state fast path: Python arithmetic around ``policy.onnx``, or None.

        Exports older than ``policy.onnx`` (or with a manifest that lacks what the Python
        side needs) use the full graph for every call.
        """
        name = manifest.get("core_model")
        observations = manifest.get("observations")
        if not name or not observations or not (folder / str(name)).is_file():
            return None
        from gymclient.expr import compile_observer

        index = {n: i for i, n in enumerate(self.state_names)}
        try:
            observe = compile_observer(
                [
                    (o.get("expr"), None if o.get("expr") else index[o["name"]], o["min"], o["max"])
                    for o in observations
                ],
                index,
            )
            session = ort.InferenceSession(
                str(folder / str(name)), options, providers=["CPUExecutionProvider"]
            )
        except Exception:  # a manifest this version cannot follow: the full graph still can
            return None
        # A discrete action's index -> its value (what the sim receives); else None.
        tables: list[list[float] | None] = [o.get("values") for o in manifest["outputs"]]
        outputs = [
            (n, float(o["min"]), (float(o["max"]) - float(o["min"])) / 2.0)
            for n, o in zip(self.action_names, manifest["outputs"], strict=True)
        ]
        run = session.run
        feed_names = [session.get_outputs()[0].name]
        obs_name = session.get_inputs()[0].name
        float32 = np.float32

        # Every bytecode counts when the network itself takes ~10 µs: the observation is one
        # generated straight-line function (gymclient.expr.compile_observer).
        def act(values: list[float]) -> dict[str, float] | None:
            try:
                obs = observe(values)
            except (ArithmeticError, ValueError):
                return None  # log(0), x/0, exp overflow: the graph's IEEE arithmetic decides
            (action,) = run(feed_names, {obs_name: np.array((obs,), dtype=float32)})
            row = action[0].tolist()
            if discrete:
                # A discrete action's index -> its value (ints stay ints: 1, not 1.0).
                return {
                    n: (a + 1.0) * half + lo if t is None else t[int(a)]
                    for (n, lo, half), t, a in zip(outputs, tables, row)  # noqa: B905
                }
            return {n: (a + 1.0) * half + lo for (n, lo, half), a in zip(outputs, row)}  # noqa: B905

        discrete = any(t is not None for t in tables)
        return act

    def act(self, states: Mapping[str, Any]) -> dict[str, float]:
        """The deterministic action for one set of states (extra states are ignored).

        Raises:
            AgentInputError: A needed state is missing, not a number or not finite.
        """
        if states.__class__ is not dict and not isinstance(states, Mapping):
            raise AgentInputError(
                "<states>",
                f"expected a mapping of state name to number, got {type(states).__name__}",
            )
        try:
            values = [states[name] for name in self.state_names]
        except KeyError:
            missing = next(n for n in self.state_names if n not in states)
            raise AgentInputError(
                missing, f"missing (the agent needs: {', '.join(self.state_names)})"
            ) from None
        # The common case checked in one go (plain floats, finite sum); anything else —
        # ints, numpy scalars, a NaN, a string — value by value, naming the field.
        if not (set(map(type, values)) <= _PLAIN and math.isfinite(sum(values))):
            values = [_number(n, v) for n, v in zip(self.state_names, values, strict=True)]
        if self._core is not None:
            actions = self._core(values)
            if actions is not None:
                return actions
        # Fresh arrays per call: act() may be called from several threads.
        feed = {
            n: np.array((v,), dtype=np.float64)
            for n, v in zip(self.state_names, values, strict=True)
        }
        outputs = self._run(None, feed)
        return {
            name: self._integer[name](out[0]) if name in self._integer else float(out[0])
            for name, out in zip(self.action_names, outputs, strict=True)
        }

    def act_batch(
        self, states: Mapping[str, Sequence[float] | np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Actions for a batch: each state a sequence of the same length; arrays out.

        Raises:
            AgentInputError: A state is missing, of another length, or holds a non-finite value.
        """
        feed: dict[str, np.ndarray] = {}
        n: int | None = None
        for name in self.state_names:
            if name not in states:
                raise AgentInputError(
                    name, f"missing (the agent needs: {', '.join(self.state_names)})"
                )
            try:
                arr = np.asarray(states[name], dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise AgentInputError(name, "expected a sequence of numbers") from None
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise AgentInputError(name, f"has {arr.shape[0]} values; the others have {n}")
            if not np.all(np.isfinite(arr)):
                bad = int(np.flatnonzero(~np.isfinite(arr))[0])
                raise AgentInputError(name, f"value {bad} is {arr[bad]!r}, not a finite number")
            feed[name] = arr
        outputs = self._run(None, feed)
        return dict(zip(self.action_names, outputs, strict=True))

    def __repr__(self) -> str:
        return (
            f"Agent({str(self.folder)!r}: {', '.join(self.state_names)} -> "
            f"{', '.join(self.action_names)})"
        )


def load_agent(path: str | os.PathLike[str], *, threads: int = 1) -> Agent:
    """Load an agent folder written by ``simgym export``.

    Raises:
        AgentError: Not an agent folder, a broken manifest, or onnxruntime missing.
    """
    return Agent(path, threads=threads)


__all__ = ["Agent", "AgentError", "AgentInputError", "load_agent"]
