"""`simgym check` against sims that go bad: a server that exits, a sim that leaks memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import SIMS


def _spec(tmp_path: Path, target: str, **kwargs: object) -> Path:
    text = (SIMS / "toy_spec.yaml").read_text()
    text = text.replace("toy.py:Toy", target).replace("kwargs: {gain: 2.0}", f"kwargs: {kwargs}")
    text = text.replace("reward.py:reward", f"{SIMS / 'reward.py'}:reward")
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace("sim:\n", f"sim:\n  workdir: {SIMS}\n", 1))
    return path


def _check(spec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Bounded: the check used to wait out a 30 s connect timeout per remaining episode.
    return subprocess.run(
        [sys.executable, "-c", "from launcher.cli import main; main()", "check", str(spec), *args],
        capture_output=True, text=True, timeout=120, env={"COLUMNS": "200", **_env()},
    )  # fmt: skip


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_a_server_that_exits_stops_the_check_with_its_exit_code_and_last_words(tmp_path):
    proc = _check(_spec(tmp_path, "bad.py:ExitsAtStep", at=10))  # 10 episodes by default
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "server stays up" in out and "the server exited with code 3 during episode 0" in out
    assert "FATAL: the solver lost its licence" in out  # its log's last words
    assert "1 seeded episodes" in out  # stopped there, not one reconnect wait per episode
    assert "cannot reach" not in out and "NOT SOUND" in out


def test_a_leaking_sim_is_not_sound_and_a_steady_one_is(tmp_path):
    leaky = _check(_spec(tmp_path, "bad.py:Leaky", mib_per_step=0.25))
    assert leaky.returncode == 1, leaky.stdout + leaky.stderr
    assert "server memory stays bounded" in leaky.stdout and "NOT SOUND" in leaky.stdout
    assert "MiB per episode" in leaky.stdout
    steady = _check(_spec(tmp_path, "toy.py:Toy", gain=2.0))
    assert steady.returncode == 0, steady.stdout + steady.stderr
    assert "server memory" not in steady.stdout and "SOUND" in steady.stdout
