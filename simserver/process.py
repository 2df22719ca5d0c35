"""Run ``simserver`` as a child process: start, learn its address, stop.

Used by ``simgym check``, the launcher's sidecars and tests. The child listens
on a unix socket in a private temporary folder (or on port 0), so no two
servers can ever collide on an address, and writes its address to a file the
parent polls; its log goes to a file whose tail is shown if it fails to start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

# How a child server listens: a unix socket in its private folder, or loopback TCP.
TRANSPORTS = ("unix", "tcp")


class ServerStartError(RuntimeError):
    """The server process exited or stayed silent instead of serving.

    Attributes:
        status: How it ended, for callers that word their own message
            (``exited with code 3``, ``did not start within 60 s``).
    """

    def __init__(self, message: str, *, status: str = "") -> None:
        super().__init__(message)
        self.status = status


class ServerProcess:
    """A ``simserver`` child process.

    Args:
        target: Sim target (``file.py:Class``, ``module:Class``, ``gymnasium:Id``).
        kwargs: Constructor keyword arguments.
        workdir: Folder the server runs from (a sim's imports may be relative to it).
        transport: ``"unix"`` (default) or ``"tcp"`` (loopback, port 0).
        args: Extra ``simserver`` arguments (e.g. ``["--token", "t"]``).
        log_file: Where the server logs (default: a file in its private folder).
        env: Extra environment variables.

    Raises:
        ValueError: ``transport`` is not one of ``TRANSPORTS``.
    """

    def __init__(
        self,
        target: str,
        *,
        kwargs: Mapping[str, Any] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        transport: str = "unix",
        args: Sequence[str] = (),
        log_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            # Anything but "unix" used to mean TCP: a typo must not pick a transport.
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        self.target = target
        self.kwargs = dict(kwargs or {})
        self.workdir = Path(workdir) if workdir else None
        self.transport = transport
        self.args = list(args)
        self._tmp = tempfile.TemporaryDirectory(prefix="simgym-")
        self.folder = Path(self._tmp.name)
        self.log_file = Path(log_file) if log_file else self.folder / "simserver.log"
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: str | None = None
        # A restarted TCP server keeps its port, so clients reconnect to the same address.
        self._port = 0

    def command(self) -> list[str]:
        """The command line that starts the server."""
        cmd = [sys.executable, "-m", "simserver", self.target]
        if self.transport == "unix":
            cmd += ["--unix", str(self.folder / "sim.sock")]
        else:
            cmd += ["--port", str(self._port)]
        cmd += ["--address-file", str(self.folder / "address"), "--parent-pid", str(os.getpid())]
        if self.kwargs:
            kwargs_file = self.folder / "kwargs.yaml"
            kwargs_file.write_text(yaml.safe_dump(self.kwargs))
            cmd += ["--kwargs-file", str(kwargs_file)]
        if self.workdir:
            cmd += ["--chdir", str(self.workdir)]
        return cmd + self.args

    def start(self, timeout: float = 60.0) -> str:
        """Start the server and wait until it serves; returns its address.

        Raises:
            ServerStartError: With the tail of the server's log.
        """
        address_file = self.folder / "address"
        address_file.unlink(missing_ok=True)
        env = {**os.environ, **self.env}
        # The sim's own prints must not interleave with ours.
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C in our terminal is ours to forward
            )
        deadline = time.monotonic() + timeout
        delay = 0.01
        while time.monotonic() < deadline:
            if address_file.exists():
                self.address = address_file.read_text().strip()
                if self.transport == "tcp":
                    self._port = int(self.address.rsplit(":", 1)[1])
                return self.address
            if self.proc.poll() is not None:
                status = f"exited with code {self.proc.returncode}"
                raise ServerStartError(
                    f"simserver {self.target} {status}:\n{self.log_tail()}", status=status
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        self.stop()
        status = f"did not start within {timeout:.0f} s"
        raise ServerStartError(
            f"simserver {self.target} {status}:\n{self.log_tail()}", status=status
        )

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id, once started."""
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended (negative: killed by that signal)."""
        return self.proc.poll() if self.proc else None

    def kill(self) -> None:
        """SIGKILL the server and its process group (the sims it runs in child processes).

        Works on a server that is wedged or stopped (SIGSTOP), where SIGTERM would wait.
        """
        if self.alive:
            assert self.proc is not None
            try:
                # The server leads its own group (start_new_session): nothing else is in it.
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
            self.proc.wait(10)

    def rss_bytes(self) -> int | None:
        """Resident memory of the server and every process it started, in bytes.

        Summed over the process tree from ``/proc`` (``VmRSS``), so sims isolated in child
        processes count; None when the server is not running or ``/proc`` is not there.
        """
        if not self.alive or self.proc is None:
            return None
        total, seen = 0, False
        for pid in _process_tree(self.proc.pid):
            try:
                with open(f"/proc/{pid}/status", "rb") as f:
                    for line in f:
                        if line.startswith(b"VmRSS:"):
                            total += int(line.split()[1]) * 1024  # kB
                            seen = True
                            break
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile
        return total if seen else None

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait ``grace`` s, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def cleanup(self) -> None:
        """Stop and remove the private folder."""
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from ``/proc/<pid>/task/<tid>/children``."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo += [int(child) for child in f.read().split()]
            except (OSError, ValueError):
                continue
    return out
