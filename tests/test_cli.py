"""The `simgym` command: exit codes and one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import SIMS


def simgym(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from launcher.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_check_sound_integration_exits_zero():
    proc = simgym("check", str(SIMS / "toy_spec.yaml"), "--episodes", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SOUND" in proc.stdout and "steps/s" in proc.stdout


def test_check_unsound_integration_exits_one(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        (SIMS / "toy_spec.yaml")
        .read_text()
        .replace("toy.py:Toy", "toy.py:Raising")
        .replace("kwargs: {gain: 2.0}", "kwargs: {fail_at: 2}")
    )
    for f in ("toy.py", "reward.py"):
        (tmp_path / f).write_text((SIMS / f).read_text())
    proc = simgym("check", str(spec), "--episodes", "2")
    assert proc.returncode == 1
    assert "NOT SOUND" in proc.stdout and "ZeroDivisionError" in proc.stdout


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('return -abs(states["nope"])', "raised KeyError: 'nope'"),
        ("pass", "returned None"),
    ],
)
def test_check_reports_a_bad_reward_function(tmp_path, body, message):
    (tmp_path / "toy.py").write_text((SIMS / "toy.py").read_text())
    (tmp_path / "bad_reward.py").write_text(
        f"def reward(states, terminated, truncated):\n    {body}\n"
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        (SIMS / "toy_spec.yaml").read_text().replace("reward.py:reward", "bad_reward.py:reward")
    )
    proc = simgym("check", str(spec), "--episodes", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "NOT SOUND" in proc.stdout
    # The table folds long details over lines: compare without spaces and borders.
    out = re.sub(r"[\s│]", "", proc.stdout)
    assert "rewardfunction│FAIL" in re.sub(r"[^\S\n]", "", proc.stdout).replace("\n", "")
    assert "reward.function:bad_reward.py:reward" in out, proc.stdout
    assert message.replace(" ", "") in out, proc.stdout


@pytest.mark.parametrize(
    ("spec_text", "message"),
    [
        (
            "observations: {x: {min: 1, max: 0}}\nactions: {u: {min: 0, max: 1}}\n",
            "observations.x: max (0.0) must be greater than min",
        ),
        (
            "sim: {target: toy.py:Toy}\nobservations: {nope: {min: 0, max: 1}}\nactions: {u: {min: 0, max: 1}}\nreward: x\n",
            "observations.nope: the sim has no state 'nope'",
        ),
        (
            "sim: {target: toy.py:BadCtor}\nobservations: {x: {min: 0, max: 1}}\nactions: {u: {min: 0, max: 1}}\nreward: x\n",
            "cannot find license server",
        ),
        (
            "sim: {address: 'unix:/nonexistent/x.sock', connect_timeout: 1}\nobservations: {x: {min: 0, max: 1}}\nactions: {u: {min: 0, max: 1}}\n",
            "cannot reach sim server",
        ),
        (
            # The typo, not the "missing" key it leaves behind, is what to report.
            "observations: {x: {min: 0, maxx: 1}}\nactions: {u: {min: 0, max: 1}}\n",
            "observations.x.maxx: unknown key (did you mean 'max'?)",
        ),
    ],
)
def test_check_errors_are_one_line(tmp_path, spec_text, message):
    (tmp_path / "toy.py").write_text((SIMS / "toy.py").read_text())
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(spec_text))
    proc = simgym("check", str(spec), "--episodes", "1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("simgym: error:") and message in lines[0], (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_version():
    proc = simgym("version")
    assert proc.returncode == 0 and "simgym.v1" in proc.stdout


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("simgym: error:"), proc.stderr
    return lines[0]


def test_check_rejects_an_unknown_transport():
    line = _one_error_line(
        simgym("check", str(SIMS / "toy_spec.yaml"), "--episodes", "1", "--transport", "foo")
    )
    assert "--transport 'foo'" in line and "unix, tcp" in line


def test_check_quotes_why_the_sim_did_not_start(tmp_path):
    # The server's log is in a folder deleted after the check: the message must carry the
    # sim's own last words, and any log it cites must still exist.
    (tmp_path / "crash.py").write_text(
        textwrap.dedent(
            """
            import os, sys

            class Crash:
                def __init__(self):
                    print("loading the plant model")
                    sys.stderr.write("Fatal: license server unreachable\\n")
                    sys.stderr.flush()
                    os._exit(3)

                def reset(self, config):
                    return {}

                def step(self, action):
                    return {}
            """
        )
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "sim: {target: crash.py:Crash}\n"
        "observations: {x: {min: 0, max: 1}}\nactions: {u: {min: 0, max: 1}}\nreward: x\n"
    )
    line = _one_error_line(simgym("check", str(spec), "--episodes", "1"))
    assert "exited with code 3: Fatal: license server unreachable" in line
    kept = re.search(r"server log kept at (\S+)\)", line)
    assert kept, line
    log = Path(kept.group(1))
    try:
        assert "loading the plant model" in log.read_text()
    finally:
        log.unlink()
