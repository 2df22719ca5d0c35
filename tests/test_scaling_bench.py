"""bench/scaling.py's smoke run trains for real and writes every figure and ratio.

``--quick`` trains three cases on one private Ray (the 0.1 ms sim in-process and through two
sidecar simservers, the 20 ms waiting sim through one): real RLlib env runners, real
simserver processes on unix sockets. Its numbers mean nothing; what must hold is that every
case sampled env steps, each role's CPU was counted (the sims' time shows up in the sim
servers' processes only when the sims really ran there), and the ratios are against the
first case of the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO / "bench"))
from _scaling_model import bottleneck, fit, predict  # noqa: E402

COSTS = {"r_bridge": 0.3, "r_local": 0.3, "s": 0.1, "learn": 0.2, "learner_cpu": 0.1, "w": 0.05}
ONE_MS = {"sim_ms": 1.0, "waits": False, "nodes": 1, "cores": 2.0}


def test_model_in_process_runner_steps_its_sims_itself() -> None:
    # 16 envs x (0.3 + 1.0) ms per vector step: 769 steps/s; PPO adds 0.2 ms per step.
    case = {**ONE_MS, "mode": "local", "runners": 1, "envs": 16, "servers": 1}
    assert predict(COSTS, **case, sync=False) == pytest.approx(1e3 / 1.3)
    assert predict(COSTS, **case, sync=True) == pytest.approx(1e3 / 1.5)
    assert bottleneck(COSTS, **case, sync=True) == "runners"


def test_model_bridge_two_processes_lock_step_then_cores() -> None:
    # One runner, 16 envs over 2 servers: 16 x 0.3 + 8 x 1.1 = 13.6 ms per 16 steps.
    one = {**ONE_MS, "mode": "bridge", "runners": 1, "envs": 16, "servers": 2, "sync": True}
    assert predict(COSTS, **one) == pytest.approx(1 / (13.6e-3 / 16 + 0.2e-3))
    # Two runners: the cores bind: 2 cores / (0.3 + 1.0 + 0.1) ms.
    two = {**one, "runners": 2, "envs": 8}
    assert predict(COSTS, **two) == pytest.approx(1 / (1.4e-3 / 2 + 0.2e-3))
    assert bottleneck(COSTS, **{**two, "sync": False}) == "cpu"


def test_model_waiting_sims_step_together_until_the_learner_binds() -> None:
    case = {"sim_ms": 20.0, "waits": True, "mode": "bridge", "servers": 1, "nodes": 1}
    one = predict(COSTS, **case, runners=1, envs=1, cores=2.0, sync=False)
    assert one == pytest.approx(1e3 / (0.3 + 20.05))
    many = predict(COSTS, **case, runners=1, envs=64, cores=2.0, sync=False)
    assert many == pytest.approx(64e3 / (64 * 0.3 + 20 + 64 * 0.05))
    # Ten nodes of 64 cores: sampling could go far past one CPU learner's 1/0.1 ms.
    big = {**case, "runners": 40, "envs": 64, "cores": 64.0, "nodes": 10, "sync": False}
    assert predict(COSTS, **big) == pytest.approx(1e4)
    assert bottleneck(COSTS, **big) == "learner"


def test_fit_reads_costs_per_role() -> None:
    trial = {
        "mode": "bridge", "sim": "Cpu1", "envs": 16, "algorithm": "PPO", "learn_s": 0.8,
        "config": {"train_batch_size_per_learner": 4000},
        "cpu_ms_per_step": {"env_runners": 0.33, "sim_servers": 1.12, "driver": 0.2},
    }  # fmt: skip
    costs = fit([trial])
    assert costs["r_bridge"] == pytest.approx(0.33)
    assert costs["s"] == pytest.approx(0.12)
    assert costs["learn"] == pytest.approx(0.2)


@pytest.mark.slow  # ~1-2 min: three short trainings
def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "scaling.py"), "--quick", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    trials = data["trials"]["quick"]
    assert len(trials) == 3
    labels = list(trials)
    local, bridge, io = (trials[label][0] for label in labels)
    for r in (local, bridge, io):
        assert r["env_steps"] > 0 and r["steps_per_s"] > 0
        assert r["cpu_ms_per_step"]["env_runners"] > 0
    # In-process, the env runner computes the sims: no sim server; through the bridge the
    # servers do, and their CPU per env step covers the sim's 0.1 ms (it spins CPU time).
    assert local["servers_started"] == 0 and "sim_servers" not in local["cpu_ms_per_step"]
    assert bridge["servers_started"] == 2
    assert bridge["cpu_ms_per_step"]["sim_servers"] >= 0.1
    assert local["cpu_ms_per_step"]["env_runners"] >= 0.1
    # The waiting sim's 20 ms per step is measured by the server, per env step.
    assert io["sim_step_ms"] >= 20.0
    ratios = data["ratios"]["quick"]
    assert ratios[labels[0]] == 1.0
    expected = bridge["steps_per_s"] / local["steps_per_s"]
    assert ratios[labels[1]] == pytest.approx(expected)
    assert "ratio" in proc.stdout or "x1.00" in proc.stdout


def test_model_one_sim_process_serves_one_session_at_a_time() -> None:
    # Two runners cannot overlap on a single sim process: it caps at 1 / (X + s).
    case = {**ONE_MS, "mode": "bridge", "runners": 2, "envs": 8, "servers": 1, "sync": False}
    assert predict(COSTS, **case) == pytest.approx(1e3 / 1.1)
    assert bottleneck(COSTS, **case) == "runners"
