"""Starting the sim servers a spec names: supervised sidecars, sized for the sessions they serve.

``simgym train``, ``simgym node``, ``simgym evaluate`` and ``simgym check`` all start their
sims here, so the sizing, supervision and logs are the same whoever asks: ``launch``
sidecars (simserver hosting the spec's target), or Bonsai SDK sims (``sim.bonsai``: an
endpoint and copies of the user's command, ``launcher.bonsai_sims``). ``preflight`` checks
started sims against the spec, wherever they run (the trainer, a node's host actor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gymclient.codec import declared_action_names, sample_config, session_codec
from gymclient.connection import Connection
from gymclient.env import connect_options
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


def preflight(env_spec: EnvSpec, addresses: list[str], seed: int | None) -> None:
    """Open a session on every server, match the spec, run one reset with a lesson draw.

    Raises:
        SimgymError: Unreachable server, wrong token, spec/sim mismatch, rejected lesson key.
    """
    options = connect_options(env_spec)
    actions = declared_action_names(env_spec)
    rng = np.random.default_rng(seed)
    for address in addresses:
        with Connection(address, options) as conn:
            session = conn.open(actions, client="simgym train preflight")
            try:
                codec = session_codec(env_spec, session)
                config = sample_config(codec.lessons, rng)
                try:
                    session.reset(config, 0)
                except SimgymError as exc:
                    raise SimgymError(
                        f"{env_spec.source}: lessons: the sim at {address} rejected the "
                        f"reset config {config}: {exc}"
                    ) from None
            finally:
                session.close()
