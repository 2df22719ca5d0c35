"""A sim that misbehaves on cue, for the soak test: hangs, raises, kills its process or leaks.

Each session's reset config sets its faults, so one server hosts well-behaved and faulty
clients side by side (a client's spec lessons choose its profile):

``p_hang``, ``p_raise``, ``p_kill``
    Per-step probabilities: sleep ``hang`` seconds (an hour by default: a sim hung for good),
    raise, or end the whole process at once (``os._exit(3)``, as a native solver's abort).
``leak_kb``
    KiB kept for good at every step, in a list of the module (a leaking cache), up to
    ``LEAK_CAP`` per process so that a leak the server does not bound cannot eat the machine.
``delay``
    Seconds the reset sleeps (a client may give up on it and vanish).
"""

import math
import os
import random
import time

LEAK_CAP = 768 * 2**20
_leaked: list[bytes] = []
_leaked_bytes = 0


class Soak:
    """A 1-D integrator with faults drawn per step from its reset config."""

    state_names = ("x", "t")
    action_names = ("u",)

    def __init__(self, horizon=50):
        self.horizon = horizon
        self.x, self.t = 0.0, 0
        self.faults = {}
        self.rng = random.Random()

    def reset(self, config, seed=None):
        time.sleep(float(config.get("delay", 0.0)))
        self.faults = {
            k: float(config.get(k, 0.0)) for k in ("p_hang", "p_raise", "p_kill", "leak_kb", "hang")
        }
        self.rng = random.Random(seed)
        self.x, self.t = float(config.get("x0", 0.0)), 0
        return {"x": self.x, "t": 0.0}

    def step(self, action):
        global _leaked_bytes
        f = self.faults
        roll = self.rng.random()
        if roll < f["p_kill"]:
            os._exit(3)
        roll -= f["p_kill"]
        if roll < f["p_hang"]:
            time.sleep(f["hang"] or 3600.0)
        roll -= f["p_hang"]
        if roll < f["p_raise"]:
            raise RuntimeError("soak sim failed on purpose")
        if f["leak_kb"] and _leaked_bytes < LEAK_CAP:
            chunk = b"\x01" * int(f["leak_kb"] * 1024)  # written, so resident
            _leaked.append(chunk)
            _leaked_bytes += len(chunk)
        u = float(action["u"])
        self.x = max(-5.0, min(5.0, self.x + (u if math.isfinite(u) else 0.0)))
        self.t += 1
        return {"x": self.x, "t": float(self.t)}

    def truncation(self):
        return self.t >= self.horizon
