"""A sim that prints everywhere before serving: at import, in its constructor and in reset.

Both Python-level prints and raw writes to file descriptor 1 (what C extensions and
subprocesses do), so that ``simserver`` must route stdout to the log before importing it.
"""

import os
import sys

print("loud: printed at import")
os.write(1, b"loud: fd 1 at import\n")


class Loud:
    """A 1-D integrator that talks on stdout in every call that runs before serving."""

    action_names = ("u",)

    def __init__(self):
        print("loud: printed in the constructor")
        os.write(1, b"loud: fd 1 in the constructor\n")
        sys.stdout.write("loud: partial line ")
        self.x = 0.0

    def reset(self, config):
        print("loud: printed in reset")
        os.write(1, b"loud: fd 1 in reset\n")
        self.x = 0.0
        return {"x": self.x}

    def step(self, action):
        self.x += action["u"]
        return {"x": self.x}
