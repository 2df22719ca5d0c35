"""`simgym export` / `predict` and `gymclient.agent` on a briefly trained toy run (real Ray, ONNX)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("ray.rllib", reason="export needs the train extra (installed by make)")
pytest.importorskip("onnxruntime", reason="export needs the infer extra (installed by make)")

from gymclient.agent import AgentError, AgentInputError, load_agent
from gymclient.spec import reference_folder_spec
from launcher.export import (
    ExportError,
    check_exportable,
    export_run,
    load_module,
    load_run_spec,
    reference_actions,
    resolve_checkpoint,
    sample_states,
)

from .conftest import REPO, SIMS, private_ray

# A derived observation exercising every operation the expression language has.
EXPR = "x * abs(t) / 3 - min(x, 0.5, t) + max(x, -1) ** 2 + sqrt(abs(x)) + exp(-t) - log(1 + t)"
_CACHE: dict[str, Path] = {}


def trained_run(root: Path) -> Path:
    """A toy run trained for one short PPO iteration (shared by this file and test_evaluate)."""
    if "run" in _CACHE:
        return _CACHE["run"]
    import ray

    from launcher.train import train

    env = yaml.safe_load((SIMS / "toy_spec.yaml").read_text())
    env["sim"]["target"] = f"{SIMS / 'toy.py'}:Toy"
    env["sim"]["workdir"] = str(SIMS)
    env["reward"] = f"{SIMS / 'reward.py'}:reward"
    env["observations"]["mix"] = {"expr": EXPR, "min": -5, "max": 5}
    root.mkdir(parents=True, exist_ok=True)
    (root / "env.yaml").write_text(yaml.safe_dump(env))
    spec = yaml.safe_load((SIMS / "train_toy.yaml").read_text())
    spec.update(
        env="env.yaml",
        output=str(root / "runs"),
        stop={"iterations": 1},
        sim={"launch": {"servers": 1, "sessions_per_server": 4}},
    )
    (root / "train.yaml").write_text(yaml.safe_dump(spec))
    with contextlib.nullcontext() if ray.is_initialized() else private_ray(num_cpus=2):
        run_dir, state = train(root / "train.yaml")
    assert state.finished and state.checkpoints
    _CACHE["run"] = run_dir
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory.mktemp("toyrun"))


@pytest.fixture(scope="module")
def agent_dir(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("agent") / "agent"
    export_run(run_dir, out)
    return out


def simgym(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from launcher.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_export_writes_a_verified_graph_and_manifest(agent_dir, run_dir):
    manifest = json.loads((agent_dir / "manifest.json").read_text())
    assert manifest["format"] == "simgym-agent/1" and manifest["simgym_version"]
    spec = load_run_spec(run_dir)
    plain = [n for n, r in spec.observations.items() if not r.expr]
    assert [i["name"] for i in manifest["inputs"]] == plain and set(plain) == {"x", "t"}
    assert [o["name"] for o in manifest["outputs"]] == ["u"]
    ranges = {i["name"]: (i["min"], i["max"]) for i in manifest["inputs"]}
    assert ranges["x"] == (-10, 10) and manifest["outputs"][0]["max"] == 1
    assert any(o.get("expr") == EXPR for o in manifest["observations"])
    assert len(manifest["spec_hash"]) == 64
    assert manifest["verified"]["max_abs_diff"] <= 1e-5
    assert (agent_dir / "agent.onnx").stat().st_size > 1000


def test_onnx_matches_the_rllib_module_on_fresh_random_states(agent_dir, run_dir):
    spec = load_run_spec(run_dir)
    module = load_module(resolve_checkpoint(run_dir, None))
    states = sample_states(spec, 500, np.random.default_rng(123))
    # Far outside the ranges too: clipping must agree.
    states["x"][:20] = np.linspace(-1e3, 1e3, 20)
    expected = reference_actions(spec, module, states)[:, 0]
    got = load_agent(agent_dir).act_batch(states)["u"]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # One state at a time gives the same as the batch.
    for i in range(5):
        single = load_agent(agent_dir).act({"x": states["x"][i], "t": states["t"][i], "extra": 1})
        assert single["u"] == pytest.approx(got[i], abs=1e-6)
    assert np.all(np.abs(got) <= 1.0)


def test_single_state_fast_path_is_the_graph(agent_dir, tmp_path):
    """act() (Python arithmetic + policy.onnx) agrees with agent.onnx, with and without it."""
    import shutil

    manifest = json.loads((agent_dir / "manifest.json").read_text())
    assert manifest["core_model"] == "policy.onnx" and (agent_dir / "policy.onnx").is_file()
    agent = load_agent(agent_dir)
    assert agent._core is not None
    rng = np.random.default_rng(7)
    # t < -1 makes log(1 + t) fail in Python (the graph gives NaN → 0): act() must fall back.
    xs = np.concatenate([rng.uniform(-12, 12, 150), [-1e3, 1e3, 0.0]])
    ts = np.concatenate([rng.uniform(-10, 10, 150), [0.5, -5.0, -1.0]])
    batch = agent.act_batch({"x": xs, "t": ts})["u"]
    singles = np.array([agent.act({"x": x, "t": t})["u"] for x, t in zip(xs, ts, strict=True)])
    np.testing.assert_allclose(singles, batch, atol=1e-6, rtol=0)
    assert np.any(ts < -1) and np.all(np.abs(singles) <= 1.0)

    # An agent folder from before policy.onnx: the full graph answers every call.
    old = tmp_path / "old"
    shutil.copytree(agent_dir, old)
    (old / "policy.onnx").unlink()
    del manifest["core_model"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    legacy = load_agent(old)
    assert legacy._core is None
    for x, t, expected in zip(xs[:10], ts[:10], batch[:10], strict=True):
        assert legacy.act({"x": x, "t": t})["u"] == pytest.approx(expected, abs=1e-9)


def test_act_errors_name_the_field(agent_dir):
    agent = load_agent(agent_dir)
    cases = [
        ({"t": 1.0}, "x", "missing"),
        ({"x": float("nan"), "t": 1.0}, "x", "finite"),
        ({"x": 1.0, "t": float("inf")}, "t", "finite"),
        ({"x": "1.0", "t": 1.0}, "x", "expected a number, got str"),
        ({"x": None, "t": 1.0}, "x", "NoneType"),
        ({"x": True, "t": 1.0}, "x", "bool"),
    ]
    for states, field, message in cases:
        with pytest.raises(AgentInputError) as info:
            agent.act(states)
        assert info.value.field == field and message in str(info.value)
        assert f"state {field!r}" in str(info.value)
    with pytest.raises(AgentInputError, match="has 2 values"):
        agent.act_batch({"x": [1.0, 2.0], "t": [1.0]})
    with pytest.raises(AgentError, match="not an agent folder"):
        load_agent(agent_dir.parent / "nowhere")


def test_agent_api_needs_neither_ray_nor_torch(agent_dir):
    code = (
        "import sys, json; from gymclient.agent import load_agent; "
        f"a = load_agent({str(agent_dir)!r}); print(json.dumps(a.act({{'x': 1.0, 't': 2.0}}))); "
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) == {"u"}


def test_predict_cli_prints_the_action_and_one_line_errors(agent_dir, tmp_path):
    ok = simgym("predict", str(agent_dir), "--state", '{"x": 1.5, "t": 3}')
    assert ok.returncode == 0, ok.stderr
    expected = load_agent(agent_dir).act({"x": 1.5, "t": 3})
    assert json.loads(ok.stdout)["u"] == pytest.approx(expected["u"], abs=1e-9)
    (tmp_path / "s.json").write_text('{"x": 1.5, "t": 3}')
    assert simgym("predict", str(agent_dir), "--state", f"@{tmp_path / 's.json'}").returncode == 0
    cases = [
        ('{"t": 3}', "state 'x': missing"),
        ('{"x": "hot", "t": 3}', "state 'x': expected a number"),
        ('{"x": NaN, "t": 3}', "state 'x': expected a finite number"),
        ('{"x": 1', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ]
    for state, message in cases:
        proc = simgym("predict", str(agent_dir), "--state", state)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("simgym: error: ") and message in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    proc = simgym("predict", str(tmp_path), "--state", "{}")
    assert proc.returncode == 2 and "not an agent folder" in proc.stderr


def test_export_cli_and_its_errors(run_dir, tmp_path):
    proc = simgym("export", str(run_dir), "--out", str(tmp_path / "a"), "--samples", "200")
    assert proc.returncode == 0, proc.stderr
    assert "verified on 200 random states" in proc.stdout
    assert (tmp_path / "a" / "agent.onnx").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in [
        ((str(tmp_path / "missing"),), "no such run folder"),
        ((str(empty),), "not a simgym run folder"),
        ((str(run_dir), "--checkpoint", str(empty)), "no RLlib policy module"),
    ]:
        proc = simgym("export", *args, "--out", str(tmp_path / "b"))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.startswith("simgym: error: ") and message in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1


def test_reference_style_specs_are_refused_with_a_reason():
    spec = reference_folder_spec(REPO / "examples" / "cstr" / "reference")
    with pytest.raises(ExportError, match=r"reference-style spec.*cannot be exported.*declarative"):
        check_exportable(spec)
