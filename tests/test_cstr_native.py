"""The CSTR sample's compiled accelerator (``examples/cstr/native``, module ``_cstr_native``).

``make`` installs it; ``examples/cstr/sim.py`` then steps in C. It implements the pure-Python
algorithm operation for operation, so the two paths must agree *exactly* (not to a tolerance):
the same states, flags, noise and errors, on the golden trajectories and on seeded random
episodes that reach the runaway region, where steps are shortened into several pieces.

Without the module these tests skip, which CI (CI=true) turns into failures: a missing build
step must not pass unnoticed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest

from .test_cstr_golden import (
    CASES,
    CSTR,
    GOLDEN_ATOL,
    GOLDEN_RTOL,
    SIM,
    _case_id,
    _compare,
    _run,
)


@pytest.fixture(scope="module")
def native() -> Any:
    """The accelerator; a skip (a failure in CI) when it is not installed."""
    try:
        import _cstr_native  # type: ignore[import-not-found]
    except ImportError:
        pytest.skip("_cstr_native is not installed (make, or pip install ./examples/cstr/native)")
    return _cstr_native


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN (bit-identical results, as floats or tuples of floats)."""
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (math.isnan(a) and math.isnan(b))


def test_native_is_in_use_after_make(native, monkeypatch):
    assert native.VERSION == 1
    assert SIM._cstr_native is native, "sim.py did not take the installed accelerator"
    assert CSTR().implementation == "native"
    assert CSTR(native=True).implementation == "native"
    assert CSTR(native=False).implementation == "python"
    monkeypatch.setenv("SIMGYM_CSTR_NATIVE", "0")
    assert CSTR().implementation == "python"
    assert CSTR(native=True).implementation == "native"  # the argument wins


def test_without_the_accelerator_the_sample_runs_pure_python(monkeypatch):
    monkeypatch.setattr(SIM, "_cstr_native", None)
    sim = CSTR()
    assert sim.implementation == "python"
    assert tuple(sim.step({"Tc_adjust": 1.0})) == CSTR.state_names
    with pytest.raises(ImportError, match="_cstr_native"):
        CSTR(native=True)


@pytest.mark.parametrize("i", range(len(CASES)), ids=_case_id)
def test_native_matches_golden_and_the_pure_path(i, native):
    case = CASES[i]
    got = _run(CSTR(native=True), case["config"], case["actions"])
    _compare(
        got,
        case["trajectory"],
        lambda a, b: math.isclose(a, b, rel_tol=GOLDEN_RTOL, abs_tol=GOLDEN_ATOL),
    )
    assert got == _run(CSTR(native=False), case["config"], case["actions"])


@pytest.fixture
def shortened(monkeypatch) -> Iterator[list[int]]:
    """Counts the pure path's Taylor steps that covered only part of their interval."""
    count = [0]
    taylor_step = SIM._taylor_step

    def counting(c: float, t: float, p: float, h: float) -> tuple[float, float, float]:
        result = taylor_step(c, t, p, h)
        if result[2] != 1.0:
            count[0] += 1
        return result

    monkeypatch.setattr(SIM, "_taylor_step", counting)
    yield count


def _episodes(config: dict, episodes: int, amplitude: float, seed: int) -> tuple[int, int]:
    """Native and pure instances on the same seeded random actions; (steps, runaways)."""
    rng = random.Random(seed)
    fast, pure = CSTR(native=True), CSTR(native=False)
    steps = runaways = 0
    for episode in range(episodes):
        # One instance each for the whole run: the noise stream goes on across resets, and
        # every other episode continues it unseeded.
        seed_kw = {"seed": seed * 1000 + episode} if episode % 2 == 0 else {}
        assert fast.reset(config, **seed_kw) == pure.reset(config, **seed_kw)
        cap = amplitude * config.get("step_time", 1)
        # Every third episode heats on average, into runaway (fast dynamics, shortened steps).
        low = 0.0 if episode % 3 == 2 else -cap
        for _ in range(200):
            action = {"Tc_adjust": rng.uniform(low, cap)}
            states = fast.step(action)
            assert states == pure.step(action), f"episode {episode}, step {steps}"
            assert type(states) is dict and tuple(states) == CSTR.state_names
            flags = (fast.termination(), fast.truncation())
            assert flags == (pure.termination(), pure.truncation())
            steps += 1
            if flags[0] or flags[1]:
                runaways += states["Tr"] >= 400.0
                break
    return steps, runaways


@pytest.mark.parametrize(
    "config",
    [
        {"Cref_signal": 1, "noise_percentage": 5},
        {"Cref_signal": 2, "noise_percentage": 20, "edo_solver_n_its": 1},
        {"Cref_signal": 3, "noise_percentage": 5, "edo_solver_n_its": 5},
        {"Cref_signal": 4, "noise_percentage": 10, "step_time": 0.5},
        {"Cref_signal": 5, "noise_percentage": 0, "step_time": 2, "edo_solver_n_its": 3},
        {"Cref_signal": 6, "noise_percentage": 5},
        {"Cref_signal": 1, "noise_percentage": 1, "transition_start": 7, "step_time": 0.5},
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_native_equals_pure_on_seeded_random_episodes(config, native, shortened):
    # Actions beyond the cap are capped.
    steps, runaways = _episodes(config, episodes=12, amplitude=12.0, seed=config["Cref_signal"])
    assert steps > 200
    assert runaways > 0, "no episode reached the runaway region"
    assert shortened[0] > 50, "few steps were shortened: the multi-piece path went untested"


def test_native_taylor_step_and_integrate_equal_the_python_functions(native):
    """State by state, over the whole region a step can visit, including near runaway."""
    rng = random.Random(11)
    pieces = 0
    for _ in range(3000):
        c = rng.uniform(0.0, 10.0)
        t = rng.uniform(280.0, 460.0)
        p = _forcing(rng.uniform(250.0, 320.0))
        h = rng.choice([0.25, 0.5, 1.0, 2.0]) * rng.uniform(0.01, 1.0)
        want = SIM._taylor_step(c, t, p, h)
        assert _same(native.taylor_step(c, t, p, h), want), (c, t, p, h)
        try:
            cw, tw = want[0], want[1]
            if want[2] != 1.0:
                pieces += 1
                cw, tw = SIM._finish(cw, tw, p, h, want[2])
            expected: Any = (cw, tw)
        except ArithmeticError as exc:
            expected = type(exc)
        try:
            got: Any = native.integrate(c, t, p, h)
        except ArithmeticError as exc:
            got = type(exc)
        assert got == expected, (c, t, p, h)
    assert pieces > 100  # the shortened-step path ran often


def _forcing(tc: float) -> float:
    # The coolant forcing of a step, as sim.py computes it from Tc.
    return SIM._TF + SIM._BETA * tc


def _set_plant(sim: Any, cr: float, tr: float) -> None:
    """Put a (possibly broken) noise-free state into either path after a reset."""
    if sim.implementation == "python":
        sim._cr, sim._tr = cr, tr
        return
    fields = {
        "step_time": sim._step_time,
        "n_its": sim._n_its,
        "max_adjust": sim._max_adjust,
        "c_noise": sim._c_noise,
        "t_noise": sim._t_noise,
        "noisy": sim._noisy,
        "shift": sim._shift,
        "p1": sim._p1,
        "p2": sim._p2,
        "c_slope": sim._c_slope,
        "t_slope": sim._t_slope,
        "tc": sim._tc,
        "cr_meas": sim._cr_meas,
        "tr_meas": sim._tr_meas,
        "cref": sim._cref,
        "tref": sim._tref,
        "time": sim._time,
        "rms": sim._rms,
        "adjust": sim._adjust,
    }
    sim._core.load(cr=cr, tr=tr, **fields)


@pytest.mark.parametrize(
    ("cr", "tr", "error"),
    [
        (math.nan, 311.0, ArithmeticError),
        (5.0, math.nan, ArithmeticError),
        (math.inf, 311.0, ArithmeticError),
        (5.0, math.inf, ArithmeticError),
        (-math.inf, 311.0, ArithmeticError),
        (-5.0, 311.0, ArithmeticError),  # far below zero: no step length meets the tolerance
        (5.0, -300.0, ArithmeticError),
        (5.0, 0.0, ZeroDivisionError),
        (5.0, -1.0, OverflowError),  # exp(E/R) overflows, as math.exp raises
    ],
)
@pytest.mark.parametrize("n_its", [1, 2])
def test_broken_state_raises_the_same_error_on_both_paths(native, cr, tr, error, n_its):
    messages = []
    for path in (True, False):
        sim = CSTR(native=path)
        sim.reset({"Cref_signal": 2, "noise_percentage": 5, "edo_solver_n_its": n_its}, seed=1)
        _set_plant(sim, cr, tr)
        with pytest.raises(error) as caught:
            sim.step({"Tc_adjust": 1.0})
        assert isinstance(caught.value, ArithmeticError)
        messages.append((type(caught.value), str(caught.value)))
    assert messages[0] == messages[1]


def test_native_step_converts_actions_like_the_pure_path(native):
    np = pytest.importorskip("numpy")
    values = [None, 2, True, np.float32(1.5), np.float64(-3.25), "0.75", math.nan, -math.inf]
    fast, pure = CSTR(native=True), CSTR(native=False)
    fast.reset({"Cref_signal": 1})
    pure.reset({"Cref_signal": 1})
    for value in values:
        assert fast.step({"Tc_adjust": value}) == pure.step({"Tc_adjust": value}), value
    for bad, error in (({}, KeyError), ({"Tc_adjust": "warm"}, ValueError), ([], TypeError)):
        with pytest.raises(error):
            fast.step(bad)
        with pytest.raises(error):
            pure.step(bad)
    # A failed call leaves the episode where it was.
    assert fast.step({"Tc_adjust": 0.5}) == pure.step({"Tc_adjust": 0.5})


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_native_sim_is_independent_and_continues_alike(native, how, monkeypatch):
    import copy
    import pickle
    import sys

    # pickle finds the class by module name; this test's copy of sim.py is not importable.
    monkeypatch.setitem(sys.modules, SIM.__name__, SIM)
    sim = CSTR(native=True)
    sim.reset({"Cref_signal": 2, "noise_percentage": 5}, seed=3)
    sim.step({"Tc_adjust": 2.0})
    twin = copy.deepcopy(sim) if how == "deepcopy" else pickle.loads(pickle.dumps(sim))
    assert twin.implementation == "native" and twin._core is not sim._core
    assert twin.step.__self__ is twin._core and twin._rng is not sim._rng
    for _ in range(30):  # same plant, same noise stream, separate state
        assert twin.step({"Tc_adjust": 1.0}) == sim.step({"Tc_adjust": 1.0})
    twin.step({"Tc_adjust": -3.0})
    assert twin._core.dump() != sim._core.dump()
