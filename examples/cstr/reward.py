"""Rewards for the CSTR sample: track the concentration reference, never run away."""

import math


def reward(states: dict[str, float], terminated: bool, truncated: bool) -> float:
    """The reference's reward: exp(-|Cr - Cref|) on the measured Cr, minus 10 on termination."""
    r = math.exp(-abs(states["Cr"] - states["Cref"]))
    return r - 10.0 if terminated else r


def tracking(states: dict[str, float], terminated: bool, truncated: bool) -> float:
    """The shipped spec's reward: sharp near zero error, scored on the noise-free Cr.

    The error is the one the KPI (``kpi_rms_conc_error``) accumulates. Measurement noise is
    not the agent's doing, so scoring the noise-free concentration (a simulator can report
    it; a plant could not) removes noise from the learning signal without changing the task.
    ``exp(-|e|)`` alone hardly changes below |e| = 0.2 (0.82 → 1); the ``exp(-10|e|)`` half
    keeps a gradient down to a few hundredths. Positive per step, so ending an episode early
    always costs reward; minus 10 on termination (runaway).
    """
    e = abs(states["Cr_no_noise"] - states["Cref"])
    r = 0.5 * (math.exp(-e) + math.exp(-10.0 * e))
    return r - 10.0 if terminated else r
