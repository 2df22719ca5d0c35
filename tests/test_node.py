"""The multi-node bootstrap, launched the way Azure ML launches it: ``mpirun -np 2``.

Two ranks on this machine act as two nodes: each starts its own Ray node (rank 0 the head,
on 127.0.0.2; rank 1 on 127.0.0.3 — loopback only), a short training runs over both with
its sims placed by Ray (one host actor per node), and every env runner is shown to have
stepped the sims of the node it ran on. Nothing is left running afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from launcher.node import node_info

from .conftest import private_ray

SIMGYM = str(Path(sys.executable).parent / "simgym")


# ----------------------------------------------------------------------------- rank and head


def test_rank_and_head_from_the_launchers_variables():
    info = node_info({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "3",
                      "AZ_BATCH_MASTER_NODE": "10.0.0.4:6105",
                      "AZ_BATCHAI_MPI_MASTER_NODE": "10.9.9.9", "MASTER_ADDR": "10.8.8.8"})  # fmt: skip
    assert (info.rank, info.size, info.head, info.head_source) == (
        1,
        3,
        "10.0.0.4",
        "AZ_BATCH_MASTER_NODE",
    )
    assert info.head_ip == "10.0.0.4" and info.node_ip is None and not info.is_head
    info = node_info({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2",
                      "AZ_BATCHAI_MPI_MASTER_NODE": "10.9.9.9", "MASTER_ADDR": "10.8.8.8"})  # fmt: skip
    assert info.head == "10.9.9.9" and info.node_ip == "10.9.9.9" and info.is_head
    info = node_info({"NODE_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "10.8.8.8"})
    assert (info.rank, info.size, info.head_source) == (1, 2, "MASTER_ADDR")
    # Nothing set: one node on loopback (Ray turns 127.0.0.1 into the machine's address,
    # so the head advertises 127.0.0.2).
    info = node_info({})
    assert (info.rank, info.size, info.head_source) == (0, 1, "default")
    assert info.head_ip == "127.0.0.2" and info.node_ip == "127.0.0.2"
    assert (
        node_info({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}).node_ip == "127.0.0.3"
    )
    from launcher.node import NodeError

    with pytest.raises(NodeError, match="rank 2 of 2"):
        node_info({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "2"})
    with pytest.raises(NodeError, match="OMPI_COMM_WORLD_RANK='x'"):
        node_info({"OMPI_COMM_WORLD_RANK": "x"})


# ----------------------------------------------------------------------------- two nodes

needs_mpirun = pytest.mark.skipif(
    shutil.which("mpirun") is None, reason="needs Open MPI's mpirun (make ci-setup installs it)"
)
pytest.importorskip("ray", reason="training needs the train extra (installed by make)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return int(s.getsockname()[1])


CSTR = Path(__file__).resolve().parent.parent / "examples" / "cstr"


def _project(tmp_path: Path, **train_updates) -> Path:
    """A user's project: the CSTR sample (its sim, env spec, reward) and its training spec,
    cut down to a short run: 1 iteration of small batches over 2 env runners (one per node)."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("sim.py", "reward.py", "spec.yaml"):
        shutil.copy2(CSTR / name, project / name)
    train = yaml.safe_load((CSTR / "train.yaml").read_text())
    train["sim"]["launch"] = {"servers": 1, "sessions_per_server": 4}
    train["config"].update({"train_batch_size_per_learner": 200, "minibatch_size": 100,
                            "num_epochs": 1, "rollout_fragment_length": 25,
                            "min_time_s_per_iteration": 1})  # fmt: skip
    train["resources"] = {"env_runners": 2, "envs_per_runner": 4}
    train["stop"] = {"iterations": 1}
    train["checkpoint"] = {"every": 5, "keep": 1}
    train["experiment"] = "cstr-2nodes"
    for key, value in train_updates.items():
        if isinstance(value, dict) and isinstance(train.get(key), dict):
            train[key] = {**train[key], **value}
        else:
            train[key] = value
    (project / "train.yaml").write_text(yaml.safe_dump(train))
    return project / "train.yaml"


def _mpirun(spec: Path, out: Path, port: int, *extra: str, timeout: float = 400,
            mpi: tuple[str, ...] = ()):  # fmt: skip
    cmd = [
        "mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", *mpi,
        # What Azure ML's MPI launcher exports to every process.
        "-x", "AZ_BATCH_MASTER_NODE=127.0.0.1:6105",
        "-x", "AZ_BATCHAI_MPI_MASTER_NODE=127.0.0.1",
        "-x", "SIMGYM_RAY_TOKEN=" + "ab" * 32,
        "-x", "PATH",
        # Each rank's own exit code, recorded beside its outputs (mpirun reports only one).
        "sh", "-c", '"$0" "$@"; code=$?; echo $code > "exit-$OMPI_COMM_WORLD_RANK"; exit $code',
        SIMGYM, "node", str(spec), "--output", str(out), "--ray-port", str(port),
        "--cpus", "1", "--join-timeout", "180s", *extra,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "OMPI_"))}
    return subprocess.run(cmd, cwd=spec.parent, capture_output=True, text=True, timeout=timeout,
                          env=env)  # fmt: skip


@pytest.mark.slow  # multi-node, ~40 s: make test-slow
@needs_mpirun
@pytest.mark.timeout(480)  # ~45 s on an idle 2-core machine; generous for a loaded one
def test_two_nodes_under_mpirun_train_on_their_own_sidecars(tmp_path):
    spec = _project(tmp_path)
    out = tmp_path / "outputs"
    sidecars_before = set(Path("/tmp").glob("sgr*"))
    r = _mpirun(spec, out, _free_port())
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert {(spec.parent / f"exit-{rank}").read_text().strip() for rank in (0, 1)} == {"0"}
    assert "[simgym node 0/2] all 2 node(s) joined; training (+" in log
    assert "[simgym node 1/2] the head is gone (training exit code 0): shutting down (+" in log

    # The CSTR training completed.
    (run_dir,) = (out / "runs").iterdir()
    assert run_dir.name.startswith("cstr-2nodes")
    state = json.loads((run_dir / "run.json").read_text())
    assert state["finished"] and state["iteration"] == 1 and state["env_steps"] > 0
    assert not (out / "error.txt").exists()

    # Two Ray nodes, each with its rank's marker resource and its sims' slots.
    cluster = json.loads((out / "nodes" / "cluster.json").read_text())
    rank_of = {
        n["node_id"]: next(int(k.split("_")[-1]) for k in n["resources"] if k.startswith("simgym_node_"))
        for n in cluster
    }  # fmt: skip
    assert sorted(rank_of.values()) == [0, 1]
    assert {n["ip"] for n in cluster} == {"127.0.0.2", "127.0.0.3"}
    assert all(n["resources"]["sim_slot"] == 4 for n in cluster)

    # Each node's sims, started by its host actor: one machine, so both log under the run
    # folder, each in its node's folder ...
    records = [json.loads(line) for line in (run_dir / "placement.jsonl").read_text().splitlines()]
    hosts = {r["node_id"]: r for r in records if r["kind"] == "host"}
    assert sorted(rank_of[node_id] for node_id in hosts) == [0, 1]
    for node_id, host in hosts.items():
        assert host["shared"] and Path(host["log_dir"]).parent == run_dir / "sims"
        assert "for SimVectorEnv[" in (Path(host["log_dir"]) / "server-0.log").read_text(), (
            f"no env runner stepped rank {rank_of[node_id]}'s sims"
        )

    # ... and every env runner: it ran on the Ray node of one rank and used that rank's sims.
    runners = [r for r in records if r["kind"] == "env_runner" and r["worker_index"] > 0]
    assert {r["worker_index"] for r in runners} == {1, 2}
    seen_ranks = set()
    for rec in runners:
        rank = rank_of[rec["ray_node_id"]]  # where Ray actually placed this runner
        assert rec["node_rank"] == str(rank)
        assert rec["addresses"] == hosts[rec["ray_node_id"]]["addresses"]
        seen_ranks.add(rank)
    assert seen_ranks == {0, 1}, "expected one env runner per node"
    addresses = [set(host["addresses"]) for host in hosts.values()]
    assert addresses[0].isdisjoint(addresses[1]), "two nodes shared sims"

    # Nothing left: no Ray process of ours, no private Ray temp dir.
    leftovers = _ray_processes_from(tmp_path)
    assert not leftovers, f"left running: {leftovers}"
    assert set(Path("/tmp").glob("sgr*")) <= sidecars_before


@pytest.mark.slow  # multi-node, ~25 s: make test-slow
@needs_mpirun
@pytest.mark.timeout(480)
def test_a_failing_training_fails_every_node(tmp_path):
    # RLlib refuses a minibatch larger than the batch when it builds the algorithm: the
    # training fails after both nodes joined.
    spec = _project(tmp_path, config={"minibatch_size": 400})
    out = tmp_path / "outputs"
    # mpirun would kill rank 1 as soon as rank 0 exits non-zero: let each rank end by itself,
    # so that its own exit code shows.
    # (mpirun itself then exits 0: the ranks' own codes are what this test checks.)
    r = _mpirun(spec, out, _free_port(), mpi=("--mca", "orte_abort_on_non_zero_status", "0"))
    log = r.stdout + r.stderr
    assert "[simgym node 0/2] training failed:" in log, log[-4000:]
    assert "[simgym node 1/2] the head is gone (training exit code 1): shutting down (+" in log
    # Each rank's own exit code: 1 on the head and on the node that only served.
    codes = {rank: (spec.parent / f"exit-{rank}").read_text().strip() for rank in (0, 1)}
    assert codes == {0: "1", 1: "1"}
    (run_dir,) = (out / "runs").iterdir()
    assert (run_dir / "error.txt").exists()
    assert not _ray_processes_from(tmp_path)


def _ray_processes_from(tmp_path: Path) -> list[str]:
    """Ray or simserver processes whose command line or environment points into tmp_path."""
    found = []
    needle = str(tmp_path).encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry.name}/environ").read_bytes()
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] != "Z" and (needle in env or needle in cmd):
            found.append(cmd.replace(b"\0", b" ").decode(errors="replace")[:120])
    return found


@pytest.mark.slow  # multi-node, ~18 s: make test-slow
@needs_mpirun
@pytest.mark.timeout(480)
def test_a_node_that_never_joins_is_a_clear_error(tmp_path):
    spec = _project(tmp_path)
    out = tmp_path / "outputs"
    # Rank 0 of 2, but no rank 1: the head must give up after the join timeout.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "OMPI_"))}
    env.update(OMPI_COMM_WORLD_RANK="0", OMPI_COMM_WORLD_SIZE="2")
    r = subprocess.run(
        [SIMGYM, "node", str(spec), "--output", str(out), "--ray-port", str(_free_port()),
         "--cpus", "1", "--join-timeout", "5s"],
        cwd=spec.parent, capture_output=True, text=True, timeout=400, env=env,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-3000:]
    assert "only 1 of 2 nodes joined the Ray cluster within 5 s; missing rank(s) 1" in r.stderr
    error = (out / "error.txt").read_text()
    assert error.startswith("simgym node (rank 0 of 2) failed while waiting for the other nodes")
    assert not _ray_processes_from(tmp_path)


@needs_mpirun
@pytest.mark.timeout(480)
def test_a_killed_node_leaves_nothing_behind(tmp_path):
    """SIGKILL gives no chance to clean up: the node's watchdog and the sims' parent watch do."""
    spec = _project(tmp_path, stop={"iterations": 1000})
    out = tmp_path / "outputs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "OMPI_"))}
    proc = subprocess.Popen(
        [SIMGYM, "node", str(spec), "--output", str(out), "--ray-port", str(_free_port()),
         "--cpus", "2"],
        cwd=spec.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out / "nodes" / "cluster.json").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the node did not start"
            time.sleep(0.5)
        assert _ray_processes_from(tmp_path), "expected Ray and sim processes while it runs"
    finally:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 60
    while _ray_processes_from(tmp_path) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _ray_processes_from(tmp_path), "left running after SIGKILL"


# tell_outcome is given 600 s: waiting for rank 2 would still time this test out. The rest
# is room for Ray's start-up on a loaded machine (two attempts of up to ~150 s each).
@pytest.mark.timeout(450)
def test_tell_outcome_tells_live_ranks_and_does_not_wait_for_absent_ones(tmp_path, monkeypatch):
    from launcher.node import NODE_RANK_VAR, OUTCOME_VAR, tell_outcome

    outcome = tmp_path / "outcome.json"
    # Ray's workers inherit the driver's environment: this "node" is rank 1.
    monkeypatch.setenv(OUTCOME_VAR, str(outcome))
    monkeypatch.setenv(NODE_RANK_VAR, "1")
    with private_ray(num_cpus=1, resources={"simgym_node_0": 1, "simgym_node_1": 1}):
        # Rank 2 never joined: reported, not waited for.
        assert tell_outcome(3, 1, timeout=600) == [2]
    assert json.loads(outcome.read_text()) == {"exit_code": 1}
