"""``simgym export``: a trained policy as one ONNX graph from named states to named actions.

The graph holds everything between the sim and the network, so the agent runs without
simgym's env, Ray or torch (``gymclient.agent`` needs onnxruntime only)::

    states (float64 [batch] each)
      → derived observations (the spec's ``expr``s) and ranges → [-1, 1], clipped
      → float32 observation → the RLlib module → deterministic action (the Gaussian's mean)
      → clipped to [-1, 1] → scaled to the declared action ranges (float64 [batch] each)

    or, for discrete actions: the module's logits → the argmax of each action's logits →
      the value the sim receives (float64 [batch] each: 0/1, a named value's number, ...)

A second graph, ``policy.onnx``, holds the network alone (normalised float32 observation →
clipped mean action, or each discrete action's chosen index): ``Agent.act`` computes the
few scalar operations around it in Python for a single state, because onnxruntime spends
about a microsecond on every node and the derived observations alone can be dozens of nodes.

It is exactly what the env does in training (``DeclarativeCodec.encode``/``decode``), and
the export is verified against that path — the spec's codec plus the RLlib module in
torch — on random states before anything is written. Reference-style specs
(``RLSimSpec``) are refused: their observation code is arbitrary Python.

Imported only for export (needs the ``train`` extra for torch and RLlib, and ``onnx``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gymclient.actions import ActionMap
from gymclient.agent import CORE_MODEL, FORMAT, MANIFEST, MODEL, Agent
from gymclient.errors import SimgymError
from gymclient.expr import parse
from gymclient.spec import EnvSpec

MODULE_SUBPATH = Path("learner_group") / "learner" / "rl_module" / "default_policy"
OPSET = 17
TOLERANCE = 1e-5


class ExportError(SimgymError):
    """The run cannot be exported (no checkpoint, a reference-style spec, a failed check)."""


@dataclass
class ExportResult:
    """What ``export_run`` wrote and how well the graph matched the RLlib module."""

    out: Path
    model: Path
    manifest: dict[str, Any]
    max_abs_diff: float


# ---------------------------------------------------------------- run folder


def load_run_spec(run_dir: Path) -> EnvSpec:
    """The env spec a run trained with (its ``spec.resolved.yaml``).

    Raises:
        ExportError: Not a run folder.
    """
    path = run_dir / "spec.resolved.yaml"
    if not path.is_file():
        raise ExportError(f"{run_dir}: not a simgym run folder (no spec.resolved.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
        return EnvSpec.model_validate(data["env"])
    except Exception as exc:
        raise ExportError(f"{path}: cannot read the env spec: {exc}") from None


def resolve_checkpoint(run_dir: Path | None, checkpoint: Path | None) -> Path:
    """The policy module folder: from ``checkpoint`` (any level), else the run's last one.

    Raises:
        ExportError: No checkpoint found, naming where it looked.
    """
    if checkpoint is None:
        if run_dir is None:
            raise ExportError("give a run folder or --checkpoint")
        run_json = run_dir / "run.json"
        if not run_json.is_file():
            raise ExportError(f"{run_dir}: not a simgym run folder (no run.json)")
        listed = json.loads(run_json.read_text()).get("checkpoints") or []
        if not listed:
            raise ExportError(f"{run_dir}: the run has no checkpoint yet")
        checkpoint = Path(listed[-1])
        if not checkpoint.is_absolute() and not checkpoint.exists():
            checkpoint = run_dir / "checkpoints" / checkpoint.name
    checkpoint = Path(checkpoint)
    for candidate in (checkpoint, checkpoint / MODULE_SUBPATH, checkpoint / "default_policy"):
        if (candidate / "module_state.pkl").exists() or (candidate / "module_state").exists():
            return candidate.resolve()
        if candidate.is_dir() and any(candidate.glob("module_state*")):
            return candidate.resolve()
    raise ExportError(f"{checkpoint}: no RLlib policy module in this checkpoint")


class _RLModuleConfigNotice(logging.Filter):
    """Drops RLlib's ``RLModuleConfig`` deprecation notice, and no other record.

    ``RLModule.__init__`` (ray 2.60, ``rl_module.py:463``) builds an ``RLModuleConfig`` on
    every construction, for old subclasses that still read ``self.config``; that class is
    ``@Deprecated(error=False)``, so the first module built in a process logs "DeprecationWarning:
    `RLModule(config=[RLModuleConfig object])` has been deprecated" through the logger
    ``ray._common.deprecation`` (logging, not ``warnings``: a warnings filter misses it),
    whichever API built the module: ``RLModule.from_checkpoint`` here, no call of ours passes
    a config. Nothing for the user to do, so ``simgym evaluate`` and ``simgym export`` leave
    it out; ``simgym train`` sends it to ``train.log`` (``launcher.quiet``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "RLModuleConfig" not in record.getMessage()


_RLMODULE_CONFIG_NOTICE = _RLModuleConfigNotice()


def load_module(module_dir: Path) -> Any:
    """The RLlib module, from its checkpoint folder, on CPU in eval mode."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    # addFilter keeps one copy of a filter: loading again adds nothing.
    logging.getLogger("ray._common.deprecation").addFilter(_RLMODULE_CONFIG_NOTICE)
    module: Any = RLModule.from_checkpoint(str(module_dir))
    module.eval()  # a TorchRLModule is a torch.nn.Module
    return module


def spec_hash(spec: EnvSpec) -> str:
    """sha256 of what the graph depends on: observations, actions (names, ranges, exprs)."""
    payload = {
        "observations": {k: v.model_dump() for k, v in spec.observations.items()},
        "actions": {k: v.model_dump() for k, v in spec.actions.items()},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def input_states(spec: EnvSpec) -> list[str]:
    """The states the graph takes: plain observations, then names used only in exprs."""
    names = [n for n, r in spec.observations.items() if not r.expr]
    for r in spec.observations.values():
        if r.expr:
            for name in sorted(parse(r.expr)):
                if name not in names:
                    names.append(name)
    return names


def check_exportable(spec: EnvSpec) -> None:
    """Refuse specs whose observation code cannot be written as a graph.

    Raises:
        ExportError: A reference-style (``RLSimSpec``) spec.
    """
    if spec.is_reference:
        raise ExportError(
            f"{spec.source}: a reference-style spec (RLSimSpec) cannot be exported: its "
            "observation and action mapping are Python code, not ranges; write the spec "
            "declaratively (observations/actions with min/max, see docs/spec.md) and retrain"
        )
    taken = [n for n, a in spec.actions.items() if a.from_sim]
    if taken:
        raise ExportError(
            f"{spec.source}: actions.{taken[0]}: {{}} takes the sim's values when the env "
            "connects; the export needs them in the spec: write them there (e.g. "
            f"`{taken[0]}: {{values: [0, 1]}}`, what the sim declares) and export again"
        )


def observation_range(spec: EnvSpec, name: str) -> tuple[float, float]:
    """An observation's (min, max).

    Raises:
        ExportError: The spec leaves it out (a run's spec.resolved.yaml has it filled in).
    """
    r = spec.observations[name]
    if r.min is None or r.max is None:
        raise ExportError(
            f"{spec.source}: observations.{name}: no min/max; export a run (its "
            "spec.resolved.yaml holds the ranges estimated at train start) or give them"
        )
    return float(r.min), float(r.max)


def action_map(spec: EnvSpec) -> ActionMap:
    """The spec's actions in the graph's order (the spec's): ranges or discrete values."""
    return ActionMap(spec.source, spec.actions, list(spec.actions))


def _argmax_columns(logits: Any, sizes: list[int]) -> list[Any]:
    """Each discrete action's chosen index (int64 [batch]) from its slice of the logits."""
    import torch

    out, at = [], 0
    for n in sizes:
        out.append(torch.argmax(logits[..., at : at + n], dim=-1))
        at += n
    return out


# ---------------------------------------------------------------- graph


def _torch_expr(expr: str) -> Any:
    """A torch function of ``({state: tensor}, cache)`` computing a whitelisted expression.

    ``cache`` is shared by the expressions of one graph: a subexpression that several
    observations use (``Cref_next`` in ``Cr - Cref_next`` and ``Tr - f(Cref_next)``) is
    computed once, which keeps the graph — and the time per call — small.
    """
    import math

    import torch

    tree = ast.parse(expr, mode="eval").body

    calls: dict[str, tuple[Any, Any]] = {
        "abs": (torch.abs, abs),
        "exp": (torch.exp, math.exp),
        "log": (torch.log, math.log),
        "sqrt": (torch.sqrt, math.sqrt),
    }

    def pair(fn: Any, a: Any, b: Any) -> Any:
        # min/max of tensors and plain numbers (constants stay Python floats).
        if isinstance(a, float) and isinstance(b, float):
            return min(a, b) if fn is torch.minimum else max(a, b)
        if isinstance(a, float):
            a, b = b, a
        if isinstance(b, float):
            return torch.clamp(a, max=b) if fn is torch.minimum else torch.clamp(a, min=b)
        return fn(a, b)

    def ev(node: ast.AST, env: dict[str, Any], cache: dict[str, Any]) -> Any:
        key = ast.dump(node)
        if key not in cache:
            cache[key] = _ev(node, env, cache)
        return cache[key]

    def _ev(node: ast.AST, env: dict[str, Any], cache: dict[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return float(node.value)  # type: ignore[arg-type]  # parse() allows numbers only
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.UnaryOp):
            value = ev(node.operand, env, cache)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            left, right = ev(node.left, env, cache), ev(node.right, env, cache)
            op = node.op
            if isinstance(op, ast.Add):
                return left + right
            if isinstance(op, ast.Sub):
                return left - right
            if isinstance(op, ast.Mult):
                return left * right
            if isinstance(op, ast.Div):
                return left / right
            if isinstance(op, ast.Pow):
                return left**right
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [ev(a, env, cache) for a in node.args]
            name = node.func.id
            if name in ("min", "max"):
                fn = torch.minimum if name == "min" else torch.maximum
                out = args[0]
                for other in args[1:]:
                    out = pair(fn, out, other)
                return out
            tensor_fn, float_fn = calls[name]
            return float_fn(args[0]) if isinstance(args[0], float) else tensor_fn(args[0])
        raise ExportError(f"expression {expr!r}: {type(node).__name__} cannot be exported")

    return lambda env, cache: ev(tree, env, cache)


def build_graph_module(spec: EnvSpec, module: Any) -> Any:
    """A ``torch.nn.Module``: named state tensors in, named action tensors out."""
    import torch

    states = input_states(spec)
    obs = list(spec.observations.items())
    plain = {n: states.index(n) for n, r in obs if not r.expr}
    derived = {n: _torch_expr(r.expr) for n, r in obs if r.expr}
    bounds = [observation_range(spec, n) for n, _ in obs]
    lo = torch.tensor([a for a, _ in bounds], dtype=torch.float64)
    scale = torch.tensor([2.0 / (b - a) for a, b in bounds], dtype=torch.float64)
    amap = action_map(spec)
    a_lo = torch.tensor([lo for lo, _ in amap.ranges], dtype=torch.float64)
    a_half = torch.tensor([(hi - lo) / 2.0 for lo, hi in amap.ranges], dtype=torch.float64)
    tables = [torch.tensor(c, dtype=torch.float64) for c in amap.choices]
    n_act = len(amap.names)
    # Only these can turn finite states into NaN (the env maps NaN observations to 0).
    may_nan = any(
        isinstance(node, (ast.Div, ast.Pow))
        or (isinstance(node, ast.Name) and node.id in ("log", "sqrt"))
        for _, r in obs
        if r.expr
        for node in ast.walk(ast.parse(r.expr, mode="eval"))
    )

    def column(value: Any, like: Any) -> Any:
        return value if isinstance(value, torch.Tensor) else torch.full_like(like, value)

    class Policy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, *inputs: Any) -> Any:
            env = dict(zip(states, inputs, strict=True))
            cache: dict[str, Any] = {}
            columns = [
                inputs[plain[n]] if n in plain else column(derived[n](env, cache), inputs[0])
                for n, _ in obs
            ]
            raw = torch.stack(columns, dim=-1)
            x = (raw - lo) * scale - 1.0
            x = torch.clamp(x, -1.0, 1.0)
            if may_nan:
                # The env turns non-finite observations (log of a negative, ...) into 0.
                x = torch.where(torch.isnan(x), torch.zeros_like(x), x)
            out = self.module.forward_inference({"obs": x.to(torch.float32)})
            dist = out["action_dist_inputs"]
            if not (amap.discrete or amap.mixed):
                mean = dist[..., :n_act]
                a = torch.clamp(mean.to(torch.float64), -1.0, 1.0)
                values = (a + 1.0) * a_half + a_lo
                return tuple(values[..., i] for i in range(n_act))
            # The most likely choice of each discrete action, as the value the sim receives;
            # in a Tuple space the Box part's means and log-stds come first.
            nc = len(amap.ranges)
            picks = _argmax_columns(dist[..., 2 * nc :], amap.sizes)
            chosen = [t[i] for t, i in zip(tables, picks, strict=True)]
            a = torch.clamp(dist[..., :nc].to(torch.float64), -1.0, 1.0)
            scaled = (a + 1.0) * a_half + a_lo
            return tuple(scaled[..., j] if kind == "c" else chosen[j] for kind, j in amap.kinds)

    return Policy().eval()


def build_core_module(spec: EnvSpec, module: Any) -> Any:
    """A ``torch.nn.Module``: normalised float32 observations in, clipped mean actions out.

    For discrete actions: each action's chosen index (argmax), as float32.
    """
    import torch

    n_act = len(spec.actions)
    amap = action_map(spec)
    # RLlib's default module (separate actor encoder, MLP head): call the layers directly.
    # forward_inference also clips and re-concatenates the log-std half, ~25 more graph
    # nodes for an output the deterministic action does not use. Anything else: the
    # module's own forward_inference (the export verifies either way).
    encoder = getattr(getattr(module, "encoder", None), "actor_encoder", None)
    head = getattr(getattr(module, "pi", None), "net", None)

    def dist_inputs(obs: Any) -> Any:
        if encoder is not None and head is not None:
            from ray.rllib.core.models.base import ENCODER_OUT

            return head(encoder({"obs": obs})[ENCODER_OUT])
        return module.forward_inference({"obs": obs})["action_dist_inputs"]

    class Core(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, obs: Any) -> Any:
            inputs = dist_inputs(obs)
            if not (amap.discrete or amap.mixed):
                return torch.clamp(inputs[..., :n_act], -1.0, 1.0)
            nc = len(amap.ranges)
            picks = [
                p.to(torch.float32) for p in _argmax_columns(inputs[..., 2 * nc :], amap.sizes)
            ]
            means = torch.clamp(inputs[..., :nc], -1.0, 1.0)
            columns = [means[..., j] if kind == "c" else picks[j] for kind, j in amap.kinds]
            return torch.stack(columns, dim=-1)

    return Core().eval()


# ---------------------------------------------------------------- verification


def sample_states(spec: EnvSpec, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random states to verify the graph on.

    Each plain observation is drawn over its range widened by 10% each side (so clipping
    is exercised); states used only in expressions over [-10, 10].
    """
    out: dict[str, np.ndarray] = {}
    for name in input_states(spec):
        r = spec.observations.get(name)
        if r is not None and not r.expr:
            lo, hi = observation_range(spec, name)
            pad = 0.1 * (hi - lo)
            out[name] = rng.uniform(lo - pad, hi + pad, n)
        else:
            out[name] = rng.uniform(-10.0, 10.0, n)
    return out


def reference_actions(spec: EnvSpec, module: Any, states: dict[str, np.ndarray]) -> np.ndarray:
    """What training's env and the RLlib module do: the spec's codec, then the module's mean.

    Returns a (batch × actions) array in the spec's action order.
    """
    import torch

    from gymclient.codec import DeclarativeCodec

    names = list(states)
    codec = DeclarativeCodec(
        spec.model_copy(update={"reward": None, "log_states": []}), names, list(spec.actions)
    )
    values = np.stack([states[n] for n in names], axis=1)
    obs, _ = codec.encode_batch(values.copy())
    obs = np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=-1.0)
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.from_numpy(obs)})
    if codec.actions.discrete:
        logits = out["action_dist_inputs"].numpy()
        picks = np.stack(
            [np.asarray(codec.deterministic(row)).reshape(-1) for row in logits]
        ).reshape(len(logits), -1)
        return codec.decode_batch(picks)
    if codec.actions.mixed:
        pairs = [codec.deterministic(row) for row in out["action_dist_inputs"].numpy()]
        box = np.stack([m for m, _ in pairs])
        disc = np.stack([np.asarray(i).reshape(-1) for _, i in pairs])
        return codec.decode_batch((box, disc))  # type: ignore[arg-type]
    mean = out["action_dist_inputs"][..., : len(spec.actions)].numpy()
    return codec.decode_batch(mean)


def _onnx_actions(model: Path, states: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {k: v.astype(np.float64) for k, v in states.items()})
    return np.stack(outputs, axis=1)


# ---------------------------------------------------------------- export


def _onnx_export(
    graph: Any, example: tuple[Any, ...], path: Path, inputs: list[str], outputs: list[str]
) -> None:
    """Write ``graph`` as ONNX at ``path``, batch size free."""
    import torch

    with warnings.catch_warnings():
        # The TorchScript exporter (one self-contained file) is "legacy" but what we want.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            example,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={n: {0: "batch"} for n in [*inputs, *outputs]},
            opset_version=OPSET,
            dynamo=False,
        )


def _manifest(
    spec: EnvSpec,
    run_dir: Path | None,
    module_dir: Path,
    names: list[str],
    samples: int,
    diff: float,
    diff_physical: float,
) -> dict[str, Any]:
    """``manifest.json``: what the graphs take and give, where they came from, how verified."""
    from simgym import PROTOCOL, __version__

    return {
        "format": FORMAT,
        "model": MODEL,
        "simgym_version": __version__,
        "protocol": PROTOCOL,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": str(run_dir) if run_dir else None,
        "checkpoint": str(module_dir),
        "spec": spec.source,
        "name": spec.name,  # the spec's name (simgym serve's default concept name)
        "spec_hash": spec_hash(spec),
        "inputs": [
            {
                "name": n,
                "min": spec.observations[n].min if n in spec.observations else None,
                "max": spec.observations[n].max if n in spec.observations else None,
                "dtype": "float64",
            }
            for n in names
        ],
        "observations": [
            {"name": n, "min": r.min, "max": r.max, **({"expr": r.expr} if r.expr else {})}
            for n, r in spec.observations.items()
        ],
        "outputs": [_output(n, r) for n, r in spec.actions.items()],
        "policy": _policy_text(action_map(spec)),
        "opset": OPSET,
        "verified": {
            "samples": samples,
            "max_abs_diff": diff,  # in [-1, 1] action units
            "max_abs_diff_physical": diff_physical,  # in the actions' own units
            "tolerance": TOLERANCE,
        },
        "core_model": CORE_MODEL,
    }


def _units(amap: ActionMap) -> np.ndarray:
    """Per action, what a difference is divided by before it is compared with TOLERANCE.

    A continuous action in the agent's own units ([-1, 1]): a float32 network's rounding, not
    the action's physical scale, decides what "equal" means. A discrete action is right or
    wrong: its values are compared as they are (1), and must be equal.
    """
    return np.array(
        [
            1.0 if kind == "d" else (amap.ranges[j][1] - amap.ranges[j][0]) / 2.0
            for kind, j in amap.kinds
        ]
    )


def _policy_text(amap: ActionMap) -> str:
    if amap.discrete:
        return "deterministic: the most likely value of each discrete action (argmax)"
    if amap.mixed:
        return (
            "deterministic: the Gaussian's mean for continuous actions, the most likely value "
            "(argmax) for discrete ones"
        )
    return "deterministic: the mean of the Gaussian action distribution"


def _output(name: str, action: Any) -> dict[str, Any]:
    """A graph output in the manifest: a continuous action's range, or a discrete one's values."""
    choices = action.choices()
    if choices is None:
        return {"name": name, "min": action.min, "max": action.max, "dtype": "float64"}
    out: dict[str, Any] = {
        "name": name,
        "min": min(choices),
        "max": max(choices),
        "values": choices,
        "dtype": "float64",
    }
    labels = action.labels()
    if labels:
        out["labels"] = labels
    return out


def export_run(
    run_dir: Path | None,
    out: Path,
    *,
    checkpoint: Path | None = None,
    spec: EnvSpec | None = None,
    samples: int = 2000,
    seed: int = 0,
) -> ExportResult:
    """Export a run's policy to ``out`` (``agent.onnx`` + ``manifest.json``), verified.

    Raises:
        ExportError: No checkpoint, a reference-style spec, or the graph disagrees with the
            RLlib module by more than 1e-5.
    """
    import torch

    if spec is None:
        if run_dir is None:
            raise ExportError("give a run folder (or a spec with --checkpoint)")
        spec = load_run_spec(run_dir)
    check_exportable(spec)
    module_dir = resolve_checkpoint(run_dir, checkpoint)
    try:
        module = load_module(module_dir)
    except Exception as exc:
        raise ExportError(f"{module_dir}: cannot load the RLlib module: {exc}") from None
    graph = build_graph_module(spec, module)
    names = input_states(spec)
    actions = list(spec.actions)

    out.mkdir(parents=True, exist_ok=True)
    model, core = out / MODEL, out / CORE_MODEL
    example = tuple(torch.zeros(2, dtype=torch.float64) for _ in names)
    _onnx_export(graph, example, model, names, actions)
    obs = (torch.zeros(2, len(spec.observations), dtype=torch.float32),)
    _onnx_export(build_core_module(spec, module), obs, core, ["obs"], ["action"])

    rng = np.random.default_rng(seed)
    states = sample_states(spec, samples, rng)
    expected = reference_actions(spec, module, states)
    half = _units(action_map(spec))

    def refuse(what: str, got: np.ndarray) -> tuple[float, float]:
        diff_physical = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        diff = float(np.max(np.abs(got - expected) / half)) if expected.size else 0.0
        if not diff <= TOLERANCE:
            model.unlink(missing_ok=True)
            core.unlink(missing_ok=True)
            raise ExportError(
                f"{what} differs from the RLlib module by {diff:.3g} (> {TOLERANCE}, in "
                f"[-1, 1] action units) on {samples} random states; nothing was written"
            )
        return diff, diff_physical

    diff, diff_physical = refuse("the ONNX graph", _onnx_actions(model, states))

    manifest = _manifest(spec, run_dir, module_dir, names, samples, diff, diff_physical)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    # What users call: Agent.act (Python around policy.onnx, one state at a time).
    agent = Agent(out)
    singles = np.array(
        [
            [agent.act({n: float(v[i]) for n, v in states.items()})[a] for a in actions]
            for i in range(min(samples, 500))
        ]
    ).reshape(-1, len(actions))
    expected = expected[: len(singles)]
    try:
        refuse("Agent.act (policy.onnx)", singles)
    except ExportError:
        (out / MANIFEST).unlink(missing_ok=True)
        raise
    return ExportResult(out=out, model=model, manifest=manifest, max_abs_diff=diff)


__all__ = [
    "ExportError",
    "ExportResult",
    "check_exportable",
    "export_run",
    "input_states",
    "load_module",
    "load_run_spec",
    "resolve_checkpoint",
    "spec_hash",
]
