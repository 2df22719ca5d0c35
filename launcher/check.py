"""``simgym check``: start (or reach) the sim server a spec names and run the conformance kit."""

from __future__ import annotations

import tempfile
from pathlib import Path

from gymclient.conformance import Report, check_integration
from gymclient.errors import SimgymError
from gymclient.spec import EnvSpec
from simserver.process import TRANSPORTS, ServerProcess, ServerStartError


def server_for(spec: EnvSpec, transport: str = "unix") -> ServerProcess:
    """A (not yet started) server process for the spec's ``sim.target``.

    Raises:
        SimgymError: The spec names no target.
    """
    sim = spec.sim
    if not sim.target:
        raise SimgymError(
            f"{spec.source}: sim: give `target` (simgym starts it) or `address` (already running)"
        )
    workdir = spec.path(sim.workdir) if sim.workdir else Path(spec.base_dir)
    return ServerProcess(sim.target, kwargs=sim.kwargs, workdir=workdir, transport=transport)


def run_check(
    spec: EnvSpec,
    *,
    address: str | None = None,
    episodes: int = 10,
    seed: int = 0,
    transport: str = "unix",
) -> Report:
    """Check against ``address``, the spec's address, or a server started for the check.

    Raises:
        SimgymError: The server cannot be started or reached, or ``transport`` is unknown.
    """
    if transport not in TRANSPORTS:
        raise SimgymError(f"--transport {transport!r}: use one of {', '.join(TRANSPORTS)}")
    address = address or next(iter(spec.sim.address_list()), None)
    if address:
        return check_integration(spec, address, episodes=episodes, seed=seed)
    server = server_for(spec, transport)
    try:
        try:
            started = server.start()
        except ServerStartError as exc:
            raise _start_failure(server, exc) from None
        return check_integration(spec, started, episodes=episodes, seed=seed)
    finally:
        server.cleanup()


def _start_failure(server: ServerProcess, exc: ServerStartError) -> SimgymError:
    """One line saying why the server did not start; the log kept when it says more.

    The server's log lives in its private folder, which ``cleanup`` deletes: the reason is
    quoted (simserver's own ``error:`` line, else the log's last line, typically the sim's
    exception), and a log with more than that is copied out first.
    """
    try:
        text = server.log_file.read_text(errors="replace")
    except OSError:
        text = ""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("simserver: error: ")]
    reason = (
        ours[-1].removeprefix("simserver: error: ")
        if ours
        else (lines[-1].strip() if lines else "(it logged nothing)")
    )
    headline = str(exc).splitlines()[0].rstrip(":")
    message = f"{headline}: {reason}"
    if len(lines) > 1:
        fd, kept = tempfile.mkstemp(prefix="simgym-check-", suffix=".log")
        with open(fd, "w") as out:
            out.write(text)
        message += f" (server log kept at {kept})"
    return SimgymError(message)
