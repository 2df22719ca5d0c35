"""Sims whose episodes do not repeat for a seed: their noise comes from the OS, not a generator."""

import os

from toy import Toy


def _noise() -> float:
    return int.from_bytes(os.urandom(4), "little") / 2**32 * 0.01


class NoisyNoSeed(Toy):
    """Takes no seed (as a Bonsai SDK sim in its own process): not reproducible, and says so."""

    def reset(self, config):
        return super().reset(config | {"x0": float(config.get("x0", 0.0)) + _noise()})

    def step(self, action):
        state = super().step(action)
        self.x += _noise()
        return state | {"x": self.x}


class NoisyIgnoresSeed(NoisyNoSeed):
    """Names a seed and ignores it: a reset(seed=...) that does not repeat is a finding."""

    def reset(self, config, seed=None):
        return super().reset(config)
