"""``simgym node``: the per-node bootstrap of a multi-node training (the Azure ML job's command).

Azure ML runs one copy of the job's command per node under its own ``mpirun``. Every copy:

1. reads its rank and the head's address from the variables the MPI launcher sets;
2. starts a Ray node that advertises a ``sim_slot`` resource (one slot per sim session its
   sims will serve), so Ray places no more env runners on a node than its sims can serve;
3. rank 0 (``ray start --head``) waits until every rank has joined (timeout, clear error), runs
   the training and returns its exit code; other ranks (``ray start --address``) wait until the
   head is gone;
4. stops what it started — only that: the Ray processes that carry its own marker in their
   environment (never a global ``ray stop``).

The sims are not its business: the training places them through Ray, one supervising actor
per node next to that node's env runners (``launcher.raysims``), as on any Ray cluster. A
node's sim logs go to the run folder when the node sees it (one machine, a shared file
system), else to ``<output>/nodes/rank-R/sims/`` (``SIMGYM_NODE_LOG_DIR``), which Azure ML
uploads with that node's outputs.

Each Ray node gets a private ``--temp-dir``, so no other ``ray.init()`` on the machine can
mistake it for "the latest local cluster".
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gymclient.errors import SimgymError
from launcher.bonsai_sims import BonsaiPlan
from launcher.failure import TrainingError
from launcher.placement import NODE_RANK_VAR, SLOT
from launcher.raysims import LOG_DIR_VAR
from launcher.sims import train_plan
from launcher.train import train
from launcher.trainspec import TrainSpec, load_train_spec

log = logging.getLogger("simgym.node")

# Set in the environment of every Ray process a node starts (and in launcher.placement).
OWNER_VAR = "SIMGYM_RAY_OWNER"  # marks the processes this bootstrap started
TOKEN_VAR = "SIMGYM_RAY_TOKEN"  # shared Ray auth token (set by `simgym submit`)
OUTCOME_VAR = "SIMGYM_NODE_OUTCOME"  # where the head tells this node the training's exit code

DEFAULT_RAY_PORT = 6379
HEAD_VARS = ("AZ_BATCH_MASTER_NODE", "AZ_BATCHAI_MPI_MASTER_NODE", "MASTER_ADDR")


class NodeError(SimgymError):
    """The node bootstrap failed (one line; the details are in the node's log)."""


@dataclass(frozen=True)
class NodeInfo:
    """Where this process stands in the job."""

    rank: int
    size: int
    head: str  # the head's host as the launcher gave it
    head_source: str  # which variable it came from
    node_ip: str | None  # address this node's Ray advertises (None: Ray decides)
    head_ip: str  # address every node uses to reach the head

    @property
    def is_head(self) -> bool:
        """Rank 0 runs the Ray head and the training."""
        return self.rank == 0


def _int_var(env: Mapping[str, str], names: Sequence[str], default: int) -> int:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                raise NodeError(f"{name}={value!r} is not an integer") from None
    return default


def _host_part(value: str) -> str:
    """``10.0.0.4:6105`` → ``10.0.0.4``; ``[::1]:80`` → ``::1``; a bare host stays."""
    value = value.strip()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(host: str) -> str:
    """An IP address for a host name (Ray wants addresses); an address stays as it is."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def node_info(env: Mapping[str, str] | None = None) -> NodeInfo:
    """Rank, size and head address from what Azure ML's launchers set.

    Rank: ``OMPI_COMM_WORLD_RANK`` (MPI), else ``NODE_RANK``/``RANK`` (PyTorch-style), else 0.
    Head: ``AZ_BATCH_MASTER_NODE`` (host of ``ip:port``), ``AZ_BATCHAI_MPI_MASTER_NODE``,
    ``MASTER_ADDR``, else 127.0.0.1. A loopback head means several "nodes" on one machine
    (tests, a laptop): node ``r`` then advertises 127.0.0.(2+r), because Ray replaces
    127.0.0.1 itself with the machine's outward address.
    """
    env = os.environ if env is None else env
    rank = _int_var(env, ("OMPI_COMM_WORLD_RANK", "NODE_RANK", "RANK"), 0)
    size = _int_var(env, ("OMPI_COMM_WORLD_SIZE", "WORLD_SIZE"), 1)
    if size < 1 or not 0 <= rank < size:
        raise NodeError(f"rank {rank} of {size} nodes makes no sense (check the MPI variables)")
    head, source = "127.0.0.1", "default"
    for name in HEAD_VARS:
        if env.get(name, "").strip():
            head, source = _host_part(env[name]), name
            break
    if _is_loopback(head):
        head_ip = "127.0.0.2"
        node_ip: str | None = f"127.0.0.{2 + rank}"
    else:
        head_ip = _resolve(head)
        # The head advertises the address the others were told; the rest let Ray pick the
        # interface that reaches the head.
        node_ip = head_ip if rank == 0 else None
    node_ip = env.get("SIMGYM_NODE_IP") or node_ip
    return NodeInfo(rank, size, head, source, node_ip, head_ip)


# ----------------------------------------------------------------------------- Ray processes


def ray_binary() -> str:
    """The ``ray`` launcher of this interpreter's environment (never one from PATH)."""
    path = Path(sys.executable).parent / "ray"
    if not path.exists():
        raise NodeError(
            f"{path} not found: multi-node training needs the train extra "
            '(pip install "simgym[train]")'
        )
    return str(path)


def owned_pids(marker: str) -> list[int]:
    """Processes whose environment carries ``SIMGYM_RAY_OWNER=<marker>``."""
    needle = f"{OWNER_VAR}={marker}".encode()
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, parent pid, start time) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), fields[19]


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def track(marker: str, tracked: dict[int, str]) -> dict[int, str]:
    """Add to ``tracked`` (pid → start time) the marked processes and all their descendants.

    Descendants matter: Ray renames its agents' processes (``ray::DashboardAgent``), which
    overwrites the start of their environment, marker included; and once their raylet is
    gone they are re-parented, so the family must be recorded while it is alive.
    """
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                table[int(entry.name)] = stat
    for pid in owned_pids(marker):
        if pid in table:
            tracked.setdefault(pid, table[pid][2])
    grew = True
    while grew:
        grew = False
        for pid, (_, ppid, started) in table.items():
            if ppid in tracked and pid not in tracked and pid != os.getpid():
                tracked[pid] = started
                grew = True
    return tracked


def kill_owned(
    marker: str,
    tracked: dict[int, str] | None = None,
    grace: float = 4.0,
    settle: float = 30.0,
) -> list[int]:
    """Stop the marked processes and their families: SIGTERM, then SIGKILL after ``grace`` s.

    Rescans until nothing is left (a dying raylet's agents linger for a moment), for at
    most ``settle`` s. A pid is only signalled while it is the same process (start time).
    """
    tracked = {} if tracked is None else tracked
    signalled: dict[int, float] = {}
    deadline = time.monotonic() + settle
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        track(marker, tracked)
        alive = []
        for pid, started in tracked.items():
            stat = _stat(pid)
            if stat is not None and stat[0] != "Z" and stat[2] == started:
                alive.append(pid)
        quiet = 0 if alive else quiet + 1
        now = time.monotonic()
        for pid in alive:
            sig = signal.SIGTERM if pid not in signalled else signal.SIGKILL
            if sig == signal.SIGKILL and now - signalled[pid] < grace:
                continue
            signalled.setdefault(pid, now)
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        time.sleep(0.3)
    return sorted(signalled)


def reaper_main(marker: str, parent: int, temp_dir: str = "", interval: float = 1.0) -> None:
    """The watchdog ``RayNode`` starts, in a process of its own.

    Follows the node's Ray processes and stops them when told to (SIGTERM) or when the node
    process is gone, even killed with SIGKILL.
    """
    stop = False

    def on_term(signum: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the node's to handle
    tracked: dict[int, str] = {}
    while not stop and _alive(parent):
        track(marker, tracked)
        time.sleep(interval)
    kill_owned(marker, tracked)
    if temp_dir:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RayNode:
    """One ``ray start`` (head or worker) and everything it spawned, found by a marker."""

    def __init__(
        self,
        info: NodeInfo,
        *,
        port: int,
        resources: Mapping[str, float],
        env: Mapping[str, str],
        cpus: int | None = None,
        log_file: Path,
    ) -> None:
        self.info = info
        self.port = port
        self.resources = dict(resources)
        self.cpus = cpus
        self.marker = uuid.uuid4().hex
        self.env = {**env, OWNER_VAR: self.marker}
        self.log_file = log_file
        # Private and short (unix socket paths live under it).
        self.temp_dir = tempfile.mkdtemp(prefix=f"sgr{info.rank}-", dir="/tmp")
        self.reaper: subprocess.Popen[bytes] | None = None

    def _start_reaper(self) -> None:
        """A watchdog that stops this node's Ray processes even if we are SIGKILLed."""
        if self.reaper is not None:
            return
        code = (
            "import sys; from launcher.node import reaper_main; "
            "reaper_main(sys.argv[1], int(sys.argv[2]), sys.argv[3])"
        )
        self.reaper = subprocess.Popen(
            [sys.executable, "-c", code, self.marker, str(os.getpid()), self.temp_dir],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a signal to our process group is not its business
        )

    @property
    def head_address(self) -> str:
        """GCS address of the head."""
        return f"{self.info.head_ip}:{self.port}"

    def command(self) -> list[str]:
        """The ``ray start`` command line for this node."""
        cmd = [ray_binary(), "start", "--temp-dir", self.temp_dir, "--disable-usage-stats"]
        if self.info.is_head:
            host = self.info.node_ip or self.info.head_ip
            cmd += [
                "--head",
                "--port", str(self.port),
                "--include-dashboard=false",
                # Ports nobody else on the machine has (another Ray may run beside us).
                "--ray-client-server-port", str(_free_port(host)),
                "--dashboard-port", str(_free_port(host)),
            ]  # fmt: skip
        else:
            cmd += ["--address", self.head_address]
        if self.info.node_ip:
            cmd += ["--node-ip-address", self.info.node_ip]
        if self.cpus is not None:
            cmd += ["--num-cpus", str(self.cpus)]
        if self.resources:
            cmd += ["--resources", json.dumps(self.resources)]
        return cmd

    def start(self, attempts: int = 3, timeout: float = 120.0) -> None:
        """Run ``ray start`` (retried: a worker may race the head's start-up).

        Raises:
            NodeError: ``ray start`` kept failing (with its output's tail).
        """
        self._start_reaper()
        last = ""
        for attempt in range(1, attempts + 1):
            with open(self.log_file, "ab") as out:
                try:
                    proc = subprocess.run(
                        self.command(),
                        env=self.env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        timeout=timeout,
                        check=False,
                    )
                    code: int | str = proc.returncode
                except subprocess.TimeoutExpired:
                    code = f"timeout after {timeout:.0f} s"
            if code == 0:
                return
            last = _tail(self.log_file, 8)
            log.warning("ray start failed (%s), attempt %d of %d", code, attempt, attempts)
            kill_owned(self.marker, grace=3)
            time.sleep(2.0 * attempt)
        raise NodeError(f"ray start failed on rank {self.info.rank}: {last.strip()}")

    def stop(self) -> None:
        """Stop every process this node started; remove its temp dir."""
        if self.reaper is not None and self.reaper.poll() is None:
            # It has followed the family since the start: it knows the renamed agents.
            self.reaper.terminate()
            try:
                self.reaper.wait(60)
            except subprocess.TimeoutExpired:
                self.reaper.kill()
                self.reaper.wait(5)
        kill_owned(self.marker, settle=5.0)  # anything it could not have seen
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------------- the bootstrap


class _Terminated(BaseException):
    """SIGTERM from the launcher (mpirun tearing the job down): clean up, then exit."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum: int, _frame: Any) -> None:
        raise _Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ray_auth_env(env: Mapping[str, str]) -> dict[str, str]:
    """Explicit Ray auth for every node and the driver.

    With ``SIMGYM_RAY_TOKEN`` set (``simgym submit`` sets one per job): token auth with that
    token everywhere. Otherwise auth is disabled explicitly — never left to whether some
    earlier ``ray.init()`` happened to leave ``~/.ray/auth_token`` behind.
    """
    token = env.get(TOKEN_VAR, "").strip()
    if token:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    return {"RAY_AUTH_MODE": "disabled"}


def _ranks(nodes: list[dict[str, Any]]) -> set[int]:
    """The simgym ranks among Ray's ``nodes`` (by each rank's marker resource)."""
    ranks = set()
    for node in nodes:
        for key in node.get("Resources", {}):
            suffix = key.removeprefix("simgym_node_")
            if key.startswith("simgym_node_") and suffix.isdigit():
                ranks.add(int(suffix))
    return ranks


def wait_for_nodes(size: int, timeout: float, poll: float = 1.0) -> list[dict[str, Any]]:
    """Wait until ``size`` live Ray nodes (each with its rank's resource) are in the cluster.

    Raises:
        NodeError: Naming the ranks that did not join in time.
    """
    import ray

    deadline = time.monotonic() + timeout
    while True:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        ranks = _ranks(nodes)
        if len(ranks) >= size:
            return nodes
        if time.monotonic() >= deadline:
            missing = sorted(set(range(size)) - ranks)
            raise NodeError(
                f"only {len(ranks)} of {size} nodes joined the Ray cluster within "
                f"{timeout:.0f} s; missing rank(s) {', '.join(map(str, missing))} "
                "(see those ranks' logs: simgym node writes what stopped them)"
            )
        time.sleep(poll)


def tell_outcome(size: int, code: int, timeout: float = 60.0) -> list[int]:
    """From the head's driver: write the training's exit code on every other node.

    A worker node only sees the head disappear, which looks the same whether the training
    finished or failed. So before the head stops, one small task per other rank — pinned
    there by the rank's marker resource — writes ``code`` to the file that node named in
    ``SIMGYM_NODE_OUTCOME`` (Ray workers inherit their node's environment). Returns the
    ranks that could not be told in time.
    """
    import ray

    @ray.remote(num_cpus=0, max_retries=0)
    def note(value: int) -> int:
        path = os.environ[OUTCOME_VAR]
        Path(path).write_text(json.dumps({"exit_code": value}))
        return int(os.environ.get(NODE_RANK_VAR, "-1"))

    # Only ranks alive in the cluster: a task for a rank that never joined (the NodeError
    # path) or is gone could never run, and would hold this up for the whole timeout.
    alive = _ranks([n for n in ray.nodes() if n.get("Alive")])
    pending = {
        note.options(resources={f"simgym_node_{rank}": 0.001}).remote(code): rank
        for rank in range(1, size)
        if rank in alive
    }
    unreachable = {rank for rank in range(1, size) if rank not in alive}
    done, _ = (
        ray.wait(list(pending), num_returns=len(pending), timeout=timeout) if pending else ([], [])
    )
    told = set()
    for ref in done:
        with contextlib.suppress(Exception):
            ray.get(ref, timeout=1)
            told.add(pending[ref])
    return sorted((set(pending.values()) - told) | unreachable)


def read_outcome(path: Path) -> int | None:
    """The exit code the head left for this node, None if it left none."""
    try:
        return int(json.loads(path.read_text())["exit_code"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


_STARTED = time.monotonic()


_Say = Callable[[NodeInfo, str], None]


def _say(info: NodeInfo, message: str) -> None:
    elapsed = time.monotonic() - _STARTED
    print(
        f"[simgym node {info.rank}/{info.size}] {message} (+{elapsed:.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def _write_error(path: Path, info: NodeInfo, what: str, exc: BaseException) -> None:
    import traceback

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"simgym node (rank {info.rank} of {info.size}) failed while {what}: {exc}\n\n"
        "--- traceback ---\n" + "".join(traceback.format_exception(exc))
    )


class _Node:
    """One node's bootstrap, step by step; ``stage`` says what it is doing (for errors)."""

    def __init__(self, spec: TrainSpec, info: NodeInfo, out: Path, say: _Say) -> None:
        self.spec, self.info, self.out, self.say = spec, info, out, say
        self.dir = out / "nodes" / f"rank-{info.rank}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.outcome_file = (self.dir / "outcome.json").resolve()
        self.outcome_file.unlink(missing_ok=True)
        self.stage = "reading the training spec"
        self.ray_node: RayNode | None = None
        self.driver = False
        self.code = 2  # what the head tells the other ranks, unless training says otherwise

    def resources(self) -> dict[str, float]:
        """This node's Ray resources: its rank's marker and its sims' ``sim_slot``s.

        The sims themselves start with the training, through Ray (``launcher.raysims``);
        none when the user runs them (``sim.address``).
        """
        env_spec = self.spec.load_env_spec()
        launch = train_plan(self.spec, env_spec, nodes=self.info.size)
        resources: dict[str, float] = {f"simgym_node_{self.info.rank}": 1.0}
        if isinstance(launch, BonsaiPlan):
            resources[SLOT] = float(launch.copies)
        elif launch is not None:
            resources[SLOT] = float(launch.servers * launch.sessions_per_server)
        return resources

    def ray_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """The environment of this node's Ray processes (and of the head's driver)."""
        return {
            **{k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"},
            **ray_auth_env(env),
            NODE_RANK_VAR: str(self.info.rank),
            # Sim logs of a node that does not see the run folder: its own outputs/ folder
            # (on Azure ML every node uploads its own).
            LOG_DIR_VAR: str(self.dir.resolve()),
            OUTCOME_VAR: str(self.outcome_file),
        }

    def run_head(
        self,
        spec_path: str | os.PathLike[str],
        ray_env: Mapping[str, str],
        join_timeout: float,
        **train_args: Any,
    ) -> int:
        """Start the Ray head, wait for every node, train; the training's exit code."""
        assert self.ray_node is not None
        info, say = self.info, self.say
        self.stage = "starting the Ray head"
        self.ray_node.start()
        say(info, f"Ray head at {self.ray_node.head_address}; waiting for {info.size} node(s)")
        # The driver (this process) runs the learner and the local env runner.
        driver_vars = (*ray_auth_env(ray_env), NODE_RANK_VAR, LOG_DIR_VAR)
        os.environ.update({k: ray_env[k] for k in driver_vars if k in ray_env})
        import ray

        self.stage = "connecting to the Ray head"
        ray.init(
            address=self.ray_node.head_address,
            _node_ip_address=info.node_ip or info.head_ip,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
        self.driver = True
        self.stage = "waiting for the other nodes"
        nodes = wait_for_nodes(info.size, join_timeout)
        (self.out / "nodes" / "cluster.json").write_text(
            json.dumps(
                [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"],
                  "resources": n["Resources"]} for n in nodes],
                indent=2,
            )
        )  # fmt: skip
        say(info, f"all {info.size} node(s) joined; training")
        self.stage = "training"
        try:
            run_dir, state = train(spec_path, ray_address=self.ray_node.head_address, **train_args)
        except TrainingError as exc:
            say(info, f"training failed: {exc}")
            self.code = 1
            return self.code
        say(info, f"training finished: {state.stop_reason} (run folder {run_dir})")
        self.code = 0
        return self.code

    def serve(self, ray_port: int, join_timeout: float) -> int:
        """Join the head's cluster and serve until the head is gone; the exit code it told."""
        assert self.ray_node is not None
        info, say = self.info, self.say
        self.stage = "waiting for the Ray head"
        deadline = time.monotonic() + join_timeout
        while not _port_open(info.head_ip, ray_port):
            if time.monotonic() >= deadline:
                raise NodeError(
                    f"the Ray head {self.ray_node.head_address} did not come up within "
                    f"{join_timeout:.0f} s (see rank 0's log)"
                )
            time.sleep(1.0)
        self.stage = "joining the Ray cluster"
        self.ray_node.start()
        say(info, f"joined the Ray cluster at {self.ray_node.head_address}")
        self.stage = "serving (waiting for the head to finish)"
        misses = 0
        while misses < 3:
            time.sleep(1.0)
            misses = 0 if _port_open(info.head_ip, ray_port) else misses + 1
        told = read_outcome(self.outcome_file)
        if told is None:
            say(info, "the head is gone without telling how the training ended: failing")
            return 1
        say(info, f"the head is gone (training exit code {told}): shutting down")
        return told

    def stop(self) -> None:
        """Tell the other ranks the outcome (head), then stop Ray and the sims."""
        if self.driver:
            import ray

            if self.info.size > 1:
                try:
                    untold = tell_outcome(self.info.size, self.code)
                except Exception as exc:  # the others then fail for want of news: safe
                    untold = [-1]
                    log.warning("telling the other nodes the outcome: %s", exc)
                if untold:
                    self.say(
                        self.info, f"could not tell rank(s) {untold} the outcome (they will fail)"
                    )
            with contextlib.suppress(Exception):
                ray.shutdown()
        if self.ray_node is not None:
            self.ray_node.stop()


def run_node(
    spec_path: str | os.PathLike[str],
    *,
    output: str | None = None,
    experiment: str | None = None,
    max_time: float | None = None,
    ray_port: int = DEFAULT_RAY_PORT,
    join_timeout: float = 600.0,
    cpus: int | None = None,
    env: Mapping[str, str] | None = None,
    say: _Say = _say,
) -> int:
    """Run this node's part of a multi-node training; returns the process exit code.

    0: training finished; 1: training failed (``error.txt`` in the run folder); 2: a setup
    problem (sims, Ray, nodes not joining), written to ``<output>/error.txt`` (rank 0) or
    ``<output>/nodes/rank-R/error.txt``. The other ranks exit with the code the head tells
    them before it stops (see ``tell_outcome``), and 1 when the head vanishes untold.
    """
    env = dict(os.environ if env is None else env)
    info = node_info(env)
    spec = load_train_spec(spec_path)
    out = Path(output or spec.output)
    node = _Node(spec, info, out, say)
    error_file = (out if info.is_head else node.dir) / "error.txt"
    say(info, f"head {info.head} (from {info.head_source}), this node's Ray at "
        f"{info.node_ip or 'auto'}")  # fmt: skip
    try:
        with _sigterm_raises():
            resources = node.resources()
            ray_env = node.ray_env(env)
            node.ray_node = RayNode(
                info, port=ray_port, resources=resources, env=ray_env, cpus=cpus,
                log_file=node.dir / "ray-start.log",
            )  # fmt: skip
            if not info.is_head:
                return node.serve(ray_port, join_timeout)
            overrides: dict[str, Any] = {"output": str(out / "runs")}
            if experiment:
                overrides["experiment"] = experiment
            return node.run_head(
                spec_path, ray_env, join_timeout, max_time=max_time,
                overrides=overrides, sim_nodes=info.size,
                env_runner_resources={SLOT: float(spec.resources.envs_per_runner)}
                if SLOT in resources else None,
            )  # fmt: skip
    except _Terminated:
        say(info, f"terminated while {node.stage}: shutting down")
        return 143
    except Exception as exc:
        what = str(exc) if isinstance(exc, SimgymError) else f"{type(exc).__name__}: {exc}"
        say(info, f"error while {node.stage}: {what}")
        _write_error(error_file, info, node.stage, exc)
        return 2
    finally:
        node.stop()


def new_ray_token() -> str:
    """A fresh shared token for a job's Ray cluster."""
    return secrets.token_hex(32)
