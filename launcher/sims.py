"""Starting the sim servers a spec names: supervised sidecars, sized for the sessions they serve.

``simgym train``, ``simgym node``, ``simgym evaluate`` and ``simgym check`` all start their
sims here, so the sizing, supervision and logs are the same whoever asks: ``launch``
sidecars (simserver hosting the spec's target), or Bonsai SDK sims (``sim.bonsai``: an
endpoint and copies of the user's command, ``launcher.bonsai_sims``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gymclient.errors import SimgymError
from gymclient.spec import EnvSpec
from launcher.bonsai_sims import BonsaiPlan, bonsai_pool
from launcher.sidecars import SidecarPool
from launcher.trainspec import Launch, TrainSpec

#: What a spec's sims are started as.
SimPlan = Launch | BonsaiPlan


def spec_launch(spec: EnvSpec, *, sessions: int = 1, **plan: Any) -> SimPlan:
    """The env spec's own sims: its ``sim.bonsai``, else its ``sim.target`` as sidecars.

    Bonsai sims get ``sessions`` copies unless the spec says; sidecars are sized by ``plan``.

    Raises:
        SimgymError: The spec names neither.
    """
    bonsai = spec.sim.bonsai
    if bonsai is not None:
        if "max_restarts" in plan:  # a check restarts nothing: a dying copy is a finding
            bonsai = bonsai.model_copy(update={"max_restarts": plan["max_restarts"]})
        return BonsaiPlan.make(bonsai, spec.workdir, sessions)
    if not spec.sim.target:
        raise SimgymError(
            f"{spec.source}: sim: give `target` (simgym starts it), `bonsai` (Bonsai SDK sims "
            "simgym starts) or `address` (already running)"
        )
    return Launch(target=spec.sim.target, kwargs=spec.sim.kwargs, shape=spec.sim.shape, **plan)


def train_plan(spec: TrainSpec, env: EnvSpec, nodes: int = 1) -> SimPlan | None:
    """What a training starts on one of ``nodes`` nodes (None: the sims run elsewhere).

    Bonsai sims default to one copy per session this node's env runners open: its share
    of ``env_runners`` (at least one: the driver's own runner samples when there are none)
    times ``envs_per_runner``.
    """
    bonsai = spec.bonsai(env)
    if bonsai is None:
        return spec.launch(env)
    runners = -(-max(1, spec.resources.env_runners) // nodes)
    return BonsaiPlan.make(*bonsai, runners * spec.resources.envs_per_runner)


def start_sims(spec: EnvSpec, plan: SimPlan, log_dir: Path) -> SidecarPool:
    """Start ``plan``'s sims for ``spec``, supervised, one log each in ``log_dir``.

    Returns the pool once every server serves (``pool.addresses``); ``pool.stop()`` ends them.
    Bonsai sims serve once the first copy has registered; connect with
    ``plan.connect_spec(spec)`` (the endpoint's token).

    Raises:
        SidecarStartError: A server did not start (nothing is left running).
    """
    if isinstance(plan, BonsaiPlan):
        pool = bonsai_pool(plan, log_dir)
    else:
        pool = SidecarPool(plan, spec.workdir, log_dir)
    pool.start()
    return pool
