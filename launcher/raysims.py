"""Sims placed by Ray: one supervising actor per Ray node owns that node's sim servers.

``simgym train --address <cluster>`` (and ``simgym node``, which only starts Ray) runs its
sims through Ray, so they sit next to every env runner on any Ray cluster — started by
hand, KubeRay, Azure ML — without the driver's machine having to be reachable over a
unix socket:

* The driver starts a **registry** actor (``num_cpus=0``, named ``simgym-sims`` in a
  namespace of the run). It owns one **host** actor per Ray node (``num_cpus=0``, hard node
  affinity, named ``simgym-sims-<node id>``), which starts that node's sims as a
  ``SidecarPool`` (restarts, health checks, logs) and checks them (preflight).
* An env runner looks up the host of the node it runs on (its runtime context's node id);
  on a node that has none yet — a node that joined later — it asks the registry, which
  creates it. Either way it steps only its own node's sims.
* Ownership does the cleaning up: hosts are owned by the registry and the registry by the
  driver, so when the driver ends (even SIGKILLed) Ray ends them, and each sim server
  exits with its host (simserver's ``--parent-pid`` watch).
* The driver polls the hosts about once a second: their restart events reach ``train.log``
  and the progress table as a local pool's do, and the env runners' placements go to
  ``placement.jsonl`` in the run folder.

Logs: a host writes its sims' logs under the run folder (``sims/<node ip>-<node id>/``)
when its node sees the run folder (a shared or the same file system: checked with a token
file the driver writes there), else in a node-local folder (``$SIMGYM_NODE_LOG_DIR/sims``,
set by ``simgym node``; else ``<tmp>/simgym-<run>/``), whose path every event and
placement record names, with the log's tail on a failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gymclient.errors import SimgymError
from gymclient.spec import EnvSpec
from launcher.bonsai_sims import BonsaiPlan
from launcher.placement import HOST_PREFIX
from launcher.sidecars import SidecarEvent, SidecarPool
from launcher.sims import SimPlan, preflight, start_sims

log = logging.getLogger("simgym.sidecars")

REGISTRY = "simgym-sims"  # the registry actor's name (in the run's namespace)
LOG_DIR_VAR = "SIMGYM_NODE_LOG_DIR"  # a node-local folder for sim logs (simgym node sets it)
TOKEN_FILE = ".run-token"  # in <run>/sims/: a host that reads the run's token shares the folder
PLACEMENT_FILE = "placement.jsonl"  # in the run folder: one line per env runner and per host


@dataclass(frozen=True)
class HostJob:
    """What every node's host starts and checks (sent to the actors, so picklable)."""

    env_spec: EnvSpec  # for the sims' workdir and the preflight
    plan: SimPlan
    run_dir: str
    run_token: str
    seed: int | None


def _node_label(node_id: str, ip: str) -> str:
    """``10.0.0.5-3f2a1b9c``: readable, and unique even for two Ray nodes on one address."""
    return f"{ip}-{node_id[:8]}"


def _log_dir(job: HostJob, label: str) -> tuple[Path, bool]:
    """Where this node's sim logs go, and whether that is the run folder."""
    sims = Path(job.run_dir) / "sims"
    try:
        shared = (sims / TOKEN_FILE).read_text().strip() == job.run_token
    except OSError:
        shared = False
    if shared:
        return sims / label, True
    base = os.environ.get(LOG_DIR_VAR)
    if base:
        return Path(base) / "sims" / label, False
    return Path(tempfile.gettempdir()) / f"simgym-{Path(job.run_dir).name}" / label, False


class _Records(logging.Handler):
    """Keeps the pool's warnings and errors (restarts with their log tails) for the driver."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(record.getMessage())


class SimHost:
    """One node's sims (the body of a Ray actor: ``ray.remote`` wraps it at run time).

    Starts in its constructor (Ray queues every call until it has finished); a start that
    fails is kept as ``error``, not raised, so that every caller gets the same diagnosis.
    """

    def __init__(self, job: HostJob) -> None:
        import ray

        self.node_id = ray.get_runtime_context().get_node_id()
        self.ip = ray.util.get_node_ip_address()
        self.label = _node_label(self.node_id, self.ip)
        self.log_dir, self.shared = _log_dir(job, self.label)
        self.pool: SidecarPool | None = None
        self.error = ""
        self.addresses: list[str] = []
        self.token = job.plan.token if isinstance(job.plan, BonsaiPlan) else None
        self.records = _Records()
        logging.getLogger("simgym.sidecars").addHandler(self.records)
        try:
            self.pool = start_sims(job.env_spec, job.plan, self.log_dir)
            self.addresses = self.pool.addresses
            env_spec = job.env_spec
            if isinstance(job.plan, BonsaiPlan):
                env_spec = job.plan.connect_spec(env_spec)
            preflight(env_spec, self.addresses, job.seed)
        except Exception as exc:  # reported to every caller (see ready)
            self.error = str(exc) or type(exc).__name__
            if self.pool is not None:
                self.pool.stop()
                self.pool = None

    def ready(self) -> dict[str, Any]:
        """The node's sims: addresses (empty if they failed), token, logs, and ``error``."""
        return {
            "node_id": self.node_id,
            "node_ip": self.ip,
            "label": self.label,
            "host": socket.gethostname(),
            "addresses": self.addresses,
            "token": self.token,
            "log_dir": str(self.log_dir),
            "shared": self.shared,
            "error": self.error,
        }

    def status(self, seen_events: int, seen_lines: int) -> dict[str, Any]:
        """Events and log lines after the ones the driver has seen; the restarts so far."""
        pool = self.pool
        events = [] if pool is None else list(pool.events[seen_events:])
        return {
            "events": [(e.server, e.kind, e.detail, e.time) for e in events],
            "lines": self.records.lines[seen_lines:],
            "restarts": 0 if pool is None else pool.total_restarts,
        }

    def stop(self) -> None:
        """Stop the sims (the actor ends with its owner, the registry)."""
        if self.pool is not None:
            self.pool.stop()
            self.pool = None


class SimRegistry:
    """The run's hosts, one per node, created on demand (the body of a Ray actor).

    One call at a time (a plain actor): two env runners arriving on a new node at once get
    the same host.
    """

    def __init__(self, job: HostJob, namespace: str) -> None:
        self.job, self.namespace = job, namespace
        self.hosts: dict[str, Any] = {}
        self.placements: list[dict[str, Any]] = []

    def ensure(self, node_id: str) -> Any:
        """The host of ``node_id`` (created if it has none), without waiting for its sims."""
        if node_id not in self.hosts:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            host = ray.remote(SimHost).options(
                name=HOST_PREFIX + node_id,
                namespace=self.namespace,
                num_cpus=0,
                # Threads: status() answers while a restart is under way.
                max_concurrency=4,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            )
            self.hosts[node_id] = host.remote(self.job)
        return self.hosts[node_id]

    def all_hosts(self) -> dict[str, Any]:
        """Every host created so far, by node id."""
        return dict(self.hosts)

    def placed(self, record: dict[str, Any]) -> None:
        """An env runner says where it runs and which sims it steps."""
        self.placements.append(record)

    def placements_since(self, seen: int) -> list[dict[str, Any]]:
        """The placements after the first ``seen``."""
        return self.placements[seen:]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every host's sims."""
        import ray

        refs = [h.stop.remote() for h in self.hosts.values()]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout)


@dataclass
class _HostView:
    """What the driver knows of one host."""

    handle: Any
    info: dict[str, Any] | None = None
    events: int = 0
    lines: int = 0
    restarts: int = 0
    down: bool = False
    asked: Any = None  # a pending ready() call


class RaySims:
    """The driver's side: starts the registry, watches every host, looks like a ``SidecarPool``.

    ``events``, ``failed()``, ``total_restarts``, ``servers`` and ``stop()`` are what the
    trainer and ``error.txt`` read of a pool; ``locator`` goes to the env runners.
    """

    def __init__(self, env_spec: EnvSpec, plan: SimPlan, run_dir: Path, seed: int | None) -> None:
        self.run_dir = run_dir.resolve()
        token = secrets.token_hex(16)
        sims = self.run_dir / "sims"
        sims.mkdir(parents=True, exist_ok=True)
        (sims / TOKEN_FILE).write_text(token)
        self.namespace = f"simgym-{run_dir.name}-{token[:8]}"
        self.job = HostJob(env_spec, plan, str(self.run_dir), token, seed)
        self.events: list[SidecarEvent] = []
        self.servers: list[Any] = []  # no local processes: their log tails come as events
        self.registry: Any = None
        self._hosts: dict[str, _HostView] = {}
        self._placements = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def locator(self) -> dict[str, str]:
        """How an env runner finds its node's host (``env_config["ray_sims"]``)."""
        return {"namespace": self.namespace, "registry": REGISTRY}

    @property
    def total_restarts(self) -> int:
        """Sim server restarts so far, on every node."""
        return sum(h.restarts for h in self._hosts.values())

    def failed(self) -> list[SidecarEvent]:
        """Servers (or a node's sims as a whole) down for good."""
        return [e for e in self.events if e.kind == "gave_up"]

    def start(self, timeout: float = 600.0) -> list[str]:
        """Start the registry and this node's host; this node's sim addresses once they serve.

        Raises:
            SimgymError: This node's sims did not start or failed the preflight (the
                message is the host's: which sim, its error, its log).
        """
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_id = ray.get_runtime_context().get_node_id()
        self.registry = (
            ray.remote(SimRegistry)
            .options(
                name=REGISTRY,
                namespace=self.namespace,
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=True),
            )
            .remote(self.job, self.namespace)
        )
        host = ray.get(self.registry.ensure.remote(node_id))
        info = ray.get(host.ready.remote(), timeout=timeout)
        self._hosts[node_id] = _HostView(host, info)
        self._note_host(info)
        if info["error"]:
            # train.log keeps the whole report (the server log's tail); the user gets one line.
            log.error("sims on Ray node %s failed to start: %s", info["label"], info["error"])
            raise SimgymError(info["error"].splitlines()[0])
        log.info("sims on Ray node %s: %s (logs: %s)", info["label"],
                 ", ".join(info["addresses"]), info["log_dir"])  # fmt: skip
        self._thread = threading.Thread(target=self._watch, name="simgym-raysims", daemon=True)
        self._thread.start()
        return list(info["addresses"])

    def _note_host(self, info: dict[str, Any]) -> None:
        """A placement line for a host that came up (or failed)."""
        self._append({"kind": "host", **{k: v for k, v in info.items() if k != "token"}})

    def _append(self, record: dict[str, Any]) -> None:
        with contextlib.suppress(OSError), open(self.run_dir / PLACEMENT_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.poll()
            except Exception as exc:  # the watcher must outlive a slow or restarting cluster
                log.debug("watching the sims: %s", exc)

    def poll(self, timeout: float = 5.0) -> None:
        """One look at the registry and every host: new hosts, events, placements."""
        import ray

        with self._lock:
            hosts = ray.get(self.registry.all_hosts.remote(), timeout=timeout)
            for node_id, handle in hosts.items():
                self._hosts.setdefault(node_id, _HostView(handle))
            for record in ray.get(
                self.registry.placements_since.remote(self._placements), timeout=timeout
            ):
                self._placements += 1
                self._append({"kind": "env_runner", **record})
            for view in self._hosts.values():
                if not view.down:
                    self._poll_host(view, timeout)

    def refresh(self) -> None:
        """A look now, best effort (before ``error.txt`` is written: a node's latest news)."""
        if self.registry is not None:
            with contextlib.suppress(Exception):
                self.poll(timeout=2.0)

    def _poll_host(self, view: _HostView, timeout: float) -> None:
        import ray

        if view.info is None:  # a host that came up since: is it ready yet?
            if view.asked is None:
                view.asked = view.handle.ready.remote()
            ready, _ = ray.wait([view.asked], timeout=0.2)
            if not ready:
                return
            view.info = self._get(view, view.asked, timeout)
            if view.info is None:
                return
            self._note_host(view.info)
            label = view.info["label"]
            if view.info["error"]:
                error, logs = view.info["error"], view.info["log_dir"]
                self._down(
                    view,
                    f"the sims on Ray node {label} failed to start: {error.splitlines()[0]} "
                    f"(logs: {logs})",
                    "\n".join(error.splitlines()[1:]),
                )
                return
            log.info("sims on Ray node %s: %s (logs: %s)", label,
                     ", ".join(view.info["addresses"]), view.info["log_dir"])  # fmt: skip
        status = self._get(view, view.handle.status.remote(view.events, view.lines), timeout)
        if status is None:
            return
        label = view.info["label"]
        for line in status["lines"]:
            log.warning("Ray node %s: %s", label, line)
        for server, kind, detail, when in status["events"]:
            self.events.append(SidecarEvent(server, kind, f"{detail} on Ray node {label}", when))
        view.events += len(status["events"])
        view.lines += len(status["lines"])
        view.restarts = status["restarts"]

    def _get(self, view: _HostView, ref: Any, timeout: float) -> Any:
        """An answer of a host; a host that died is a node's sims down for good."""
        import ray

        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            return None
        except ray.exceptions.RayActorError as exc:
            label = view.info["label"] if view.info else "?"
            self._down(view, f"the sims' supervisor on Ray node {label} died: "
                       f"{str(exc).splitlines()[0]}")  # fmt: skip
            return None

    def _down(self, view: _HostView, detail: str, tail: str = "") -> None:
        view.down = True
        # The node's log may be out of the driver's reach: its tail goes to train.log.
        more = f"\n  last lines of its log:\n{tail}" if tail else ""
        log.error("sidecar gave_up: %s%s", detail, more)
        self.events.append(SidecarEvent(-1, "gave_up", detail))

    def stop(self) -> None:
        """A last look (placements, events), then stop every node's sims and the registry."""
        import ray

        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.registry is None:
            return
        self.refresh()
        with contextlib.suppress(Exception):
            ray.get(self.registry.stop.remote(), timeout=40)
        with contextlib.suppress(Exception):
            ray.kill(self.registry)  # its hosts go with it (it owns them)
        self.registry = None
