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

pytestmark = pytest.mark.slow  # ~1-2 min: three short trainings


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
