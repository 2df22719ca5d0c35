"""Bonsai SDK sims as sidecars: a Bonsai endpoint and N copies of the user's command.

One ``simserver --bonsai-port`` serves the Bonsai simulator API over HTTP and hands each
registered sim out as a gymclient session over its unix socket. Once its HTTP endpoint
listens, ``copies`` copies of the user's command (``python main.py``) start with
``SIM_API_HOST``, ``SIM_WORKSPACE`` and ``SIM_ACCESS_KEY`` set, the way the Bonsai platform
started them; the server's gRPC side serves once the first sim has registered. All of them
are members of one ``SidecarPool``: a copy that exits is restarted after its back-off
against its restart budget, its log is ``sims/bonsai-sim-<k>.log``, and its last error line
is quoted in the pool's events, as for any sidecar. Sims started elsewhere join at
``listen`` with the access key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from gymclient.spec import BonsaiSims, EnvSpec, split_listen
from launcher.logpump import pump
from launcher.sidecars import Member, SidecarPool, SidecarStartError, log_error_line
from launcher.trainspec import Launch
from simserver.process import ServerProcess

log = logging.getLogger("simgym.bonsai")

WORKSPACE = "simgym"  # SIM_WORKSPACE: the endpoint serves any workspace name

# Runs a copy's command after asking the kernel to SIGKILL it when the process that
# started it ends (even killed with SIGKILL): a sim copy never outlives its trainer.
# The death signal survives exec, so the command runs as the child itself, no wrapper.
# (Linux; elsewhere the copies outlive a killed trainer until their endpoint is gone.)
_ORPHAN_GUARD = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the trainer ended before the guard was set
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    print(f"simgym: cannot run {sys.argv[2]!r}: {exc.strerror}", file=sys.stderr)
    sys.exit(127)
"""


@dataclass(frozen=True)
class BonsaiPlan:
    """Bonsai sims as started: the spec's section, the copies, their folder and access key.

    ``sessions``: the gymclient sessions the run opens on the endpoint (its session cap).
    """

    sims: BonsaiSims
    copies: int
    workdir: Path
    token: str
    sessions: int

    @classmethod
    def make(cls, sims: BonsaiSims, workdir: Path, sessions: int) -> BonsaiPlan:
        """The plan for ``sims``: ``copies`` defaults to ``sessions`` (what the run opens).

        The access key is the spec's (``token``/``token_env``), else a new one per run.
        """
        copies = sims.copies if sims.copies is not None else max(1, sessions)
        token = sims.resolved_token() or secrets.token_urlsafe(24)
        return cls(sims, copies, workdir, token, max(1, sessions))

    def connect_spec(self, env: EnvSpec) -> EnvSpec:
        """``env`` with the endpoint's token, which its gRPC side asks of every client."""
        return with_token(env, token=self.token)


def with_token(env: EnvSpec, *, token: str | None = None, token_env: str | None = None) -> EnvSpec:
    """``env`` connecting with ``token``, or with the token in the variable ``token_env``.

    Every node's endpoint of a run has the run's key (``launcher.raysims`` sends the plan,
    key included, to each node's host).
    """
    update = {"token": token, "token_env": token_env}
    return env.model_copy(update={"sim": env.sim.model_copy(update=update)})


class BonsaiServer(ServerProcess):
    """``simserver --bonsai-port``: its HTTP endpoint first, its gRPC side once a sim registered.

    ``start`` returns the endpoint's address (``http://host:port``, ``bonsai_address``) as
    soon as it listens; ``grpc_ready`` says the gRPC address once it serves. A restart keeps the
    endpoint's port (the copies know it) and the gRPC socket's path (the clients know it).
    """

    def __init__(self, plan: BonsaiPlan, *, args: list[str], log_file: Path) -> None:
        super().__init__("--bonsai-port", workdir=plan.workdir, args=args, log_file=log_file)
        self.host, self.port = split_listen(plan.sims.listen)
        self.token_file = self.folder / "token"
        self.token_file.touch(mode=0o600)
        self.token_file.write_text(plan.token)
        self.grpc_file = self.folder / "grpc-address"
        self.bonsai_address: str | None = None

    def command(self) -> list[str]:
        """The command line; ServerProcess waits for ``address``: the endpoint's file."""
        return [
            sys.executable, "-m", "simserver",
            "--bonsai-port", str(self.port), "--bonsai-host", self.host,
            "--bonsai-address-file", str(self.folder / "address"),
            "--unix", str(self.folder / "sim.sock"), "--address-file", str(self.grpc_file),
            "--token-file", str(self.token_file), "--parent-pid", str(os.getpid()),
            *(["--chdir", str(self.workdir)] if self.workdir else []),
            *self.args,
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> str:
        """Start the server; returns once its Bonsai endpoint listens (its address).

        Raises:
            ServerStartError: With the tail of the server's log.
        """
        grpc_address = self.address if self.bonsai_address else None
        self.grpc_file.unlink(missing_ok=True)
        self.bonsai_address = super().start(timeout)
        self.port = int(self.bonsai_address.rsplit(":", 1)[1])
        self.address = grpc_address
        return self.bonsai_address

    def grpc_ready(self) -> str | None:
        """The gRPC address once this life serves it (a sim has registered), else None."""
        if self.grpc_file.exists():
            self.address = self.grpc_file.read_text().strip() or None
            return self.address
        return None


class SimCopy(ServerProcess):
    """One copy of the user's command, run from ``workdir`` with the Bonsai variables set.

    A ``ServerProcess`` without an address: started is running (it registers by itself).
    ``PATH`` starts with this Python's folder, so ``python`` is the Python simgym runs on
    (its venv, with the Bonsai SDK) unless the command names another.
    """

    def __init__(self, plan: BonsaiPlan, endpoint: BonsaiServer, *, log_file: Path) -> None:
        super().__init__(plan.sims.command, workdir=plan.workdir, log_file=log_file)
        self.words = plan.sims.words()
        self.endpoint = endpoint
        self.env = {"SIM_WORKSPACE": WORKSPACE, **plan.sims.env, "SIM_ACCESS_KEY": plan.token}
        self.log_bytes = int(plan.sims.log_mb * 2**20)

    def command(self) -> list[str]:
        """The command line: the orphan guard, then the user's words."""
        return [sys.executable, "-c", _ORPHAN_GUARD, str(os.getpid()), *self.words]

    def start(self, timeout: float = 60.0) -> str:
        """Start the copy against the endpoint's current address; nothing to wait for."""
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": path, **self.env}
        env["SIM_API_HOST"] = self.endpoint.bonsai_address or ""
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdout=subprocess.PIPE,  # through a pump that bounds the log (launcher.logpump)
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C in our terminal is ours to forward
        )
        assert self.proc.stdout is not None
        pump(self.proc.stdout, self.log_file, self.log_bytes)
        return ""

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` s, to the copy and what it started (its group)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


def wait_registered(server: BonsaiServer, copies: list[SimCopy], timeout: float) -> None:
    """Wait until the server's gRPC side serves: the first sim has registered.

    Raises:
        SidecarStartError: The server exited, every copy exited before one registered
            (quoting a copy's log), or ``timeout`` passed.
    """
    deadline = time.monotonic() + timeout
    while server.grpc_ready() is None:
        if not server.alive:
            _fail(0, server, "the Bonsai endpoint", server.returncode)
        if copies and not any(c.alive for c in copies):
            k = next((k for k, c in enumerate(copies) if log_error_line(c.log_tail(40))), 0)
            _fail(k + 1, copies[k], f"bonsai sim {k} ({copies[k].target})", copies[k].returncode,
                  before="before any sim registered")  # fmt: skip
        if time.monotonic() >= deadline:
            who = f"{len(copies)} copies of {copies[0].target!r}" if copies else "sims elsewhere"
            status = f"no sim registered within {timeout:.0f} s"
            raise SidecarStartError(
                f"the Bonsai endpoint at {server.bonsai_address}: {status} ({who}; logs: "
                f"{server.log_file.parent})",
                server=0, log_file=server.log_file, error_line="", status=status,
            )  # fmt: skip
        time.sleep(0.1)
    who = f"{len(copies)} copies of {copies[0].target!r}" if copies else "no copies"
    log.info(
        "Bonsai endpoint at %s (SIM_API_HOST for sims elsewhere, with the key): %s, the "
        "first sim registered", server.bonsai_address, who,
    )  # fmt: skip


def _fail(
    index: int, process: ServerProcess, name: str, code: int | None, before: str = ""
) -> NoReturn:
    """Raise the start error of ``process``, quoting its log's error line."""
    line = log_error_line(process.log_tail(40))
    status = f"exited with code {code}" + (f" {before}" if before else "")
    reason = f": {line}" if line else ""
    raise SidecarStartError(
        f"{name} {status}{reason} (log: {process.log_file})",
        server=index, log_file=process.log_file, error_line=line, status=status,
    )  # fmt: skip


def bonsai_pool(plan: BonsaiPlan, log_dir: Path, *, lease_seconds: float = 120.0) -> SidecarPool:
    """A pool (not started) of the Bonsai endpoint and ``plan.copies`` copies of the command.

    The endpoint is member 0 (the pool's one address); copy ``k`` is member ``k + 1``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    sims = plan.sims
    # As for sidecars: headroom for reconnects before the server reaps the old sessions.
    max_sessions = max(plan.copies, plan.sessions) * 2 + 4
    args = ["--max-sessions", str(max_sessions), "--lease", str(lease_seconds)]
    server = BonsaiServer(plan, args=args, log_file=log_dir / "bonsai-server.log")
    copies = [
        SimCopy(plan, server, log_file=log_dir / f"bonsai-sim-{k}.log") for k in range(plan.copies)
    ]
    members = [Member(server, "the Bonsai endpoint", "simserver --bonsai-port")] + [
        Member(c, f"bonsai sim {k}", sims.command, serves=False) for k, c in enumerate(copies)
    ]
    # No health checks: the endpoint runs no sim code that could wedge it (the sims are
    # other processes, and one that hangs is a dead sim to it); an exit is still seen.
    policy = Launch(
        max_restarts=sims.max_restarts, restart_backoff=sims.restart_backoff, health_every=0
    )
    timeout_factor = 1 if copies else 5  # sims from elsewhere may take a while to come
    return SidecarPool(
        policy,
        plan.workdir,
        log_dir,
        members=members,
        ready=lambda timeout: wait_registered(server, copies, timeout * timeout_factor),
    )
