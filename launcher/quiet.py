"""Third-party output the user cannot act on: kept out of the terminal, kept in ``train.log``.

During ``simgym train`` Ray, RLlib, MLflow and the Azure SDK print to the process's stderr:
Ray's API-stack notice, its C++ core worker's warnings (``core_worker.cc``), RLlib's
deprecation warnings, MLflow's database set-up, marshmallow's warnings from inside azure-ai-ml.
None of them is the user's to fix, and they push the progress table around. ``ThirdPartyOutput``
puts a pipe in place of file descriptor 2 (so C++ writes are caught as well as Python's):
every line goes to ``train.log`` (logger ``simgym.stderr``), and a line reaches the terminal
unless it is one of those (``is_noise``). Anything else — simgym's own errors, a traceback,
a user's print — still reaches the terminal as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from types import TracebackType

log = logging.getLogger("simgym.stderr")

# Line shapes of third-party output (docs/training.md, "What reaches the terminal").
_NOISE = re.compile(
    "|".join(
        (
            # Ray's C++ logs: "[2026-12-03 05:37:07,033 E 11158 11158] core_worker.cc:2465: ..."
            r"^\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\] \w+\.cc:\d+",
            # Ray's Python logs: "2026-12-03 05:37:04,850\tWARNING algorithm_config.py:5160 -- "
            r"^\d{4}-\d\d-\d\d [\d:,]+\s+(DEBUG|INFO|WARNING) [\w.]+\.py:\d+ -- ",
            # MLflow's and alembic's set-up lines.
            r"^\d{4}/\d\d/\d\d [\d:]+ (INFO|WARNING) mlflow\.",
            r"^(INFO|WARNI)\s+\[alembic\.",
            # A Python warning raised inside an installed package (azure-ai-ml, marshmallow,
            # ray, ...): "/.../site-packages/pkg/mod.py:129: SomeWarning: ..."
            r"[/\\]site-packages[/\\].+\.py:\d+: \w*Warning: ",
        )
    )
)


def is_noise(line: str) -> bool:
    """True for a line of third-party output the terminal leaves out."""
    return bool(_NOISE.search(line))


class ThirdPartyOutput:
    """Within its ``with`` block, stderr lines go to ``train.log`` and only others to the terminal.

    A dropped line takes the indented lines right after it along (a Python warning's
    source line).
    """

    def __init__(self) -> None:
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ThirdPartyOutput:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
            read, write = os.pipe()
        except OSError:  # no fd 2 (a daemon): nothing to filter
            return self
        os.dup2(write, 2)
        os.close(write)
        self._saved = saved
        self._thread = threading.Thread(
            target=self._pump, args=(read, saved), name="simgym-stderr", daemon=True
        )
        self._thread.start()
        return self

    @staticmethod
    def _pump(read: int, terminal: int) -> None:
        dropping = False
        with os.fdopen(read, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                try:
                    chunk = pipe.read(65536)
                except OSError:
                    break
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    dropping = _route(raw + b"\n", terminal, dropping)
            if pending:
                _route(pending, terminal, dropping)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._saved is None:
            return
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        # fd 2 back to the terminal: the pipe ends once every process that inherited it
        # (Ray's, sidecars) has let go of it; the pump is a daemon, so it never holds us up.
        os.dup2(self._saved, 2)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if not self._thread.is_alive():
                os.close(self._saved)
        self._saved = None


def _route(raw: bytes, terminal: int, dropping: bool) -> bool:
    """Log one line, write it to the terminal unless it is noise; whether it was dropped."""
    line = raw.decode("utf-8", "replace").rstrip("\n")
    if line.strip():
        log.info("%s", line)
    drop = is_noise(line) or (dropping and line.startswith((" ", "\t")))
    if not drop:
        with contextlib.suppress(OSError):
            os.write(terminal, raw)
    return drop
