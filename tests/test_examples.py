"""The shipped CSTR sample works end to end: the demo's check, the reference folder, training."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys

import pytest

from gymclient.connection import Connection

from .conftest import REPO

CSTR = REPO / "examples" / "cstr"


def simgym(*args: str, cwd=None, timeout=300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from launcher.cli import main; main()", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )  # fmt: skip


def test_cstr_spec_is_sound():
    proc = simgym("check", str(CSTR / "spec.yaml"), "--episodes", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CSTR" in proc.stdout and "SOUND" in proc.stdout


def test_reference_folder_is_sound_unedited():
    proc = simgym("check", str(CSTR / "reference"), "--episodes", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The reference normalisation (Tr/600, ...) uses a small part of [-1, 1]: visible in the table.
    assert "obs[0]" in proc.stdout


def test_reference_folder_served_with_the_documented_command(tmp_path):
    folder = CSTR / "reference"
    sock = tmp_path / "cstr.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simserver", "sim/simulator_model.py:SimulatorModel", "--unix", str(sock)],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address == f"unix:{sock}"
        with Connection(address) as conn:
            session = conn.open(["Tc_adjust"])
            assert "Cr" in session.state_names and "kpi_rms_conc_error" in session.state_names
            first = session.reset({"Cref_signal": 2, "noise_percentage": 5}, seed=7)
            again = session.reset({"Cref_signal": 2, "noise_percentage": 5}, seed=7)
            # The reference draws noise from the global `random`: the server seeds it.
            assert list(first.states) == list(again.states)
            for _ in range(91):
                t = session.step([1.0])
                if t.terminated or t.truncated:
                    break
            assert t.terminated or t.truncated
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


# ~50 s on 2 cores: `make test-slow` (run by CI after the default suite); `make demo` runs
# the same recipe longer.
@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="needs the train extra (pip install .[train])"
)
def test_shipped_recipe_trains(tmp_path):
    # Only this test needs ray: checked when it runs, not by an import at collection (which
    # would skip the whole module, the sim-side tests above included).
    proc = simgym("train", str(CSTR / "train.yaml"), "--max-time", "45s", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert rows and float(rows[-1]["env_steps_total"]) > 0
    if float(rows[-1]["episodes_total"]) > 0:  # a loaded machine may finish none in 45 s
        assert any(r.get("state_final_kpi_rms_conc_error") for r in rows)
    assert (run_dir / "learning_curve.png").exists() and (run_dir / "checkpoints").is_dir()
    assert "stopped" in proc.stdout and "max_time" in proc.stdout
