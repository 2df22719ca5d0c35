"""Starting the sim servers a spec names: supervised sidecars, sized for the sessions they serve.

``simgym train``, ``simgym node``, ``simgym evaluate`` and ``simgym check`` all start their
sims here, so the sizing, supervision and logs are the same whoever asks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gymclient.errors import SimgymError
from gymclient.spec import EnvSpec
from launcher.sidecars import SidecarPool
from launcher.trainspec import Launch


def spec_launch(spec: EnvSpec, **plan: Any) -> Launch:
    """A sidecar plan for the env spec's own ``sim.target`` and kwargs, sized by ``plan``.

    Raises:
        SimgymError: The spec names no target.
    """
    if not spec.sim.target:
        raise SimgymError(
            f"{spec.source}: sim: give `target` (simgym starts it) or `address` (already running)"
        )
    return Launch(target=spec.sim.target, kwargs=spec.sim.kwargs, **plan)


def start_sims(spec: EnvSpec, launch: Launch, log_dir: Path) -> SidecarPool:
    """Start ``launch``'s sim servers for ``spec``, supervised, one log each in ``log_dir``.

    Returns the pool once every server serves (``pool.addresses``); ``pool.stop()`` ends them.

    Raises:
        SidecarStartError: A server did not start (nothing is left running).
    """
    pool = SidecarPool(launch, spec.workdir, log_dir)
    pool.start()
    return pool
