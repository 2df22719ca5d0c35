"""Sims in the common shapes simgym hosts without glue (tests/test_shapes.py), one per shape.

Each is a 1-D integrator (x += gain * u) that ends its episode past |x| > 3 (terminated) or
at step 5 (truncated), told in the way its shape tells it.
"""

from typing import Dict  # noqa: UP035 - the Bonsai samples' spelling, which detection must read


class KeywordConfig:
    """Bonsai's sample shape: reset(**config) by named keywords, step(one number), a `state`
    property, `halted()`; reset and step return nothing."""

    def __init__(self):
        self.reset()

    def reset(self, x0: float = 0.0, gain: float = 1.0):
        self.x, self.gain, self.t = float(x0), float(gain), 0

    def step(self, command: float):
        self.x += self.gain * command
        self.t += 1

    @property
    def state(self):
        return {"x": self.x, "gain": self.gain, "truncated": self.t >= 5}

    def halted(self):
        return abs(self.x) > 3


class VarKeywords:
    """reset(**config) without a seed parameter, step(u) unannotated but named as the only
    action, state from get_states(), flags in the state dict."""

    def reset(self, **config):
        self.x, self.t = float(config.get("x0", 0.0)), 0
        self.config = config

    def step(self, u):
        self.x += u
        self.t += 1

    def get_states(self):
        return {"x": self.x, "t": float(self.t), "terminated": abs(self.x) > 3, "done": False}


class Seeded:
    """reset(seed=None, **config): the seed goes to the parameter it names, the config as
    keywords; a `states` attribute (not a method) holds the state."""

    def reset(self, seed=None, **config):
        self.seed = seed
        self.states = {"x": float(config.get("x0", 0.0)), "seed": float(seed or 0)}

    def step(self, action: Dict[str, float]):  # noqa: UP006
        self.states = {**self.states, "x": self.states["x"] + action["u"]}


class Rebuilt:
    """No reset: the constructor is the reset, a new object per episode (config and seed as
    constructor arguments); the first state from `state`, the next ones from step."""

    built = 0  # objects built in this process, so a test can see one per episode

    def __init__(self, x0: float = 0.0, seed: int | None = None):
        Rebuilt.built += 1
        self.x, self.t, self.seed = float(x0), 0, seed

    @property
    def state(self):
        return {"x": self.x, "seed": float(self.seed or 0), "built": float(Rebuilt.built)}

    def step(self, action):
        self.x += action["u"]
        self.t += 1
        return self.state

    def termination(self):
        return abs(self.x) > 3

    def truncation(self):
        return self.t >= 5


class Interface:
    """What a Bonsai session's get_interface() returns (the SDK's SimulatorInterface has these
    attributes; the SDK itself is not needed to read them)."""

    def __init__(self, name, description):
        self.name, self.description = name, description


class Session:
    """A Bonsai session class: episode_start(config), episode_step(action dict), get_state(),
    halted(), get_interface(); its constructor takes arguments with defaults."""

    def __init__(self, gain: float = 1.0, log_file: str = ""):
        self.gain = gain
        self.x = 0.0

    def get_interface(self, simulator_context: str = ""):
        number = {"category": "Number", "start": -1, "stop": 1}
        action = {"category": "Struct", "fields": [{"name": "push", "type": number}]}
        return Interface("bonsai-session", {"action": action})

    def episode_start(self, config: Dict = None):  # noqa: UP006, RUF013
        self.x = float((config or {}).get("x0", 0.0))

    def episode_step(self, action: Dict):  # noqa: UP006
        self.x += self.gain * action["push"]

    def get_state(self):
        return {"x": self.x}

    def halted(self):
        return abs(self.x) > 3


class Opaque:
    """step(a): neither annotated nor named as its action, so detection sends a dict; the user
    picks one number with --shape step=scalar (or a new object per episode with
    reset=constructor)."""

    def __init__(self, x0: float = 0.0):
        self.x = float(x0)

    def reset(self, config):
        self.x = float(config.get("x0", 0.0)) + 100.0  # tells a reset from a new object
        return self.state

    def step(self, a):
        self.x += a
        return self.state

    @property
    def state(self):
        return {"x": self.x}


class NoStep:
    """A reset but nothing that steps: cannot be hosted."""

    def reset(self, config):
        return {"x": 0.0}


class NoState:
    """Reset and step return nothing and there is nowhere to read the state from."""

    def reset(self, config):
        self.x = 0.0

    def step(self, action):
        self.x += 1
