"""Sims with discrete actions: they index with their actions, so a float (1.0) would fail."""


class Heater:
    """A room cooling toward 10 degrees, a heater that is off (0) or on (1).

    ``T += 0.2 (10 - T) + 3 * on``: always on settles at 25, always off at 10; holding 20
    means switching. ``step`` indexes a tuple with ``action["on"]``: only an int works.
    """

    HEAT = (0.0, 3.0)

    def __init__(self, horizon: int = 50) -> None:
        self.horizon = horizon
        self.T, self.t, self.got = 15.0, 0, -1.0

    def reset(self, config, seed=None):
        self.T = float(config.get("T0", 15.0))
        self.t, self.got = 0, -1.0
        return self._state()

    def step(self, action):
        on = action["heat"]
        heat = self.HEAT[on]  # TypeError for 1.0: the sim must receive the int
        self.got = on
        self.T += 0.2 * (10.0 - self.T) + heat
        self.t += 1
        return self._state()

    def _state(self):
        return {
            "T": self.T,
            "score": -abs(self.T - 20.0),
            "got_on": float(self.got),
        }

    def termination(self):
        return False

    def truncation(self):
        return self.t >= self.horizon


class Furnace(Heater):
    """Three discrete actions: ``on`` (0/1), ``stage`` (0..4), ``mode`` (off 0, heat 1, cool 2)."""

    SIGN = (0.0, 1.0, -1.0)

    def step(self, action):
        on, stage, mode = action["heat"], action["stage"], action["mode"]
        _ = self.HEAT[on]  # each must be an int: indexing proves it
        sign = self.SIGN[mode]
        self.got = (on, stage, mode)
        self.T += 0.2 * (10.0 - self.T) + on * stage * sign
        self.t += 1
        return self._state()

    def _state(self):
        on, stage, mode = self.got if isinstance(self.got, tuple) else (-1, -1, -1)
        return {
            "T": self.T,
            "score": -abs(self.T - 20.0),
            "got_on": float(on),
            "got_stage": float(stage),
            "got_mode": float(mode),
        }


try:
    import gymnasium as gym
    import numpy as np
except ImportError:  # pragma: no cover - gymnasium is a base dependency
    gym = None

if gym is not None:

    class Switchboard(gym.Env):
        """A Gymnasium env with a ``MultiDiscrete([3, 2], start=[1, 0])`` action space.

        Its observation is the last action it received (so a test reads back what it got);
        ``step`` indexes with each entry, which only integers can do.
        """

        LEVELS = (None, 10.0, 20.0, 30.0)

        def __init__(self) -> None:
            self.action_space = gym.spaces.MultiDiscrete([3, 2], start=[1, 0])
            self.observation_space = gym.spaces.Box(-1.0, 40.0, (2,), np.float64)
            self._got = np.array([-1.0, -1.0])

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self._got = np.array([-1.0, -1.0])
            return self._got.copy(), {}

        def step(self, action):
            level, flip = (int(a) for a in action)
            assert action.dtype.kind == "i", action.dtype
            reward = self.LEVELS[level] * (1 if flip else -1)
            self._got = np.array([float(level), float(flip)])
            return self._got.copy(), reward, False, False, {}
