"""Reward for the CSTR sample: track the concentration reference, never run away."""

import math


def reward(states: dict[str, float], terminated: bool, truncated: bool) -> float:
    """exp(-|Cr - Cref|) each step (1 when on target), minus 10 on termination."""
    r = math.exp(-abs(states["Cr"] - states["Cref"]))
    return r - 10.0 if terminated else r
