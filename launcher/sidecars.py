"""Sidecar sim servers: started on loopback, supervised, restarted with a budget.

Each server listens on a unix socket in its own private folder (or a loopback
TCP port chosen by the OS), so several trainings on one machine never collide.
A server that dies is restarted on the same address after a back-off (doubling
per restart of that server) until its restart budget is used up; clients see
their episode end as truncated and reconnect at the next reset.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.trainspec import Launch
from simserver.process import ServerProcess, ServerStartError

log = logging.getLogger("simgym.sidecars")

# What a dying sim server writes last: simserver's own error line, a Python exception
# (``Traceback``, ``ZeroDivisionError: ...``), an ERROR/CRITICAL log record, or a fatal
# message of a native library. Whole words only: the server's normal shutdown line,
# ``stopped (... 0 sim errors)``, is no error.
_ERROR_WORDS = re.compile(
    r"\b(error|exception|fatal|traceback|raised|abort(ed|ing)?|killed|panic"
    r"|segmentation fault|core dumped|critical)\b",
    re.IGNORECASE,
)
_EXCEPTION_NAME = re.compile(r"\w(Error|Exception)\b")  # ZeroDivisionError, MyException
# simserver's records at INFO and below ("<date> <time> INFO simserver.x: ..."): never errors.
_QUIET_RECORD = re.compile(r"^\S+ \S+ (DEBUG|INFO) \S+: ")


def log_error_line(text: str) -> str:
    """The line of a server log that says what went wrong (its last error-looking line).

    ``simserver: error: BadCtor() raised RuntimeError: cannot find license server`` becomes
    ``BadCtor() raised RuntimeError: cannot find license server``. Empty when nothing in
    ``text`` looks like an error (INFO records never do, whatever words they contain).
    """
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line or _QUIET_RECORD.match(line):
            continue
        if _ERROR_WORDS.search(line) or _EXCEPTION_NAME.search(line):
            return line.removeprefix("simserver: error: ")
    return ""


class SidecarStartError(ServerStartError):
    """A sidecar did not start; the first line says why, in the sim's own words.

    Attributes:
        server: Index of the server in the pool.
        log_file: Its log.
        error_line: The log's error line (empty if the log has none).
        status: How it ended (``exited with code 3``, ``did not start within 120 s``).
    """

    def __init__(
        self, message: str, *, server: int, log_file: Path, error_line: str, status: str
    ) -> None:
        super().__init__(message)
        self.server, self.log_file, self.error_line = server, log_file, error_line
        self.status = status


@dataclass
class SidecarEvent:
    """A restart or a give-up, for logs and metrics."""

    server: int
    kind: str  # "restarted" | "restart_failed" | "gave_up"
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
        self._log_start = [0] * launch.servers
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
            SidecarStartError: A server did not start. Its first line names the sim and
                quotes the server log's error line (e.g. the exception the sim's constructor
                raised); the log's tail follows.
        """
        for i, server in enumerate(self.servers):
            try:
                self._start(i, timeout)
            except ServerStartError as exc:
                self.stop()
                tail = self._log_since_start(i, 40)
                line = log_error_line(tail)
                status = exc.status
                reason = f": {line}" if line else ""
                raise SidecarStartError(
                    f"sim server {i} ({self.launch.target}) failed to start{reason} "
                    f"({status}; log: {server.log_file})\n{tail}",
                    server=i,
                    log_file=server.log_file,
                    error_line=line,
                    status=status,
                ) from None
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

    def _died(self, i: int, server: ServerProcess) -> str:
        """``sim server 0 (toy.py:Toy at unix:...) exited (code -9)[: <its log's error>]``."""
        code = server.proc.returncode if server.proc else None
        line = log_error_line(self._log_since_start(i))
        reason = f"; its log's last error: {line}" if line else ""
        where = f"{self.launch.target} at {server.address}"
        return f"sim server {i} ({where}) exited (code {code}){reason}"

    def _start(self, i: int, timeout: float) -> None:
        # Restarts append to the same log: remember where this life's part begins, so an
        # error quoted for a death is this life's, not an earlier one's.
        try:
            self._log_start[i] = self.servers[i].log_file.stat().st_size
        except OSError:
            self._log_start[i] = 0
        self.servers[i].start(timeout=timeout)

    def _log_since_start(self, i: int, limit: int = 20) -> str:
        try:
            with open(self.servers[i].log_file, "rb") as f:
                f.seek(self._log_start[i])
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-limit:])

    def _event(self, i: int, kind: str, detail: str) -> None:
        # Logged (the run's train.log) and kept: the trainer reports new events as they
        # come and counts restarts as the sim_restarts metric.
        (log.error if kind != "restarted" else log.warning)("sidecar %s: %s", kind, detail)
        self.events.append(SidecarEvent(i, kind, detail))

    def _restart(self, i: int, server: ServerProcess) -> None:
        if self.restarts[i] >= self.launch.max_restarts:
            if not any(e.server == i and e.kind == "gave_up" for e in self.events):
                budget = self.launch.max_restarts
                self._event(
                    i,
                    "gave_up",
                    f"{self._died(i, server)}; its restart budget ({budget}) is used up",
                )
            return
        died = self._died(i, server)
        delay = self.launch.restart_backoff * (2 ** self.restarts[i])
        if self._stop.wait(delay):
            return
        with self._lock:
            self.restarts[i] += 1
            n = self.restarts[i]
            try:
                self._start(i, 120)
            except ServerStartError as exc:
                line = log_error_line(self._log_since_start(i)) or str(exc).splitlines()[0]
                self._event(i, "restart_failed", f"{died}; restart {n} failed: {line}")
                return
        budget = self.launch.max_restarts
        self._event(i, "restarted", f"{died}; restarted (restart {n} of {budget})")

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
