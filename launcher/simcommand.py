"""A sim server started from a command of the user's (``sim.launch.command``), as a sidecar.

Any program that takes simserver's flags can be a sidecar: a sim image's own ``simserver``,
the Node.js kit's ``npm run sample --``, a server in another language. simgym runs the
command from its folder (``sim.launch.cwd``) and appends simserver's transport flags —
``--unix PATH`` (or ``--port 0``, then the same port on a restart), ``--address-file FILE``,
``--parent-pid PID`` — and the session limits the pool sizes (``--max-sessions``,
``--lease``); then waits for the address file as for simserver itself. The pool supervises it
like any sidecar: restarts, health checks, one log per server.

A combined image (``docker/sim-train.Dockerfile``, ``simgym submit --sim-image``) carries its
sim's command in ``SIMGYM_SIM_COMMAND`` (a JSON list) and ``SIMGYM_SIM_CWD``: a training spec
whose ``sim.launch`` names neither a target nor a command runs that command there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from gymclient.errors import SimgymError
from simserver.process import ServerProcess

#: In a combined image's environment: its sim's command (a JSON list of strings) and folder.
COMMAND_VAR = "SIMGYM_SIM_COMMAND"
CWD_VAR = "SIMGYM_SIM_CWD"

# Runs the command from its folder after asking the kernel to SIGKILL it when the process
# that started it ends (even killed with SIGKILL): a sidecar never outlives its trainer, even
# one that ignores --parent-pid. The death signal survives exec, so the command runs as the
# child itself, no wrapper process stays. (Linux; elsewhere --parent-pid does the job.)
_EXEC_GUARD = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the trainer ended before the guard was set
try:
    os.chdir(sys.argv[2])
except OSError as exc:
    print(f"simgym: error: cannot run the sim command in {sys.argv[2]}: {exc.strerror}",
          file=sys.stderr)
    sys.exit(126)
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as exc:
    print(f"simgym: error: cannot run {sys.argv[3]!r}: {exc.strerror}", file=sys.stderr)
    sys.exit(127)
"""


class CommandServer(ServerProcess):
    """A sim server started from ``words`` (a command that takes simserver's flags).

    Args:
        words: The command and its own arguments, e.g. ``["simserver", "sim.py:CSTR"]``.
        cwd: The folder it runs in.
        transport: ``"unix"`` (a socket in a private folder) or ``"tcp"`` (loopback, port 0).
        args: Flags appended after the transport's (``--max-sessions``, ``--lease``).
        log_file: Its stderr (and stdout) go here.
        env: Extra environment variables.
    """

    def __init__(
        self,
        words: Sequence[str],
        *,
        cwd: str | os.PathLike[str],
        transport: str = "unix",
        args: Sequence[str] = (),
        log_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            " ".join(words), transport=transport, args=args, log_file=log_file, env=env
        )
        self.words = list(words)
        self.cwd = Path(cwd)

    def command(self) -> list[str]:
        """The guard, then the user's words and simserver's flags."""
        if self.transport == "unix":
            where = ["--unix", str(self.folder / "sim.sock")]
        else:
            where = ["--port", str(self._port)]
        flags = [*where, "--address-file", str(self.folder / "address")]
        flags += ["--parent-pid", str(os.getpid()), *self.args]
        guard = [sys.executable, "-c", _EXEC_GUARD, str(os.getpid()), str(self.cwd)]
        return [*guard, *self.words, *flags]

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM to the command's process group, then SIGKILL after ``grace`` s.

        The group, not only the process: a command such as ``npm run`` starts the server as
        its child, and a signal to npm alone may not reach it.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        # What the group left behind (npm's child, once npm is gone) ends with it.
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


def image_command(env: Mapping[str, str] | None = None) -> tuple[list[str], str] | None:
    """The sim command a combined image carries (``SIMGYM_SIM_COMMAND``), and its folder.

    None when the variable is not set (or empty). The folder is ``SIMGYM_SIM_CWD``, else ``/``
    (Docker's default working directory).

    Raises:
        SimgymError: The variable is not a JSON list of strings.
    """
    env = os.environ if env is None else env
    text = env.get(COMMAND_VAR, "").strip()
    if not text:
        return None
    try:
        words = json.loads(text)
    except ValueError:
        words = None
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise SimgymError(
            f"{COMMAND_VAR}={text!r}: give the sim's command as a JSON list of strings, "
            'e.g. ["simserver", "sim.py:CSTR"]'
        )
    return words, env.get(CWD_VAR, "").strip() or "/"
