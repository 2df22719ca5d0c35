"""Sims that wait in their steps (the GIL released), for the parallel-slots tests.

Each step's states say when it ran (``time.monotonic()``, one clock for every process of the
machine), so a test can tell whether the steps of several sessions overlapped.
"""

import threading
import time


class Waiting:
    """Each step sleeps ``delay`` seconds; reset's config may make a step fail or hang.

    Config (all optional): ``delay`` (seconds), ``fail_at`` (the step that raises),
    ``hang_at`` (the step that sleeps ``hang`` seconds).
    """

    action_names = ("u",)
    state_names = ("t", "started", "ended")

    def __init__(self, delay=0.05, hang=3600.0):
        self.default_delay, self.hang = delay, hang
        self.t, self.config = 0, {}

    def reset(self, config, seed=None):
        self.t, self.config = 0, dict(config)
        now = time.monotonic()
        return {"t": 0.0, "started": now, "ended": now}

    def step(self, action):
        started = time.monotonic()
        self.t += 1
        if self.t == self.config.get("fail_at"):
            raise RuntimeError(f"step {self.t} failed on purpose")
        delay = self.hang if self.t == self.config.get("hang_at") else self.wait_time()
        self.wait(delay)
        return {"t": float(self.t), "started": started, "ended": time.monotonic()}

    def wait_time(self):
        return float(self.config.get("delay", self.default_delay))

    def wait(self, delay):
        time.sleep(delay)


class Gathering(Waiting):
    """Each step waits until ``parties`` steps of this server are in flight at once.

    The wait is bounded: past ``patience`` seconds the step raises, saying how many came.
    """

    _barrier = None
    _lock = threading.Lock()

    def __init__(self, parties=4, patience=30.0):
        super().__init__()
        self.parties, self.patience = parties, patience

    def wait(self, delay):
        with Gathering._lock:
            if Gathering._barrier is None:
                Gathering._barrier = threading.Barrier(self.parties)
            barrier = Gathering._barrier
        try:
            barrier.wait(self.patience)
        except threading.BrokenBarrierError:
            raise RuntimeError(
                f"only {barrier.n_waiting} of {self.parties} steps were in flight at once "
                f"within {self.patience:g} s: the slots ran one after the other"
            ) from None
