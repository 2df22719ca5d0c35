"""A child process's output into a log file of bounded size (the latest output kept).

Sims print: a public Bonsai sample connector prints a line per event, about 0.5 GB an hour for
16 copies. A copy's output therefore goes through a pipe to a thread that writes it to its log
and, when the log would pass ``max_bytes``, moves it to ``<log>.1`` (replacing the older one)
and starts a new one: at most twice ``max_bytes`` on disk per process, and the last lines,
where a crash's traceback is, always in the current log.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import IO

CHUNK = 64 * 1024


def rotated(path: Path) -> Path:
    """Where the previous part of a capped log is kept."""
    return path.with_name(path.name + ".1")


def pump(pipe: IO[bytes], path: Path, max_bytes: int) -> threading.Thread:
    """Copy ``pipe`` into ``path`` until EOF in a daemon thread, rotating past ``max_bytes``.

    Args:
        pipe: The child's stdout (its stderr merged into it), opened in binary mode.
        path: The log file; appended to (a restarted child continues its log).
        max_bytes: The size at which the log moves to ``<log>.1`` and a new one starts.

    Returns:
        The thread (it ends at EOF: when the child and whatever inherited its output end).
    """

    def run() -> None:
        fd = pipe.fileno()
        out = open(path, "ab")  # replaced on rotation, closed in finally
        try:
            size = out.tell()
            while True:
                try:
                    data = os.read(fd, CHUNK)
                except OSError:
                    break
                if not data:
                    break
                if size and size + len(data) > max_bytes:
                    out.close()
                    os.replace(path, rotated(path))
                    out = open(path, "ab")
                    size = 0
                out.write(data)
                out.flush()  # the supervisor reads the log's tail when the child dies
                size += len(data)
        finally:
            out.close()
            with contextlib.suppress(OSError):
                pipe.close()

    thread = threading.Thread(target=run, name=f"log {path.name}", daemon=True)
    thread.start()
    return thread
