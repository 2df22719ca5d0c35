"""The sims of ``bench/scaling.py``: one toy control task, steps of tunable cost.

Every sim tracks a drifting target with one action (``x' = 0.9 x + u + drift``, 100-step
episodes, a few states), so training does real work, and each step costs what its class
says on top of that arithmetic:

* ``Computing(cost=0.001)``: ``cost`` seconds of the calling thread's CPU time in Python,
  the GIL held throughout, as a Python sim's own computation does (threads cannot overlap
  it: only processes can). CPU time, not wall time: a sim that shares a core with others
  still does its full work per step, so the cost per step is the same on a busy machine.
* ``Waiting(cost=0.02)``: ``cost`` seconds of ``time.sleep``, the GIL released, as a sim
  waiting on a socket, a licence server or an external solver.

The classes below fix the cost (``bench/_train_local.py`` builds sims without arguments):
``Cpu0`` (no cost: what the rest of a step costs), ``Cpu01``, ``Cpu1``, ``Cpu5`` (0.1, 1,
5 ms of CPU) and ``Io20`` (waits 20 ms).

The same class runs in-process (``bench/_train_local.py``'s vector env: ``reset(config,
seed=...)``, ``step``, ``termination``, ``truncation``) and behind ``simserver``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from typing import Any, ClassVar

EPISODE = 100  # steps per episode (the sim truncates)


class Computing:
    """A step computes ``cost`` seconds of CPU time in Python, holding the GIL."""

    state_names: ClassVar[tuple[str, ...]] = ("x", "target", "error", "score", "t")
    action_names: ClassVar[tuple[str, ...]] = ("u",)

    COST: ClassVar[float] = 0.001

    def __init__(self, cost: float | None = None) -> None:
        self.cost = float(self.COST if cost is None else cost)
        self.rng = random.Random(0)
        self.x = self.target = 0.0
        self.t = 0

    def reset(self, config: Mapping[str, Any] | None = None, seed: int | None = None) -> dict:
        """Start an episode at a random point with a random target."""
        if seed is not None:
            self.rng.seed(seed)
        self.x = self.rng.uniform(-1.0, 1.0)
        self.target = self.rng.uniform(-0.5, 0.5)
        self.t = 0
        return self.states()

    def states(self) -> dict:
        """The sim's states, by name."""
        error = self.x - self.target
        return {
            "x": self.x,
            "target": self.target,
            "error": error,
            "score": -abs(error),
            "t": self.t,
        }

    def step(self, action: Mapping[str, Any]) -> dict:
        """Move, pay the step's cost, report."""
        u = max(-1.0, min(1.0, float(action["u"])))
        self.target += 0.02 * math.sin(0.1 * self.t)
        self.x = 0.9 * self.x + 0.2 * u + 0.01 * self.rng.gauss(0.0, 1.0)
        self.t += 1
        self.work()
        return self.states()

    def work(self) -> None:
        """Compute until this thread has used ``cost`` seconds of CPU time."""
        if self.cost <= 0:
            return
        end = time.thread_time() + self.cost
        x = 0
        while time.thread_time() < end:
            for i in range(50):
                x += i * i

    def termination(self) -> bool:
        """Far off: the episode fails."""
        return abs(self.x) > 5.0

    def truncation(self) -> bool:
        """Episodes last ``EPISODE`` steps."""
        return self.t >= EPISODE


class Waiting(Computing):
    """A step waits ``cost`` seconds with the GIL released (I/O, an external tool)."""

    COST: ClassVar[float] = 0.02

    def work(self) -> None:
        """Sleep: other threads of the process run meanwhile."""
        if self.cost > 0:
            time.sleep(self.cost)


class Cpu0(Computing):
    """No cost of its own: the arithmetic only (measures everything else a step costs)."""

    COST: ClassVar[float] = 0.0


class Cpu01(Computing):
    """0.1 ms of CPU per step."""

    COST: ClassVar[float] = 0.0001


class Cpu1(Computing):
    """1 ms of CPU per step."""

    COST: ClassVar[float] = 0.001


class Cpu5(Computing):
    """5 ms of CPU per step."""

    COST: ClassVar[float] = 0.005


class Io20(Waiting):
    """Waits 20 ms per step."""

    COST: ClassVar[float] = 0.02
