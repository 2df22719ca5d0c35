"""Sims that are slow or wrong where ``toy.py``'s are not: in reset, the constructor, at reset."""

import math
import os
import time


class SlowReset:
    """A 1-D integrator whose reset sleeps ``config['delay']`` seconds (0 by default)."""

    action_names = ("u",)

    def __init__(self, horizon=20):
        self.horizon = horizon
        self.x, self.t = 0.0, 0

    def reset(self, config, seed=None):
        time.sleep(float(config.get("delay", 0.0)))
        self.x, self.t = float(config.get("x0", 0.0)), 0
        return {"x": self.x, "t": float(self.t)}

    def step(self, action):
        self.x += action["u"]
        self.t += 1
        return {"x": self.x, "t": float(self.t)}

    def truncation(self):
        return self.t >= self.horizon


class SlowCtor(SlowReset):
    """Its constructor takes ``delay`` seconds (a sim loading a large model)."""

    def __init__(self, delay=2.0):
        time.sleep(delay)
        super().__init__()


class NaNAtReset(SlowReset):
    """Returns NaN for x at every reset; its steps are finite again."""

    def reset(self, config, seed=None):
        out = super().reset(config, seed)
        out["x"] = math.nan
        return out

    def step(self, action):
        self.x = 0.0 if math.isnan(self.x) else self.x
        return super().step(action)


class LogsClose(SlowReset):
    """A ``SlowReset`` that prints when its reset returns and when it is closed.

    Its output goes to the server's log, so a test can tell the order of the two.
    """

    def reset(self, config, seed=None):
        out = super().reset(config, seed)
        print(f"reset returned (delay {float(config.get('delay', 0.0))})", flush=True)
        return out

    def close(self):
        print("close called", flush=True)


class FailingReset(SlowReset):
    """A ``SlowReset`` whose reset raises when ``config['fail']`` is set (else it sleeps ``delay``)."""

    def reset(self, config, seed=None):
        if config.get("fail"):
            raise RuntimeError("reset failed on purpose")
        return super().reset(config, seed)


class Faulty(SlowReset):
    """A ``SlowReset`` whose steps misbehave as its reset config says (all optional).

    ``step_delay``: seconds each step sleeps; ``hang_at``: the step that sleeps an hour;
    ``exit_at``: the step that ends the process with ``os._exit(3)``; ``leak_mb``: MiB each
    step allocates and keeps.
    """

    def reset(self, config, seed=None):
        self.cfg, self.kept = dict(config), []
        return super().reset(config, seed)

    def step(self, action):
        cfg, step = self.cfg, self.t + 1
        time.sleep(float(cfg.get("step_delay", 0.0)))
        if step == cfg.get("hang_at"):
            time.sleep(3600)
        if step == cfg.get("exit_at"):
            os._exit(3)
        if cfg.get("leak_mb"):
            self.kept.append(b"\x01" * int(cfg["leak_mb"] * 2**20))  # touched: resident
        return super().step(action)
