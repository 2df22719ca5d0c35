"""Discrete actions: spec forms and their errors, hosted Gymnasium Discrete/MultiDiscrete
spaces end to end, the values the sim receives (ints, not indices or rounded floats), and
(slow) training with PPO/IMPALA/APPO, evaluation, export and predict on discrete toys.

Real simserver processes (tests/sims/discrete.py) and, for training, real Ray.
"""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from gymclient.connection import Connection, ConnectOptions
from gymclient.env import SimEnv
from gymclient.errors import SimgymError, SpecError, SpecMismatch
from gymclient.spec import load_spec
from gymclient.vector import SimVectorEnv

from .conftest import SIMS, private_ray

OBS = "observations: {T: {min: 5, max: 30}}\n"


def _spec(tmp_path: Path, actions: str, sim: str = "sim: {address: '127.0.0.1:1'}") -> Path:
    path = tmp_path / "spec.yaml"
    body = textwrap.indent(textwrap.dedent(actions).strip(), "  ")
    path.write_text(f"{sim}\n{OBS}actions:\n{body}\nreward: score\n")
    return path


# ---------------------------------------------------------------- the spec's forms


@pytest.mark.parametrize(
    ("actions", "values", "labels", "space"),
    [
        ("heat: {values: [0, 1]}", [0, 1], None, gym.spaces.Discrete(2)),
        ("heat: {values: {off: 0, on: 1}}", [0, 1], ["off", "on"], gym.spaces.Discrete(2)),
        ("heat: {values: [0.5, -2]}", [0.5, -2], None, gym.spaces.Discrete(2)),
        ("heat: {min: 0, max: 4, step: 1}", [0, 1, 2, 3, 4], None, gym.spaces.Discrete(5)),
        ("heat: {min: 0, max: 1, step: 0.25}", [0, 0.25, 0.5, 0.75, 1], None, None),
        ("heat: {min: -1, max: 1}", None, None, None),
    ],
)
def test_spec_forms(tmp_path, actions, values, labels, space):
    spec = load_spec(_spec(tmp_path, actions))
    action = spec.actions["heat"]
    assert action.choices() == values and action.labels() == labels
    assert action.is_discrete == (values is not None)
    # Integer values only when every value is an int (YAML's 0, not 0.0).
    assert action.integer() == (values is not None and all(isinstance(v, int) for v in values))
    if space is not None:
        from gymclient.actions import ActionMap

        assert ActionMap(spec.source, spec.actions, ["heat"]).space() == space


def test_several_discrete_actions_make_a_multidiscrete_space(tmp_path):
    from gymclient.actions import ActionMap

    spec = load_spec(
        _spec(
            tmp_path,
            """
            heat: {values: [0, 1]}
            stage: {min: 0, max: 4, step: 1}
            mode: {values: {cool: 2, off: 0, heat: 1}}
            """,
        )
    )
    amap = ActionMap(spec.source, spec.actions, ["heat", "stage", "mode"])
    assert amap.space() == gym.spaces.MultiDiscrete([2, 5, 3])
    # Index 0 of mode is `cool`, whose value is 2: the sim gets the value, not the index.
    assert amap.values(np.array([1, 3, 0])) == [1, 3, 2]
    assert amap.values_batch(np.array([[0, 4, 1], [1, 0, 2]])).tolist() == [[0, 4, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match=r"'stage': index 5 is not one of 0..4"):
        amap.values(np.array([0, 5, 0]))


def test_discrete_and_continuous_actions_make_a_tuple_space(tmp_path):
    from gymclient.actions import ActionMap

    spec = load_spec(
        _spec(
            tmp_path,
            """
            heat: {values: [0, 1]}
            stage: {min: 0, max: 4}
            mode: {values: {cool: 2, off: 0, heat: 1}}
            """,
        )
    )
    amap = ActionMap(spec.source, spec.actions, ["heat", "stage", "mode"])
    box = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    assert amap.space() == gym.spaces.Tuple((box, gym.spaces.MultiDiscrete([2, 3])))
    # Session order: heat (index 1 -> 1), stage (0.5 -> 3.0 on [0, 4]), mode (index 0 -> 2).
    assert amap.values((np.array([0.5], np.float32), np.array([1, 0]))) == [1, 3.0, 2]
    batch = amap.values_batch((np.array([[0.5], [-1.0]]), np.array([[1, 0], [0, 2]])))
    assert batch.tolist() == [[1, 3.0, 2], [0, 0.0, 1]]
    # RLlib's inputs for a Tuple: the Box part's mean and log-std, then each action's logits.
    mean, picks = amap.deterministic(np.array([0.25, -3.0, 0.1, 0.9, 5.0, 0.0, 1.0]))
    assert mean.tolist() == [0.25] and picks.tolist() == [1, 0]
    with pytest.raises(ValueError, match="a \\(continuous array, discrete indices\\) pair"):
        amap.values(np.array([1, 0]))


@pytest.mark.parametrize(
    ("actions", "key", "message"),
    [
        ("heat: {values: []}", "actions.heat.values", "must not be empty"),
        ("heat: {values: {off: zero, on: 1}}", "actions.heat.values", "values.off is 'zero'"),
        ("heat: {values: [0, one]}", "actions.heat.values", "values[1] is 'one', not a number"),
        ("heat: {values: [0, true]}", "actions.heat.values", "not a number"),
        ("heat: {values: [1, 1]}", "actions.heat.values", "given twice"),
        ("heat: {min: 0, max: 4, step: 3}", "actions.heat", "does not divide the range"),
        ("heat: {min: 0, max: 4, step: 0}", "actions.heat", "must be a positive number"),
        ("heat: {min: 0, max: 4, step: 1, values: [1]}", "actions.heat", "not both"),
        ("heat: {step: 1}", "actions.heat", "step needs min and max"),
        ("heat: {min: 0}", "actions.heat.max", "Field required"),
        ("heat: {max: 1}", "actions.heat", "give min as well as max"),
        ("heat: {min: 0, max: 0.5, step: 0.00001}", "actions.heat", "at most 10000"),
    ],
)
def test_spec_errors_name_file_and_key(tmp_path, actions, key, message):
    path = _spec(tmp_path, actions)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    text = str(info.value)
    assert text.startswith(str(path)) and f"{key}: " in text and message in text, text


# ---------------------------------------------------------------- against real servers


def test_hosted_cartpole_keeps_its_discrete_space(tmp_path, start_server):
    server = start_server("gymnasium:CartPole-v1")
    sim = f"sim: {{address: '{server.address}'}}"
    obs = "".join(
        f"  'obs[{i}]': {{min: -{r}, max: {r}}}\n" for i, r in enumerate((2.4, 3, 0.21, 3))
    )

    def spec(action: str) -> Path:
        path = tmp_path / "cartpole.yaml"
        path.write_text(f"{sim}\nobservations:\n{obs}actions:\n  action: {action}\n")
        return path

    # The wire says which values the action takes.
    with Connection(server.address, ConnectOptions()) as conn:
        session = conn.open()
        assert [list(v.values) for v in session.info.actions] == [[0.0, 1.0]]
        session.close()
    for action in ("{}", "{values: [0, 1]}"):
        env = SimEnv({"spec": str(spec(action))})
        try:
            assert env.action_space == gym.spaces.Discrete(2)
            env.reset(seed=3)
            # The sim's own reward: 1 per step while the pole stands.
            assert env.step(1)[1] == 1.0 and env.step(np.int64(0))[1] == 1.0
            with pytest.raises(ValueError, match=r"index 2 is not one of 0\.\.1"):
                env.step(2)
        finally:
            env.close()
    vec = SimVectorEnv(str(spec("{}")), 3)
    try:
        assert vec.single_action_space == gym.spaces.Discrete(2)
        assert vec.action_space == gym.spaces.MultiDiscrete([2, 2, 2])
        vec.reset(seed=0)
        _obs, rewards, *_ = vec.step(np.array([0, 1, 1]))
        assert rewards.tolist() == [1.0, 1.0, 1.0]
    finally:
        vec.close()
    # A range over a discrete action is what used to train CartPole as a rounded Box.
    with pytest.raises(SpecMismatch, match=r"actions.action: the sim takes one of \[0, 1\]"):
        SimEnv({"spec": str(spec("{min: 0, max: 1}"))})
    with pytest.raises(SpecMismatch, match=r"takes only \[0, 1\]; \[2\] is not among them"):
        SimEnv({"spec": str(spec("{values: [0, 1, 2]}"))})


def test_hosted_multidiscrete_env_gets_integer_arrays(tmp_path, start_server):
    server = start_server("discrete.py:Switchboard")
    path = tmp_path / "board.yaml"
    path.write_text(
        f"sim: {{address: '{server.address}'}}\n"
        "observations: {'obs[0]': {min: 0, max: 3}, 'obs[1]': {min: 0, max: 1}}\n"
        "actions: {'action[0]': {}, 'action[1]': {}}\n"
    )
    env = SimEnv({"spec": str(path)})
    try:
        assert env.action_space == gym.spaces.MultiDiscrete([3, 2])
        env.reset(seed=0)
        # Index 2 of action[0] (start 1) is level 3; the env asserts it got an int array.
        _obs, reward, *_, info = env.step(np.array([2, 1]))
        assert info["states"] == {"obs[0]": 3.0, "obs[1]": 1.0} and reward == 30.0
        _obs, reward, *_, info = env.step(np.array([0, 0]))
        assert info["states"] == {"obs[0]": 1.0, "obs[1]": 0.0} and reward == -10.0
    finally:
        env.close()


def test_the_sim_receives_the_values_as_ints(tmp_path, start_server):
    """Heater/Furnace index tuples with their actions: a float (1.0) or an index would fail."""
    furnace = start_server("discrete.py:Furnace")
    path = _spec(
        tmp_path,
        """
        heat: {values: {off: 0, on: 1}}
        stage: {min: 0, max: 4, step: 1}
        mode: {values: {cool: 2, off: 0, heat: 1}}
        """,
        f"sim: {{address: '{furnace.address}'}}",
    )
    env = SimEnv({"spec": str(path)})
    try:
        assert env.action_space == gym.spaces.MultiDiscrete([2, 5, 3])
        env.reset(seed=0)
        *_, info = env.step(np.array([1, 4, 0]))  # heat on, stage 4, mode index 0 = cool (2)
        states = info["states"]
        assert (states["got_on"], states["got_stage"], states["got_mode"]) == (1, 4, 2)
        assert env.codec.decode(np.array([1, 4, 0])) == [1, 4, 2]
        assert all(type(v) is int for v in env.codec.decode(np.array([1, 4, 0])))
    finally:
        env.close()
    # Discrete and continuous together: a Tuple; the continuous part is scaled, not rounded.
    mixed = _spec(
        tmp_path,
        """
        heat: {values: [0, 1]}
        stage: {min: 0, max: 4}
        mode: {values: {cool: 2, off: 0, heat: 1}}
        """,
        f"sim: {{address: '{furnace.address}'}}",
    )
    env = SimEnv({"spec": str(mixed)})
    vec = SimVectorEnv(str(mixed), 2)
    try:
        assert isinstance(env.action_space, gym.spaces.Tuple)
        env.reset(seed=0)
        *_, info = env.step((np.array([0.5], np.float32), np.array([1, 0])))
        states = info["states"]
        assert (states["got_on"], states["got_stage"], states["got_mode"]) == (1, 3.0, 2)
        # The vector env takes RLlib's batched form: (continuous rows, discrete rows).
        vec.reset(seed=0)
        vec.step((np.array([[0.5], [1.0]], np.float32), np.array([[1, 0], [0, 1]])))
        *_, infos = vec.step((np.zeros((2, 1), np.float32), np.array([[0, 2], [1, 1]])))
        got = [(s["got_on"], s["got_stage"], s["got_mode"]) for s in infos["states"]]
        assert got == [(0, 2.0, 1), (1, 2.0, 0)]
    finally:
        env.close()
        vec.close()
    # Values written as floats (1.0) reach the sim as floats: the int is the spec's word.
    heater = start_server("discrete.py:Heater")
    for values, received in (("[0, 1]", 1), ("[0.0, 1.0]", None)):
        path = _spec(
            tmp_path, f"heat: {{values: {values}}}", f"sim: {{address: '{heater.address}'}}"
        )
        env = SimEnv({"spec": str(path)})
        try:
            env.reset(seed=0)
            if received is not None:
                assert env.step(1)[4]["states"]["got_on"] == received
            else:
                with pytest.raises(SimgymError, match="tuple indices must be integers"):
                    env.step(1)
        finally:
            env.close()


# ---------------------------------------------------------------- training (slow)


def _train_spec(tmp_path: Path, algorithm: str, env: str, actions: dict, steps: int) -> Path:
    env_spec = {
        "name": "heater",
        "sim": {"target": f"{SIMS / 'discrete.py'}:{env}", "workdir": str(SIMS)},
        "observations": {"T": {"min": 5, "max": 30}},
        "actions": actions,
        "reward": "score",
        "lessons": {"T0": {"min": 10, "max": 25}},
    }
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(env_spec, sort_keys=False))
    config = {"train_batch_size_per_learner": 400 if algorithm == "PPO" else 200,
              "min_time_s_per_iteration": 1}  # fmt: skip
    if algorithm == "PPO":
        config.update(minibatch_size=100, num_epochs=4, entropy_coeff=0.01)
    train = {
        "env": "env.yaml",
        "sim": {"launch": {"servers": 1, "sessions_per_server": 4}},
        "algorithm": algorithm,
        "config": config,
        "resources": {"env_runners": 1, "envs_per_runner": 4, "cpus": 2},
        "stop": {"env_steps": steps, "max_time": 180},
        "checkpoint": {"every": 100, "keep": 1},
        "output": str(tmp_path / "runs"),
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(train))
    return path


@pytest.fixture(scope="module")
def ray_session():
    with private_ray(num_cpus=2):
        yield


@pytest.mark.slow
def test_ppo_learns_a_switch_and_evaluate_export_predict_give_the_sims_values(
    tmp_path, ray_session
):
    pytest.importorskip("onnxruntime")
    from gymclient.agent import load_agent
    from launcher.evaluate import evaluate
    from launcher.export import export_run
    from launcher.train import train

    actions = {"heat": {"values": {"off": 0, "on": 1}}}
    run_dir, state = train(_train_spec(tmp_path, "PPO", "Heater", actions, 6000))
    assert state.finished and not (run_dir / "error.txt").exists()
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r["episode_reward_mean"]]
    first, last = float(rows[0]["episode_reward_mean"]), float(rows[-1]["episode_reward_mean"])
    # Random switching scores about -100 over 50 steps; holding 20 degrees about -40.
    assert last > first + 15, (first, last)

    scenarios = tmp_path / "scenarios.yaml"
    scenarios.write_text("scenarios:\n  - grid: {T0: [12, 26]}\n    seeds: [0]\n")
    out = tmp_path / "eval"
    evaluate(run_dir, scenarios, out=out, plots=False)
    steps = list(csv.DictReader((out / "trajectories.csv").open()))
    taken = [r["heat"] for r in steps if r["heat"] != "nan"]
    # What the sim received, as it received it: 0 or 1, never a mean such as 0.2166.
    assert taken and set(taken) <= {"0", "1"} and len(set(taken)) == 2, set(taken)
    pairs = itertools.pairwise(steps)
    assert all(
        b["got_on"] == a["heat"] for a, b in pairs if a["heat"] != "nan" and b["step"] != "0"
    )

    agent_dir = tmp_path / "agent"
    result = export_run(run_dir, agent_dir)
    assert result.max_abs_diff == 0.0
    manifest = json.loads((agent_dir / "manifest.json").read_text())
    assert manifest["outputs"] == [
        {"name": "heat", "min": 0, "max": 1, "values": [0, 1], "dtype": "float64",
         "labels": ["off", "on"]}
    ]  # fmt: skip
    agent = load_agent(agent_dir)
    cold, warm = agent.act({"T": 12.0}), agent.act({"T": 28.0})
    assert cold == {"heat": 1} and warm == {"heat": 0} and type(cold["heat"]) is int
    batch = agent.act_batch({"T": [12.0, 28.0]})["heat"]
    assert batch.tolist() == [1.0, 0.0]
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from launcher.cli import main; main()",
            "predict",
            str(agent_dir),
            "--state",
            '{"T": 12}',
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"heat": 1}, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("algorithm", "stage"), [("IMPALA", 1), ("APPO", None)])
def test_impala_and_appo_train_multidiscrete_and_tuple_actions(
    tmp_path, ray_session, algorithm, stage
):
    """IMPALA: three discrete actions (MultiDiscrete); APPO: stage continuous (a Tuple)."""
    from launcher.train import train

    actions = {
        "heat": {"values": [0, 1]},
        "stage": {"min": 0, "max": 4, **({"step": stage} if stage else {})},
        "mode": {"values": {"cool": 2, "off": 0, "heat": 1}},
    }
    run_dir, state = train(_train_spec(tmp_path, algorithm, "Furnace", actions, 600))
    assert state.finished and state.stop_reason == "env_steps 600 reached", state.stop_reason
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    # Every sim call succeeded: a float or an index would have raised in Furnace.step.
    assert rows and all(float(r.get("sim_errors") or 0) == 0 for r in rows)
    assert float(rows[-1]["episodes_total"]) > 0
    # The exported agent gives each action as the sim takes it (checkpoint: the last one).
    pytest.importorskip("onnxruntime")
    from gymclient.agent import load_agent
    from launcher.export import export_run

    export_run(run_dir, tmp_path / "agent")
    act = load_agent(tmp_path / "agent").act({"T": 15.0})
    assert act["heat"] in (0, 1) and act["mode"] in (0, 1, 2) and 0 <= act["stage"] <= 4
    assert type(act["heat"]) is int and type(act["mode"]) is int
    assert (type(act["stage"]) is int) == (stage is not None)
