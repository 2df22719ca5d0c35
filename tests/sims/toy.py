"""Small simulators that misbehave on purpose, for the server tests."""

import math
import sys
import time


class Toy:
    """A 1-D integrator: x += gain * u. Declares nothing: names are probed."""

    def __init__(self, gain=1.0, horizon=20):
        self.gain, self.horizon = gain, horizon
        self.x, self.t = 0.0, 0

    def reset(self, config, seed=None):
        self.x = float(config.get("x0", 0.0))
        if seed is not None:
            self.x += (seed % 7) * 0.01
        self.t = 0
        return {"x": self.x, "t": float(self.t)}

    def step(self, action):
        self.x += self.gain * action["u"]
        self.t += 1
        return {"x": self.x, "t": float(self.t)}

    def termination(self):
        return abs(self.x) > 10

    def truncation(self):
        return self.t >= self.horizon


class Declared(Toy):
    """Declares its names and config keys (no probing)."""

    state_names = ("x", "t")
    action_names = ("u",)
    config_keys = ("x0",)
    bounds = {"u": (-1.0, 1.0)}

    @property
    def sim_name(self):
        return "declared-toy"


class Raising(Toy):
    """Raises on the step given by `fail_at`."""

    action_names = ("u",)

    def __init__(self, fail_at=3):
        super().__init__()
        self.fail_at = fail_at

    def step(self, action):
        if self.t + 1 == self.fail_at:
            self.t += 1
            raise ZeroDivisionError("boom in the sim")
        return super().step(action)


class Hanging(Toy):
    """Sleeps `hang` seconds on step 2 (a hung sim)."""

    action_names = ("u",)

    def __init__(self, hang=30.0):
        super().__init__()
        self.hang = hang

    def step(self, action):
        if self.t == 1:
            time.sleep(self.hang)
        return super().step(action)


class Chatty(Toy):
    """Prints a lot on every call, to stdout and at the file-descriptor level."""

    action_names = ("u",)

    def step(self, action):
        print("chatty step " + "x" * 2000)
        sys.stdout.write("no newline yet ")
        return super().step(action)


class NaNSim(Toy):
    """Returns NaN for x from step 2 on."""

    action_names = ("u",)

    def step(self, action):
        out = super().step(action)
        if self.t >= 2:
            out["x"] = math.nan
        return out


class BadCtor:
    """Its constructor fails."""

    def __init__(self):
        raise RuntimeError("cannot find license server")

    def reset(self, config):
        return {}

    def step(self, action):
        return {}


class Flaky(Toy):
    """Misbehaves at random steps: raises, returns NaN, or hangs; and hangs once on cue.

    The random draws are seeded from `seed` and the instance's number in its server process
    (the server builds one instance per session), so a run misbehaves the same way every
    time. `hang_at`: the first episode in the process to reach that step sleeps `hang`
    seconds there, once — a deterministic hung call (a random `p_hang` may never fire).
    """

    action_names = ("u",)
    instances = 0  # per server process
    hung = False

    def __init__(
        self, p_raise=0.0, p_nan=0.0, p_hang=0.0, hang=5.0, horizon=20, hang_at=None, seed=0
    ):
        super().__init__(horizon=horizon)
        import random

        Flaky.instances += 1
        self.rng = random.Random(seed * 1_000_003 + Flaky.instances)
        self.p_raise, self.p_nan, self.p_hang, self.hang = p_raise, p_nan, p_hang, hang
        self.hang_at = hang_at

    def step(self, action):
        if self.hang_at is not None and self.t + 1 == self.hang_at and not Flaky.hung:
            Flaky.hung = True
            time.sleep(self.hang)
        roll = self.rng.random()
        if roll < self.p_raise:
            raise RuntimeError("flaky sim failed")
        if roll < self.p_raise + self.p_hang:
            time.sleep(self.hang)
        out = super().step(action)
        if self.rng.random() < self.p_nan:
            out["x"] = math.nan
        return out


class Crashing(Toy):
    """Its server process dies at step `crash_at`, as when a native solver aborts.

    It writes its last words to stderr first (the server log), like a C library's failed
    assertion would.
    """

    action_names = ("u",)

    def __init__(self, crash_at=3):
        super().__init__()
        self.crash_at = crash_at

    def step(self, action):
        if self.t + 1 == self.crash_at:
            sys.stderr.write("FATAL: solver assertion failed: dt > 0 (crash in step)\n")
            sys.stderr.flush()
            import os

            os._exit(3)
        return super().step(action)
