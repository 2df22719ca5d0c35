"""A house heated by an on/off heater: the shape of Bonsai's HVAC samples, our own model.

The shape simgym hosts without glue (docs/simserver.md): ``reset(**config)`` takes the
scenario, ``step(hvacON)`` takes the heater's command, the values are read from ``state``.

The physics: one thermal mass losing heat to the outside with time constant ``TAU_HOURS``,
and a heater that, when on, warms it by ``HEAT_RATE`` kelvin per hour. The outside follows one
of four daily profiles, picked by the integer ``schedule_index``.
"""

from __future__ import annotations

import math

STEP_MINUTES = 5
TAU_HOURS = 3.0  # the house's cooling time constant
HEAT_RATE = 10.0  # K/h the heater adds when on (30 K above the outside at most)
# Outside temperature profiles (°C): mean and half the day's swing, coldest at 04:00.
PROFILES = [(-2.0, 4.0), (4.0, 5.0), (9.0, 6.0), (14.0, 4.0)]


class House:
    """Inside temperature ``Tin`` driven by the heater (``hvacON`` 0 or 1) and ``Tout``."""

    def __init__(self) -> None:
        self.reset()

    def reset(
        self,
        Tset: int = 21,  # Bonsai's names, as the .ink spells them
        Tin_initial: float = 20.0,
        schedule_index: int = 1,
        start_hour: float = 0.0,
    ) -> None:
        """Start an episode. ``schedule_index`` indexes ``PROFILES``: it must be an integer."""
        self.mean, self.swing = PROFILES[schedule_index]  # a float index raises TypeError
        self.Tset = Tset
        self.Tin = float(Tin_initial)
        self.hour = float(start_hour)
        self.hvacON = 0

    @property
    def Tout(self) -> float:
        """The outside temperature now."""
        return self.mean - self.swing * math.cos(2 * math.pi * (self.hour - 4.0) / 24.0)

    def step(self, hvacON: int) -> None:
        """Advance five minutes with the heater off (0) or on (1); nothing else is accepted."""
        if hvacON not in (0, 1):
            raise ValueError(f"hvacON must be 0 or 1, got {hvacON!r}")
        self.hvacON = int(hvacON)
        dt = STEP_MINUTES / 60.0
        loss = (self.Tout - self.Tin) / TAU_HOURS
        self.Tin += dt * (loss + HEAT_RATE * self.hvacON)
        self.hour = (self.hour + dt) % 24.0

    @property
    def state(self) -> dict[str, float]:
        """The current values, by name."""
        return {
            "Tin": self.Tin,
            "Tout": self.Tout,
            "Tset": float(self.Tset),
            "hour": self.hour,
            "hvacON": float(self.hvacON),
        }
