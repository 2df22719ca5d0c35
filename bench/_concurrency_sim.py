"""The sims of ``bench/concurrency.py``: a step that waits, and one that computes, 20 ms each."""

from __future__ import annotations

import time


class Sleeping:
    """Each step waits ``delay`` seconds with the GIL released (a sim waiting on I/O or a tool)."""

    action_names = ("u",)
    state_names = ("t",)

    def __init__(self, delay: float = 0.02) -> None:
        self.delay, self.t = delay, 0

    def reset(self, config: dict) -> dict:
        self.t = 0
        return {"t": 0.0}

    def step(self, action: dict) -> dict:
        self.t += 1
        self.work()
        return {"t": float(self.t)}

    def work(self) -> None:
        time.sleep(self.delay)


class Spinning(Sleeping):
    """Each step computes for ``delay`` seconds of its thread's CPU time in Python (the GIL held).

    CPU time, not wall time: sims that share a GIL take turns, and each must still get its
    20 ms of computing.
    """

    def work(self) -> None:
        end = time.thread_time() + self.delay
        x = 0
        while time.thread_time() < end:
            for i in range(200):
                x += i * i
