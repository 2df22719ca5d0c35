"""Sims placed by Ray (launcher.raysims): one supervising actor per Ray node.

The quick test joins a one-node Ray cluster of its own with ``train(ray_address=...)``: the
sims start in that node's host actor, the env runner finds it by its node id, and the run
folder records where everything ran. The slow test runs two Ray nodes on this machine that
cannot see each other's sims (see ``TwoNodes``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from launcher.node import OWNER_VAR, kill_owned

from .conftest import REPO as ROOT
from .conftest import SIMS, private_ray

SIMGYM = str(Path(sys.executable).parent / "simgym")

pytest.importorskip("ray.rllib", reason="training needs the train extra (installed by make)")


def _project(tmp_path: Path, **train: object) -> Path:
    """The toy sim and its env spec, and a short PPO training spec over them."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("toy.py", "toy_spec.yaml", "reward.py"):
        shutil.copy2(SIMS / name, project / name)
    spec = {
        "env": "toy_spec.yaml",
        "sim": {"launch": {"servers": 1, "sessions_per_server": 4, "restart_backoff": 0.2}},
        "algorithm": "PPO",
        "config": {"train_batch_size_per_learner": 200, "minibatch_size": 100, "num_epochs": 1,
                   "min_time_s_per_iteration": 1},
        "resources": {"env_runners": 1, "envs_per_runner": 4},
        "stop": {"iterations": 2},
        "checkpoint": {"every": 5, "keep": 1},
        "output": str(tmp_path / "runs"),
        "experiment": "rayplace",
        **train,
    }  # fmt: skip
    (project / "train.yaml").write_text(yaml.safe_dump(spec))
    return project / "train.yaml"


def _placements(run_dir: Path) -> tuple[dict[str, dict], list[dict]]:
    """The run's hosts (by Ray node id) and env-runner records from ``placement.jsonl``."""
    hosts, runners = {}, []
    for line in (run_dir / "placement.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "host":
            hosts[record["node_id"]] = record
        else:
            runners.append(record)
    return hosts, runners


def test_a_node_logs_under_the_run_folder_only_when_it_sees_the_runs_token(tmp_path, monkeypatch):
    from launcher.raysims import LOG_DIR_VAR, TOKEN_FILE, HostJob, _log_dir
    from launcher.trainspec import Launch

    run = tmp_path / "runs" / "toy-20261203-101500"
    (run / "sims").mkdir(parents=True)
    (run / "sims" / TOKEN_FILE).write_text("the-runs-token")
    job = HostJob(None, Launch(target="toy.py:Toy"), str(run), "the-runs-token", 0)  # type: ignore[arg-type]
    assert _log_dir(job, "10.0.0.5-3f2a1b9c") == (run / "sims" / "10.0.0.5-3f2a1b9c", True)
    # Another run folder at the same path (another machine, no shared file system): its own.
    other = HostJob(None, job.plan, str(run), "another-runs-token", 0)  # type: ignore[arg-type]
    monkeypatch.setenv(LOG_DIR_VAR, str(tmp_path / "outputs" / "nodes" / "rank-1"))
    assert _log_dir(other, "n") == (tmp_path / "outputs" / "nodes" / "rank-1" / "sims" / "n", False)
    monkeypatch.delenv(LOG_DIR_VAR)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "node-tmp"))
    assert _log_dir(other, "n") == (tmp_path / "node-tmp" / f"simgym-{run.name}" / "n", False)


# make test-slow: the default suite reached 14:27 of its 15 minutes in CI (with the image builds
# beside it), and the two-node test below covers the same path and more.
@pytest.mark.slow
@pytest.mark.timeout(300)  # ~20 s on an idle machine (54 s at load 5 on 2 cores)
def test_train_on_a_ray_cluster_places_the_sims_on_the_env_runners_node(tmp_path):
    import ray

    from launcher.failure import SetupError
    from launcher.train import train

    spec = _project(tmp_path)
    bad = yaml.safe_load(spec.read_text())
    bad["sim"]["launch"]["target"] = "toy.py:BadCtor"
    (spec.parent / "bad.yaml").write_text(yaml.safe_dump(bad))
    with private_ray(num_cpus=2, _node_ip_address="127.0.0.2"):
        address = ray.get_runtime_context().gcs_address
        # A sim that cannot start on the node: one line in the sim's own words, as locally.
        with pytest.raises(SetupError) as failed:
            train(spec.parent / "bad.yaml", ray_address=address)
        assert str(failed.value).startswith(
            "sim server 0 (toy.py:BadCtor) failed to start: BadCtor() raised RuntimeError: "
            "cannot find license server"
        ), str(failed.value)
        run_dir, state = train(spec, ray_address=address)
        # The registry and its hosts end with the training: no actor of ours is left.
        deadline = time.monotonic() + 30
        while True:
            left = [a for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["name"].startswith("simgym-sims")]  # fmt: skip
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert state.finished and state.iteration == 2 and state.env_steps > 0
    hosts, runners = _placements(run_dir)
    (host,) = hosts.values()
    assert host["shared"] and not host["error"]
    # The node sees the run folder: its sims' logs are there, one folder per Ray node.
    log_dir = Path(host["log_dir"])
    assert log_dir.parent == run_dir / "sims" and log_dir.name == host["label"]
    assert host["label"].startswith("127.0.0.2-")
    assert "for SimVectorEnv[" in (log_dir / "server-0.log").read_text()
    runner = next(r for r in runners if r["worker_index"] == 1)
    assert runner["ray_node_id"] == host["node_id"]
    assert runner["addresses"] == host["addresses"]
    assert "sims on Ray node 127.0.0.2-" in (run_dir / "train.log").read_text()
    assert not left, left


# ----------------------------------------------------------------------------- two nodes


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.251.0.0/16 that no interface or route of this machine uses."""
    used = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    used += subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    for i in range(os.getpid() % 200, os.getpid() % 200 + 50):
        if f"10.251.{i % 250}." not in used:
            return ipaddress.ip_network(f"10.251.{i % 250}.0/30")
    raise RuntimeError("no free 10.251.x.0/30 subnet")


def _find_pid(needle: str, timeout: float = 30.0) -> int:
    """The process whose command line is exactly ``needle`` (words joined by spaces)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
                    if cmd.decode(errors="replace").strip() == needle:
                        return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no process {needle!r}")


class TwoNodes:
    """Two Ray nodes on this machine that share nothing a sim could be reached through.

    Node A (the head, and the driver) runs in this network namespace on one end of a veth
    link, node B in a network namespace of its own on the other end. Each has a mount
    namespace with a private, empty ``/tmp`` (where sims put their unix sockets and Ray its
    session): a sim of one node cannot be reached from the other. A sees the test's folder
    (so the run folder is shared with the test); B sees only the project (sim code and
    specs), as a node of a cluster without a shared file system would.

    Each namespace is held by a ``sleep`` (its "holder"); commands run in it with nsenter.
    Every process started carries a marker, and all of them are killed at the end.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp, self.tag = tmp_path, f"{os.getpid() % 100000}"
        self.ns, self.veth = f"sgrp{self.tag}", f"sgrp{self.tag}"
        net = _free_subnet()
        self.ip_a, self.ip_b = (str(a) for a in list(net.hosts())[:2])
        self.port = 0
        self.marker = uuid.uuid4().hex
        self.holders: dict[str, subprocess.Popen[bytes]] = {}
        self.pids: dict[str, int] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "OMPI_"))}
        self.env.update({OWNER_VAR: self.marker, "RAY_AUTH_MODE": "disabled"})

    def __enter__(self) -> TwoNodes:
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.veth + "a", "type", "veth", "peer", "name", self.veth + "b")
        _ip("link", "set", self.veth + "b", "netns", self.ns)
        _ip("addr", "add", f"{self.ip_a}/30", "dev", self.veth + "a")
        _ip("link", "set", self.veth + "a", "up")
        _ip("addr", "add", f"{self.ip_b}/30", "dev", self.veth + "b", ns=self.ns)
        _ip("link", "set", self.veth + "b", "up", ns=self.ns)
        _ip("link", "set", "lo", "up", ns=self.ns)
        self._hold("a", self.tmp, [])
        self._hold("b", self.tmp / "project", ["ip", "netns", "exec", self.ns])
        return self

    def _hold(self, node: str, visible: Path, prefix: list[str]) -> None:
        """A mount namespace with a private /tmp in which only ``visible`` is bound back.

        The checkout and its venv are bound back too when they live under /tmp (CI clones
        there): the nodes run the venv's ``ray`` and the project's sim code from them.
        """
        naptime = f"3600.{self.tag}{ord(node)}"
        keep = {Path(p).resolve() for p in (ROOT, sys.prefix)}
        keep = {p for p in keep if p.is_relative_to("/tmp") and p != visible}
        # Each hidden folder stays reachable through a descriptor the shell holds open
        # (visible through its cwd): bound back in place once the tmpfs covers /tmp, outer
        # folders first.
        fds = {visible: "/proc/self/cwd"} | {p: f"/proc/self/fd/{i}" for i, p in
                                              enumerate(sorted(keep), start=3)}  # fmt: skip
        opens = " ".join(f'{fd.rsplit("/", 1)[1]}<"{p}"' for p, fd in fds.items()
                         if fd.startswith("/proc/self/fd"))  # fmt: skip
        binds = " && ".join(f'mkdir -p "{p}" && mount --no-canonicalize --bind {fds[p]} "{p}"'
                            for p in sorted(fds, key=lambda p: len(p.parts)))  # fmt: skip
        script = (
            f'cd "{visible}" && {("exec " + opens + " && ") if opens else ""}'
            f"mount -t tmpfs tmpfs /tmp && {binds} && exec sleep {naptime}"
        )
        self.holders[node] = subprocess.Popen(
            [*prefix, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env=self.env, start_new_session=True,
        )  # fmt: skip
        self.pids[node] = _find_pid(f"sleep {naptime}")

    def command(self, node: str, cmd: list[str], cwd: Path) -> list[str]:
        """``cmd`` run in ``node``'s namespaces, from ``cwd``."""
        flags = ["-m", "-n"] if node == "b" else ["-m"]
        return ["nsenter", "-t", str(self.pids[node]), *flags, "--", "sh", "-c",
                f'cd "{cwd}" && exec "$@"', "sh", *cmd]  # fmt: skip

    def start_ray(self) -> str:
        """Both Ray nodes (A the head); the head's address."""
        ray = str(Path(sys.executable).parent / "ray")
        base = [ray, "start", "--temp-dir", "/tmp/ray", "--disable-usage-stats", "--num-cpus", "1"]
        with socket.socket() as s:
            s.bind((self.ip_a, 0))
            self.port = s.getsockname()[1]
        ports = []
        for _ in range(2):
            with socket.socket() as s:
                s.bind((self.ip_a, 0))
                ports.append(str(s.getsockname()[1]))
        head = [*base, "--head", "--port", str(self.port), "--node-ip-address", self.ip_a,
                "--include-dashboard=false", "--ray-client-server-port", ports[0],
                "--dashboard-port", ports[1]]  # fmt: skip
        worker = [*base, "--address", f"{self.ip_a}:{self.port}", "--node-ip-address", self.ip_b]
        for node, cmd in (("a", head), ("b", worker)):
            r = subprocess.run(self.command(node, cmd, self.tmp / "project"), env=self.env,
                               capture_output=True, text=True, timeout=240)  # fmt: skip
            assert r.returncode == 0, (
                f"ray start on node {node}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
            )
        return f"{self.ip_a}:{self.port}"

    def node_file(self, node: str, path: str) -> Path:
        """A path as ``node`` sees it, from here (through its holder's root)."""
        return Path(f"/proc/{self.pids[node]}/root") / path.lstrip("/")

    def in_node(self, node: str, pid: int) -> bool:
        """Whether process ``pid`` runs in ``node``'s mount namespace."""
        try:
            return os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(
                f"/proc/{self.pids[node]}/ns/mnt"
            )
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        kill_owned(self.marker, grace=3)
        for holder in self.holders.values():
            with contextlib.suppress(OSError):
                os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(10)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth + "a"], capture_output=True)


def _sim_servers() -> dict[int, str]:
    """Running simserver processes: pid -> command line."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
                if b"simserver" in cmd:
                    found[int(entry.name)] = b" ".join(cmd).decode(errors="replace")
    return found


@pytest.mark.slow  # two Ray nodes and a training, ~60 s: make test-slow
@pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "unshare", "nsenter")),
    reason="needs root, iproute2 and util-linux (make ci-setup installs them)",
)
@pytest.mark.timeout(600)
def test_two_ray_nodes_each_step_their_own_sims_and_restart_them(tmp_path):
    spec = _project(tmp_path, resources={"env_runners": 2, "envs_per_runner": 2},
                    stop={"iterations": 5})  # fmt: skip
    runs = tmp_path / "runs"
    with TwoNodes(tmp_path) as nodes:
        address = nodes.start_ray()
        train = subprocess.Popen(
            nodes.command("a", [SIMGYM, "train", str(spec), "--address", address], spec.parent),
            env=nodes.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            # Once training runs, kill node B's sim server: B's host must restart it.
            killed = None
            deadline = time.monotonic() + 400
            while killed is None and train.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
                csv = list(runs.glob("*/metrics.csv"))
                if not csv or len(csv[0].read_text().splitlines()) < 2:
                    continue
                on_b = [p for p, cmd in _sim_servers().items() if nodes.in_node("b", p)]
                if on_b:
                    os.kill(on_b[0], signal.SIGKILL)
                    killed = on_b[0]
            output, _ = train.communicate(timeout=400)
        finally:
            if train.poll() is None:
                train.kill()
        assert killed is not None, f"node B's sim server never seen running:\n{output[-3000:]}"
        assert train.returncode == 0, output[-4000:]
        (run_dir,) = runs.iterdir()
        hosts, runners = _placements(run_dir)
        log_b = ""
        by_ip = {h["node_ip"]: h for h in hosts.values()}
        if nodes.ip_b in by_ip:
            log_b = nodes.node_file("b", by_ip[nodes.ip_b]["log_dir"] + "/server-0.log").read_text()

    state = json.loads((run_dir / "run.json").read_text())
    assert state["finished"] and state["iteration"] == 5 and state["env_steps"] > 0
    # One host per node. A shares the run folder: its logs are there. B does not see it:
    # its logs stay in its own /tmp, and the driver was told where.
    assert set(by_ip) == {nodes.ip_a, nodes.ip_b}
    host_a, host_b = by_ip[nodes.ip_a], by_ip[nodes.ip_b]
    assert host_a["shared"] and Path(host_a["log_dir"]).parent == run_dir / "sims"
    assert not host_b["shared"] and host_b["log_dir"].startswith(f"/tmp/simgym-{run_dir.name}/")
    assert "for SimVectorEnv[" in (Path(host_a["log_dir"]) / "server-0.log").read_text()
    assert "for SimVectorEnv[" in log_b
    # Every env runner stepped the sims of the node Ray put it on, and only those.
    remote = [r for r in runners if r["worker_index"] > 0]
    assert {r["node_ip"] for r in remote} == {nodes.ip_a, nodes.ip_b}, remote
    for record in remote:
        assert record["addresses"] == hosts[record["ray_node_id"]]["addresses"]
        assert record["node_ip"] == hosts[record["ray_node_id"]]["node_ip"]
    assert set(host_a["addresses"]).isdisjoint(host_b["addresses"])
    # B's host restarted its killed server; the driver heard of it (train.log, metrics).
    train_log = (run_dir / "train.log").read_text()
    assert (
        f"WARNING simgym.sidecars: Ray node {host_b['label']}: sidecar restarted: sim server 0 "
        f"(toy.py:Toy at {host_b['addresses'][0]}) exited (code -9); restarted (restart 1 of 5)"
    ) in train_log
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert float(rows[-1].split(",")[header.index("sim_restarts")]) == 1
