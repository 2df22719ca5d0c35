"""The expression language (gymclient.expr) and the spec's reward/terminal/truncate keys.

The language tests need no sim; the spec tests run SimEnv and SimVectorEnv against a real
simserver (the toy integrator of tests/sims: ``x += u`` per step, ``t`` counts steps,
the sim terminates at ``|x| > 10`` and truncates at ``t >= 20``).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gymclient import SimEnv
from gymclient.conformance import check_integration
from gymclient.errors import RewardError, SpecError, SpecMismatch
from gymclient.expr import ARITY, FUNCTIONS, compile_expr, parse, parse_derived
from gymclient.spec import load_spec
from gymclient.vector import SimVectorEnv

from .conftest import served

# ---------------------------------------------------------------- the language


def test_parse_returns_the_names_read():
    assert parse("abs(pole_angle) > 0.2 or abs(x) > 2.4") == {"pole_angle", "x"}
    assert parse("clip(x, -1, 1) * pi + e if steps % 10 == 0 else -y") == {"x", "steps", "y"}
    assert parse("not (0 < Tin - Tset <= 2)") == {"Tin", "Tset"}
    assert parse("3") == set()


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("-abs(Tin - Tset)", [20.0, 22.5], -2.5),
        ("0 < Tin < 30", [20.0, 0.0], True),
        ("0 < Tin < 30", [40.0, 0.0], False),
        ("Tin > 25 or Tset > 25", [20.0, 26.0], True),
        ("Tin > 25 and Tset > 25", [20.0, 26.0], False),
        ("not Tin > 25", [20.0, 0.0], True),
        ("1 if Tin > Tset else -1", [20.0, 19.0], 1.0),
        ("Tin % 7", [20.0, 0.0], 6.0),
        ("2 ** Tset", [0.0, 3.0], 8.0),
        ("clip(Tin, 0, 10)", [20.0, 0.0], 10.0),
        ("clip(Tin, 0, 10)", [-3.0, 0.0], 0.0),
        ("max(Tin, Tset, 100)", [20.0, 0.0], 100.0),
        ("min(Tin, Tset)", [20.0, -1.0], -1.0),
        ("atan2(Tin, Tset)", [1.0, 1.0], math.pi / 4),
        ("hypot(Tin, Tset)", [3.0, 4.0], 5.0),
        ("log(Tin, 2)", [8.0, 0.0], 3.0),
        ("round(Tin, 1)", [2.26, 0.0], 2.3),
        ("floor(Tin) + ceil(Tset)", [2.5, 2.5], 5),
        ("sign(Tin) + sign(Tset)", [-2.0, 0.0], -1.0),
        ("sin(pi / 2) + log(e)", [0.0, 0.0], 2.0),
        ("True + False", [0.0, 0.0], 1),
    ],
)
def test_compiled_expression_values(text, values, expected):
    fn = compile_expr(text, ["Tin", "Tset"])
    assert fn(values) == pytest.approx(expected)
    # A mapping name -> position reads the same values.
    assert compile_expr(text, {"Tset": 1, "Tin": 0})(values) == pytest.approx(expected)


@pytest.mark.parametrize("name", sorted(set(FUNCTIONS) - {"clip", "sign"}))
def test_every_function_is_pythons_math(name):
    lo, _ = ARITY[name]
    args = [0.5, 0.25, 0.125][:lo]
    fn = compile_expr(f"{name}({', '.join('abcd'[: len(args)])})", list("abcd"))
    ref = getattr(math, name, None) or {"abs": abs, "min": min, "max": max, "round": round}[name]
    assert fn([*args, 0.0, 0.0, 0.0]) == ref(*args)


def test_conditionals_short_circuit():
    """`x > 0 and log(x) > 1` and `log(x) if x > 0 else 0` never evaluate log(0)."""
    fn = compile_expr("(x > 0 and log(x) > 1) + (log(x) if x > 0 else 0)", ["x"])
    assert fn([0.0]) == 0
    assert fn([math.e**2]) == pytest.approx(3.0)


def test_number_literals_are_floats():
    """`9**9**9` overflows at once instead of computing a 370-million-digit integer."""
    fn = compile_expr("9 ** 9 ** 9", [])
    with pytest.raises(OverflowError):
        fn([])
    assert isinstance(compile_expr("1 + 2", [])([]), float)


def test_math_errors_surface():
    with pytest.raises(ZeroDivisionError):
        compile_expr("1 / x", ["x"])([0.0])
    with pytest.raises(ValueError):
        compile_expr("log(x)", ["x"])([-1.0])


def test_unknown_name_is_a_key_error():
    with pytest.raises(KeyError, match="y"):
        compile_expr("x + y", ["x"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x -", "not valid"),
        ("x.real", "Attribute is not allowed"),
        ("x[0]", "Subscript is not allowed"),
        ("__import__('os')", "may be called"),
        ("(lambda: 1)()", "may be called"),
        ("open('f')", "may be called"),
        ("lambda: 1", "Lambda is not allowed"),
        ("'a' + x", "only numbers"),
        ("f'{x}'", "not allowed"),
        ("[x for x in y]", "not allowed"),
        ("(y := 1)", "not allowed"),
        ("x // 2", "FloorDiv is not allowed"),
        ("x @ y", "MatMult is not allowed"),
        ("x << 1", "not allowed"),
        ("min(x)", "min() takes 2 or more argument(s), got 1"),
        ("clip(x, 1)", "clip() takes 3 argument(s), got 2"),
        ("abs(x, y)", "abs() takes 1 argument(s), got 2"),
        ("round(x, 1, 2)", "round() takes 1 to 2 argument(s), got 3"),
        ("abs(x=1)", "plain arguments only"),
        ("max(*x)", "plain arguments only"),
        ("abs + 1", "abs is a function: call it"),
        ("x if y", "not valid"),
        (3, "is not text"),
    ],
)
def test_outside_the_language_is_refused(text, message):
    with pytest.raises(ValueError) as info:
        parse(text)
    assert message in str(info.value)


def test_derived_observations_stay_arithmetic():
    """What the exported ONNX graph computes: no comparisons, no new functions, no pi."""
    assert parse_derived("abs(x - t) * 2 + exp(-x) / sqrt(t)") == {"x", "t"}
    assert parse_derived("pi * x") == {"pi", "x"}  # a state may be called pi here
    for text, message in [
        ("x > 1", "a comparison is not allowed in a derived observation"),
        ("1 if x else 2", "a conditional (x if c else y) is not allowed"),
        ("x and t", "and/or is not allowed"),
        ("x % 2", "% is not allowed"),
        ("sin(x)", "only abs, min, max, exp, log, sqrt may be called"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_derived(text)


# ---------------------------------------------------------------- the spec: load time

SPEC = """
observations:
  x: {min: -10, max: 10}
  t: {min: 0, max: 20}
  dev: {expr: x - 1, min: -5, max: 5}
actions:
  u: {min: -1, max: 1}
lessons:
  x0: {min: -0.5, max: 0.5}
"""


def _spec(tmp_path: Path, extra: str, base: str = SPEC) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(base) + textwrap.dedent(extra))
    return path


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ("reward: {expr: 'x +'}", "reward.expr", "not valid"),
        ("reward: {expr: 'x.y'}", "reward.expr", "Attribute is not allowed"),
        ("reward: {expr: x, state: x}", "reward", "exactly one of function, state, expr or"),
        ("reward: {constant: .nan}", "reward.constant", "finite"),
        ("terminal: 'abs(x) >'", "terminal", "not valid"),
        ("truncate: 'steps >= max(500)'", "truncate", "max() takes 2 or more"),
        (
            "observations:\n  x: {min: 0, max: 1, expr: 'x > 1'}",
            "observations.x.expr",
            "comparison",
        ),
    ],
)
def test_bad_expressions_name_file_and_key(tmp_path, extra, key, message):
    base = SPEC if not extra.startswith("observations") else SPEC.split("observations")[0]
    if extra.startswith("observations"):
        extra += "\nactions:\n  u: {min: -1, max: 1}\n"
    with pytest.raises(SpecError) as info:
        load_spec(_spec(tmp_path, extra, base))
    text = str(info.value)
    assert text.startswith(str(tmp_path / "spec.yaml")) and f": {key}: " in text, text
    assert message in text, text


def test_numbers_are_expressions(tmp_path):
    spec = load_spec(_spec(tmp_path, "reward: {expr: 1}\nterminal: 0\n"))
    assert spec.reward is not None and spec.reward.expr == "1" and spec.terminal == "0"


# ---------------------------------------------------------------- the spec: on a real sim


@pytest.fixture(scope="module")
def toy() -> Iterator[str]:
    yield from served("toy.py:Toy")


def _run(env: SimEnv, actions: list[float], config: dict[str, float]) -> list[tuple]:
    env.reset(seed=0, options={"config": config, "sim_seed": 0})
    out = []
    for a in actions:
        _, r, term, trunc, info = env.step(np.array([a], np.float32))
        out.append((r, term, trunc, info))
        if term or trunc:
            break
    return out


def test_unknown_name_fails_at_connect_naming_the_key(tmp_path, toy):
    spec = load_spec(_spec(tmp_path, "terminal: 'abs(y) > 3'\n"))
    with pytest.raises(SpecMismatch) as info:
        SimEnv({"spec": spec, "address": toy})
    assert str(info.value) == (
        f"{tmp_path / 'spec.yaml'}: terminal: name 'y' is not a state, derived observation "
        "or config (states: x, t; derived: dev; config: x0; steps)"
    )
    spec = load_spec(_spec(tmp_path, "goals:\n  G: {drive: 'z + 1', range: [0, 1]}\n"))
    with pytest.raises(SpecMismatch, match=r"spec.yaml: goals.G.drive: name 'z' is not a state"):
        SimVectorEnv(spec, 2, [toy])


def test_reward_expression_over_states_derived_config_and_steps(tmp_path, toy):
    spec = load_spec(_spec(tmp_path, "reward: {expr: 'x - dev + 10 * x0 + steps', scale: 2}\n"))
    env = SimEnv({"spec": spec, "address": toy})
    try:
        steps = _run(env, [0.5, -0.25, 0.0], {"x0": 0.25})
    finally:
        env.close()
    # x - dev = 1 whatever x is; 10 * x0 = 2.5; times scale 2.
    assert [r for r, *_ in steps] == [2 * (1 + 2.5 + k) for k in (1, 2, 3)]


def test_constant_reward_and_conditions(tmp_path, toy):
    """`terminal:` ends the episode as terminated, `truncate:` as truncated."""
    spec = load_spec(
        _spec(tmp_path, "reward: {constant: 1}\nterminal: 'x > 2.1'\ntruncate: 'steps >= 4'\n")
    )
    env = SimEnv({"spec": spec, "address": toy})
    try:
        up = _run(env, [1.0, 1.0, 1.0, 1.0], {"x0": 0.0})  # x = 1, 2, 3 -> terminated
        flat = _run(env, [0.0] * 10, {"x0": 0.0})  # x stays 0 -> truncated at step 4
    finally:
        env.close()
    assert [(r, term, trunc) for r, term, trunc, _ in up] == [
        (1.0, False, False),
        (1.0, False, False),
        (1.0, True, False),
    ]
    assert [(term, trunc) for _, term, trunc, _ in flat] == [(False, False)] * 3 + [(False, True)]


def test_terminal_reward_is_added_once_when_terminated_not_truncated(tmp_path, toy):
    spec = load_spec(
        _spec(
            tmp_path,
            "reward: {expr: '-abs(x)', terminal: -100}\nterminal: 'x > 2.1'\ntruncate: 'steps >= 2'\n",
        )
    )
    env = SimEnv({"spec": spec, "address": toy})
    try:
        ended = _run(env, [1.0, 1.0, 1.0], {"x0": 1.0})  # x = 2, 3: terminated at step 2
        truncated = _run(env, [0.0, 0.0, 0.0], {"x0": 0.0})
    finally:
        env.close()
    assert [(r, term) for r, term, _, _ in ended] == [(-2.0, False), (-3.0 - 100.0, True)]
    assert [r for r, *_ in truncated] == [0.0, 0.0]  # truncated: no terminal reward


def test_terminal_condition_adds_the_state_rewards_terminal_once(tmp_path, toy):
    """The existing forms keep working; a condition's end gets their `terminal` too."""
    spec = load_spec(_spec(tmp_path, "reward: {state: x, terminal: -7}\nterminal: 'x < -1.5'\n"))
    env = SimEnv({"spec": spec, "address": toy})
    try:
        steps = _run(env, [-1.0, -1.0], {"x0": 0.0})
    finally:
        env.close()
    assert [(r, term) for r, term, _, _ in steps] == [(-1.0, False), (-2.0 - 7.0, True)]


def test_both_envs_agree(tmp_path, toy):
    spec = load_spec(
        _spec(tmp_path, "reward: {expr: '-abs(dev) + x0', terminal: 5}\nterminal: 'abs(x) > 3'\n")
    )
    single = SimEnv({"spec": spec, "address": toy})
    vector = SimVectorEnv(spec, 2, [toy])
    try:
        config = {"x0": 0.5}
        steps = _run(single, [1.0] * 5, config)  # x = 1.5, 2.5, 3.5: terminated at step 3
        vector.reset(seed=0, options={"config": config})
        rows = []
        for _ in steps:
            _, r, term, trunc, info = vector.step(np.full((2, 1), 1.0, np.float32))
            rows.append((r.tolist(), term.tolist(), trunc.tolist(), info["states"]))
    finally:
        single.close()
        vector.close()

    def expected(x: float) -> tuple[float, bool]:
        return -abs(x - 1) + 0.5 + (5 if abs(x) > 3 else 0), abs(x) > 3

    assert [(r, term) for r, term, _, _ in steps] == [
        expected(x) for x in (1.5, 2.5, 3.5)
    ] and steps[-1][1] is True
    # Each sub-env's sim seed shifts its x a little (the toy adds seed % 7 / 100).
    for rewards, terms, truncs, states in rows:
        for i in range(2):
            assert (rewards[i], terms[i]) == expected(states[i]["x"]) and not truncs[i]
    assert rows[-1][1] == [True, True]


def test_expression_failure_names_the_key_and_step(tmp_path, toy):
    spec = load_spec(_spec(tmp_path, "reward: {constant: 0}\nterminal: 'log(x) > 1'\n"))
    env = SimEnv({"spec": spec, "address": toy})
    try:
        with pytest.raises(RewardError) as info:
            _run(env, [0.5, -0.5, -0.5], {"x0": 0.0})  # x = 1, 0: log(0) at step 2
    finally:
        env.close()
    assert str(info.value) == (
        f"{tmp_path / 'spec.yaml'}: terminal: 'log(x) > 1' ValueError: math domain error "
        "(at step 2)"
    )


def test_missing_config_value_names_the_key(tmp_path, toy):
    spec = load_spec(_spec(tmp_path, "reward: {expr: 'x0 * 2'}\n"))
    env = SimEnv({"spec": spec, "address": toy})
    try:
        with pytest.raises(RewardError, match=r"reward.expr: 'x0 \* 2' the episode's config"):
            _run(env, [0.0], {})
    finally:
        env.close()


def test_simgym_check_reports_a_failing_expression(tmp_path, toy):
    spec = load_spec(_spec(tmp_path, "reward: {expr: '1 / (x - x)'}\n"))
    report = check_integration(spec, toy, episodes=2)
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert "reward function" in failed and set(failed) <= {"reward function", "gymnasium check_env"}
    assert all("reward.expr: '1 / (x - x)' ZeroDivisionError" in d for d in failed.values())
