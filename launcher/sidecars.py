"""Sidecar sim servers: started on loopback, supervised, restarted with a budget.

Each server listens on a unix socket in its own private folder (or a loopback
TCP port chosen by the OS), so several trainings on one machine never collide.
A server that dies is restarted on the same address after a back-off (doubling
per restart of that server) until its restart budget is used up; clients see
their episode end as truncated and reconnect at the next reset. A server that
still runs but stops answering its health checks (a sim wedged it, or it says
NOT_SERVING) is killed and restarted the same way, against the same budget.

A pool supervises any child processes with ``ServerProcess``'s handles (``Member``): the
sim servers a ``Launch`` plans, or a Bonsai endpoint and the sim copies that connect to it
(``launcher.bonsai_sims``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launcher.simcommand import CommandServer
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
QUIET_RECORD = re.compile(r"^\S+ \S+ (DEBUG|INFO) \S+: ")


def log_error_line(text: str) -> str:
    """The line of a server log that says what went wrong (its last error-looking line).

    ``simserver: error: BadCtor() raised RuntimeError: cannot find license server`` becomes
    ``BadCtor() raised RuntimeError: cannot find license server``. Empty when nothing in
    ``text`` looks like an error (INFO records never do, whatever words they contain).
    """
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line or QUIET_RECORD.match(line):
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


@dataclass(frozen=True)
class Member:
    """One process of a pool, and how the pool's messages name it.

    Attributes:
        process: The child process (a ``ServerProcess`` or one with its handles).
        name: ``sim server 0``, ``bonsai sim 3``.
        what: What it runs: ``toy.py:Toy``, ``python main.py``.
        serves: A gRPC sim server: its address is one of the pool's, and it is health-checked.
    """

    process: ServerProcess
    name: str
    what: str
    serves: bool = True


def launch_members(
    launch: Launch, workdir: Path, log_dir: Path, lease_seconds: float = 120.0
) -> list[Member]:
    """The ``launch.servers`` simserver processes a ``Launch`` plans, one log each."""
    # Headroom over the planned sessions: a reconnecting client opens a new session
    # before the server reaps the old one.
    max_sessions = launch.sessions_per_server * 2 + 4
    args = ["--max-sessions", str(max_sessions), "--lease", str(lease_seconds)]
    if launch.command is not None:
        return command_members(launch, log_dir, args)
    if launch.isolate is not None:
        args += ["--isolate", launch.isolate]
    if launch.max_sim_rss is not None:
        args += ["--max-sim-rss", f"{launch.max_sim_rss:g}"]
    if launch.shape:
        args += ["--shape", launch.shape]
    assert launch.target is not None
    return [
        Member(
            ServerProcess(
                launch.target,
                kwargs=launch.kwargs or {},
                workdir=workdir,
                transport=launch.transport,
                args=args,
                log_file=log_dir / f"server-{i}.log",
            ),
            f"sim server {i}",
            launch.target,
        )
        for i in range(launch.servers)
    ]


def command_members(launch: Launch, log_dir: Path, args: list[str]) -> list[Member]:
    """``launch.servers`` copies of ``launch.command`` (with simserver's flags and ``args``)."""
    assert launch.command is not None
    what = " ".join(launch.command)
    return [
        Member(
            CommandServer(
                launch.command,
                cwd=launch.cwd or ".",
                transport=launch.transport,
                args=args,
                log_file=log_dir / f"server-{i}.log",
            ),
            f"sim server {i}",
            what,
        )
        for i in range(launch.servers)
    ]


class SidecarPool:
    """Starts and supervises ``launch.servers`` simserver processes (or the given ``members``).

    Args:
        launch: What to start and the restart policy (``max_restarts`` per member,
            ``restart_backoff``, ``health_*``).
        workdir: Folder the servers run from (the env spec's folder).
        log_dir: One log file per server goes here.
        lease_seconds: Idle lease of sessions (frees sessions of vanished workers).
        members: The processes to supervise instead of ``launch``'s servers.
        ready: Called once every member has started, before supervision begins, with the
            start timeout: waits for what the members need of each other (raises
            ``SidecarStartError``).
    """

    def __init__(
        self,
        launch: Launch,
        workdir: Path,
        log_dir: Path,
        *,
        lease_seconds: float = 120.0,
        members: Sequence[Member] | None = None,
        ready: Callable[[float], None] | None = None,
    ) -> None:
        self.launch = launch
        self.workdir = workdir
        log_dir.mkdir(parents=True, exist_ok=True)
        if members is None:
            members = launch_members(launch, workdir, log_dir, lease_seconds)
        self.members = list(members)
        self.servers = [m.process for m in self.members]
        self._ready = ready
        n = len(self.members)
        self.restarts = [0] * n
        # Health checks failed in a row, per server, and each server's health channel.
        self._unhealthy = [0] * n
        self._channels: list[grpc.Channel | None] = [None] * n
        self._log_start = [0] * n
        # Members that are down and wait out their back-off: when, why, their log's tail.
        self._pending: dict[int, tuple[float, str, str]] = {}
        self.events: list[SidecarEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def addresses(self) -> list[str]:
        """Every sim server's address, in server order."""
        return [m.process.address or "" for m in self.members if m.serves]

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
        for i, member in enumerate(self.members):
            try:
                self._start(i, timeout)
            except ServerStartError as exc:
                self.stop()
                tail = self._log_since_start(i, 40)
                line = log_error_line(tail)
                status = exc.status
                reason = f": {line}" if line else ""
                raise SidecarStartError(
                    f"{member.name} ({member.what}) failed to start{reason} "
                    f"({status}; log: {member.process.log_file})\n{tail}",
                    server=i,
                    log_file=member.process.log_file,
                    error_line=line,
                    status=status,
                ) from None
        if self._ready is not None:
            try:
                self._ready(timeout)
            except ServerStartError:
                self.stop()
                raise
        self._thread = threading.Thread(target=self._supervise, name="simgym-sidecars", daemon=True)
        self._thread.start()
        log.info("started %d sim server(s): %s", len(self.addresses), ", ".join(self.addresses))
        return self.addresses

    def _supervise(self) -> None:
        every = self.launch.health_every
        next_probe = time.monotonic() + every
        while not self._stop.wait(0.5):
            try:
                for i, server in enumerate(self.servers):
                    if self._stop.is_set():
                        break
                    if i not in self._pending and not server.alive:
                        self._schedule(i, self._died(i))
                    if i in self._pending:
                        self._restart_when_due(i)
                if every and time.monotonic() >= next_probe and not self._stop.is_set():
                    self._probe()
                    next_probe = time.monotonic() + every
            except Exception:  # the supervisor must outlive any one server's trouble
                log.exception("sidecar supervisor")

    def _probe(self) -> None:
        """One health check of every running server, concurrently; restart the wedged ones.

        A server that fails ``health_failures`` checks in a row (no answer within
        ``health_timeout``, or NOT_SERVING) is killed, its sims with it, and restarted.
        """
        launch = self.launch
        pending: list[tuple[int, Any]] = []
        for i, server in enumerate(self.servers):
            if not self.members[i].serves or not server.alive or not server.address:
                continue
            channel = self._channels[i]
            if channel is None:
                channel = self._channels[i] = grpc.insecure_channel(server.address)
            stub = health_pb2_grpc.HealthStub(channel)
            check = stub.Check.future(
                health_pb2.HealthCheckRequest(), timeout=launch.health_timeout
            )
            pending.append((i, check))
        for i, check in pending:
            try:
                status = check.result().status
                serving = status == health_pb2.HealthCheckResponse.SERVING
                problem = (
                    "" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                )
            except grpc.RpcError as exc:
                problem = exc.code().name if exc.code() else "no answer"
            self._unhealthy[i] = self._unhealthy[i] + 1 if problem else 0
            if self._unhealthy[i] >= launch.health_failures and not self._stop.is_set():
                why = self._wedged(i, problem)
                self.servers[i].kill()
                self._schedule(i, why)

    def _where(self, i: int) -> str:
        """``sim server 0 (toy.py:Toy at unix:...)``; ``bonsai sim 2 (python main.py)``."""
        member = self.members[i]
        at = f" at {member.process.address}" if member.process.address else ""
        return f"{member.name} ({member.what}{at})"

    def _wedged(self, i: int, problem: str) -> str:
        """``sim server 0 (toy.py:Toy at unix:...) stopped answering health checks (...); killed``.

        Or ``said NOT_SERVING to 3 health checks in a row``: up, but unable to serve.
        """
        launch = self.launch
        line = log_error_line(self._log_since_start(i))
        reason = f"; its log's last error: {line}" if line else ""
        n = self._unhealthy[i]
        how = (
            f"said NOT_SERVING to {n} health checks in a row"
            if problem == "NOT_SERVING"
            else f"stopped answering health checks ({n} in a row, {launch.health_timeout:g} s "
            f"deadline: {problem})"
        )
        return f"{self._where(i)} {how}; killed{reason}"

    def _died(self, i: int) -> str:
        """``sim server 0 (toy.py:Toy at unix:...) exited (code -9)[: <its log's error>]``."""
        server = self.servers[i]
        code = server.proc.returncode if server.proc else None
        line = log_error_line(self._log_since_start(i))
        reason = f"; its log's last error: {line}" if line else ""
        return f"{self._where(i)} exited (code {code}){reason}"

    def _start(self, i: int, timeout: float) -> None:
        # Restarts append to the same log: remember where this life's part begins, so an
        # error quoted for a death is this life's, not an earlier one's.
        try:
            self._log_start[i] = self.servers[i].log_file.stat().st_size
        except OSError:
            self._log_start[i] = 0
        # A fresh health channel per life: an old one may sit in its reconnect back-off.
        channel, self._channels[i] = self._channels[i], None
        if channel is not None:
            channel.close()
        self._unhealthy[i] = 0
        self.servers[i].start(timeout=timeout)

    def _log_since_start(self, i: int, limit: int = 20) -> str:
        try:
            with open(self.servers[i].log_file, "rb") as f:
                # A capped log that rotated since this life began starts over (logpump).
                f.seek(self._log_start[i] if self._log_start[i] <= f.seek(0, 2) else 0)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-limit:])

    def _event(self, i: int, kind: str, detail: str, tail: str | None = None) -> None:
        # Logged (the run's train.log, with the tail of the log of the life that ended) and
        # kept: the trainer reports new events as they come and counts restarts as the
        # sim_restarts metric.
        tail = self._log_since_start(i, 10) if tail is None else tail
        (log.error if kind != "restarted" else log.warning)(
            "sidecar %s: %s%s", kind, detail, f"\n  last lines of its log:\n{tail}" if tail else ""
        )
        self.events.append(SidecarEvent(i, kind, detail))

    def _schedule(self, i: int, died: str) -> None:
        """Member ``i`` is down (``died`` says how): restart it after its back-off, or give up.

        The back-off is waited out by the supervisor's loop, not here: the other members
        stay supervised meanwhile (many sim copies may go down at once).
        """
        if self.restarts[i] >= self.launch.max_restarts:
            if not any(e.server == i and e.kind == "gave_up" for e in self.events):
                budget = self.launch.max_restarts
                self._event(i, "gave_up", f"{died}; its restart budget ({budget}) is used up")
            return
        tail = self._log_since_start(i, 10)  # this life's, before the next one appends
        delay = self.launch.restart_backoff * (2 ** self.restarts[i])
        self._pending[i] = (time.monotonic() + delay, died, tail)

    def _restart_when_due(self, i: int) -> None:
        """Restart member ``i`` once its back-off is over."""
        due, died, tail = self._pending[i]
        if time.monotonic() < due:
            return
        del self._pending[i]
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
        self._event(i, "restarted", f"{died}; restarted (restart {n} of {budget})", tail)

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
        for channel in self._channels:
            if channel is not None:
                channel.close()

    def __enter__(self) -> SidecarPool:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
