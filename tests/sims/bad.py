"""Sims that go bad over time, for the launcher's tests: they leak, die late, fail most steps.

``toy.py``'s fault sims misbehave at once; these behave for a while first, as the ones users
meet in training do.
"""

import os
import random
import sys

from toy import Toy

# What a leaking sim keeps (module level, so it outlives sessions, as a real leak does).
_kept: list[bytearray] = []


class Leaky(Toy):
    """Keeps ``mib_per_step`` MiB more on every step, never freed (a cache without a bound)."""

    action_names = ("u",)

    def __init__(self, mib_per_step=0.25, horizon=20):
        super().__init__(horizon=horizon)
        self.size = int(mib_per_step * 2**20)

    def step(self, action):
        block = bytearray(self.size)
        block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not just mapped
        _kept.append(block)
        return super().step(action)


class ExitsAtStep(Toy):
    """Its server process exits with code 3 at step ``at`` of an episode (after a last word)."""

    action_names = ("u",)

    def __init__(self, at=10, horizon=20):
        super().__init__(horizon=horizon)
        self.at = at

    def step(self, action):
        if self.t + 1 == self.at:
            sys.stderr.write("FATAL: the solver lost its licence (exit in step)\n")
            sys.stderr.flush()
            os._exit(3)
        return super().step(action)


class DiesAfter(Toy):
    """Its server process exits with code 3 once it has served ``steps`` steps in all.

    A server restarted after that starts counting again, so a training's first iterations
    complete before the restart budget runs out.
    """

    action_names = ("u",)
    served = 0  # per server process

    def __init__(self, steps=1000, horizon=20):
        super().__init__(horizon=horizon)
        self.steps = steps

    def step(self, action):
        DiesAfter.served += 1
        if DiesAfter.served >= self.steps:
            sys.stderr.write(f"FATAL: out of licences after {self.steps} steps\n")
            sys.stderr.flush()
            os._exit(3)
        return super().step(action)


class FailsMostly(Toy):
    """Raises on a seeded ``p_fail`` share of its steps (a sim broken for most inputs)."""

    action_names = ("u",)

    def __init__(self, p_fail=0.9, seed=0, horizon=20):
        super().__init__(horizon=horizon)
        self.p_fail = p_fail
        self.rng = random.Random(seed * 7919 + id(self) % 1000)

    def step(self, action):
        if self.rng.random() < self.p_fail:
            raise RuntimeError("solver diverged")
        return super().step(action)
