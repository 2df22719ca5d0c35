"""Node placement: which sims the env runners of a ``simgym node`` cluster step.

``simgym node`` starts each node's sidecar sims and puts their addresses in the
environment of the node's Ray processes (``SIMGYM_NODE_SIMS``); every env runner reads
its own node's addresses here, so envs step the sims of the machine they run on.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any

# Set in the environment of every Ray process a node starts (workers inherit it).
NODE_SIMS_VAR = "SIMGYM_NODE_SIMS"  # JSON list of this node's sim addresses
NODE_RANK_VAR = "SIMGYM_NODE_RANK"
PLACEMENT_VAR = "SIMGYM_PLACEMENT_LOG"  # env runners append where they run and which sims
SLOT = "sim_slot"  # Ray resource: one per sim session a node's sidecars serve


def node_sim_addresses(worker_index: int = 0) -> list[str] | None:
    """This node's sim addresses when running under ``simgym node`` (None otherwise).

    Called by the env creator in every env runner; also appends one JSON line per call to
    the placement log (which node, which sims), so a run shows where its envs stepped.
    """
    raw = os.environ.get(NODE_SIMS_VAR)
    if not raw:
        return None
    addresses = [str(a) for a in json.loads(raw)]
    path = os.environ.get(PLACEMENT_VAR)
    if path:
        record: dict[str, Any] = {
            "pid": os.getpid(),
            "worker_index": worker_index,
            "node_rank": os.environ.get(NODE_RANK_VAR),
            "host": socket.gethostname(),
            "addresses": addresses,
        }
        try:
            import ray

            if ray.is_initialized():
                record["ray_node_id"] = ray.get_runtime_context().get_node_id()
        except Exception:  # placement is diagnostics: never fail an env over it
            pass
        with contextlib.suppress(OSError), open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    return addresses
