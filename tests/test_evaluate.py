"""`simgym evaluate`: scenario files, baselines, real sim servers, CSV/plots, reproducibility."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gymclient.errors import SpecError
from gymclient.spec import load_spec
from launcher.evaluate import EvaluationError, evaluate, load_baseline, load_scenarios

from .conftest import REPO, SIMS

CSTR = REPO / "examples" / "cstr"

BASELINES = '''
class Hold:
    """Pushes x back towards 0 with a proportional gain; counts its own calls."""
    def __init__(self):
        self.calls = 0
    def __call__(self, states):
        self.calls += 1
        return {"u": max(-1.0, min(1.0, -0.5 * states["x"]))}

def still(states):
    return {"u": 0.0}

def wrong(states):
    return {"v": 1.0}
'''


def simgym(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from launcher.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def toy(tmp_path) -> tuple[Path, Path, Path]:
    """A toy env spec, a scenario file and a baselines file."""
    env = yaml.safe_load((SIMS / "toy_spec.yaml").read_text())
    env["sim"]["target"] = f"{SIMS / 'toy.py'}:Toy"
    env["sim"]["workdir"] = str(SIMS)
    env["reward"] = f"{SIMS / 'reward.py'}:reward"
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(env))
    scenarios = {
        "scenarios": [
            {"grid": {"x0": [-2.0, 3.0]}, "seeds": [0, 1], "group": "grid"},
            {"name": "fixed", "config": {"x0": 0.5}, "seed": 5, "count": 2},
            {"name": "drawn", "lesson": "spec", "count": 3, "seed": 7},
        ],
        "plot": [{"states": ["x"]}, {"action": "u"}],
        "parallel": 3,
    }
    (tmp_path / "scen.yaml").write_text(yaml.safe_dump(scenarios))
    (tmp_path / "base.py").write_text(BASELINES)
    return tmp_path / "env.yaml", tmp_path / "scen.yaml", tmp_path / "base.py"


def test_scenario_file_expands_grids_seeds_and_lessons(toy):
    env, scen_path, _ = toy
    scen = load_scenarios(scen_path, load_spec(env))
    assert scen.names == ["x0=-2.0", "x0=3.0", "fixed", "drawn"]
    assert [e.seed for e in scen.episodes if e.scenario == "fixed"] == [5, 6]
    drawn = [e for e in scen.episodes if e.scenario == "drawn"]
    assert len(drawn) == 3 and all(-1 <= e.config["x0"] <= 1 for e in drawn)
    # Reproducible from the file alone.
    again = load_scenarios(scen_path, load_spec(env))
    assert [e.config for e in again.episodes] == [e.config for e in scen.episodes]
    assert scen.groups == ["grid"] and scen.parallel == 3


@pytest.mark.parametrize(
    ("content", "key", "message"),
    [
        ("scenarios: 3", "scenarios", "expected a list"),
        ("scenarios: [{config: {a: 1}, grid: {a: [1]}}]", "scenarios[0]", "exactly one of"),
        ("scenarios: [{config: {a: 1}, seeds: []}]", "scenarios[0].seeds", "non-empty"),
        ("scenarios: [{config: {a: 1}, colour: red}]", "scenarios[0].colour", "unknown key"),
        ("scenarios: [{lesson: 5}]", "scenarios[0].lesson", "expected 'spec'"),
        ("scenarios: [{config: {}}]\nplot: [{colour: red}]", "plot[0]", "expected"),
        ("scenarios: [{config: {}}]\nparallel: 0", "parallel", "positive"),
    ],
)
def test_scenario_file_errors_name_the_key(tmp_path, content, key, message):
    path = tmp_path / "s.yaml"
    path.write_text(content)
    with pytest.raises(SpecError) as info:
        load_scenarios(path)
    assert str(info.value).startswith(f"{path}: {key}") and message in str(info.value)


def test_baselines_through_real_servers_are_reproducible(toy, tmp_path):
    env, scen, base = toy
    reports = [
        evaluate(
            None,
            scen,
            spec_path=env,
            baselines=[f"{base}:Hold", f"{base}:still"],
            out=tmp_path / f"out{i}",
            servers=2,
        )
        for i in range(2)
    ]
    first, second = reports
    episodes = (first.out / "episodes.csv").read_text()
    assert episodes == (second.out / "episodes.csv").read_text()
    rows = list(csv.DictReader((first.out / "episodes.csv").open()))
    assert len(rows) == 2 * 9 and {r["controller"] for r in rows} == {"Hold", "still"}
    assert all(int(r["length"]) > 0 and r["final_x"] for r in rows)
    summary = list(csv.DictReader((first.out / "summary.csv").open()))
    levels = {(r["level"], r["name"]) for r in summary}
    assert ("overall", "all") in levels and ("group", "grid") in levels
    assert ("scenario", "fixed") in levels
    overall = {r["controller"]: r for r in summary if r["level"] == "overall"}
    # The proportional controller holds x near 0; doing nothing leaves it where it started.
    assert abs(float(overall["Hold"]["final_x"])) < abs(float(overall["still"]["final_x"])) + 1e-9
    assert float(overall["Hold"]["return_mean"]) > float(overall["still"]["return_mean"])
    assert len(first.plots) == 4 and all(p.stat().st_size > 5000 for p in first.plots)
    traj = list(csv.DictReader((first.out / "trajectories.csv").open()))
    assert {"x", "t", "u", "reward"} <= set(traj[0])


def test_bad_baselines_are_one_line_errors(toy, tmp_path):
    env, scen, base = toy
    for ref, message in [
        (f"{tmp_path / 'nope.py'}:X", "no such file"),
        (f"{base}:Missing", "Missing"),
        ("justaname", "expected file.py:Name"),
    ]:
        with pytest.raises(EvaluationError, match=message):
            load_baseline(ref)
    with pytest.raises(EvaluationError, match="no value for action 'u'"):
        evaluate(None, scen, spec_path=env, baselines=[f"{base}:wrong"], out=tmp_path / "o")
    proc = simgym("evaluate", "--spec", str(env), "--scenarios", str(scen),
                  "--baseline", f"{base}:Nope", "--out", str(tmp_path / "o2"))  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("simgym: error: --baseline")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    proc = simgym("evaluate", str(tmp_path / "norun"), "--scenarios", str(scen))
    assert proc.returncode == 2 and "no such run folder" in proc.stderr
    bad_plot = tmp_path / "badplot.yaml"
    bad_plot.write_text("scenarios: [{config: {x0: 0}}]\nplot: [{states: [nope]}]")
    with pytest.raises(EvaluationError, match="plot: the sim has no state or action 'nope'"):
        evaluate(None, bad_plot, spec_path=env, baselines=[f"{base}:still"], out=tmp_path / "o3")


def test_agent_and_its_export_score_the_same(toy, tmp_path_factory):
    pytest.importorskip("ray.rllib", reason="needs the train extra")
    pytest.importorskip("onnxruntime", reason="needs the infer extra")
    from launcher.export import export_run

    from .test_export import trained_run

    run_dir = trained_run(tmp_path_factory.mktemp("toyrun"))
    agent_dir = tmp_path_factory.mktemp("exp") / "agent"
    export_run(run_dir, agent_dir)
    _, scen, base = toy
    proc = simgym("evaluate", str(run_dir), "--scenarios", str(scen), "--baseline",
                  str(agent_dir), "--baseline", f"{base}:still", "--out",
                  str(tmp_path_factory.mktemp("ev")))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Overall" in proc.stdout and "agent" in proc.stdout
    # Loading the run's module logged RLlib's RLModuleConfig deprecation notice (not ours).
    assert "RLModuleConfig" not in proc.stderr, proc.stderr[-2000:]
    out = Path(proc.stdout.split("→")[-1].split("/summary.csv")[0].strip())
    rows = list(csv.DictReader((out / "episodes.csv").open()))
    by = {}
    for r in rows:
        by.setdefault(r["controller"], []).append(float(r["final_x"]))
    # The exported folder is also called "agent": the second one is shown as "agent#2".
    assert set(by) == {"agent", "agent#2", "still"}
    assert by["agent#2"] == pytest.approx(by["agent"], abs=1e-4)


def test_cstr_baselines_score_near_the_published_figures():
    spec = importlib.util.spec_from_file_location("cstr_sim", CSTR / "sim.py")
    sim_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim_mod)
    ctl_spec = importlib.util.spec_from_file_location("cstr_ctl", CSTR / "controllers.py")
    ctl = importlib.util.module_from_spec(ctl_spec)
    ctl_spec.loader.exec_module(ctl)

    def score(make, noise):
        finals = []
        for signal in range(1, 6):
            sim = sim_mod.CSTR()
            states = sim.reset({"Cref_signal": signal, "noise_percentage": noise}, seed=0)
            controller = make()
            while not (sim.termination() or sim.truncation()):
                states = sim.step(controller(states))
            finals.append(states["kpi_rms_conc_error"])
        return sum(finals) / len(finals)

    assert score(lambda: ctl.zero, 0) == pytest.approx(3.69, abs=0.01)
    assert 0.45 < score(ctl.PI, 0) < 0.65
    assert 0.12 < score(ctl.GainScheduledPI, 0) < 0.22
    assert 0.2 < score(ctl.GainScheduledPI, 5) < 0.4


def test_cstr_assessment_baselines_through_simgym_evaluate(tmp_path):
    """The shipped assessment file's shape (grid, seeds, plot panels) on the CSTR sample."""
    shipped = yaml.safe_load((CSTR / "assessment.yaml").read_text())
    scen = tmp_path / "assessment.yaml"
    shipped["scenarios"][0]["grid"] = {"Cref_signal": [2], "noise_percentage": [0, 5]}
    shipped["scenarios"][0]["seeds"] = [0]
    scen.write_text(yaml.safe_dump(shipped))
    out = tmp_path / "eval"
    proc = simgym("evaluate", "--spec", str(CSTR / "spec.yaml"), "--scenarios", str(scen),
                  "--baseline", f"{CSTR / 'controllers.py'}:zero",
                  "--baseline", f"{CSTR / 'controllers.py'}:GainScheduledPI",
                  "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Overall" in proc.stdout and "GainScheduledPI" in proc.stdout
    rows = list(csv.DictReader((out / "episodes.csv").open()))
    assert len(rows) == 4  # 2 controllers x 2 scenarios x 1 seed
    final = {(r["controller"], r["scenario"]): float(r["final_kpi_rms_conc_error"]) for r in rows}
    zero = [v for (c, _), v in final.items() if c == "zero"]
    pi = [v for (c, _), v in final.items() if c == "GainScheduledPI"]
    assert all(v > 3.0 for v in zero)  # the zero action never follows the ramp
    assert all(v < 0.6 for v in pi) and max(pi) < min(zero) / 5
    for r in rows:
        assert int(r["length"]) == 91 and r["terminated"] == "0" and not r["error"]
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert len(plots) == 2 and all((out / "plots" / p).stat().st_size > 10_000 for p in plots)
