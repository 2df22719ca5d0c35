"""Sidecar sim servers: started on loopback, supervised, restarted with a budget.

Each server listens on a unix socket in its own private folder (or a loopback
TCP port chosen by the OS), so several trainings on one machine never collide.
A server that dies is restarted on the same address after a back-off (doubling
per restart of that server) until its restart budget is used up; clients see
their episode end as truncated and reconnect at the next reset.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.trainspec import Launch
from simserver.process import ServerProcess, ServerStartError

log = logging.getLogger("simgym.sidecars")


@dataclass
class SidecarEvent:
    """A restart or a give-up, for logs and metrics."""

    server: int
    kind: str  # "restarted" | "gave_up"
    detail: str
    time: float = field(default_factory=time.time)


class SidecarPool:
    """Starts and supervises ``launch.servers`` simserver processes.

    Args:
        launch: What to start and the restart policy.
        workdir: Folder the servers run from (the env spec's folder).
        log_dir: One log file per server goes here.
        lease_seconds: Idle lease of sessions (frees sessions of vanished workers).
    """

    def __init__(
        self, launch: Launch, workdir: Path, log_dir: Path, *, lease_seconds: float = 120.0
    ) -> None:
        self.launch = launch
        self.workdir = workdir
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        # Headroom over the planned sessions: a reconnecting client opens a new session
        # before the server reaps the old one.
        max_sessions = launch.sessions_per_server * 2 + 4
        args = ["--max-sessions", str(max_sessions), "--lease", str(lease_seconds)]
        assert launch.target is not None
        self.servers = [
            ServerProcess(
                launch.target,
                kwargs=launch.kwargs or {},
                workdir=workdir,
                transport=launch.transport,
                args=args,
                log_file=log_dir / f"server-{i}.log",
            )
            for i in range(launch.servers)
        ]
        self.restarts = [0] * launch.servers
        self.events: list[SidecarEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def addresses(self) -> list[str]:
        """Every server's address, in server order."""
        return [s.address or "" for s in self.servers]

    @property
    def total_restarts(self) -> int:
        """Restarts so far over all servers."""
        return sum(self.restarts)

    def start(self, timeout: float = 120.0) -> list[str]:
        """Start every server and wait until all serve.

        Raises:
            ServerStartError: A server did not start (the message has its log's tail).
        """
        try:
            for server in self.servers:
                server.start(timeout=timeout)
        except ServerStartError:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._supervise, name="simgym-sidecars", daemon=True)
        self._thread.start()
        log.info("started %d sim server(s): %s", len(self.servers), ", ".join(self.addresses))
        return self.addresses

    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            for i, server in enumerate(self.servers):
                if server.alive or self._stop.is_set():
                    continue
                self._restart(i, server)

    def _restart(self, i: int, server: ServerProcess) -> None:
        code = server.proc.returncode if server.proc else None
        if self.restarts[i] >= self.launch.max_restarts:
            if not any(e.server == i and e.kind == "gave_up" for e in self.events):
                budget = self.launch.max_restarts
                detail = f"server {i} exited ({code}) and its restart budget ({budget}) is used up"
                log.error(detail)
                self.events.append(SidecarEvent(i, "gave_up", detail))
            return
        delay = self.launch.restart_backoff * (2 ** self.restarts[i])
        if self._stop.wait(delay):
            return
        with self._lock:
            self.restarts[i] += 1
            try:
                server.start(timeout=120)
            except ServerStartError as exc:
                log.error("restarting server %d failed: %s", i, exc)
                return
        n = self.restarts[i]
        detail = f"server {i} exited ({code}); restarted at {server.address} (restart {n})"
        log.warning(detail)
        self.events.append(SidecarEvent(i, "restarted", detail))

    def failed(self) -> list[SidecarEvent]:
        """Servers that are down for good."""
        return [e for e in self.events if e.kind == "gave_up"]

    def stop(self) -> None:
        """Stop supervising and stop every server."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for server in self.servers:
            server.cleanup()

    def __enter__(self) -> SidecarPool:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
