"""Per-step cost of the spec's reward/terminal/goal expressions, against no expression.

    python bench/expr.py                 # ~1 minute on 2 shared cores
    python bench/expr.py --seconds 3     # longer rounds, steadier figures

One sim server (bench/_expr_sim.py, a 4-state cart-pole-like sim whose episodes end only
by the spec: 200 steps each), the same spec with these variants, measured in the same run:

* ``baseline``   — ``reward: theta_dot`` (a state: the codec's path, no expression);
* ``reward``     — ``reward: {expr: ...}`` (3 states, abs, a config value);
* ``conditions`` — the reward plus ``terminal:`` and ``truncate:`` expressions;
* ``goals``      — four goals (2 avoid, drive, minimize) and no reward;
* ``all``        — the reward, both conditions and the four goals.

Paths timed:

* ``rules only``: ``Episodes.outcome`` on a fixed state (what the env adds per step, no
  transport), µs per call, best of rounds;
* ``SimEnv``: µs per env step on the server (unix socket, packed socket), random actions,
  the variants interleaved round by round, best round each, as wall time and as the env
  process's CPU time (what the expressions add to it; wall time also carries the server and
  the machine's other load); the difference to the baseline and the ratio;
* ``SimVectorEnv x16``: the same per sub-env step;
* ``closures vs code object``: the ``all`` variant's expressions evaluated by a tree of
  Python closures (an interpreter over the checked AST, built here) against the one code
  object ``gymclient.goals`` compiles: why the library compiles.
"""

from __future__ import annotations

import argparse
import ast
import math
import operator
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import best_us  # beside this file, on sys.path as its folder

BASE = """
observations:
  x: {min: -3, max: 3}
  x_dot: {min: -5, max: 5}
  theta: {min: -1, max: 1}
  theta_dot: {min: -5, max: 5}
  lean: {expr: theta + 0.1 * theta_dot, min: -2, max: 2}
actions:
  force: {min: -1, max: 1}
max_episode_steps: 200
lessons:
  theta0: {min: -0.05, max: 0.05}
"""
REWARD = 'reward: {expr: "-abs(theta) - 0.1 * abs(x) - 0.01 * abs(lean) + theta0"}\n'
CONDITIONS = 'terminal: "abs(theta) > 100 or abs(x) > 1000"\ntruncate: "steps >= 200"\n'
GOALS = """goals:
  FallOver: {avoid: "abs(theta)", above: 100}
  OffTrack: {avoid: "abs(x)", above: 1000}
  Center: {drive: x, range: [-0.1, 0.1]}
  Calm: {minimize: "abs(theta_dot)", below: 0.5}
"""
STATE = {"x": 0.05, "x_dot": 0.1, "theta": 0.02, "theta_dot": -0.3}  # mid-episode
VARIANTS = {
    "baseline": "reward: theta_dot\n",
    "reward": REWARD,
    "conditions": REWARD + CONDITIONS,
    "goals": GOALS,
    "all": REWARD + CONDITIONS + GOALS,
}


def load(variant: str, folder: Path) -> Any:
    from gymclient.spec import load_spec

    path = folder / f"{variant}.yaml"
    path.write_text(BASE + VARIANTS[variant])
    return load_spec(path)


def rules_only(specs: dict[str, Any], address: str, seconds: float) -> dict[str, float]:
    """µs per ``Episodes.outcome`` call on a fixed mid-episode state."""
    from gymclient import SimEnv

    out = {}
    for name, spec in specs.items():
        env = SimEnv({"spec": spec, "address": address, "info_states": False})
        env.reset(seed=0)
        episodes = env._episodes

        def outcome(e: Any = episodes) -> object:
            return e.outcome(0, STATE, False, False, None, 50)

        out[name] = best_us(outcome, seconds)
        env.close()
    return out


def _timed(step: Callable[[int], None], seconds: float, per: int) -> tuple[float, float]:
    """(wall, this process's CPU) µs per unit of ``step(n)`` calls over ``seconds``."""
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() < start + seconds:
        step(n)
        n += 1
    wall = (time.perf_counter() - start) / (n * per) * 1e6
    return wall, (time.process_time() - cpu) / (n * per) * 1e6


def interleaved(
    runs: dict[str, Callable[[int], None]], seconds: float, rounds: int, per: int
) -> dict[str, tuple[float, float]]:
    """Each run's best (wall, CPU) µs per unit over ``rounds`` rounds taken in turn."""
    best = {n: (math.inf, math.inf) for n in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            wall, cpu = _timed(run, seconds / rounds, per)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def env_steps(
    specs: dict[str, Any], address: str, seconds: float, rounds: int
) -> dict[str, tuple[float, float]]:
    """(wall, client CPU) µs per SimEnv step; 100 steps per unit, resets included."""
    from gymclient import SimEnv

    envs = {n: SimEnv({"spec": s, "address": address}) for n, s in specs.items()}
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, 1).astype(np.float32) for _ in range(1000)]

    def run(env: Any) -> Callable[[int], None]:
        def hundred(n: int) -> None:
            for k in range(100):
                _, _, term, trunc, _ = env.step(actions[(n * 100 + k) % 1000])
                if term or trunc:
                    env.reset()

        return hundred

    for env in envs.values():
        env.reset(seed=0)
    try:
        return interleaved({n: run(e) for n, e in envs.items()}, seconds, rounds, 100)
    finally:
        for env in envs.values():
            env.close()


def vector_steps(
    specs: dict[str, Any], address: str, seconds: float, rounds: int, num: int = 16
) -> dict[str, tuple[float, float]]:
    """(wall, client CPU) µs per sub-env step of a ``num``-sub-env SimVectorEnv."""
    from gymclient.vector import SimVectorEnv

    envs = {n: SimVectorEnv(s, num, [address]) for n, s in specs.items()}
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, (num, 1)).astype(np.float32) for _ in range(100)]

    def run(env: Any) -> Callable[[int], None]:
        def ten(n: int) -> None:
            for k in range(10):
                env.step(actions[(n * 10 + k) % 100])

        return ten

    for env in envs.values():
        env.reset(seed=0)
    try:
        return interleaved({n: run(e) for n, e in envs.items()}, seconds, rounds, 10 * num)
    finally:
        for env in envs.values():
            env.close()


# ---------------------------------------------------------------- closures, for contrast

_BIN: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}
_CMP: dict[type, Callable[[Any, Any], Any]] = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def closure(node: ast.AST) -> Callable[[dict[str, float], dict[str, Any], int], Any]:
    """A tree of closures over a rewritten (checked) expression tree: an interpreter."""
    from gymclient.expr import FUNCTIONS

    if isinstance(node, ast.Constant):
        value = node.value
        return lambda s, c, n: value
    if isinstance(node, ast.Subscript):
        key = node.slice.value  # type: ignore[attr-defined]
        if node.value.id == "s":  # type: ignore[attr-defined]
            return lambda s, c, n: s[key]
        return lambda s, c, n: c[key]
    if isinstance(node, ast.Name):  # `steps`
        return lambda s, c, n: n
    if isinstance(node, ast.UnaryOp):
        inner = closure(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda s, c, n: not inner(s, c, n)
        if isinstance(node.op, ast.USub):
            return lambda s, c, n: -inner(s, c, n)
        return inner
    if isinstance(node, ast.BinOp):
        op, left, right = _BIN[type(node.op)], closure(node.left), closure(node.right)
        return lambda s, c, n: op(left(s, c, n), right(s, c, n))
    if isinstance(node, ast.BoolOp):
        parts = [closure(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda s, c, n: all(p(s, c, n) for p in parts)
        return lambda s, c, n: any(p(s, c, n) for p in parts)
    if isinstance(node, ast.Compare):
        left = closure(node.left)
        pairs = [
            (_CMP[type(o)], closure(r)) for o, r in zip(node.ops, node.comparators, strict=True)
        ]

        def compare(s: dict[str, float], c: dict[str, Any], n: int) -> bool:
            a = left(s, c, n)
            for op, right in pairs:
                b = right(s, c, n)
                if not op(a, b):
                    return False
                a = b
            return True

        return compare
    if isinstance(node, ast.IfExp):
        test, yes, no = closure(node.test), closure(node.body), closure(node.orelse)
        return lambda s, c, n: yes(s, c, n) if test(s, c, n) else no(s, c, n)
    if isinstance(node, ast.Call):
        fn = FUNCTIONS[node.func.id]  # type: ignore[attr-defined]
        args = [closure(a) for a in node.args]
        return lambda s, c, n: fn(*[a(s, c, n) for a in args])
    if isinstance(node, ast.Tuple):
        items = [closure(e) for e in node.elts]
        return lambda s, c, n: tuple(i(s, c, n) for i in items)
    raise TypeError(type(node).__name__)


def closures_vs_code(spec: Any, seconds: float) -> tuple[float, float]:
    """µs per evaluation of the ``all`` variant's expressions: closures, code object."""
    from gymclient.goals import StepRules

    rules = StepRules(spec, ["x", "x_dot", "theta", "theta_dot"], spec.lessons, lambda *a: a)
    tree = ast.Tuple([rules._tree(k, t) for k, t in rules._entries], ast.Load())
    interpreted = closure(tree)
    compiled = rules._fn
    config = {"theta0": 0.01}
    assert interpreted(STATE, config, 50) == compiled(STATE, config, 50)
    return (
        best_us(lambda: interpreted(STATE, config, 50), seconds),
        best_us(lambda: compiled(STATE, config, 50), seconds),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="timing per path and variant")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (env paths)")
    args = parser.parse_args()

    from simserver.process import ServerProcess

    folder = Path(tempfile.mkdtemp(prefix="simgym-bench-expr-"))
    specs = {name: load(name, folder) for name in VARIANTS}
    server = ServerProcess(
        "_expr_sim.py:Pole",
        workdir=Path(__file__).parent,
        transport="unix",
        args=["--max-sessions", "128"],  # 5 variants x 16 sub-envs open at once
    )
    server.start(timeout=60)
    address = str(server.address)
    try:
        rules = rules_only(specs, address, args.seconds)
        single = env_steps(specs, address, args.seconds * 2, args.rounds)
        vector = vector_steps(specs, address, args.seconds * 2, args.rounds)
    finally:
        server.cleanup()
    tree_us, code_us = closures_vs_code(specs["all"], args.seconds)

    base = "baseline"

    def cell(pair: tuple[float, float], ref: tuple[float, float], i: int) -> str:
        return f"{pair[i]:7.1f} ({pair[i] - ref[i]:+5.1f}, {pair[i] / ref[i]:.2f}x)"

    print("µs per step: value (difference to the baseline, ratio); best of interleaved rounds")
    print(
        f"{'variant':<11} {'rules only':>10} {'SimEnv wall':>22} {'SimEnv client CPU':>22} "
        f"{'x16 wall/sub-env':>22} {'x16 CPU/sub-env':>22}"
    )
    for name in VARIANTS:
        s, v = single[name], vector[name]
        print(
            f"{name:<11} {rules[name]:>10.2f} {cell(s, single[base], 0):>22} "
            f"{cell(s, single[base], 1):>22} {cell(v, vector[base], 0):>22} "
            f"{cell(v, vector[base], 1):>22}"
        )
    print(
        f"\n'all' expressions, one evaluation: closures {tree_us:.2f} µs, "
        f"code object {code_us:.2f} µs ({tree_us / code_us:.1f}x faster compiled)"
    )


if __name__ == "__main__":
    main()
