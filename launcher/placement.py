"""Placement: which sims an env runner steps, and the record of where it ran.

With sims placed by Ray (``launcher.raysims``), every env runner steps the sims of the Ray
node it runs on: it finds that node's host actor by its runtime context's node id (on a
node without one yet, the run's registry creates it), and tells the registry where it runs
and which sims it steps; the driver writes that to the run's ``placement.jsonl``.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from gymclient.errors import SimgymError

NODE_RANK_VAR = "SIMGYM_NODE_RANK"  # set by simgym node in its Ray processes (diagnostics)
SLOT = "sim_slot"  # Ray resource simgym node advertises: one per sim session a node serves
HOST_PREFIX = "simgym-sims-"  # + the Ray node id: each node's host actor (launcher.raysims)


def node_sims(locator: dict[str, str], worker_index: int, wait: float = 600.0) -> dict[str, Any]:
    """In an env runner: this node's sims (``addresses``, ``token``, ``label``, ``log_dir``).

    ``locator``: the run's namespace and registry name (``RaySims.locator``). Waits for a
    host that is still starting its sims (at most ``wait`` s).

    Raises:
        SimgymError: This node's sims failed to start (the host's message and log folder).
    """
    import ray

    namespace = locator["namespace"]
    node_id = ray.get_runtime_context().get_node_id()
    registry = ray.get_actor(locator["registry"], namespace=namespace)
    host: Any
    try:
        host = ray.get_actor(HOST_PREFIX + node_id, namespace=namespace)
    except ValueError:  # the first env runner on this node: the registry creates its host
        host = ray.get(registry.ensure.remote(node_id))
    info: Any = ray.get(host.ready.remote(), timeout=wait)
    if info["error"]:
        raise SimgymError(
            f"the sims on Ray node {info['label']} failed to start: "
            f"{info['error'].splitlines()[0]} (logs: {info['log_dir']})"
        )
    registry.placed.remote(
        {
            "worker_index": worker_index,
            "pid": os.getpid(),
            "ray_node_id": node_id,
            "node_ip": info["node_ip"],
            "node_label": info["label"],
            "node_rank": os.environ.get(NODE_RANK_VAR),
            "host": socket.gethostname(),
            "addresses": info["addresses"],
            "log_dir": info["log_dir"],
            "time": time.time(),
        }
    )
    return dict(info)
