"""Bonsai-style goals (gymclient.goals): the formulas of docs/spec.md, step by step.

The formula tests drive ``StepRules`` with hand-written states (no sim needed: it is what
``gymclient.episode`` calls once per step); the env tests run SimEnv and SimVectorEnv on a
real simserver (the toy integrator of tests/sims, ``x += u``) and ``simgym check``'s
integration check on a spec with goals.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium.wrappers.vector import DictInfoToList

from gymclient import SimEnv
from gymclient.codec import build_codec
from gymclient.conformance import check_integration
from gymclient.errors import RewardError, SpecError
from gymclient.goals import DEFAULT_HORIZON, StepRules
from gymclient.spec import EnvSpec, load_spec
from gymclient.vector import SimVectorEnv

from .conftest import SIMS, served

BASE = """
observations:
  x: {min: -10, max: 10}
  t: {min: 0, max: 20}
actions:
  u: {min: -1, max: 1}
"""


def _load(tmp_path: Path, extra: str) -> EnvSpec:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(BASE) + textwrap.dedent(extra))
    return load_spec(path)


def _rules(spec: EnvSpec) -> StepRules:
    codec = build_codec(spec, ["x", "t"], ["u"])
    return StepRules(spec, ["x", "t"], codec.lessons, codec.reward)


def _play(
    rules: StepRules, xs: Sequence[float], sim_reward: float | None = None
) -> list[tuple[float, bool, bool]]:
    """Steps 1, 2, ... with these x values, until an end; config {} ."""
    rules.reset({})
    out = []
    for k, x in enumerate(xs, start=1):
        r, term, trunc = rules.step({"x": x, "t": float(k)}, False, False, sim_reward, k)
        out.append((r, term, trunc))
        if term or trunc:
            break
    return out


def _rewards(steps: list[tuple[float, bool, bool]]) -> list[float]:
    return [r for r, _, _ in steps]


# ---------------------------------------------------------------- each kind's formula


def test_avoid_margin_reward_and_termination(tmp_path):
    """r = min(d / s, 1) outside the region (d: distance to it); inside: r = 0, terminated."""
    rules = _rules(_load(tmp_path, "goals:\n  Fall: {avoid: 'abs(x)', above: 4}\n"))
    steps = _play(rules, [0.0, 2.0, 3.0, -4.0, 0.0])
    # s = |threshold| = 4: margins 4, 2, 1 -> 1, 0.5, 0.25; |x| = 4 is in the region.
    assert steps == [
        (1.0, False, False),
        (0.5, False, False),
        (0.25, False, False),
        (0, True, False),
    ]
    assert rules.end_info() == {"goals": {"Fall": False}, "goal_success": False}
    _play(rules, [0.0, 1.0])
    assert rules.end_info() == {"goals": {"Fall": True}, "goal_success": True}


def test_drive_shaping_and_within(tmp_path):
    """r = 1 inside, s / (s + d) outside; satisfied: inside at the end and from `within` on."""
    rules = _rules(_load(tmp_path, "goals:\n  Center: {drive: x, range: [-0.5, 0.5], within: 2}\n"))
    # s = width = 1: x = 2 -> d = 1.5 -> 1 / 2.5.
    assert _rewards(_play(rules, [2.0, 0.2, 0.1])) == [0.4, 1.0, 1.0]
    assert rules.end_info()["goals"] == {"Center": True}
    _play(rules, [2.0, 0.2, 0.9, 0.1])  # left the region at step 3, after `within`
    assert rules.end_info()["goals"] == {"Center": False}
    _play(rules, [2.0, 0.7, 0.1])  # not inside at step 2 (= within)
    assert rules.end_info()["goals"] == {"Center": False}
    _play(rules, [0.0, 0.0, 3.0])  # outside at the end
    assert rules.end_info()["goals"] == {"Center": False}
    # A drive goal never ends an episode.
    assert all(not term for _, term, _ in _play(rules, [9.0] * 30))


def test_reach_ends_the_episode_with_the_horizon_bonus(tmp_path):
    """Reached: terminated, reward 1 + (H - t); H = max_episode_steps (else 1000)."""
    spec = _load(tmp_path, "max_episode_steps: 10\ngoals:\n  Get: {reach: x, range: [1, 2]}\n")
    rules = _rules(spec)
    # s = 1: x = 0 -> d = 1 -> 0.5; x = 1.5 inside at step 2 -> 1 + (10 - 2).
    assert _play(rules, [0.0, 1.5, 0.0]) == [(0.5, False, False), (9.0, True, False)]
    assert rules.end_info() == {"goals": {"Get": True}, "goal_success": True}
    # Without max_episode_steps the horizon is DEFAULT_HORIZON.
    rules = _rules(_load(tmp_path, "goals:\n  Get: {reach: x, above: 1}\n"))
    assert _play(rules, [3.0]) == [(1.0 + DEFAULT_HORIZON - 1, True, False)]


def test_reaching_beats_any_continuation(tmp_path):
    """Reaching at step t earns at least what every later step could (1 each, up to H)."""
    spec = _load(tmp_path, "max_episode_steps: 20\ngoals:\n  Get: {reach: x, range: [1, 2]}\n")
    rules = _rules(spec)
    early = sum(_rewards(_play(rules, [0.0, 1.5])))
    late = sum(_rewards(_play(rules, [0.0, 0.5, 0.9, 1.5])))
    never = sum(_rewards(_play(rules, [0.9] * 20)))
    assert early > late > never


def test_reach_within_misses_its_deadline(tmp_path):
    rules = _rules(_load(tmp_path, "goals:\n  Get: {reach: x, above: 5, within: 3}\n"))
    steps = _play(rules, [0.0, 1.0, 2.0, 6.0])
    assert [(term, trunc) for _, term, trunc in steps] == [(False, False)] * 2 + [(True, False)]
    assert rules.end_info()["goals"] == {"Get": False}


def test_every_reach_goal_must_be_reached(tmp_path):
    extra = """
    max_episode_steps: 10
    goals:
      A: {reach: x, above: 1}
      B: {reach: t, above: 3}
    """
    rules = _rules(_load(tmp_path, extra))
    steps = _play(rules, [2.0, 0.0, 0.0, 0.0])
    # Step 1: A reached (1), B: t = 1, d = 2, s = 3 -> 3 / 5; A stays done afterwards.
    assert [term for _, term, _ in steps] == [False, False, True]
    assert steps[0][0] == pytest.approx((1 + 0.6) / 2)
    assert steps[2][0] == pytest.approx(1.0 + (10 - 3))
    assert rules.end_info()["goals"] == {"A": True, "B": True}


def test_no_bonus_when_an_avoid_goal_is_hit_on_the_same_step(tmp_path):
    extra = """
    max_episode_steps: 10
    goals:
      Get: {reach: x, above: 1}
      Crash: {avoid: x, above: 3}
    """
    rules = _rules(_load(tmp_path, extra))
    assert _play(rules, [4.0]) == [((1.0 + 0.0) / 2, True, False)]
    assert rules.end_info() == {"goals": {"Get": True, "Crash": False}, "goal_success": False}


def test_minimize_and_maximize_logistic_and_mean(tmp_path):
    """r = 1 / (1 + exp(z)), z = (v - hi) / s (minimize) or (lo - v) / s (maximize)."""
    extra = """
    goals:
      Low: {minimize: 'abs(x)', below: 0.5}
      High: {maximize: t, above: 3, weight: 3}
    """
    rules = _rules(_load(tmp_path, extra))
    steps = _play(rules, [0.5, 0.0, 1.0])  # t = 1, 2, 3

    def sig(z: float) -> float:
        return 1.0 / (1.0 + math.exp(z))

    expected = [
        (sig(0.0) + 3 * sig((3 - 1) / 3)) / 4,
        (sig(-1.0) + 3 * sig((3 - 2) / 3)) / 4,
        (sig(1.0) + 3 * sig(0.0)) / 4,
    ]
    assert _rewards(steps) == pytest.approx(expected)
    # Means: |x| 0.5 (in `below: 0.5`), t 2 (not above 3).
    assert rules.end_info()["goals"] == {"Low": True, "High": False}
    # The logistic saturates instead of overflowing.
    assert _rewards(_play(rules, [1e300]))[0] == pytest.approx(3 * sig(2 / 3) / 4)


def test_scale_overrides_the_default(tmp_path):
    rules = _rules(_load(tmp_path, "goals:\n  C: {drive: x, below: 0, scale: 4}\n"))
    assert _rewards(_play(rules, [4.0])) == [0.5]


def test_goals_and_a_reward_add_up_and_the_sim_reward_is_not_used(tmp_path):
    spec = _load(
        tmp_path, "reward: {expr: '-x', terminal: -5}\ngoals:\n  F: {avoid: x, above: 4}\n"
    )
    assert _play(_rules(spec), [2.0, 5.0]) == [
        (-2.0 + 0.5, False, False),
        (-5.0 + 0 - 5, True, False),
    ]
    goals_only = _rules(_load(tmp_path, "goals:\n  F: {avoid: x, above: 4}\n"))
    assert _play(goals_only, [2.0], sim_reward=100.0) == [(0.5, False, False)]


def test_moving_bounds_are_expressions(tmp_path):
    """Inkling's Goal.Sphere(c, r) as `range: ["c - r", "c + r"]`, evaluated every step."""
    rules = _rules(_load(tmp_path, "goals:\n  Follow: {drive: x, range: ['t - 0.5', 't + 0.5']}\n"))
    # t = 1, 2, 3 (the step): x = 1 inside, x = 0 at d = 1.5 (s = width 1), x = 3.4 inside.
    assert _rewards(_play(rules, [1.0, 0.0, 3.4])) == [1.0, 1 / 2.5, 1.0]
    assert rules.end_info()["goals"] == {"Follow": True}
    rules = _rules(_load(tmp_path, "goals:\n  Near: {avoid: x, below: 't - 3', scale: 2}\n"))
    assert _play(rules, [0.0, -1.0]) == [(1.0, False, False), (0.0, True, False)]
    rules = _rules(_load(tmp_path, "goals:\n  Bad: {reach: x, range: [t, 0]}\n"))
    with pytest.raises(RewardError, match=r"goals.Bad.range: 't' gave \[1.0, 0.0\]: lo > hi"):
        _play(rules, [0.0])


def test_the_sim_terminating_still_reports_goals(tmp_path):
    rules = _rules(_load(tmp_path, "goals:\n  F: {avoid: x, above: 4}\n"))
    rules.reset({})
    assert rules.step({"x": 1.0, "t": 1.0}, True, False, None, 1) == (0.75, True, False)
    assert rules.end_info()["goal_success"] is True


def test_a_nan_goal_value_is_an_error_naming_the_goal(tmp_path):
    rules = _rules(
        _load(tmp_path, "goals:\n  G: {drive: 'x * 1e308 * 10 - x * 1e308 * 10', below: 1}\n")
    )
    with pytest.raises(RewardError, match=r"goals.G.drive: .* gave NaN \(at step 1\)"):
        _play(rules, [1.0])


@pytest.mark.parametrize(
    ("goal", "key", "message"),
    [
        ("{avoid: x, drive: x, above: 1}", "goals.G", "exactly one of avoid, drive, reach"),
        ("{above: 1}", "goals.G", "exactly one of avoid, drive"),
        ("{avoid: x}", "goals.G", "exactly one of range: [lo, hi], above: x, below: x"),
        ("{avoid: x, above: 1, below: 2}", "goals.G", "(got above, below)"),
        ("{drive: x, range: [2, 1]}", "goals.G", "lo <= hi"),
        ("{drive: x, range: [1]}", "goals.G.range", "give [lo, hi], got 1 number(s)"),
        ("{drive: x, above: .inf}", "goals.G.above", "inf is not a finite number"),
        ("{drive: x, range: [0, 'x >']}", "goals.G.range", "not valid"),
        ("{minimize: x, below: 't'}", "goals.G", "minimize takes numbers as bounds"),
        ("{minimize: x, above: 1}", "goals.G", "minimize takes below"),
        ("{maximize: x, below: 1}", "goals.G", "maximize takes above"),
        ("{avoid: x, above: 1, within: 5}", "goals.G", "within is for drive and reach"),
        ("{reach: x, above: 1, within: 0}", "goals.G.within", "greater than 0"),
        ("{drive: x, above: 1, weight: -1}", "goals.G.weight", "greater than 0"),
        ("{drive: 'x >', above: 1}", "goals.G.drive", "not valid"),
        ("{drive: x, abov: 1}", "goals.G.abov", "did you mean 'above'"),
    ],
)
def test_bad_goals_name_file_and_key(tmp_path, goal, key, message):
    with pytest.raises(SpecError) as info:
        _load(tmp_path, f"goals:\n  G: {goal}\n")
    text = str(info.value)
    assert text.startswith(str(tmp_path / "spec.yaml")) and f" {key}: " in f" {text}", text
    assert message in text, text


# ---------------------------------------------------------------- on a real sim


@pytest.fixture(scope="module")
def toy() -> Iterator[str]:
    yield from served("toy.py:Toy")


GOALS = """
max_episode_steps: 8
lessons:
  x0: {min: -0.5, max: 0.5}
goals:
  Out: {avoid: 'abs(x)', above: 3}
  Near: {drive: 'x - x0', range: [-1, 1]}
"""


def test_both_envs_report_goals_at_the_episode_end(tmp_path, toy):
    spec = _load(tmp_path, GOALS)
    single = SimEnv({"spec": spec, "address": toy})
    # As training makes it: no states in the infos, and RLlib's DictInfoToList over it.
    vector = DictInfoToList(SimVectorEnv(spec, 2, [toy], info_states=False))
    try:
        single.reset(seed=0, options={"config": {"x0": 0.0}, "sim_seed": 0})
        ends: list[tuple[float, bool, dict[str, Any]]] = []
        for _ in range(8):
            _, r, term, trunc, info = single.step(np.array([1.0], np.float32))
            assert ("goals" in info) == (term or trunc)
            if term or trunc:
                ends.append((r, term, info))
                break
        vector.reset(seed=0, options={"config": {"x0": 0.0}})
        for _ in range(8):
            _, r, term, trunc, vinfo = vector.step(np.zeros((2, 1), np.float32))
            if trunc.any():
                break
    finally:
        single.close()
        vector.close()
    # x = 1, 2, 3: |x| = 3 is in the avoided region at step 3 -> terminated, 0 from Out.
    (r, term, info) = ends[0]
    assert term and info["goals"] == {"Out": False, "Near": False} and not info["goal_success"]
    assert r == pytest.approx((0 + 2 / (2 + 2)) / 2)
    # Standing still until max_episode_steps: every goal satisfied, in both sub-envs.
    assert trunc.tolist() == [True, True]
    for sub in vinfo:
        assert sub["goals"] == {"Out": True, "Near": True} and sub["goal_success"]


def test_simgym_check_runs_goal_specs(tmp_path, toy):
    report = check_integration(_load(tmp_path, GOALS), toy, episodes=3)
    assert report.episodes == 3 and all(c.ok for c in report.checks if not c.warning), [
        c for c in report.checks if not c.ok
    ]
    assert report.goal_episodes == 3 and set(report.goals) == {"Out", "Near"}
    assert all(0 <= n <= 3 for n in report.goals.values())


def test_simgym_check_prints_goal_satisfaction(tmp_path):
    """The command a user runs: the spec starts its own sim; goals get a row each."""
    (tmp_path / "toy.py").write_text((SIMS / "toy.py").read_text())
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "sim: {target: toy.py:Toy}\n"
        + textwrap.dedent(BASE)
        + "max_episode_steps: 5\ngoals:\n  Stay: {avoid: 'abs(x)', above: 100}\n"
    )
    cli = [sys.executable, "-c", "from launcher.cli import main; main()"]
    proc = subprocess.run(
        [*cli, "check", str(spec), "--episodes", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # |x| <= 5 in 5 steps of |u| <= 1: never near 100, so every episode satisfies it.
    assert re.search(r"goal Stay satisfied\s*│?\s*100%", proc.stdout), proc.stdout


def test_evaluate_applies_the_rules_and_reports_goal_success(tmp_path, toy):
    """`simgym evaluate`'s episodes get the envs' rewards, ends and goals."""
    from launcher.evaluate import (
        CallableController,
        Episode,
        Scenarios,
        _Worker,
        run_episode,
        summarize,
    )

    spec = _load(tmp_path, GOALS.replace("max_episode_steps: 8", "max_episode_steps: 4"))
    worker = _Worker(spec, toy)
    try:
        pushes = CallableController(lambda states: {"u": 1.0}, "push")
        still = CallableController(lambda states: {"u": 0.0}, "still")
        results = []
        for controller in (pushes, still):
            controller.bind(worker.codec, worker.session.action_names)
            results.append(run_episode(worker, controller, Episode("s", {"x0": 0.0}, 0)))
    finally:
        worker.close()
    pushed, stood = results
    # x = 1, 2, 3: the avoid goal ends the push at step 3 (terminated, as in the envs).
    assert (pushed.length, pushed.terminated) == (3, True)
    assert pushed.rewards[-1] == pytest.approx((0 + 2 / (2 + 2)) / 2)
    assert pushed.goals == {"Out": False, "Near": False}
    assert (stood.length, stood.truncated, stood.goals) == (4, True, {"Out": True, "Near": True})
    scenarios = Scenarios([Episode("s", {"x0": 0.0}, 0)], [])
    rows = {
        r["controller"]: r for r in summarize(results, [], scenarios) if r["level"] == "overall"
    }
    assert rows["push"]["goal_success"] == 0.0 and rows["still"]["goal_success"] == 1.0
