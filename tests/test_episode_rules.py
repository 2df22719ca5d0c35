"""One rulebook, two envs: SimEnv and SimVectorEnv on the same fault sims, the same outcomes.

Every test runs both envs (the vector env with two sub-envs on one server, its infos turned
into per-sub-env dicts by Gymnasium's ``DictInfoToList``, as RLlib does) and asserts, per
slot, the same rewards, episode ends, ``info`` keys, exceptions, counters (``totals`` per
slot), and that the next reset works on a reopened session. Servers of one fault sim are
shared by the module's tests; a server killed mid-episode is each test's own.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from gymnasium.wrappers.vector import DictInfoToList

from gymclient import NonFiniteStateError, SimEnv, load_spec
from gymclient.episode import COUNTERS, NONFINITE
from gymclient.errors import RemoteError, ServerUnavailable, SimCallError, SimTimeout
from gymclient.vector import SimVectorEnv
from simserver.process import ServerProcess

from .conftest import SIMS, unix_simserver_cmd

SPEC = SIMS / "toy_spec.yaml"
ENVS = ["SimEnv", "SimVectorEnv"]
SUB_ENVS = 2
ON_ERROR = ["raise", "truncate"]
ON_NONFINITE = ["raise", "truncate"]
FAILED_KEYS = {"simgym_error", "simgym_error_type"}  # info after a failed call: nothing else
NONE = dict.fromkeys(("steps", "episodes", "sim_errors", "nonfinite", "reopens"), 0)


class Slots:
    """Either env, seen slot by slot: ``SimEnv`` is one slot, ``SimVectorEnv`` two.

    Args:
        kind: ``"SimEnv"`` or ``"SimVectorEnv"``.
        address: The server.
        overrides: Connection overrides (``timeout``, ``reset_timeout``).
        rules: Spec keys (``on_error``, ``on_nonfinite``, ``max_episode_steps``).
    """

    def __init__(self, kind: str, address: str, overrides: dict[str, float], **rules: Any):
        spec = load_spec(SPEC).model_copy(update=rules)
        if kind == "SimEnv":
            self.env: Any = SimEnv({"spec": spec, "address": address, **overrides})
            self.count = 1
        else:
            vector = SimVectorEnv(spec, SUB_ENVS, [address], **overrides)
            self.env = DictInfoToList(vector)
            self.count = SUB_ENVS
        self.episodes = self.env.unwrapped._episodes

    def reset(self, config: dict[str, Any] | None = None) -> list[tuple[np.ndarray, dict]]:
        obs, info = self.env.reset(seed=0, options={"config": config or {}})
        return self._split(obs, info)

    def step(self, u: float = 0.0) -> list[tuple[np.ndarray, float, bool, bool, dict]]:
        action = np.full((self.count, 1) if self.count > 1 else (1,), u, np.float32)
        obs, rewards, terms, truncs, infos = self.env.step(action)
        if self.count == 1:
            return [(obs, float(rewards), bool(terms), bool(truncs), infos)]
        return [
            (obs[i], float(rewards[i]), bool(terms[i]), bool(truncs[i]), infos[i])
            for i in range(self.count)
        ]

    def _split(self, obs: np.ndarray, info: Any) -> list[tuple[np.ndarray, dict]]:
        if self.count == 1:
            return [(obs, info)]
        return [(obs[i], info[i]) for i in range(self.count)]

    def session_ids(self) -> list[str]:
        return [s.id for s in self.episodes.sessions]

    def totals(self) -> dict[str, float]:
        """Counters per slot (the vector env's over its sub-envs, which fail alike)."""
        totals = self.env.unwrapped.totals
        assert set(totals) == set(COUNTERS)
        return {k: totals[k] / self.count for k in NONE}

    def close(self) -> None:
        self.env.close()


@pytest.fixture(params=ENVS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def _server(target: str, **kwargs: Any) -> Iterator[str]:
    server = ServerProcess(target, workdir=SIMS, transport="unix", kwargs=kwargs)
    server.start(timeout=60)
    try:
        yield server.address
    finally:
        server.kill()  # a hung sim thread would hold a graceful exit for the whole hang


@pytest.fixture(scope="module")
def raising() -> Iterator[str]:
    yield from _server("toy.py:Raising", fail_at=2)


@pytest.fixture(scope="module")
def nan_sim() -> Iterator[str]:
    yield from _server("toy.py:NaNSim")


@pytest.fixture(scope="module")
def nan_at_reset() -> Iterator[str]:
    yield from _server("faults.py:NaNAtReset")


@pytest.fixture(scope="module")
def hanging() -> Iterator[str]:
    yield from _server("toy.py:Hanging", hang=3600.0)


@pytest.fixture(scope="module")
def failing_reset() -> Iterator[str]:
    yield from _server("faults.py:FailingReset")


@pytest.fixture(scope="module")
def toy() -> Iterator[str]:
    yield from _server("toy.py:Toy", gain=2.0)


def _assert_failed(outcomes: list, error_type: type[RemoteError], text: str) -> None:
    for _obs, reward, term, trunc, info in outcomes:
        assert (reward, term, trunc) == (0.0, False, True)
        assert set(info) == FAILED_KEYS
        assert info["simgym_error_type"] == error_type.__name__ and text in info["simgym_error"]


def _assert_next_reset_reopens(env: Slots, reopens: float = 1.0) -> None:
    """The next reset works, on new sessions when the last call failed; and a step after it."""
    before = env.session_ids()
    for _obs, info in env.reset():
        assert info["states"]["t"] == 0.0 and "simgym_error" not in info
    changed = [a != b for a, b in zip(before, env.session_ids(), strict=True)]
    assert changed == [reopens > 0] * env.count and env.totals()["reopens"] == reopens
    for _obs, _r, term, trunc, info in env.step():
        assert not term and not trunc and info["states"]["t"] == 1.0


# --------------------------------------------------------------------------- failed calls


@pytest.mark.parametrize("on_error", ON_ERROR)
def test_sim_raises_in_step(kind, raising, on_error):
    env = Slots(kind, raising, {}, on_error=on_error)
    try:
        env.reset()
        assert all(not trunc for _o, _r, _te, trunc, _i in env.step())
        if on_error == "raise":
            with pytest.raises(SimCallError, match="ZeroDivisionError"):
                env.step()
        else:
            _assert_failed(env.step(), SimCallError, "ZeroDivisionError")
        assert env.totals() == {**NONE, "steps": 1, "episodes": 1, "sim_errors": 1}
        _assert_next_reset_reopens(env)
    finally:
        env.close()


@pytest.mark.parametrize("on_error", ON_ERROR)
def test_sim_hangs_in_step(kind, hanging, on_error):
    env = Slots(kind, hanging, {"timeout": 1.0}, on_error=on_error)
    try:
        env.reset()
        env.step()
        if on_error == "raise":
            with pytest.raises(SimTimeout):
                env.step()
        else:
            _assert_failed(env.step(), SimTimeout, "")
        assert env.totals() == {**NONE, "steps": 1, "episodes": 1, "sim_errors": 1}
        _assert_next_reset_reopens(env)  # the hung session stays busy on the server
    finally:
        env.close()


@pytest.mark.parametrize("on_error", ON_ERROR)
def test_server_killed_mid_episode_then_restarted(kind, tmp_path, on_error):
    sock = tmp_path / "s.sock"
    cmd = unix_simserver_cmd(sock)

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stdout.readline()
        return proc

    proc = start()
    env = Slots(kind, f"unix:{sock}", {"timeout": 2.0}, on_error=on_error)
    try:
        env.reset()
        env.step()
        proc.kill()
        proc.wait(10)
        if on_error == "raise":
            with pytest.raises(ServerUnavailable, match="unavailable"):
                env.step()
        else:
            _assert_failed(env.step(), ServerUnavailable, "unavailable")
        assert env.totals() == {**NONE, "steps": 1, "episodes": 1, "sim_errors": 1}
        proc = start()
        _assert_next_reset_reopens(env)
    finally:
        env.close()
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("on_error", ON_ERROR)
@pytest.mark.parametrize(
    ("config", "overrides", "error", "text"),
    [
        ({"fail": 1}, {}, SimCallError, "reset failed on purpose"),
        ({"delay": 3.0}, {"reset_timeout": 0.5}, SimTimeout, ""),
    ],
    ids=["sim-raises", "past-deadline"],
)
def test_failed_reset_raises_and_the_next_reopens(
    kind, failing_reset, on_error, config, overrides, error, text
):
    """A reset that fails raises whatever on_error says; the next one runs on a new session."""
    env = Slots(kind, failing_reset, overrides, on_error=on_error)
    try:
        with pytest.raises(error, match=text or None):
            env.reset(config)
        assert env.totals() == {**NONE, "sim_errors": 1}
        _assert_next_reset_reopens(env)
    finally:
        env.close()


# --------------------------------------------------------------------------- non-finite states


@pytest.mark.parametrize("on_nonfinite", ON_NONFINITE)
def test_nonfinite_states_in_a_step(kind, nan_sim, on_nonfinite):
    env = Slots(kind, nan_sim, {}, on_nonfinite=on_nonfinite)
    try:
        env.reset()
        env.step()
        if on_nonfinite == "raise":
            with pytest.raises(NonFiniteStateError, match=r"non-finite states: x \(at step 2\)"):
                env.step()
        else:
            for obs, reward, term, trunc, info in env.step():
                assert (reward, term, trunc) == (0.0, False, True)
                assert set(info) == {"states", "clipped", *FAILED_KEYS}
                assert info["simgym_error"] == "non-finite states: x"
                assert info["simgym_error_type"] == NONFINITE
                assert math.isnan(info["states"]["x"]) and np.isfinite(obs).all()
        assert env.totals() == {**NONE, "steps": 2, "episodes": 1, "nonfinite": 1}
        _assert_next_reset_reopens(env, reopens=0)  # the session is fine: no reopening
    finally:
        env.close()


@pytest.mark.parametrize("on_nonfinite", ON_NONFINITE)
def test_nonfinite_states_at_reset(kind, nan_at_reset, on_nonfinite):
    env = Slots(kind, nan_at_reset, {}, on_nonfinite=on_nonfinite)
    try:
        if on_nonfinite == "raise":
            with pytest.raises(NonFiniteStateError, match=r"non-finite states: x \(at reset\)"):
                env.reset()
        else:
            for obs, info in env.reset():
                assert set(info) == {"states", "clipped", "config", *FAILED_KEYS}
                assert info["simgym_error"] == "non-finite states at reset: x"
                assert info["simgym_error_type"] == NONFINITE and obs[0] == 0.0
            for _obs, _r, term, trunc, info in env.step():  # the episode goes on
                assert not term and not trunc and info["states"]["x"] == 0.0
        steps = 0 if on_nonfinite == "raise" else 1
        assert env.totals() == {**NONE, "steps": steps, "episodes": 1, "nonfinite": 1}
    finally:
        env.close()


# --------------------------------------------------------------------------- healthy episodes


def test_max_episode_steps_and_what_info_carries(kind, toy):
    """Truncated at max_episode_steps; info: states, clipped, config, log_states at the end."""
    env = Slots(kind, toy, {}, max_episode_steps=3)
    try:
        for _obs, info in env.reset({"x0": 0.0}):
            assert set(info) == {"states", "clipped", "config"} and info["config"] == {"x0": 0.0}
        xs: list[list[float]] = [[] for _ in range(env.count)]
        for k in (1, 2, 3):
            outcomes = env.step(0.5)  # x grows by gain 2 * 0.5 = 1 per step
            for i, (_obs, reward, term, trunc, info) in enumerate(outcomes):
                xs[i].append(info["states"]["x"])
                assert not term and trunc == (k == 3)
                assert reward == pytest.approx(-abs(info["states"]["x"]))
                assert info["clipped"] == {"x": 0, "t": 0}
                ends = {"log_states_mean", "log_states_final"} if k == 3 else set()
                assert set(info) == {"states", "clipped", *ends}
        for (*_x, info), x in zip(outcomes, xs, strict=True):
            assert info["log_states_mean"] == {"x": pytest.approx(sum(x) / 3)}
            assert info["log_states_final"] == {"x": pytest.approx(x[-1])}
        assert env.totals() == {**NONE, "steps": 3, "episodes": 1}
    finally:
        env.close()


def test_info_states_off_leaves_states_and_clipped_out(kind, toy):
    """info_states=False (what training asks for): same rewards and ends, no per-step dicts."""
    on = Slots(kind, toy, {}, max_episode_steps=2)
    off = Slots(kind, toy, {"info_states": False}, max_episode_steps=2)
    try:
        on.reset({"x0": 0.0})
        for _obs, info in off.reset({"x0": 0.0}):
            assert set(info) == {"config"}
        for k in (1, 2):
            for full, lean in zip(on.step(0.5), off.step(0.5), strict=True):
                assert lean[1:4] == pytest.approx(full[1:4])  # reward, terminated, truncated
                assert lean[3] == (k == 2)
                ends = {"log_states_mean", "log_states_final"} if k == 2 else set()
                assert set(lean[4]) == ends and set(full[4]) == {"states", "clipped", *ends}
    finally:
        on.close()
        off.close()
