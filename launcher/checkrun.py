"""``simgym check``: start (or reach) the sim server a spec names and run the conformance kit."""

from __future__ import annotations

from pathlib import Path

from gymclient.conformance import Report, check_integration
from gymclient.errors import SimgymError
from gymclient.spec import EnvSpec
from simserver.process import ServerProcess, ServerStartError


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
        SimgymError: The server cannot be started or reached.
    """
    address = address or next(iter(spec.sim.address_list()), None)
    if address:
        return check_integration(spec, address, episodes=episodes, seed=seed)
    server = server_for(spec, transport)
    try:
        try:
            started = server.start()
        except ServerStartError as exc:
            last = [line for line in server.log_tail().splitlines() if line.strip()]
            reason = last[-1].split("error: ", 1)[-1] if last else str(exc)
            raise SimgymError(
                f"simserver {spec.sim.target} failed to start: {reason} (log: {server.log_file})"
            ) from None
        return check_integration(spec, started, episodes=episodes, seed=seed)
    finally:
        server.cleanup()
