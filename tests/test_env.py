"""SimEnv and SimVectorEnv through real servers: Gymnasium and RLlib checks, seeding, faults."""

from __future__ import annotations

import math
import subprocess
import time

import numpy as np
import pytest

from gymclient import NonFiniteStateError, SimEnv, load_spec, pick_address
from gymclient.connection import Connection
from gymclient.errors import ServerUnavailable, SimCallError, SimTimeout
from gymclient.vector import SimVectorEnv
from simgym.v1 import simulator_pb2 as pb

from .conftest import SIMS, unix_simserver_cmd

SPEC = SIMS / "toy_spec.yaml"


@pytest.fixture
def toy(start_server):
    spec = load_spec(SPEC)
    server = start_server("toy.py:Toy", kwargs=spec.sim.kwargs)
    return spec, server.address


def _env(spec, address, **kw):
    return SimEnv({"spec": spec, "address": address, **kw})


def test_gymnasium_check_env(toy, transport, start_server):
    from gymnasium.utils.env_checker import check_env

    spec, _ = toy
    server = start_server("toy.py:Toy", transport=transport, kwargs=spec.sim.kwargs)
    env = _env(spec, server.address)
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_rllib_env_runner_samples_through_the_wire(toy):
    """RLlib 2.60 has no standalone single-agent check_env: its env runner is the check."""
    pytest.importorskip("ray.rllib", reason="the train extra is part of the dev install")
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    spec, address = toy
    config = (
        PPOConfig()
        .environment(SimEnv, env_config={"spec": spec, "address": address})
        .env_runners(num_envs_per_env_runner=2)
    )
    runner = SingleAgentEnvRunner(config=config)
    try:
        episodes = runner.sample(num_timesteps=120)
        metrics = runner.get_metrics()
    finally:
        runner.stop()
    assert sum(len(e) for e in episodes) >= 120
    assert metrics["num_episodes"] >= 1
    assert math.isfinite(metrics["episode_return_mean"])


def test_step_semantics_and_info(toy):
    spec, address = toy
    env = _env(spec, address)
    try:
        obs, info = env.reset(seed=1)
        assert env.observation_space.contains(obs)
        x0 = info["config"]["x0"]
        assert -1 <= x0 <= 1
        assert info["states"]["x"] == pytest.approx(x0, abs=0.07)  # + the sim's seeded offset
        obs, reward, term, trunc, info = env.step(np.array([1.0], np.float32))
        # gain 2, u = +1 → x grows by 2; observation x in [-10, 10] → x/10.
        assert obs[0] == pytest.approx(info["states"]["x"] / 10, abs=1e-6)
        assert reward == pytest.approx(-abs(info["states"]["x"]))
        assert info["clipped"] == {"x": 0, "t": 0}
        for _ in range(5):
            obs, reward, term, trunc, info = env.step(np.array([1.0], np.float32))
            if term:
                break
        assert term and reward < -10  # terminal penalty from reward.py
        assert info["clipped"]["x"] >= 1 and obs[0] == 1.0
    finally:
        env.close()


def test_reset_seed_reproduces_scenario_and_sim(toy):
    spec, address = toy
    a, b = _env(spec, address), _env(spec, address)
    try:
        oa, ia = a.reset(seed=42)
        ob, ib = b.reset(seed=42)
        assert ia["config"] == ib["config"] and np.array_equal(oa, ob)
        oc, ic = b.reset(seed=43)
        assert ic["config"] != ia["config"]
        # options override the lessons (fixed evaluation scenarios).
        _, info = a.reset(seed=0, options={"config": {"x0": 0.25}})
        assert info["config"] == {"x0": 0.25}
        assert info["states"]["x"] == pytest.approx(0.25, abs=0.07)
    finally:
        a.close()
        b.close()


def test_address_mapping_is_deterministic_and_spread():
    addrs = ["a", "b", "c", "d"]
    slots = [pick_address(addrs, w, v, num_workers=2) for w in (1, 2) for v in (0, 1)]
    assert sorted(slots) == addrs
    assert pick_address(addrs, 0, 0) == "a"
    assert pick_address(addrs, 1, 0, 2) == pick_address(addrs, 1, 0, 2)


def test_nonfinite_states_truncate_or_raise(start_server):
    spec = load_spec(SPEC)
    server = start_server("toy.py:NaNSim")
    env = _env(spec, server.address)
    try:
        env.reset(seed=0)
        env.step([0.0])
        obs, reward, term, trunc, info = env.step([0.0])
        assert trunc and not term and reward == 0.0
        assert "non-finite states: x" in info["simgym_error"]
        assert np.all(np.isfinite(obs))
        assert env.totals["nonfinite"] == 1
    finally:
        env.close()
    strict = load_spec(SPEC).model_copy(update={"on_nonfinite": "raise"})
    env = _env(strict, server.address)
    try:
        env.reset(seed=0)
        env.step([0.0])
        with pytest.raises(NonFiniteStateError, match="non-finite states: x"):
            env.step([0.0])
    finally:
        env.close()


def test_sim_error_raises_by_default_and_truncates_when_asked(start_server):
    spec = load_spec(SPEC)
    server = start_server("toy.py:Raising", kwargs={"fail_at": 2})
    env = _env(spec, server.address)
    try:
        env.reset(seed=0)
        env.step([0.0])
        with pytest.raises(SimCallError, match="ZeroDivisionError"):
            env.step([0.0])
    finally:
        env.close()
    tolerant = spec.model_copy(update={"on_error": "truncate"})
    env = _env(tolerant, server.address)
    try:
        env.reset(seed=0)
        env.step([0.0])
        obs, reward, term, trunc, info = env.step([0.0])
        assert trunc and "ZeroDivisionError" in info["simgym_error"]
        env.reset(seed=1)  # a new session, the episode goes on
        assert env.totals["sim_errors"] == 1 and env.totals["reopens"] == 1
    finally:
        env.close()


def test_hung_sim_times_out_within_the_deadline(start_server):
    spec = load_spec(SPEC)
    # The sim hangs far longer than the pytest timeout: returning at all, with SimTimeout,
    # shows the deadline fired; the lower bound, that it was not something sooner.
    server = start_server("toy.py:Hanging", kwargs={"hang": 3600.0})
    env = _env(spec, server.address, timeout=1.0)
    try:
        env.reset(seed=0)
        env.step([0.0])
        started = time.monotonic()
        with pytest.raises(SimTimeout):
            env.step([0.0])
        assert time.monotonic() - started >= 1.0
    finally:
        env.close()
        server.kill()  # its hung thread would hold a graceful exit for the whole hang


def _timeouts(spec, **timeouts):
    return spec.model_copy(update={"sim": spec.sim.model_copy(update=timeouts)})


def test_resets_get_reset_timeout_not_the_step_deadline(start_server):
    # A 2 s reset under `timeout: 0.5, reset_timeout: 10`: the reset's deadline applies,
    # while a step still gets the short one.
    spec = _timeouts(load_spec(SPEC), timeout=0.5, reset_timeout=10.0)
    server = start_server("faults.py:SlowReset")
    env = _env(spec, server.address)
    try:
        started = time.monotonic()
        _, info = env.reset(seed=0, options={"config": {"delay": 2.0}})
        assert time.monotonic() - started >= 2.0 and info["states"]["t"] == 0.0
        assert env.step(np.zeros(1, np.float32))[4]["states"]["t"] == 1.0
    finally:
        env.close()
    vec = SimVectorEnv(spec, 2, [server.address], timeout=0.5, reset_timeout=10.0)
    try:
        obs, _ = vec.reset(seed=0, options={"config": {"delay": 1.0}})
        assert obs.shape == (2, 2)
    finally:
        vec.close()


def test_failed_reset_reopens_the_session(start_server):
    # A reset past its deadline leaves the server's session busy in the sim: the next
    # reset must start on a new session, not get ServerBusy from the old one.
    spec = _timeouts(load_spec(SPEC), timeout=5.0, reset_timeout=0.5)
    server = start_server("faults.py:SlowReset")
    env = _env(spec, server.address)
    try:
        first = env.session.id
        with pytest.raises(SimTimeout):
            env.reset(seed=0, options={"config": {"delay": 3.0}})
        _, info = env.reset(seed=1, options={"config": {"x0": 0.5}})
        assert info["states"]["x"] == 0.5
        assert env.session.id != first and env.totals["reopens"] == 1
        assert env.step(np.zeros(1, np.float32))[4]["states"]["t"] == 1.0
    finally:
        env.close()


def test_server_killed_mid_episode_then_restarted(tmp_path):
    """on_error: truncate — the episode ends, and the next reset reaches the restarted server."""
    spec = load_spec(SPEC).model_copy(update={"on_error": "truncate"})
    sock = tmp_path / "s.sock"
    cmd = unix_simserver_cmd(sock)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdout.readline()
    env = _env(spec, f"unix:{sock}", timeout=2.0)
    try:
        env.reset(seed=0)
        env.step([0.0])
        proc.kill()
        proc.wait(10)
        obs, reward, term, trunc, info = env.step([0.0])
        assert trunc and "unavailable" in info["simgym_error"].lower()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stdout.readline()
        env.reset(seed=1)
        assert not env.step([0.0])[3]
    finally:
        env.close()
        proc.kill()
        proc.wait(10)


def test_unreachable_address_is_a_clear_error(tmp_path):
    spec = load_spec(SPEC).model_copy(
        update={"sim": load_spec(SPEC).sim.model_copy(update={"connect_timeout": 1.0})}
    )
    with pytest.raises(ServerUnavailable, match="Is simserver running"):
        _env(spec, f"unix:{tmp_path}/nothing.sock")


def test_vector_env_matches_single_envs(toy):
    spec, address = toy
    venv = SimVectorEnv(spec, 4, [address])
    singles = [_env(spec, address) for _ in range(4)]
    try:
        obs, _ = venv.reset(seed=10)
        for i, env in enumerate(singles):
            o, _ = env.reset(seed=10 + i)
            np.testing.assert_array_equal(obs[i], o)
        actions = np.array([[0.5], [-0.5], [1.0], [0.0]], np.float32)
        for _ in range(3):
            obs, rewards, terms, truncs, _ = venv.step(actions)
            for i, env in enumerate(singles):
                o, r, te, tr, _ = env.step(actions[i])
                np.testing.assert_array_equal(obs[i], o)
                assert rewards[i] == pytest.approx(r) and terms[i] == te and truncs[i] == tr
    finally:
        venv.close()
        for env in singles:
            env.close()


def test_vector_env_autoresets_next_step(toy):
    spec, address = toy
    venv = SimVectorEnv(spec, 2, [address])
    try:
        venv.reset(seed=0)
        done_at = None
        for k in range(30):
            _, _, terms, truncs, _ = venv.step(np.ones((2, 1), np.float32))
            if terms[0] or truncs[0]:
                done_at = k
                break
        assert done_at is not None
        obs, rewards, terms, truncs, _ = venv.step(np.ones((2, 1), np.float32))
        # NEXT_STEP autoreset: this step reset sub-env 0 (reward 0, not done).
        assert rewards[0] == 0.0 and not terms[0] and not truncs[0]
        assert abs(obs[0][1] - (-1.0)) < 1e-6  # t back to 0 → -1 in [0, 20]
    finally:
        venv.close()


def test_vector_env_spreads_over_servers_and_survives_a_sim_error(start_server):
    spec = load_spec(SPEC).model_copy(update={"on_error": "truncate"})
    good = start_server("toy.py:Toy")
    bad = start_server("toy.py:Raising", kwargs={"fail_at": 2})
    venv = SimVectorEnv(spec, 2, [good.address, bad.address])
    try:
        assert venv._episodes.addresses == [good.address, bad.address]
        venv.reset(seed=0)
        venv.step(np.zeros((2, 1), np.float32))
        _, _, terms, truncs, infos = venv.step(np.zeros((2, 1), np.float32))
        assert not truncs[0] and truncs[1]
        assert "ZeroDivisionError" in infos["simgym_error"][1] and infos[
            "_simgym_error"
        ].tolist() == [False, True]
        venv.step(np.zeros((2, 1), np.float32))  # sub-env 1 reopens and resets
        _, _, _, truncs, _ = venv.step(np.zeros((2, 1), np.float32))
        assert not truncs.any()
    finally:
        venv.close()


# --------------------------------------------------------------------------- packed transport


@pytest.mark.parametrize("packed_socket", [True, False])
def test_env_transports_match_per_session_stepping(toy, packed_socket):
    """SimEnv over the packed socket or a gRPC PackedStream == a session stepped alone."""
    spec, address = toy
    env = _env(spec, address, packed_socket=packed_socket)
    config = {"config": {"x0": 0.5}, "sim_seed": 5}
    try:
        with Connection(address) as conn:
            session = conn.open(["u"])
            obs, info = env.reset(seed=0, options=config)
            t = session.reset(config["config"], seed=5)
            rng = np.random.default_rng(0)
            for _ in range(45):  # crosses episode ends (horizon 20 or |x| > 10)
                assert list(info["states"].values()) == list(t.states)
                # The pure-Python observation path gives what the numpy codec gives.
                expected, _ = env.codec.encode(info["states"], list(t.states))
                np.testing.assert_array_equal(obs, expected)
                action = rng.uniform(-1, 1, 1).astype(np.float32)
                obs, reward, term, trunc, info = env.step(action)
                t = session.step(env.codec.decode(action))
                assert term == t.terminated and (trunc or not t.truncated)
                if term or trunc:
                    obs, info = env.reset(options=config)
                    t = session.reset(config["config"], seed=5)
    finally:
        env.close()


def test_vector_env_truncates_a_dead_session_and_reopens_it(toy):
    """A session that vanished (closed, expired) fails its slot of the packed message only."""
    spec, address = toy
    tolerant = spec.model_copy(update={"on_error": "truncate"})
    venv = SimVectorEnv(tolerant, 3, [address])
    try:
        venv.reset(seed=0)
        dead = venv._episodes.sessions[1].id
        with Connection(address) as conn:
            conn._call("Close", pb.SessionRef(session_id=dead), 5)
        actions = np.zeros((3, 1), np.float32)
        _, rewards, terms, truncs, infos = venv.step(actions)
        assert truncs.tolist() == [False, True, False] and not terms.any()
        assert "unknown session" in infos["simgym_error"][1]
        assert venv.totals["sim_errors"] == 1
        # Next step: sub-env 1 gets a new session, reset in the same message as the steps.
        _, rewards, _, truncs, _ = venv.step(actions)
        assert venv._episodes.sessions[1].id != dead and rewards[1] == 0.0 and not truncs.any()
        obs, _, _, truncs, _ = venv.step(actions)
        assert not truncs.any() and np.isfinite(obs).all()
    finally:
        venv.close()
