"""The cart-pole's reward: what Bonsai's Inkling said with goals, as one function."""

import math

FALL_ANGLE = math.radians(12.0)  # rad, as sim/cartpole.py halts
TRACK_HALF_WIDTH = 2.4  # m


def balance(states: dict[str, float], terminated: bool, truncated: bool) -> float:
    """Up to 1 per step for an upright pole near the track's centre, minus 10 when halted.

    Positive per step, so an episode that halts early always loses reward; the shaping
    (a leaning pole, a cart off centre) gives a gradient before anything falls.
    """
    lean = states["pole_angle"] / FALL_ANGLE
    off = (states["cart_position"] - states["target_pole_position"]) / TRACK_HALF_WIDTH
    r = 1.0 - 0.5 * lean**2 - 0.25 * off**2
    return r - 10.0 if terminated else r
