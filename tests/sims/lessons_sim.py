"""A sim for lessons and estimated ranges: its state shows the config it was reset with.

``level`` is the config's ``level`` (a lesson parameter); the sim indexes a table with it,
as the issue's HVAC sim sliced with its scenario value, so a float draw raises.
``temp`` has no declared range in the tests' specs: it drifts by ``action u`` around
``10 * level`` (its range is estimated).
"""

TABLE = list(range(100))


class LessonSim:
    """1-D: temp += u each step; an episode lasts `horizon` steps."""

    def __init__(self, horizon: int = 10) -> None:
        self.horizon = horizon
        self.level = 0
        self.temp = 0.0
        self.t = 0

    def reset(self, config, seed=None):
        level = config.get("level", 0)
        TABLE[level : level + 1]  # a float level raises: "slice indices must be integers"
        self.level = level
        self.temp = 10.0 * level
        self.t = 0
        return self._states()

    def step(self, action):
        self.temp += float(action["u"])
        self.t += 1
        return self._states()

    def _states(self):
        return {"level": float(self.level), "temp": self.temp, "t": float(self.t)}

    def termination(self):
        return False

    def truncation(self):
        return self.t >= self.horizon
