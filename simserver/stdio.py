"""Route a simulator's own prints to the log, so a chatty sim can never block the server.

A sidecar's stdout is often a pipe nobody reads once the address is known; a sim
that prints on every step would fill it and freeze. After the server has printed
its address, Python-level ``print`` goes to a logger and file descriptor 1 is
pointed at stderr (for prints from C extensions or subprocesses).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading


class LogWriter(io.TextIOBase):
    """A text stream that turns complete lines into log records."""

    def __init__(self, logger: logging.Logger, level: int = logging.INFO) -> None:
        super().__init__()
        self._logger = logger
        self._level = level
        self._buffer = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        """Always writable."""
        return True

    def write(self, text: str) -> int:
        """Buffer text; log each complete line."""
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            if line.strip():
                self._logger.log(self._level, "%s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        """Log any partial line."""
        with self._lock:
            rest, self._buffer = self._buffer, ""
        if rest.strip():
            self._logger.log(self._level, "%s", rest.rstrip())


def capture_sim_output() -> None:
    """Send ``sys.stdout`` to the ``sim.stdout`` logger and fd 1 to stderr."""
    sys.stdout.flush()
    try:
        os.dup2(sys.stderr.fileno(), 1)
    except (OSError, ValueError):  # no real fds (e.g. under some test runners)
        pass
    sys.stdout = LogWriter(logging.getLogger("sim.stdout"))
