"""Bonsai SDK sims as sidecars: ``sim.bonsai`` in ``simgym train``, ``check`` and ``node``.

Real processes throughout: simserver's Bonsai endpoint, copies of the example's unmodified
``main.py`` (the real ``microsoft-bonsai-api`` client from PyPI), real Ray and RLlib.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("microsoft_bonsai_api", reason="needs the bonsai extra (installed by make)")

from gymclient.errors import SpecError
from gymclient.spec import load_spec
from launcher.trainspec import load_train_spec

from .conftest import REPO

EXAMPLE = REPO / "examples" / "bonsai-cartpole"
SIMGYM = str(Path(sys.executable).parent / "simgym")

# The example's recipe cut down to a few seconds of sampling: 8 envs x 50 steps per batch.
SHORT = {
    "config": {"train_batch_size_per_learner": 400, "minibatch_size": 200, "num_epochs": 1,
               "rollout_fragment_length": 50, "min_time_s_per_iteration": 1},
    "checkpoint": {"every": 1, "keep": 1},
}  # fmt: skip


def _project(tmp_path: Path) -> Path:
    """A copy of the example folder (its main.py, sim/, specs), as a user's project."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    return project


def _short_recipe(tmp_path: Path, iterations: int) -> Path:
    """The example's train.yaml in a copy of its folder, cut to ``iterations`` short ones."""
    project = _project(tmp_path)
    train = yaml.safe_load((project / "train.yaml").read_text())
    train.update(SHORT, stop={"iterations": iterations}, output=str(tmp_path / "runs"))
    return _write(project / "train.yaml", train)


def _children_running(arg: str) -> list[int]:
    """This process's children with ``arg`` among their arguments (``python main.py``)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            args = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and stat[0] != "Z" and arg.encode() in args:
            found.append(int(entry.name))
    return found


# ----------------------------------------------------------------------------- the spec


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("bonsai", "key", "words"),
    [
        ({"command": ""}, "sim.bonsai.command", "give the command that starts one sim"),
        ({"command": "python 'main.py"}, "sim.bonsai.command", "cannot be split into words"),
        ({"command": "python nosuch.py"}, "sim.bonsai.command", "file not found"),
        ({"command": "python main.py", "copies": -1}, "sim.bonsai.copies", "greater than or"),
        ({"command": "python main.py", "copis": 3}, "sim.bonsai.copis", "unknown key"),
        ({"command": "python main.py", "listen": "nope"}, "sim.bonsai.listen", "not host:port"),
        ({"command": "python main.py", "listen": "0.0.0.0:5000"}, "sim.bonsai", "token"),
        ({"command": "python main.py", "copies": 0}, "sim.bonsai", "fixed port"),
        ({"command": "python main.py", "env": {"A": [1]}}, "sim.bonsai.env.A", "valid string"),
        ({"command": "python main.py", "restart_backoff": "x"}, "sim.bonsai.restart_backoff",
         "valid number"),
    ],
)  # fmt: skip
def test_a_malformed_bonsai_section_is_one_line_naming_file_and_key(tmp_path, bonsai, key, words):
    project = _project(tmp_path)
    train = yaml.safe_load((project / "train.yaml").read_text())
    train["sim"] = {"bonsai": bonsai}
    path = _write(project / "train.yaml", train)
    with pytest.raises(SpecError) as err:
        load_train_spec(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: ") and words in message, message
    assert "\n" not in message
    # The env spec's sim section takes the same keys, with the same errors.
    env = yaml.safe_load((project / "spec.yaml").read_text())
    env["sim"] = {"bonsai": bonsai}
    path = _write(project / "spec.yaml", env)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}: {key}: ") and words in str(err.value)


def test_bonsai_and_a_target_or_launch_are_one_or_the_other(tmp_path):
    project = _project(tmp_path)
    env = yaml.safe_load((project / "spec.yaml").read_text())
    env["sim"]["bonsai"] = {"command": "python main.py"}  # beside its target
    with pytest.raises(SpecError, match=r"sim: give only one of target, bonsai, address"):
        load_spec(_write(project / "spec.yaml", env))
    train = yaml.safe_load((project / "train.yaml").read_text())
    train["sim"]["launch"] = {"servers": 1}
    with pytest.raises(SpecError, match=r"sim: give one of launch, bonsai, address"):
        load_train_spec(_write(project / "train.yaml", train))


def test_simgym_train_says_a_bonsai_spec_error_in_one_line(tmp_path):
    project = _project(tmp_path)
    train = yaml.safe_load((project / "train.yaml").read_text())
    train["sim"]["bonsai"]["copies"] = "many"
    _write(project / "train.yaml", train)
    r = subprocess.run([SIMGYM, "train", "train.yaml"], cwd=project, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "simgym: error: train.yaml: sim.bonsai.copies: Input should be a valid integer, unable "
        "to parse string as an integer"
    ]


def test_copies_that_cannot_start_fail_the_run_in_one_line_quoting_their_error(tmp_path):
    project = _project(tmp_path)
    (project / "broken.py").write_text('raise RuntimeError("cannot find license server")\n')
    train = yaml.safe_load((project / "train.yaml").read_text())
    train["sim"]["bonsai"] = {"command": "python broken.py", "copies": 2}
    _write(project / "train.yaml", train)
    r = subprocess.run([SIMGYM, "train", "train.yaml"], cwd=project, capture_output=True,
                       text=True, timeout=200)  # fmt: skip
    assert r.returncode == 2, r.stderr[-3000:]
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(
        "simgym: error: bonsai sim 0 (python broken.py) exited with code 1 before any sim "
        "registered: RuntimeError: cannot find license server (log: "
    ), line
    (run_dir,) = (project / "runs").iterdir()
    assert "cannot find license server" in (run_dir / "error.txt").read_text()
    assert not _children_running("broken.py")


def test_copies_default_to_the_sessions_training_opens(tmp_path):
    from launcher.sims import train_plan

    project = _project(tmp_path)
    train = yaml.safe_load((project / "train.yaml").read_text())
    del train["sim"]["bonsai"]["copies"]
    train["resources"] = {"env_runners": 3, "envs_per_runner": 4}
    spec = load_train_spec(_write(project / "train.yaml", train))
    env = spec.load_env_spec()
    plan = train_plan(spec, env)
    assert plan.copies == 12 and plan.workdir == project and len(plan.token) >= 24
    assert train_plan(spec, env, nodes=2).copies == 8  # each node: its share of the runners
    assert env.sim.target is None and env.sim.bonsai == spec.sim.bonsai


# ----------------------------------------------------------------------------- simgym check


@pytest.mark.timeout(240)
def test_simgym_check_starts_bonsai_sims_and_passes(tmp_path):
    project = _project(tmp_path)
    env = yaml.safe_load((project / "spec.yaml").read_text())
    env["sim"] = {"bonsai": {"command": "python main.py"}}
    _write(project / "spec.yaml", env)
    r = subprocess.run([SIMGYM, "check", "spec.yaml", "--episodes", "3"], cwd=project,
                       capture_output=True, text=True, timeout=200)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "SOUND" in r.stdout and "CartPole" in r.stdout
    assert not _children_running("main.py")


# ----------------------------------------------------------------------------- simgym train


@pytest.fixture(scope="module")
def ray_session():
    pytest.importorskip("ray.rllib", reason="training needs the train extra (installed by make)")
    from .conftest import private_ray

    with private_ray(num_cpus=2):
        yield


@pytest.mark.timeout(300)
def test_the_example_trains_unmodified_through_its_bonsai_copies(tmp_path, ray_session):
    from launcher.train import train

    # The example's folder and sim section as they are, its recipe cut short.
    run_dir, state = train(_short_recipe(tmp_path, 2))
    assert state.finished and state.iteration == 2 and state.env_steps >= 800
    assert state.checkpoints and Path(state.checkpoints[-1]).is_dir()
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert last[header.index("episode_reward_mean")] not in ("", "nan")
    # The example's 8 copies of main.py, each with its log, registered with the endpoint.
    sims = run_dir / "sims"
    assert sorted(p.name for p in sims.glob("bonsai-sim-*.log")) == [
        f"bonsai-sim-{k}.log" for k in range(8)
    ]
    assert "registered simulator session" in (sims / "bonsai-sim-0.log").read_text()
    resolved = yaml.safe_load((run_dir / "spec.resolved.yaml").read_text())
    assert resolved["train"]["sim"]["bonsai"]["copies"] == 8
    assert "token" not in resolved["train"]["sim"]["bonsai"]
    assert not _children_running("main.py"), "a copy outlived the training"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_copy_killed_mid_training_is_restarted_and_training_goes_on(tmp_path, ray_session):
    from launcher.train import train

    killed: list[int] = []
    events: list[str] = []

    def on_progress(progress) -> None:
        events.extend(progress.events)
        if progress.iteration == 1:
            pid = _children_running("main.py")[0]
            os.kill(pid, signal.SIGKILL)  # kill -9 one sim copy mid-training
            killed.append(pid)

    run_dir, state = train(_short_recipe(tmp_path, 4), on_progress=on_progress)
    assert killed and state.finished and state.iteration == 4
    assert any(
        e.startswith("bonsai sim ") and "exited (code -9)" in e and "restarted (restart 1 of" in e
        for e in events
    ), events
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert float(last[header.index("sim_restarts")]) >= 1
    assert "sidecar restarted: bonsai sim" in (run_dir / "train.log").read_text()


def test_copies_die_with_their_trainer_even_killed(tmp_path):
    """SIGKILL gives the trainer no chance to stop them: the orphan guard does."""
    project = _project(tmp_path)
    env = yaml.safe_load((project / "spec.yaml").read_text())
    env["sim"] = {"bonsai": {"command": "python main.py", "copies": 2}}
    _write(project / "spec.yaml", env)
    code = (
        "import sys, time; from pathlib import Path; from gymclient.spec import load_spec; "
        "from launcher.sims import spec_launch, start_sims; "
        "spec = load_spec(sys.argv[1]); pool = start_sims(spec, spec_launch(spec), "
        "Path(sys.argv[2])); print(pool.servers[0].pid, *[c.pid for c in pool.servers[1:]], "
        "flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(project / "spec.yaml"),
                             str(tmp_path / "sims")], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)  # fmt: skip
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3, "the trainer did not start its sims"
    finally:
        proc.kill()
        proc.communicate(timeout=10)  # and its pipe closed
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)], "left running after the trainer's SIGKILL"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ----------------------------------------------------------------------------- simgym node


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_each_node_starts_its_own_bonsai_sims(tmp_path):
    from .test_node import _free_port, _mpirun, _ray_processes_from, needs_mpirun

    if needs_mpirun.args and needs_mpirun.args[0]:
        pytest.skip(needs_mpirun.kwargs["reason"])
    project = _project(tmp_path)
    train = yaml.safe_load((project / "train.yaml").read_text())
    train.update(SHORT)
    del train["sim"]["bonsai"]["copies"]  # the default: each node's share of the sessions
    train["config"]["rollout_fragment_length"] = 25
    train["resources"] = {"env_runners": 2, "envs_per_runner": 4}
    train["stop"] = {"iterations": 1}
    train["experiment"] = "bonsai-2nodes"
    spec = _write(project / "train.yaml", train)
    out = tmp_path / "outputs"
    r = _mpirun(spec, out, _free_port())
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    (run_dir,) = (out / "runs").iterdir()
    state = json.loads((run_dir / "run.json").read_text())
    assert state["finished"] and state["iteration"] == 1 and state["env_steps"] > 0
    # Each node: its own endpoint and 4 copies (2 runners x 4 envs over 2 nodes), stepped
    # by the env runners on that node.
    cluster = json.loads((out / "nodes" / "cluster.json").read_text())
    assert [n["resources"]["sim_slot"] for n in cluster] == [4, 4]
    # The sims are placed by Ray (launcher.raysims): one host per node, whose logs are in
    # the run folder (one machine: every node sees it).
    records = [json.loads(line) for line in (run_dir / "placement.jsonl").read_text().splitlines()]
    hosts = {r["node_id"]: r for r in records if r["kind"] == "host"}
    assert len(hosts) == 2
    for node_id, host in hosts.items():
        sims = Path(host["log_dir"])
        assert sims.parent == run_dir / "sims"
        assert len(list(sims.glob("bonsai-sim-*.log"))) == 4
        assert (sims / "bonsai-server.log").exists()
        runners = [r for r in records if r["kind"] == "env_runner" and r["worker_index"] > 0
                   and r["ray_node_id"] == node_id]  # fmt: skip
        assert runners, f"no env runner stepped the sims of node {host['label']}"
    assert not _ray_processes_from(tmp_path)


def test_a_killed_endpoint_is_restarted_where_its_copies_and_clients_find_it(tmp_path):
    import numpy as np

    from gymclient import SimEnv
    from gymclient.errors import SimgymError
    from launcher.sims import spec_launch, start_sims

    project = _project(tmp_path)
    env = yaml.safe_load((project / "spec.yaml").read_text())
    env["sim"] = {"bonsai": {"command": "python main.py", "copies": 2, "restart_backoff": 0.2}}
    spec = load_spec(_write(project / "spec.yaml", env))
    plan = spec_launch(spec)
    pool = start_sims(spec, plan, tmp_path / "sims")
    try:
        endpoint = pool.servers[0]
        url, address = endpoint.bonsai_address, pool.addresses[0]
        sim_env = SimEnv({"spec": plan.connect_spec(spec), "address": address})
        sim_env.reset(seed=0)
        os.kill(endpoint.pid, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while True:  # clients see their episodes fail until the endpoint is back with a sim
            assert time.monotonic() < deadline, f"not serving again: {pool.events}"
            try:
                sim_env.reset(seed=1)
                sim_env.step(np.array([0.2], dtype=np.float32))
                break
            except SimgymError:
                time.sleep(0.5)
        sim_env.close()
        assert endpoint.bonsai_address == url and pool.addresses == [address]
        assert pool.events[0].detail.startswith("the Bonsai endpoint (simserver --bonsai-port")
        assert "exited (code -9); restarted (restart 1 of 5)" in pool.events[0].detail
        assert not pool.failed()
    finally:
        pool.stop()


# ----------------------------------------------------------------------------- sims elsewhere


def test_sims_started_elsewhere_join_the_endpoint_with_the_key(tmp_path, monkeypatch):
    """``copies: 0``: simgym starts only the endpoint; sims the user runs join at ``listen``."""
    import socket
    import threading

    import numpy as np

    from gymclient import SimEnv
    from launcher.sims import spec_launch, start_sims

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    project = _project(tmp_path)
    env = yaml.safe_load((project / "spec.yaml").read_text())
    env["sim"] = {"bonsai": {"command": "python main.py", "copies": 0,
                             "listen": f"127.0.0.1:{port}", "token_env": "CARTPOLE_KEY"}}  # fmt: skip
    spec = load_spec(_write(project / "spec.yaml", env))
    monkeypatch.setenv("CARTPOLE_KEY", "the-key")
    plan = spec_launch(spec)
    assert plan.copies == 0 and plan.token == "the-key"
    started: list = []
    starter = threading.Thread(
        target=lambda: started.append(start_sims(spec, plan, tmp_path / "sims"))
    )
    starter.start()
    deadline = time.monotonic() + 60
    while not _listens(port):  # the endpoint comes up first, as a trainer's would
        assert time.monotonic() < deadline, "the Bonsai endpoint did not listen"
        time.sleep(0.1)

    def elsewhere(key: str) -> subprocess.Popen:
        environ = {**os.environ, "SIM_API_HOST": f"http://127.0.0.1:{port}",
                   "SIM_WORKSPACE": "anything", "SIM_ACCESS_KEY": key}  # fmt: skip
        return subprocess.Popen([sys.executable, "main.py"], cwd=project, env=environ,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip

    wrong = elsewhere("not-the-key")
    out, _ = wrong.communicate(timeout=60)
    assert wrong.returncode != 0 and "registered simulator session" not in out
    assert "wrong access key" in out, out[-2000:]  # refused by the endpoint, not unreachable
    sim = elsewhere("the-key")
    try:
        starter.join(60)
        assert started, "the endpoint did not serve once a sim with the key registered"
        pool = started[0]
        try:
            env_ = SimEnv({"spec": plan.connect_spec(spec), "address": pool.addresses[0]})
            env_.reset(seed=0)
            assert env_.step(np.array([0.2], dtype=np.float32))[0].shape == (4,)
            env_.close()
        finally:
            pool.stop()
    finally:
        sim.kill()
        sim.communicate(timeout=10)


def _listens(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_submit_dry_run_of_the_bonsai_example_loads_back(tmp_path):
    pytest.importorskip("azure.ai.ml", reason="needs the aml extra (installed by make)")
    from azure.ai.ml import load_job

    project = _project(tmp_path)
    r = subprocess.run([SIMGYM, "submit", "train.yaml", "--nodes", "2", "--dry-run", "out"],
                       cwd=project, capture_output=True, text=True, timeout=200)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    job = load_job(project / "out" / "job.yml")
    assert job.command.startswith("simgym node train.yaml") and job.resources.instance_count == 2


# ----------------------------------------------------------------------------- session class, logs


@pytest.mark.timeout(300)
def test_the_examples_session_class_trains_in_process(tmp_path, ray_session):
    """The same main.py, its CartPoleSession hosted by sidecar simservers: no copies, no HTTP."""
    from launcher.train import train

    recipe = _short_recipe(tmp_path, 2)
    train_spec = yaml.safe_load(recipe.read_text())
    train_spec["sim"] = {"launch": {"target": "main.py:CartPoleSession", "servers": 1}}
    run_dir, state = train(_write(recipe, train_spec))
    assert state.finished and state.iteration == 2 and state.env_steps >= 800
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert float(last[header.index("episode_len_mean")]) > 5  # cart-pole episodes, not errors
    assert not list((run_dir / "sims").glob("bonsai-sim-*.log"))


def test_a_copys_log_is_bounded_and_keeps_its_last_lines(tmp_path):
    """A sim printing a line per event keeps at most log_mb (+ its previous part) on disk."""
    from launcher.logpump import pump, rotated

    log = tmp_path / "bonsai-sim-0.log"
    log.write_bytes(b"an earlier life\n")
    # ~3 MiB of output through a 1 MiB cap, then the line a crash would leave.
    code = "import sys\nfor i in range(60000): print(f'event {i:06d}', 'x' * 40)\nsys.exit('boom')"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    assert proc.stdout is not None
    thread = pump(proc.stdout, log, 2**20)
    assert proc.wait(60) == 1
    thread.join(30)
    assert not thread.is_alive()
    assert log.stat().st_size <= 2**20 and rotated(log).stat().st_size <= 2**20
    assert log.read_text().splitlines()[-1] == "boom"
    assert "event 059999" in log.read_text()
    assert not list(tmp_path.glob("*.log.2"))
    spec = load_spec(_write(tmp_path / "s.yaml", {
        "sim": {"bonsai": {"command": "python -c pass", "log_mb": 0.5}},
        "observations": {"x": {"min": 0, "max": 1}}, "actions": {"u": {"min": 0, "max": 1}},
    }))  # fmt: skip
    assert spec.sim.bonsai is not None and spec.sim.bonsai.log_mb == 0.5
