"""`simgym train` with real Ray, real sidecar servers and a real MLflow store, faults included."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.rllib", reason="training needs the train extra (installed by make)")

from gymclient.errors import SimgymError, SpecError
from launcher.failure import SetupError, TrainingError
from launcher.runfolder import Counters, RunState
from launcher.train import train
from launcher.trainspec import load_train_spec

from .conftest import SIMS, private_ray


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    with private_ray(num_cpus=2):
        yield


def _spec(tmp_path: Path, env_updates: dict | None = None, **updates) -> Path:
    data = yaml.safe_load((SIMS / "train_toy.yaml").read_text())
    env = yaml.safe_load((SIMS / "toy_spec.yaml").read_text())
    env["sim"]["target"] = str(SIMS / "toy.py") + ":" + env["sim"]["target"].split(":")[1]
    env["reward"] = str(SIMS / "reward.py") + ":reward"
    env["sim"]["workdir"] = str(SIMS)
    for key, value in (env_updates or {}).items():
        if isinstance(value, dict) and isinstance(env.get(key), dict):
            env[key].update(value)
        else:
            env[key] = value
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(env))
    data["env"] = "env.yaml"
    data["output"] = str(tmp_path / "runs")
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _mlflow_params(run_dir: Path) -> dict[str, str]:
    with sqlite3.connect(run_dir / "mlflow.db") as db:
        return dict(db.execute("select key, value from params"))


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def _first_paragraph(error_txt: Path) -> str:
    """error.txt's first paragraph, its wrapped lines joined."""
    return " ".join(error_txt.read_text().split("\n\n")[0].split())


def _mlflow_metric_names(run_dir: Path) -> set[str]:
    with sqlite3.connect(run_dir / "mlflow.db") as db:
        return {row[0] for row in db.execute("select distinct key from metrics")}


def test_train_writes_checkpoints_metrics_and_curve(tmp_path):
    run_dir, state = train(_spec(tmp_path))
    assert state.finished and state.iteration == 3 and "iterations 3" in state.stop_reason
    assert len(state.checkpoints) == 2 and all(Path(c).is_dir() for c in state.checkpoints)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(float(r["iteration"])) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["env_steps_total"]) > float(rows[0]["env_steps_total"]) > 0
    names = _mlflow_metric_names(run_dir)
    assert {"episode_reward_mean", "episode_len_mean", "episodes_total", "env_steps_total",
            "sim_step_ms", "sim_errors", "state_mean_x", "state_final_x"} <= names  # fmt: skip
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    assert not (run_dir / "error.txt").exists()
    # Fully resolved: the sidecar plan as started and the algorithm settings as run.
    resolved = yaml.safe_load((run_dir / "spec.resolved.yaml").read_text())
    launch = resolved["train"]["sim"]["launch"]
    assert launch["target"].endswith("toy.py:Toy") and launch["kwargs"] == {"gain": 2.0}
    assert launch["servers"] == 2 and launch["sessions_per_server"] == 4
    settings = resolved["algorithm_config"]
    assert settings["lr"] == 3e-4 and settings["num_epochs"] == 2  # default, then the spec's
    assert settings["train_batch_size_per_learner"] == 400
    assert settings["rollout_fragment_length"] == 50 and settings["min_time_s_per_iteration"] == 1
    assert resolved["rllib"]["lr"] == 3e-4 and resolved["rllib"]["gamma"] == 0.99
    params = _mlflow_params(run_dir)
    assert params["launch.target"] == launch["target"] and params["launch.servers"] == "2"
    assert float(params["config.lr"]) == 3e-4 and params["config.num_epochs"] == "2"
    assert "checkpoint iter_000003" in (run_dir / "train.log").read_text()


# Small batches and 1 s iterations: ~20 s each (mostly building the algorithm). IMPALA (the
# default) runs in the default suite; APPO (IMPALA's learner with PPO's loss) and PPO, which
# every other test here trains, with the slow ones (the default suite must stay < 15 minutes).
@pytest.mark.parametrize(
    "algorithm",
    [
        "IMPALA",
        pytest.param("APPO", marks=pytest.mark.slow),
        pytest.param("PPO", marks=pytest.mark.slow),
    ],
)
def test_each_algorithm_trains_the_toy(tmp_path, algorithm):
    from launcher.rllib_setup import ALGO_DEFAULTS

    path = _spec(tmp_path, algorithm=algorithm, stop={"iterations": None, "env_steps": 1500,
                                                       "max_time": 120})  # fmt: skip
    data = yaml.safe_load(path.read_text())
    data["config"] = {"train_batch_size_per_learner": 200, "min_time_s_per_iteration": 1}
    if algorithm == "PPO":
        data["config"].update(minibatch_size=100, num_epochs=2)
    path.write_text(yaml.safe_dump(data))
    run_dir, state = train(path)
    assert state.finished and state.stop_reason == "env_steps 1500 reached", state.stop_reason
    rows = [r for r in _metrics(run_dir) if r.get("episode_reward_mean")]
    assert rows and float(rows[-1]["episodes_total"]) > 0
    assert {"episode_reward_mean", "episode_len_mean", "episodes_total"} <= _mlflow_metric_names(
        run_dir
    )
    resolved = yaml.safe_load((run_dir / "spec.resolved.yaml").read_text())
    assert resolved["train"]["algorithm"] == algorithm
    assert resolved["algorithm_config"]["lr"] == ALGO_DEFAULTS[algorithm]["lr"]
    assert Path(state.checkpoints[-1]).is_dir()


@pytest.mark.slow  # two trainings, ~35 s: make test-slow
def test_resume_continues_counters_and_weights(tmp_path):
    spec = _spec(tmp_path, stop={"iterations": 2})
    run_dir, first = train(spec)
    spec.write_text(spec.read_text().replace("iterations: 2", "iterations: 4"))
    run_dir2, second = train(spec, resume=run_dir)
    assert run_dir2 == run_dir
    assert (
        second.iteration == 4
        and second.env_steps > first.env_steps
        and second.episodes > first.episodes
    )
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(float(r["iteration"])) for r in rows] == [1, 2, 3, 4]
    steps = [float(r["env_steps_total"]) for r in rows]
    assert steps == sorted(steps)
    assert RunState.load(run_dir).finished
    # The restored policy is the trained one, not fresh weights. What --resume does,
    # step by step: restore, then push the weights to the env runners.
    import numpy as np
    from ray.rllib.core.rl_module.rl_module import RLModule

    last = Path(second.checkpoints[-1])
    saved = RLModule.from_checkpoint(
        str(last / "learner_group" / "learner" / "rl_module" / "default_policy")
    ).get_state()

    from launcher.rllib_setup import build_config, sync_weights

    spec_obj = load_train_spec(spec)
    env_spec = spec_obj.load_env_spec()
    from simserver.process import ServerProcess

    with ServerProcess(f"{SIMS / 'toy.py'}:Toy", workdir=SIMS) as server:
        algo = build_config(spec_obj, env_spec, [server.address]).build_algo()
        try:
            fresh = algo.env_runner_group.foreach_env_runner(
                lambda r: r.module.get_state(), local_env_runner=False
            )[0]
            algo.restore_from_path(str(last.resolve()))
            sync_weights(algo)
            learner = algo.get_module().get_state()
            runner = algo.env_runner_group.foreach_env_runner(
                lambda r: r.module.get_state(), local_env_runner=False
            )[0]
        finally:
            algo.stop()
    keys = [k for k in saved if k in runner and np.asarray(saved[k]).size > 1]
    assert keys
    for k in keys:
        np.testing.assert_allclose(np.asarray(learner[k]), np.asarray(saved[k]), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(runner[k]), np.asarray(saved[k]), rtol=1e-6)
    assert any(not np.allclose(np.asarray(fresh[k]), np.asarray(saved[k])) for k in keys)


@pytest.mark.slow  # a training of ~20 s: make test-slow
def test_resume_from_a_checkpoint_without_simgym_json_keeps_counting(tmp_path):
    # Checkpoints written before simgym.json existed: the counters come from metrics.csv.
    spec = _spec(tmp_path, stop={"iterations": 2})
    run_dir, first = train(spec)
    checkpoint = Path(first.checkpoints[-1])
    (checkpoint / Counters.FILE).unlink()
    row = _metrics(run_dir)[int(checkpoint.name.split("_")[1]) - 1]
    saved_steps = int(float(row["env_steps_total"]))
    spec.write_text(spec.read_text().replace("iterations: 2", "iterations: 3"))
    resumed: list[int] = []
    _, second = train(spec, resume=run_dir, on_progress=lambda p: resumed.append(p.env_steps))
    assert second.finished and second.iteration == 3
    assert resumed[0] > saved_steps
    assert (
        "has no simgym.json: counters from metrics.csv (iteration 2)"
        in (run_dir / "train.log").read_text()
    )


@pytest.mark.slow  # a training of ~20 s: make test-slow
def test_a_resumed_run_that_fails_does_not_quote_the_previous_runs_sim_errors(tmp_path):
    spec = _spec(tmp_path, stop={"iterations": 1})
    run_dir, _ = train(spec)
    old = "2026-01-01 10:00:00 Step on unix:/old.sock failed: the previous run's error"
    with (run_dir / "sim_errors.log").open("a") as f:
        f.write(old + "\n")
    spec.write_text(spec.read_text().replace("iterations: 1", "iterations: 3"))

    def fail(progress):
        raise RuntimeError("the trainer failed mid-way")

    with pytest.raises(TrainingError):
        train(spec, resume=run_dir, on_progress=fail)
    error = (run_dir / "error.txt").read_text()
    assert "the trainer failed mid-way" in _first_paragraph(run_dir / "error.txt")
    assert "previous run's error" not in error


def test_older_checkpoint_counters_fall_back_to_run_json(tmp_path):
    from launcher.runfolder import older_checkpoint_counters

    state = RunState(spec="x", iteration=5, env_steps=5000, episodes=50)
    checkpoint = tmp_path / "checkpoints" / "iter_000004"
    # No metrics.csv and nothing restored by RLlib: run.json's, not zeros.
    counters, source = older_checkpoint_counters(tmp_path, checkpoint, state, 0, 0)
    assert counters == Counters(4, 5000, 50) and source.startswith("run.json")
    # RLlib's restored counters when it has them.
    counters, source = older_checkpoint_counters(tmp_path, checkpoint, state, 4000, 40)
    assert counters == Counters(4, 4000, 40) and source == "RLlib's checkpoint"
    # metrics.csv's row for the checkpoint's iteration first.
    (tmp_path / "metrics.csv").write_text(
        "iteration,env_steps_total,episodes_total\n3,3000,30\n4,4100,41\n5,5000,50\n"
    )
    counters, source = older_checkpoint_counters(tmp_path, checkpoint, state, 4000, 40)
    assert counters == Counters(4, 4100, 41) and source == "metrics.csv (iteration 4)"


def test_sidecar_killed_mid_training_is_restarted(tmp_path):
    spec = _spec(tmp_path, stop={"iterations": 6})
    killed: dict[str, int] = {}
    addresses: list[str] = []

    def on_progress(progress):
        if progress.iteration == 2 and not killed:
            sock = addresses[0].removeprefix("unix:")
            pid = int(
                subprocess.run(
                    ["pgrep", "-f", sock], capture_output=True, text=True
                ).stdout.split()[0]
            )
            os.kill(pid, signal.SIGKILL)  # kill -9 one sidecar mid-training
            killed["pid"] = pid

    events: list[str] = []
    run_dir, state = train(
        spec,
        on_progress=lambda p: (on_progress(p), events.extend(p.events)),
        on_start=lambda _d, a: addresses.extend(a),
    )
    assert killed and state.finished and state.iteration == 6
    rows = _metrics(run_dir)
    assert float(rows[-1]["sim_restarts"]) >= 1
    assert float(rows[0]["sim_restarts"]) == 0
    logs = "".join(p.read_text() for p in (run_dir / "sims").glob("*.log"))
    assert logs.count("serving Toy") >= 3  # two servers + one restart
    # The restart is an event of the run: reported with the iteration and in train.log.
    assert any("sim server 0" in e and "exited (code -9)" in e and "restarted" in e for e in events)
    run_log = (run_dir / "train.log").read_text()
    assert "sidecar restarted: sim server 0" in run_log and "(restart 1 of 5)" in run_log


@pytest.mark.slow  # a training of ~20 s: make test-slow
def test_flaky_sims_do_not_stop_training(tmp_path):
    # Raises and NaNs at seeded random steps; one hung call per server, at step 5 of the
    # first episode that gets there (3 s, past the 1 s deadline).
    kwargs = {"p_raise": 0.01, "p_nan": 0.01, "hang_at": 5, "hang": 3.0}
    spec = _spec(
        tmp_path,
        env_updates={"sim": {"target": f"{SIMS / 'toy.py'}:Flaky", "timeout": 1.0,
                             "kwargs": kwargs}},
        stop={"iterations": 3},
    )  # fmt: skip
    run_dir, state = train(spec)
    assert state.finished and state.iteration == 3
    rows = _metrics(run_dir)
    errors = sum(float(r.get("sim_errors") or 0) for r in rows)
    nonfinite = sum(float(r.get("sim_nonfinite") or 0) for r in rows)
    timeouts = sum(float(r.get("sim_timeouts") or 0) for r in rows)
    assert errors >= 1 and nonfinite >= 1
    assert timeouts >= 1, rows
    failed = (run_dir / "sim_errors.log").read_text()
    assert "within the deadline" in failed and "flaky sim failed" in failed


def test_setup_errors_fail_before_ray_with_one_line(tmp_path, start_server):
    server = start_server("toy.py:Toy", args=["--token", "right"])
    cases = [
        (_spec(tmp_path / "a", sim={"launch": None, "address": "unix:/nonexistent/sim.sock"},
               env_updates={"sim": {"connect_timeout": 1.0}}), "cannot reach sim server"),
        (_spec(tmp_path / "b", sim={"launch": None, "address": server.address, "token": "wrong"}), "token"),
        (_spec(tmp_path / "c", env_updates={"observations": {"nope": {"min": 0, "max": 1}}}),
         "the sim has no state 'nope'"),
        (_spec(tmp_path / "d", env_updates={"sim": {"target": f"{SIMS / 'toy.py'}:Declared", "kwargs": {}},
                                            "lessons": {"bogus": 3}}), "rejected the reset config"),
    ]  # fmt: skip
    for path, message in cases:
        with pytest.raises(SimgymError, match=message) as info:
            train(path)
        assert not isinstance(info.value, TrainingError), info.value
        assert "\n" not in str(info.value)
        # The run folder those runs left explains itself.
        (run_dir,) = (path.parent / "runs").iterdir()
        assert str(run_dir / "error.txt") in str(info.value)
        assert message in _first_paragraph(run_dir / "error.txt")


@pytest.mark.slow  # a training of ~20 s: make test-slow
def test_a_failed_training_frees_its_sessions_on_the_users_server(tmp_path, start_server):
    # A server the user runs, with exactly as many session slots as the training's envs:
    # sessions a failed run left open (until their 300 s lease) would refuse the rerun.
    server = start_server("toy.py:Toy", args=["--max-sessions", "4"])
    spec = _spec(tmp_path, sim={"launch": None, "address": server.address},
                 resources={"env_runners": 1, "envs_per_runner": 4}, stop={"iterations": 1})  # fmt: skip

    def fail(progress):
        raise RuntimeError("the trainer failed mid-way")

    with pytest.raises(TrainingError, match="the trainer failed mid-way"):
        train(spec, on_progress=fail)
    # At once, not after the lease: the preflight and the 4 envs get their sessions.
    _, state = train(spec)
    assert state.finished and state.iteration == 1


def test_sim_whose_constructor_raises_reports_its_exception(tmp_path):
    spec = _spec(tmp_path, env_updates={"sim": {"target": f"{SIMS / 'toy.py'}:BadCtor",
                                                "kwargs": {}}})  # fmt: skip
    with pytest.raises(SetupError) as info:
        train(spec)
    message = str(info.value)
    assert "\n" not in message
    assert "sim server 0" in message and "BadCtor" in message
    assert "BadCtor() raised RuntimeError: cannot find license server" in message
    (run_dir,) = (tmp_path / "runs").iterdir()
    error = (run_dir / "error.txt").read_text()
    first = _first_paragraph(run_dir / "error.txt")
    assert "while starting the sim servers" in first
    assert "BadCtor() raised RuntimeError: cannot find license server" in first
    assert "server-0.log" in error  # then the details: the log's tail


def test_cli_setup_error_is_one_line_without_a_table(tmp_path):
    spec = _spec(tmp_path, env_updates={"sim": {"target": f"{SIMS / 'toy.py'}:BadCtor",
                                                "kwargs": {}}})  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", "from launcher.cli import main; main()", "train", str(spec)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("simgym: error: sim server 0"), proc.stderr
    assert "cannot find license server" in lines[0]
    # The live view starts with training: no (empty) progress table before the error, and
    # the error is not printed a second time (as a log line on stdout): nothing else at all.
    assert "simgym train" not in proc.stdout and "iter" not in proc.stdout, proc.stdout
    assert "failed while" not in proc.stdout and "license server" not in proc.stdout
    assert proc.stdout.strip() == "", proc.stdout
    # train.log still has it.
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "failed while starting the sim servers" in (run_dir / "train.log").read_text()


def _cli_train(spec: Path, prelude: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"{prelude}from launcher.cli import main; main()", "train",
         str(spec)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "80", **env},
    )  # fmt: skip


def test_unknown_rllib_key_fails_before_anything_starts(tmp_path):
    spec = _spec(tmp_path, config={"lr_typo": 0.1})
    ray_tmp = tmp_path / "ray"  # a Ray start-up would create its session folder here
    proc = _cli_train(spec, RAY_TMPDIR=str(ray_tmp))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"simgym: error: {spec}: config.lr_typo: not an RLlib PPO setting"]
    # No sidecar, no Ray: nothing was started, not even the run folder (sidecar logs live
    # there), nor a Ray session.
    assert not (tmp_path / "runs").exists()
    assert not ray_tmp.exists()
    assert proc.stdout == ""


def test_a_value_rllib_refuses_is_one_line_before_anything_starts(tmp_path):
    # RLlib's .training() raises ValueError for this as the config is built.
    spec = _spec(tmp_path, config={"grad_clip_by": "bogus"})
    proc = _cli_train(spec)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"simgym: error: {spec}: config: RLlib refuses it:")
    assert "grad_clip_by" in lines[0] and "bogus" in lines[0]
    assert not (tmp_path / "runs").exists() and proc.stdout == ""


def test_without_the_train_extra_one_line_names_the_install(tmp_path):
    # None in sys.modules: `import ray` fails as if Ray were not installed.
    proc = _cli_train(_spec(tmp_path), prelude="import sys; sys.modules['ray'] = None; ")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "simgym: error: training needs the train extra (ray is not installed): "
        "pip install 'simgym[train]'"
    ], proc.stderr
    assert not (tmp_path / "runs").exists()


def test_error_txt_names_the_sim_the_call_and_the_exception(tmp_path):
    # The sim's server dies at step 3 of every episode; one restart allowed. Short connect
    # and sample timeouts: once the server is gone for good, RLlib's env runner waits for
    # them before the iteration returns and the trainer sees the pool's give-up.
    spec = _spec(
        tmp_path,
        env_updates={"sim": {"target": f"{SIMS / 'toy.py'}:Crashing", "kwargs": {},
                             "connect_timeout": 1.0}},
        sim={"launch": {"servers": 1, "max_restarts": 1, "restart_backoff": 0.2}},
        config={"sample_timeout_s": 5},
        stop={"iterations": 30},
    )  # fmt: skip
    with pytest.raises(TrainingError) as info:
        train(spec)
    assert "\n" not in str(info.value) and "restart budget (1) is used up" in str(info.value)
    (run_dir,) = (tmp_path / "runs").iterdir()
    error = (run_dir / "error.txt").read_text()
    first = _first_paragraph(run_dir / "error.txt")
    assert "Traceback" not in first and len(first) < 1200, first
    assert "simgym train failed while training" in first
    assert "toy.py:Crashing" in first  # which sim
    assert "FATAL: solver assertion failed: dt > 0" in first  # the sim's own words
    assert "Last failed sim call" in first and ("PackedStream on" in first or "Step on" in first)
    assert "Sim server restarts in this run: 1" in first
    assert "--- last lines of sim server 0 log" in error and "--- traceback ---" in error
    assert "sidecar gave_up" in (run_dir / "train.log").read_text()


@pytest.mark.parametrize(
    ("updates", "key", "message"),
    [
        ({"algorithm": "DQN"}, "algorithm", "Input should be"),
        ({"stop": {"max_time": "soon"}}, "stop.max_time", "not a duration"),
        ({"resources": {"env_runners": -1}}, "resources.env_runners", "greater than or equal"),
        ({"sim": {"launch": {"servers": 1}, "address": "x:1"}}, "sim", "one of"),
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"env": "missing.yaml"}, "env", "not found"),
        ({"config": {"not_a_setting": 1}}, "config.not_a_setting", "not an RLlib PPO setting"),
    ],
)
def test_train_spec_errors_name_file_and_key(tmp_path, updates, key, message):
    path = _spec(tmp_path, **updates)
    with pytest.raises(SpecError) as info:
        if key.startswith("config."):
            train(path)
        else:
            load_train_spec(path)
    assert (
        str(info.value).startswith(str(path))
        and key in str(info.value)
        and message in str(info.value)
    )


@pytest.mark.slow  # kills a training, ~34 s: make test-slow
def test_killed_trainer_resumes_losing_at_most_one_interval(tmp_path):
    # Checkpoints every 3 iterations; killed between two of them (iteration 4 or 5), so
    # run.json is ahead of the last checkpoint's weights and RLlib's restored counters.
    spec = _spec(tmp_path, stop={"iterations": 50}, checkpoint={"every": 3, "keep": 2})
    proc = subprocess.Popen(
        [sys.executable, "-c", "from launcher.cli import main; main()", "train", str(spec)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    runs = tmp_path / "runs"
    try:
        deadline = time.monotonic() + 240
        state = None
        while time.monotonic() < deadline:
            dirs = list(runs.glob("toy-*")) if runs.exists() else []
            if dirs and (dirs[0] / "run.json").exists():
                state = RunState.load(dirs[0])
                if state.checkpoints and state.iteration % 3 and state.iteration > 3:
                    break
            time.sleep(0.2)
        assert state is not None and state.iteration > 3
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    run_dir = next(runs.glob("toy-*"))
    before = RunState.load(run_dir)
    checkpoint = Path(before.checkpoints[-1])
    saved = Counters.load(checkpoint)
    assert saved is not None and saved.iteration == int(checkpoint.name.split("_")[1])
    assert 0 < before.iteration - saved.iteration < 3  # mid-interval: at most one lost
    assert before.env_steps > saved.env_steps
    rows = _metrics(run_dir)
    steps = [float(r["env_steps_total"]) for r in rows]
    assert float(rows[saved.iteration - 1]["env_steps_total"]) == saved.env_steps
    step_per_iteration = max(b - a for a, b in zip([0.0, *steps], steps, strict=False))

    resumed: list[int] = []
    spec.write_text(
        spec.read_text().replace("iterations: 50", f"iterations: {saved.iteration + 2}")
    )
    _, after = train(spec, resume=run_dir, on_progress=lambda p: resumed.append(p.env_steps))
    # Counters continue from the checkpoint: the lost iterations are repeated, their
    # rows replaced; env steps grow by about one iteration's worth, not doubled.
    assert after.finished and after.iteration == saved.iteration + 2
    rows = _metrics(run_dir)
    assert [int(float(r["iteration"])) for r in rows] == list(range(1, saved.iteration + 3))
    steps = [float(r["env_steps_total"]) for r in rows]
    assert steps == sorted(steps)
    assert saved.env_steps < resumed[0] <= saved.env_steps + 2 * step_per_iteration, (
        saved,
        resumed,
        step_per_iteration,
    )
    assert after.env_steps < 2 * saved.env_steps + 4 * step_per_iteration
    assert after.episodes > saved.episodes
    assert "resumed from iter_" in (run_dir / "train.log").read_text()


def test_progress_table_fits_80_columns_and_starts_with_training(tmp_path):
    from rich.console import Console

    from launcher.progress import ProgressView
    from launcher.train import Progress

    console = Console(width=80, record=True, force_terminal=False)
    view = ProgressView(console)
    with view:
        pass  # a setup error before training: the view shows nothing
    assert console.export_text() == ""
    with view:
        view.started(tmp_path, ["unix:/tmp/x.sock"])
        metrics = {"env_steps_per_s": 123456.0, "episode_reward_mean": -1.23456e-5,
                   "episode_len_mean": 20000.0, "sim_errors": 31234.0}  # fmt: skip
        view.update(Progress(12345, 99_999_999, 5000, 363723.0, 5400.0, metrics, None, 3,
                             ["sim server 0 (toy.py:Toy) exited (code -9); restarted"]))  # fmt: skip
    text = console.export_text()
    assert "iteration 12345: sim server 0 (toy.py:Toy) exited (code -9); restarted" in text
    # The widest values each column can show, at 80 columns: nothing cut, nothing wrapped.
    narrow = Console(width=80, record=True, force_terminal=False)
    narrow.print(view._table())
    table = narrow.export_text()
    assert all(len(line.rstrip()) <= 80 for line in table.splitlines())
    lines = [line for line in table.splitlines() if line.strip()]  # title, header, rule, row
    assert "…" not in table and len(lines) == 4, table
    assert lines[1].split() == ["iter", "env", "steps", "steps/s", "elapsed", "left", "reward",
                                "ep", "len", "errors", "restarts"]  # fmt: skip
    assert lines[3].split() == ["12345", "100.0M", "123,456", "101:02:03", "1:30:00",
                                "-1.235e-05", "20000.0", "31234", "3"]  # fmt: skip


@pytest.mark.parametrize(
    ("log_text", "line"),
    [
        # A server stopped by SIGTERM: its last lines are INFO records, none an error.
        ("2026-01-01 10:00:00,001 INFO simserver.server: serving Toy on unix:/x.sock\n"
         "2026-01-01 10:00:09,002 INFO simserver.server: stopped (4 sessions opened, "
         "0 expired, 0 hung, 0 sim errors)\n", ""),
        ("2026-01-01 10:00:00,001 INFO simserver.server: serving Toy\nloading model\n", ""),
        ("serving\nsimserver: error: BadCtor() raised RuntimeError: cannot find license server\n",
         "BadCtor() raised RuntimeError: cannot find license server"),
        ("Traceback (most recent call last):\n  File \"toy.py\", line 3\n"
         "ZeroDivisionError: division by zero\n"
         "2026-01-01 10:00:09,002 INFO simserver.server: stopped (1 sessions opened)\n",
         "ZeroDivisionError: division by zero"),
        ("FATAL: solver assertion failed: dt > 0\n", "FATAL: solver assertion failed: dt > 0"),
        ("2026-01-01 10:00:00,001 ERROR simserver.server: cannot bind\n",
         "2026-01-01 10:00:00,001 ERROR simserver.server: cannot bind"),
        ("Segmentation fault (core dumped)\n", "Segmentation fault (core dumped)"),
        ("3 errors in the terror model\n", ""),  # whole words only
    ],
)  # fmt: skip
def test_log_error_line_finds_errors_not_shutdown_lines(log_text, line):
    from launcher.sidecars import log_error_line

    assert log_error_line(log_text) == line


def test_a_sidecar_stopped_by_sigterm_is_not_reported_with_an_error(tmp_path):
    from launcher.sidecars import SidecarPool
    from launcher.trainspec import Launch

    launch = Launch(target=f"{SIMS / 'toy.py'}:Toy", servers=1, restart_backoff=0.0)
    pool = SidecarPool(launch, SIMS, tmp_path / "sims")
    pool.start()
    try:
        proc = pool.servers[0].proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        # The supervisor polls every 0.5 s; the restart is the event to wait for.
        for _ in range(240):
            if pool.events:
                break
            time.sleep(0.25)
        (event,) = pool.events
    finally:
        pool.stop()
    log = next((tmp_path / "sims").glob("*.log")).read_text()
    assert "stopped (" in log  # the shutdown line the old hint took for an error
    assert event.kind == "restarted" and "exited (code" in event.detail
    assert "its log's last error" not in event.detail, event.detail


@pytest.mark.slow  # ~31 s: a 30 s run by design
def test_max_time_is_the_invocations_wall_time_and_cuts_an_iteration(tmp_path):
    # Iterations of at least 10 minutes: only a stop mid-iteration ends this run near its
    # 30 s. Set-up (the algorithm, the sims) counts towards those 30 s.
    spec = _spec(tmp_path, stop={"iterations": None, "max_time": 3600},
                 config={"train_batch_size_per_learner": 400, "minibatch_size": 100,
                         "num_epochs": 1, "min_time_s_per_iteration": 600})  # fmt: skip
    started = time.monotonic()
    run_dir, state = train(spec, max_time=30)
    elapsed = time.monotonic() - started
    assert state.finished and state.stop_reason.startswith("max_time 30 s reached"), state
    # The iteration under way was cut (unless set-up alone outlived the limit on a busy
    # machine: then the loop stops before its first iteration).
    assert "cut short" in state.stop_reason or state.iteration == 0, state.stop_reason
    # A final checkpoint, then stopping the sims and Ray: a few seconds on a quiet machine,
    # up to a minute on a loaded 2-core one; without the cut, the first iteration alone
    # would take 10 minutes.
    assert elapsed < 30 + 60, elapsed
    assert state.checkpoints and Path(state.checkpoints[-1]).is_dir()
    assert "stopped: max_time 30 s reached" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_sims_down_for_good_end_the_run_at_once_with_a_final_checkpoint(tmp_path):
    # The server dies after every 1000 steps it serves, one restart allowed: a few
    # iterations complete, then the budget runs out mid-iteration. Default timeouts: the
    # run must not wait for them (it took 69 s after the give-up, with no checkpoint).
    spec = _spec(
        tmp_path,
        env_updates={"sim": {"target": f"{SIMS / 'bad.py'}:DiesAfter", "kwargs": {"steps": 1000}}},
        sim={"launch": {"servers": 1, "max_restarts": 1, "restart_backoff": 0.2}},
        stop={"iterations": 100},
    )  # fmt: skip
    with pytest.raises(TrainingError) as info:
        train(spec)
    message = str(info.value)
    assert "\n" not in message and "restart budget (1) is used up" in message, message
    (run_dir,) = (tmp_path / "runs").iterdir()
    first = _first_paragraph(run_dir / "error.txt")
    assert "out of licences after 1000 steps" in first
    state = RunState.load(run_dir)
    assert state.iteration >= 1 and not state.finished
    final = Path(state.checkpoints[-1])
    assert final.name == f"iter_{state.iteration:06d}" and (final / Counters.FILE).exists()
    assert f"Final checkpoint: {final}" in first
    # Promptly: the give-up and the failure are logged seconds apart, not a sample or
    # connect timeout (30-60 s) later. Generous for a loaded machine.
    log_lines = (run_dir / "train.log").read_text().splitlines()
    gave_up = next(line for line in log_lines if "sidecar gave_up" in line)
    failed = next(line for line in log_lines if "failed while training" in line)
    assert _seconds(failed) - _seconds(gave_up) < 20, (gave_up, failed)


def _seconds(log_line: str) -> float:
    """The time of a train.log line ("2026-01-01 10:00:00,123 ...") in seconds of the day."""
    clock = log_line.split()[1].replace(",", ".")
    h, m, s = clock.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


@pytest.mark.slow
def test_iterations_that_collect_nothing_end_the_run(tmp_path, start_server):
    # A server the user runs, gone after iteration 2 (nobody restarts it): every sub-env
    # then waits for a connection, and IMPALA's 1 s iterations sample nothing.
    server = start_server("toy.py:Toy")
    spec = _spec(
        tmp_path,
        env_updates={"sim": {"connect_timeout": 2.0, "reset_timeout": 2.0, "timeout": 1.0}},
        sim={"launch": None, "address": server.address},
        algorithm="IMPALA",
        config={"train_batch_size_per_learner": 200, "min_time_s_per_iteration": 1},
        stop={"iterations": 200, "max_empty_iterations": 3},
    )  # fmt: skip

    def kill_at_2(progress):
        if progress.iteration == 2:
            server.kill()

    with pytest.raises(TrainingError) as info:
        train(spec, on_progress=kill_at_2)
    message = str(info.value)
    assert "3 iterations in a row collected no env steps" in message, message
    assert "hung or unreachable" in message and "\n" not in message
    (run_dir,) = (tmp_path / "runs").iterdir()
    state = RunState.load(run_dir)
    assert state.checkpoints and Path(state.checkpoints[-1]).name == f"iter_{state.iteration:06d}"
    assert "Final checkpoint" in _first_paragraph(run_dir / "error.txt")


@pytest.mark.slow  # a training of ~20 s: make test-slow
def test_a_sim_that_fails_on_most_steps_uses_up_the_error_budget(tmp_path):
    spec = _spec(
        tmp_path,
        env_updates={"sim": {"target": f"{SIMS / 'bad.py'}:FailsMostly", "kwargs": {"p_fail": 0.9}}},
        stop={"iterations": 100},  # the default budget: 0.5
    )  # fmt: skip
    with pytest.raises(TrainingError) as info:
        train(spec)
    message = str(info.value)
    assert "the sims failed on" in message and "stop.max_sim_error_rate 0.5" in message, message
    (run_dir,) = (tmp_path / "runs").iterdir()
    first = _first_paragraph(run_dir / "error.txt")
    assert "solver diverged" in first and "Final checkpoint" in first
    rows = _metrics(run_dir)
    assert sum(float(r["sim_errors"]) for r in rows) > 0.5 * float(rows[-1]["env_steps_total"])


@pytest.mark.slow
def test_a_sim_that_hangs_on_some_steps_costs_its_timeouts_not_the_run(tmp_path):
    # 1 % of steps hang for a minute against a 1 s deadline: ~4 hung calls per iteration,
    # 40 in the run (the run froze after ~31 once, with iterations that sampled nothing).
    # Hung calls hold server threads until the server says NOT_SERVING or stops answering;
    # its supervisor restarts it. max_time is only a backstop: the run must reach its
    # iterations.
    spec = _spec(
        tmp_path,
        env_updates={"sim": {"target": f"{SIMS / 'toy.py'}:Flaky", "timeout": 1.0,
                             "kwargs": {"p_hang": 0.01, "hang": 60.0}}},
        stop={"iterations": 10, "max_time": 400},
    )  # fmt: skip
    run_dir, state = train(spec)
    assert state.finished and state.stop_reason == "iterations 10 reached", state.stop_reason
    rows = _metrics(run_dir)
    assert sum(float(r.get("sim_timeouts") or 0) for r in rows) >= 10, rows
    # Still sampling after the first hangs wedged the servers (and they were restarted).
    assert float(rows[-1]["env_steps_total"]) > float(rows[2]["env_steps_total"]), rows


# --------------------------------------------------------------- env spec, lessons, ranges
# (issue 16; the spec and the sim are tests/test_lessons.py's)


def _lesson_overrides(tmp_path: Path, iterations: int) -> dict:
    from launcher.trainspec import Checkpointing, Resources, Stop

    return {
        "stop": Stop(iterations=iterations),
        "resources": Resources(env_runners=1, envs_per_runner=4, cpus=2),
        "config": {"train_batch_size_per_learner": 200, "minibatch_size": 100,
                   "num_epochs": 1, "min_time_s_per_iteration": 0},
        "checkpoint": Checkpointing(every=10, keep=3),  # the final one only
        "output": str(tmp_path / "runs"),
    }  # fmt: skip


def test_an_env_spec_trains_named_after_it_with_estimated_ranges_and_two_lessons(tmp_path):
    from launcher import ranges

    from .test_lessons import _lesson_spec

    run_dir, state = train(_lesson_spec(tmp_path), overrides=_lesson_overrides(tmp_path, 3))
    # Named after the env spec's `name`, in an MLflow experiment of that name.
    assert run_dir.name.startswith("lesson-sim-")
    with sqlite3.connect(run_dir / "mlflow.db") as db:
        experiments = {row[0] for row in db.execute("select name from experiments")}
        lessons = [r[0] for r in db.execute("select value from metrics where key='lesson'")]
    assert "lesson-sim" in experiments
    # The training spec it implied, written down in full.
    resolved = yaml.safe_load((run_dir / "spec.resolved.yaml").read_text())
    assert (resolved["train"]["algorithm"], resolved["train"]["experiment"]) == (
        "PPO", "lesson-sim",
    )  # fmt: skip
    # Estimated ranges in the run folder and in the resolved env spec (export reads it).
    saved = ranges.load(run_dir)
    assert saved is not None and set(saved) == {"temp", "t"}
    assert resolved["env"]["observations"]["temp"]["max"] == saved["temp"]["max"]
    # Lesson 1 passed in iteration 1 (its rule holds once it has 10 episodes that report
    # goal_success); the env runners then drew integer levels 18..24 (a float would have
    # failed in the sim).
    rows = _metrics(run_dir)
    assert [int(float(r["lesson"])) for r in rows] == [2, 2, 2]
    assert lessons == [2.0, 2.0, 2.0]
    assert float(rows[0]["state_mean_level"]) < 18  # iteration 1's episodes: lesson 1's
    assert 18 <= float(rows[-1]["state_mean_level"]) <= 24
    assert all(float(r["sim_errors"]) == 0 for r in rows)
    assert state.lesson == 2 and RunState.load(run_dir).lesson == 2
    assert Counters.load(Path(state.checkpoints[-1])).lesson == 2  # type: ignore[union-attr]
    log = (run_dir / "train.log").read_text()
    assert "lesson 2 (hard) from now on: lesson 1 (easy) passed" in log
    assert "and goal success 1 >= 0.5 over the last 10 episodes" in log
    assert "is an env spec: training with the defaults of docs/training.md" in log


@pytest.mark.slow
def test_a_resumed_run_goes_on_with_its_lesson_and_ranges(tmp_path):
    from launcher import ranges
    from launcher.trainspec import Stop

    from .test_lessons import _lesson_spec

    spec = _lesson_spec(tmp_path)
    overrides = _lesson_overrides(tmp_path, 2)
    run_dir, state = train(spec, overrides=overrides)
    assert state.lesson == 2
    first = ranges.load(run_dir)
    overrides["stop"] = Stop(iterations=3)
    run_dir, state = train(spec, overrides=overrides, resume=run_dir)
    rows = _metrics(run_dir)
    # The first resumed iteration is the hard lesson's already: no episode at level 0.
    assert [int(float(r["lesson"])) for r in rows] == [2, 2, 2]
    assert 18 <= float(rows[2]["state_mean_level"]) <= 24
    assert ranges.load(run_dir) == first
    log = (run_dir / "train.log").read_text()
    assert "observations without min/max: ranges from ranges.yaml" in log
