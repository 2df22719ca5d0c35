"""A cart with an inverted pole on a finite track, in the shape of Bonsai's sample sims.

The shape (what simgym hosts without glue, see docs/simserver.md "What a sim can look like"):
``reset(**config)`` takes the scenario as keyword arguments, ``step(command)`` takes one
number, neither returns anything, the current values are read from the ``state`` property,
and ``halted()`` says when the episode cannot go on.

The physics are the classic cart-pole equations (a rigid pole hinged on a cart, no friction),
integrated with semi-implicit Euler steps of ``STEP_SECONDS``.
"""

from __future__ import annotations

import math

GRAVITY = 9.81  # m/s²
STEP_SECONDS = 0.02  # one control step
MAX_FORCE = 10.0  # N pushed on the cart at |command| == 1
TRACK_HALF_WIDTH = 2.4  # m: the cart leaves the track beyond this
FALL_ANGLE = math.radians(12.0)  # rad: the pole has fallen beyond this

DEFAULT_CART_MASS = 1.0  # kg
DEFAULT_POLE_MASS = 0.1  # kg
DEFAULT_POLE_LENGTH = 1.0  # m, the whole pole


class CartPole:
    """An inverted pendulum on a cart; the command pushes the cart left (-1) or right (+1)."""

    def __init__(self) -> None:
        self.reset()

    def reset(
        self,
        cart_mass: float = DEFAULT_CART_MASS,
        pole_mass: float = DEFAULT_POLE_MASS,
        pole_length: float = DEFAULT_POLE_LENGTH,
        initial_cart_position: float = 0.0,
        initial_cart_velocity: float = 0.0,
        initial_pole_angle: float = 0.0,
        initial_angular_velocity: float = 0.0,
        target_pole_position: float = 0.0,
    ) -> None:
        """Start an episode from the given physical parameters and initial conditions."""
        self.cart_mass = float(cart_mass)
        self.pole_mass = float(pole_mass)
        self.pole_length = float(pole_length)
        self.x = float(initial_cart_position)
        self.x_dot = float(initial_cart_velocity)
        self.theta = float(initial_pole_angle)  # 0 is upright, positive leans right
        self.theta_dot = float(initial_angular_velocity)
        self.target = float(target_pole_position)

    def step(self, command: float) -> None:
        """Advance one control step with ``command`` in [-1, 1] (clipped) scaled to a force."""
        force = MAX_FORCE * max(-1.0, min(1.0, float(command)))
        total = self.cart_mass + self.pole_mass
        half = self.pole_length / 2.0  # the pole's centre of mass
        sin, cos = math.sin(self.theta), math.cos(self.theta)
        # The pole's angular acceleration follows from the torque balance about the hinge with
        # the cart's reaction eliminated; the cart's then from Newton's law on cart and pole.
        push = (force + self.pole_mass * half * self.theta_dot**2 * sin) / total
        theta_acc = (GRAVITY * sin - cos * push) / (
            half * (4.0 / 3.0 - self.pole_mass * cos**2 / total)
        )
        x_acc = push - self.pole_mass * half * theta_acc * cos / total
        # Semi-implicit Euler: velocities first, positions from the new velocities.
        self.x_dot += STEP_SECONDS * x_acc
        self.theta_dot += STEP_SECONDS * theta_acc
        self.x += STEP_SECONDS * self.x_dot
        self.theta += STEP_SECONDS * self.theta_dot

    @property
    def state(self) -> dict[str, float]:
        """The current values, by name."""
        return {
            "cart_position": self.x,
            "cart_velocity": self.x_dot,
            "pole_angle": self.theta,
            "pole_angular_velocity": self.theta_dot,
            "pole_tip_position": self.x + self.pole_length * math.sin(self.theta),
            "target_pole_position": self.target,
            "cart_mass": self.cart_mass,
            "pole_mass": self.pole_mass,
            "pole_length": self.pole_length,
        }

    def halted(self) -> bool:
        """Whether the pole has fallen or the cart has left the track."""
        return abs(self.theta) > FALL_ANGLE or abs(self.x) > TRACK_HALF_WIDTH
