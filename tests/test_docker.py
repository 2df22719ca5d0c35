"""simgym's images, built and run with a real Docker engine (``make test-docker``).

The pinned bases cannot be pulled here: ``tests.dockerkit`` builds local stand-ins for them
(debootstrap bookworm, tagged as the Dockerfiles name them) and builds with ``--pull=false``
and this host's pip sources. Then, all over user-defined Docker networks (no host networking,
no published port):

- the **sim image** serves the CSTR sample with a token; a trainer in a container of the
  **training image** trains against it; the sim container is killed mid-training and started
  again: the episodes it had end, training goes on and finishes;
- the sim image has neither Ray nor torch; the training image has exactly its lock;
- ``simgym node`` runs in two containers of the training image under the variables Azure ML's
  MPI launcher sets, each node with its own sims as co-processes, and trains over both.

CI (``.ci/run``) installs and starts the engine itself; there a missing engine fails.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from . import dockerkit

# The first test's set-up builds the images (several minutes from cold on 2 cores).
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parent.parent
CSTR = ROOT / "examples" / "cstr"
TOKEN = "docker-test-" + "cd" * 16
# Where the figures of a run go (build times, sizes): docs/docker.md quotes them.
FIGURES = Path(os.environ.get("SIMGYM_DOCKER_FIGURES", "/tmp/simgym-docker-figures.json"))


def _record(key: str, value: object) -> None:
    figures = json.loads(FIGURES.read_text()) if FIGURES.is_file() else {}
    figures[key] = value
    FIGURES.write_text(json.dumps(figures, indent=1))


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """The stand-in bases, then the sim and training images (Docker's cache keeps them)."""
    dockerkit.require_docker()
    started = time.monotonic()
    dockerkit.ensure_bases()
    _record("bases_s", round(time.monotonic() - started, 1))
    out = {}
    # The training image beside the sim image and the combined image test_sim_image.py runs
    # (two long pip installs at once on two cores: ~4 minutes less than one after the other).
    started = time.monotonic()
    built = dockerkit.build_all()
    _record("all_builds_s", round(time.monotonic() - started, 1))
    for kind in ("sim", "train"):
        result = built[kind]
        _record(f"{kind}_build_s", round(result.seconds, 1))
        _record(f"{kind}_size_mb", round(result.size_mb))
        out[kind] = result.tag
    return out


def _project(tmp_path: Path, train: dict, token_env: bool = False) -> Path:
    """The CSTR sample's files and a training spec in a folder the containers mount."""
    project = tmp_path / "project"
    project.mkdir(parents=True)
    for name in ("sim.py", "reward.py", "spec.yaml"):
        shutil.copy2(CSTR / name, project / name)
    if token_env:
        spec = yaml.safe_load((project / "spec.yaml").read_text())
        spec["sim"]["token_env"] = "SIMGYM_TOKEN"
        (project / "spec.yaml").write_text(yaml.safe_dump(spec))
    (project / "train.yaml").write_text(yaml.safe_dump(train))
    return project


def _short_training(**updates: object) -> dict:
    """The CSTR recipe cut down to small iterations (as tests/test_node.py does)."""
    train = yaml.safe_load((CSTR / "train.yaml").read_text())
    train["config"].update({"train_batch_size_per_learner": 200, "minibatch_size": 100,
                            "num_epochs": 1, "rollout_fragment_length": 25,
                            "min_time_s_per_iteration": 1})  # fmt: skip
    train["checkpoint"] = {"every": 50, "keep": 1}
    train.update(updates)
    return train


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _run_dir(runs: Path) -> Path | None:
    found = list(runs.glob("*/run.json")) if runs.is_dir() else []
    return found[0].parent if found else None


def test_the_sim_image_has_no_ray_or_torch_and_serves_as_a_user(images):
    sim = images["sim"]
    for heavy in ("ray", "torch", "mlflow"):
        r = dockerkit.docker("run", "--rm", "--entrypoint", "python", sim, "-c", f"import {heavy}",
                             check=False)  # fmt: skip
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, (heavy, r.stderr)
    r = dockerkit.docker("run", "--rm", "--entrypoint", "sh", sim, "-c",
                         "id -un; simserver --help; python -c 'import simserver, gymclient'")  # fmt: skip
    assert r.stdout.splitlines()[0] == "sim" and "--token" in r.stdout
    config = json.loads(
        dockerkit.docker("image", "inspect", "--format", "{{json .Config}}", sim).stdout
    )
    assert config["Entrypoint"] == ["simserver"] and config["WorkingDir"] == "/sim"


def test_the_training_image_holds_exactly_its_lock(images):
    """What test_aml's fresh-venv install of the train kind checked, in the real image."""
    lock = {}
    for line in (ROOT / "docker" / "lock-train.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[name] = version
    script = (
        "import json, subprocess, ray, torch, mlflow, azureml.mlflow, launcher.node\n"
        "def freeze(py):\n"
        "    out = subprocess.run([py, '-m', 'pip', 'freeze', '--all'], capture_output=True,\n"
        "                         text=True, check=True).stdout.splitlines()\n"
        "    return dict(l.split('==') for l in out if '==' in l)\n"
        "subprocess.run(['/usr/bin/python3.11', '-m', 'venv', '/tmp/seed'], check=True)\n"
        "print(json.dumps({'versions': [ray.__version__, torch.__version__, mlflow.__version__],\n"
        "  'image': freeze('/opt/simgym/bin/python'), 'seed': freeze('/tmp/seed/bin/python')}))\n"
    )
    r = dockerkit.docker("run", "--rm", images["train"], "python", "-c", script)
    found = json.loads(r.stdout)
    assert found["versions"] == ["2.60.0", "2.13.0+cpu", "3.15.0"]

    def norm(name: str) -> str:
        return name.lower().replace("_", "-").replace(".", "-")

    pins = {norm(k): v for k, v in lock.items()}
    seed = {norm(k): v for k, v in found["seed"].items()}
    unpinned = {n: v for n, v in ((norm(k), v) for k, v in found["image"].items())
                if pins.get(n) != v and seed.get(n) != v}  # fmt: skip
    assert not unpinned, f"in the image but not in lock-train.txt: {unpinned}"
    assert set(pins) <= {norm(k) for k in found["image"]}, "the lock pins more than was installed"
    r = dockerkit.docker("run", "--rm", images["train"], "sh", "-c",
                         "mpirun --version && simgym node --help")  # fmt: skip
    assert "Open MPI" in r.stdout and "--join-timeout" in r.stdout


@pytest.mark.timeout(900)
def test_training_against_a_sim_container_goes_on_when_it_is_killed_and_back(images, tmp_path):
    train = _short_training(
        sim={"address": "cstr-sim:50051", "token_env": "SIMGYM_TOKEN"},
        resources={"env_runners": 1, "envs_per_runner": 4, "cpus": 2},
        stop={"iterations": 6},
        output="/job/runs",
        experiment="cstr-docker",
    )
    project = _project(tmp_path, train, token_env=True)
    with dockerkit.network() as net, dockerkit.run(
        images["sim"], "sim.py:CSTR", "--host", "0.0.0.0", "--port", "50051",
        network=net, name=f"cstr-sim-{os.getpid()}", env={"SIMGYM_TOKEN": TOKEN},
        volumes={str(project): "/sim:ro"}, options=["--network-alias", "cstr-sim"],
    ) as sim:  # fmt: skip
        with dockerkit.run(
            images["train"], "simgym", "train", "/job/train.yaml",
            network=net, env={"SIMGYM_TOKEN": TOKEN}, volumes={str(project): "/job"},
            options=["--shm-size", "512m", "-w", "/job"],
        ) as trainer:  # fmt: skip
            # Kill the sim once the training has completed an iteration on it.
            deadline = time.monotonic() + 600
            killed_after = None
            while time.monotonic() < deadline and trainer.state()["Running"]:
                run_dir = _run_dir(project / "runs")
                rows = _metrics(run_dir) if run_dir else []
                if rows and killed_after is None:
                    killed_after = len(rows)
                    sim.kill()
                    assert not sim.state()["Running"]
                    time.sleep(2.0)  # the trainer meets a dead sim
                    sim.start()
                    break
                time.sleep(0.5)
            assert killed_after is not None, trainer.logs()[-3000:]
            code = trainer.wait(timeout=max(30.0, deadline - time.monotonic()))
            log = trainer.logs()
            assert code == 0, log[-4000:]
            sim_log = sim.logs()
    run_dir = _run_dir(project / "runs")
    assert run_dir is not None
    state = json.loads((run_dir / "run.json").read_text())
    assert state["finished"] and state["iteration"] == 6, state
    rows = _metrics(run_dir)
    # The episodes on the killed sim ended with a failed call, counted in sim_errors ...
    assert sum(float(r.get("sim_errors") or 0) for r in rows[killed_after - 1 :]) >= 1, rows
    errors = (run_dir / "sim_errors.log").read_text().lower()
    assert "unavailable" in errors or "connect" in errors, errors[-2000:]
    # ... and the iterations after the restart stepped the restarted server.
    steps = [int(float(r["env_steps_total"])) for r in rows]
    assert steps[-1] > steps[killed_after - 1] and len(rows) == 6
    assert sim_log.count("serving CSTR") == 2, sim_log[-3000:]
    _record("kill_test_iterations_before_kill", killed_after)


@pytest.mark.timeout(900)
def test_simgym_node_in_two_containers_trains_over_both(images, tmp_path):
    train = _short_training(
        sim={"launch": {"servers": 1, "sessions_per_server": 4}},
        resources={"env_runners": 2, "envs_per_runner": 4},
        stop={"iterations": 1},
        experiment="cstr-2containers",
    )
    project = _project(tmp_path, train)
    head = f"simgym-node0-{os.getpid()}"
    common = {
        "OMPI_COMM_WORLD_SIZE": "2",
        # What Azure ML's MPI launcher sets on every node: the head's address.
        "AZ_BATCH_MASTER_NODE": f"{head}:6105",
        "AZ_BATCHAI_MPI_MASTER_NODE": head,
        "SIMGYM_RAY_TOKEN": "ef" * 32,
    }
    cmd = ["simgym", "node", "/job/train.yaml", "--output", "/job/outputs", "--ray-port", "6379",
           "--cpus", "1", "--join-timeout", "300s"]  # fmt: skip
    opts = ["--shm-size", "512m", "-w", "/job"]
    with dockerkit.network() as net:
        with dockerkit.run(images["train"], *cmd, network=net, name=head, options=opts,
                           env={**common, "OMPI_COMM_WORLD_RANK": "0"},
                           volumes={str(project): "/job"}) as node0, \
             dockerkit.run(images["train"], *cmd, network=net, name=f"simgym-node1-{os.getpid()}",
                           env={**common, "OMPI_COMM_WORLD_RANK": "1"}, options=opts,
                           volumes={str(project): "/job"}) as node1:  # fmt: skip
            ips = {node0.ip(), node1.ip()}
            codes = (node0.wait(timeout=800), node1.wait(timeout=120))
            logs = node0.logs() + node1.logs()
    assert codes == (0, 0), logs[-5000:]
    assert "[simgym node 0/2] all 2 node(s) joined; training (+" in logs
    assert "[simgym node 1/2] the head is gone (training exit code 0)" in logs
    out = project / "outputs"
    (run_dir,) = (out / "runs").iterdir()
    state = json.loads((run_dir / "run.json").read_text())
    assert state["finished"] and state["iteration"] == 1 and state["env_steps"] > 0
    # Two Ray nodes, one per container, at the containers' addresses on the network.
    cluster = json.loads((out / "nodes" / "cluster.json").read_text())
    assert {n["ip"] for n in cluster} == ips and len(cluster) == 2
    # Each container's sims (co-processes of its node, started by its host actor) were
    # stepped by the env runner Ray placed in that container, and by no other.
    records = [json.loads(ln) for ln in (run_dir / "placement.jsonl").read_text().splitlines()]
    hosts = {r["node_ip"]: r for r in records if r["kind"] == "host"}
    assert set(hosts) == ips
    for host in hosts.values():
        log_dir = project / Path(host["log_dir"]).relative_to("/job")  # the shared mount
        assert "for SimVectorEnv[" in (log_dir / "server-0.log").read_text(), host
    runners = [r for r in records if r["kind"] == "env_runner" and r["worker_index"] > 0]
    assert {r["node_ip"] for r in runners} == ips
    for runner in runners:
        assert runner["addresses"] == hosts[runner["node_ip"]]["addresses"]
