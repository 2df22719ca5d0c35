"""The sim of ``bench/expr.py``: a cart-pole-like 4-state system, cheap and never ending.

Its episodes end only by the spec (``max_episode_steps``, ``terminal:``, goals), so every
variant of the benchmark runs the same steps and resets.
"""

from __future__ import annotations

import math


class Pole:
    """Linearised cart-pole (x, x_dot, theta, theta_dot) pushed by ``force`` in [-1, 1]."""

    action_names = ("force",)
    state_names = ("x", "x_dot", "theta", "theta_dot")
    config_keys = ("theta0",)

    def __init__(self) -> None:
        self.s = [0.0, 0.0, 0.0, 0.0]

    def reset(self, config: dict, seed: int | None = None) -> dict:
        self.s = [0.0, 0.0, float(config.get("theta0", 0.05)), 0.0]
        return self.state()

    def step(self, action: dict) -> dict:
        x, v, th, w = self.s
        f = float(action["force"])
        dt = 0.02
        acc = f - 0.1 * math.sin(th)
        w_acc = 9.8 * math.sin(th) - f * math.cos(th)
        self.s = [x + dt * v, v + dt * acc, th + dt * w, w + dt * w_acc]
        return self.state()

    def state(self) -> dict:
        return dict(zip(self.state_names, self.s, strict=True))
