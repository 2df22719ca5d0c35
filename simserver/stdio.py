"""Route a simulator's own prints to the log, so a chatty sim can never block the server.

A sidecar's stdout is often a pipe nobody reads once the address is known; a sim
that prints on every step would fill it and freeze. And a sim that prints while it
is imported, built or probed would put lines on stdout before the address, where a
launcher reads the first line as the address. So, before the sim is even imported,
``redirect_sim_output`` keeps a private copy of the real stdout for the address,
points Python-level ``print`` at a logger and file descriptor 1 at the log (for
prints from ``os.write``, C extensions or subprocesses).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path


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


def redirect_sim_output(log_file: Path | str | None = None) -> Callable[[list[str]], None]:
    """Send stdout to the log from now on; return the function that prints the address.

    Call it before the sim is imported. Python-level writes to ``sys.stdout`` go to the
    ``sim.stdout`` logger; file descriptor 1 is pointed at ``log_file`` (appending, as the
    logging handler does) or, without one, at stderr, which is then the log.

    Args:
        log_file: The server's log file, if it logs to a file.

    Returns:
        ``announce(lines)``: writes the lines to the original stdout (a duplicate of fd 1
        kept aside) and closes it, so a reader of the pipe sees the address, then EOF.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except (OSError, ValueError):
        saved = -1
    if saved < 0:
        # No real fds (e.g. an in-process test runner): keep stdout as it is.
        def announce_here(lines: list[str]) -> None:
            for line in lines:
                print(line, flush=True)

        return announce_here
    if log_file is not None:
        target = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(target, 1)
        os.close(target)
    else:
        os.dup2(sys.stderr.fileno(), 1)
    sys.stdout = LogWriter(logging.getLogger("sim.stdout"))

    def announce(lines: list[str]) -> None:
        with open(saved, "w", closefd=True) as real:
            for line in lines:
                real.write(line + "\n")

    return announce
