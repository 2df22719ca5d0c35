"""Hosting targets: files, modules, reference-style folders, Gymnasium envs."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from gymclient.connection import Connection
from simserver.errors import LoadError
from simserver.loader import load_factory

from .conftest import SIMS


def _names(factory):
    return [v.name for v in factory.states], [v.name for v in factory.actions]


def test_file_target_probes_names():
    factory = load_factory(f"{SIMS}/toy.py:Toy", {"gain": 3.0}, action_names=["u"])
    assert _names(factory) == (["x", "t"], ["u"])
    sim = factory.create(["u"])
    sim.reset({}, None)
    assert sim.step([1.0]).states == [3.0, 1.0]


def test_module_target(monkeypatch):
    monkeypatch.syspath_prepend(str(SIMS))
    factory = load_factory("toy:Declared")
    assert factory.sim_name == "declared-toy"


def test_gymnasium_id():
    factory = load_factory("gymnasium:Pendulum-v1")
    states, actions = _names(factory)
    assert states == ["obs[0]", "obs[1]", "obs[2]"]
    assert actions == ["action"]
    assert factory.actions[0].low == -2.0 and factory.actions[0].high == 2.0
    sim = factory.create(actions)
    out = sim.reset({}, 3)
    again = factory.create(actions).reset({}, 3)
    assert out.states == again.states  # seeded
    step = sim.step([0.5])
    assert step.reward is not None and len(step.states) == 3


def test_gymnasium_discrete_env():
    factory = load_factory("gymnasium:CartPole-v1")
    sim = factory.create(["action"])
    sim.reset({}, 0)
    assert len(sim.step([1.0]).states) == 4


def test_gymnasium_env_class(tmp_path):
    (tmp_path / "myenv.py").write_text(
        textwrap.dedent("""
        import gymnasium as gym, numpy as np
        class Walk(gym.Env):
            observation_space = gym.spaces.Box(-5, 5, (2,), np.float32)
            action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
            def __init__(self, step=0.5):
                self.step_size = step
            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                self.x = float((options or {}).get("x0", 0.0))
                return np.array([self.x, 0], np.float32), {}
            def step(self, a):
                self.x += float(a[0]) * self.step_size
                return np.array([self.x, 1], np.float32), -abs(self.x), abs(self.x) > 4, False, {}
    """)
    )
    factory = load_factory(f"{tmp_path}/myenv.py:Walk", {"step": 2.0})
    sim = factory.create(["action[0]"])
    assert sim.reset({"x0": 1.0}, None).states == [1.0, 0.0]
    out = sim.step([1.0])
    assert out.states == [3.0, 1.0] and out.reward == -3.0


def _reference_folder(root):
    """A reference-style folder: sim/ without __init__.py, imports relative to the root."""
    (root / "sim").mkdir(parents=True)
    (root / "sim" / "physics.py").write_text("def advance(x, u):\n    return x + u\n")
    (root / "sim" / "simulator_model.py").write_text(
        textwrap.dedent("""
        from sim.physics import advance

        class SimulatorModel:
            def __init__(self):
                self.x = 0.0
            @property
            def sim_name(self):
                return "RefSim"
            def reset(self, config):
                self.x = config.get("x0", 0.0)
                self.t = 0
                return {"x": self.x, "t": self.t}
            def step(self, action):
                self.x = advance(self.x, action["Tc_adjust"])
                self.t += 1
                return {"x": self.x, "t": self.t}
            def termination(self):
                print("checking termination")
                return self.x > 100
            def truncation(self):
                return self.t >= 5
    """)
    )
    return root


def test_reference_folder_from_its_root(tmp_path, monkeypatch):
    root = _reference_folder(tmp_path / "proj")
    monkeypatch.chdir(root)
    factory = load_factory("sim/simulator_model.py:SimulatorModel", action_names=["Tc_adjust"])
    assert factory.sim_name == "RefSim"
    sim = factory.create(["Tc_adjust"])
    sim.reset({"x0": 1}, None)
    assert sim.step([2.0]).states == [3.0, 1.0]
    for name in [m for m in sys.modules if m == "sim" or m.startswith("sim.")]:
        sys.modules.pop(name)


def test_reference_folder_served_by_cli(tmp_path, start_server):
    root = _reference_folder(tmp_path / "proj")
    server = start_server("sim/simulator_model.py:SimulatorModel", workdir=root)
    with Connection(server.address) as conn:
        session = conn.open(["Tc_adjust"])
        assert session.info.sim_name == "RefSim"
        session.reset({})
        for _ in range(4):
            assert not session.step([1.0]).truncated
        assert session.step([1.0]).truncated
    assert "checking termination" in server.log_tail(5)


def test_reference_folder_with_relative_unix_socket(tmp_path):
    """The issue's exact command line, run from the folder: --unix cstr.sock."""
    import subprocess

    root = _reference_folder(tmp_path / "proj")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simserver",
            "sim/simulator_model.py:SimulatorModel",
            "--unix",
            "cstr.sock",
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address == f"unix:{root / 'cstr.sock'}"
        with Connection(address) as conn:
            conn.open(["Tc_adjust"]).reset({})
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert not os.path.exists(root / "cstr.sock")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("toy.py:BadCtor", "cannot find license server"),
        ("toy.py:Nope", "no attribute"),
        ("gymnasium:Nope-v0", "unknown Gymnasium env id"),
        ("missing_module_xyz:Sim", "No module named"),
    ],
)
def test_load_errors(target, message, monkeypatch):
    monkeypatch.chdir(SIMS)
    with pytest.raises(LoadError, match=message):
        load_factory(target)
