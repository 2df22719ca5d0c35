"""Errors raised inside the server, each bound to the gRPC status it maps to."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass

import grpc

from simgym.targets import LoadError as LoadError  # re-exported: the sim side's start-up error

log = logging.getLogger("simserver.calls")

# Client-supplied text quoted in an error status is cut to this many characters: a status
# travels in the reply's metadata, and a client refuses metadata over its limit (8 KiB by
# default), so echoing a huge input would turn the right code into RESOURCE_EXHAUSTED.
CLIP = 120


def clip(text: object, limit: int = CLIP) -> str:
    """``text`` (or its ``str``) cut to ``limit`` characters, saying how long it was.

    For quoting client input (a protocol string, a token, unknown keys) in an error message
    without echoing all of it.

    Returns:
        The text itself when short enough, else a prefix and "… (N chars)".
    """
    s = text if isinstance(text, str) else str(text)
    if len(s) <= limit:
        return s
    return f"{s[:limit]}… ({len(s):,} chars)"


class SimServerError(Exception):
    """Base class: a failure of one request, reported to the client with ``code``."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(SimServerError):
    """The request is malformed (wrong action length, NaN action, bad config)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(SimServerError):
    """The bearer token is missing or wrong."""

    code = grpc.StatusCode.UNAUTHENTICATED


class SessionNotFound(SimServerError):
    """Unknown, closed or expired session id."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(SimServerError):
    """The session is not in a state that allows the call (step before reset)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(SimServerError):
    """The server's session limit is reached."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class SessionBusy(SimServerError):
    """Another call on the same session is still running (e.g. a hung sim)."""

    code = grpc.StatusCode.ABORTED


class SimCallFailed(SimServerError):
    """The simulator itself raised; the message names the call and the exception."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, call: str, exc: BaseException) -> None:
        # The sim's message may quote its input (a config from the client): cut it, longer
        # than client text since it is the one clue to a sim's bug.
        super().__init__(f"sim {call} raised {type(exc).__name__}: {clip(exc, 1000)}")
        self.call = call
        self.exc = exc


@dataclass
class _Window:
    """One kind's window in a ``Throttle``."""

    start: float
    logger: logging.Logger
    level: int
    held: int = 0  # lines of this kind not logged since the window opened
    last: tuple[str, tuple[object, ...]] = ("", ())


class Throttle:
    """Rate-limited logging: per kind, the first line of a window, then one summary.

    A client can cause a failure per request (or per slot of a packed request) as fast as
    the server answers; a log line each would fill a disk. The first line of a kind is
    logged as is; the same kind again within ``window`` seconds is only counted, and when
    the window closes one line says how many more there were (and quotes the last).

    Args:
        window: Seconds a kind's window lasts.
        max_kinds: Kinds tracked at once; beyond, further kinds share one window.
    """

    def __init__(self, window: float = 10.0, max_kinds: int = 1024) -> None:
        self.window = window
        self.max_kinds = max_kinds
        self._lock = threading.Lock()
        self._windows: dict[Hashable, _Window] = {}

    def log(
        self, logger: logging.Logger, level: int, kind: Hashable, msg: str, *args: object
    ) -> None:
        """Log ``msg % args`` unless a line of the same ``kind`` was logged in this window."""
        if not logger.isEnabledFor(level):
            return
        now = time.monotonic()
        with self._lock:
            win = self._windows.get(kind)
            if win is not None and (win.held or now - win.start < self.window):
                win.held += 1
                win.last = (msg, args)
                if win.held == 1:  # the first line held back: summarise at the window's end
                    timer = threading.Timer(
                        max(0.0, win.start + self.window - now), self._summarise, (kind,)
                    )
                    timer.daemon = True
                    timer.start()
                return
            if win is None and len(self._windows) >= self.max_kinds:
                self._prune(now)
                if len(self._windows) >= self.max_kinds:
                    kind = ("other kinds",)
            self._windows[kind] = _Window(now, logger, level)
        logger.log(level, msg, *args)

    def _prune(self, now: float) -> None:
        """Forget closed windows with nothing held back (under the lock)."""
        for kind in [
            k for k, w in self._windows.items() if not w.held and now - w.start >= self.window
        ]:
            del self._windows[kind]

    def _summarise(self, kind: Hashable) -> None:
        with self._lock:
            win = self._windows.pop(kind, None)
        if win is None or not win.held:
            return
        msg, args = win.last
        win.logger.log(
            win.level,
            "... and %s more like it in the last %g s; the last: " + msg,
            f"{win.held:,}",
            self.window,
            *args,
        )

    def flush(self) -> None:
        """Log every pending summary now (at shutdown)."""
        with self._lock:
            kinds = [k for k, w in self._windows.items() if w.held]
        for kind in kinds:
            self._summarise(kind)


_throttle = Throttle()


def log_throttled(
    logger: logging.Logger, level: int, kind: Hashable, msg: str, *args: object
) -> None:
    """Log through the server's ``Throttle``: repeated lines of one ``kind`` are counted."""
    _throttle.log(logger, level, kind, msg, *args)


def flush_logs() -> None:
    """Log the counts of lines held back so far (the server calls it when it stops)."""
    _throttle.flush()


def log_failure(call: str, session_id: str, exc: SimServerError) -> None:
    """Log a failed session call: a sim that raised as a warning, a refused request as info.

    Rate-limited per call, status code and (for a sim that raised) exception type: a client
    sending 100k requests for unknown sessions makes a line and a count, not 100k lines.
    """
    level = logging.WARNING if exc.code == grpc.StatusCode.INTERNAL else logging.INFO
    sim_exc = type(exc.exc).__name__ if isinstance(exc, SimCallFailed) else ""
    kind = (call, exc.code, sim_exc)
    log_throttled(log, level, kind, "%s on session %s: %s", call, session_id[:8], exc.message)


class _UnparsableMessages(logging.Filter):
    """gRPC's traceback for a message it cannot parse, as one rate-limited line of ours.

    gRPC logs every request whose bytes do not parse (random bytes, a config nested past
    protobuf's recursion limit) with a full traceback before answering INTERNAL: one client
    could fill the log with them, and no simgym code ran to say more.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Exception deserializing"):
            return True
        reason = f"{type(record.exc_info[1]).__name__}" if record.exc_info else "?"
        log_throttled(
            log,
            logging.WARNING,
            "unparsable message",
            "a client sent a message that does not parse as simgym.v1 (%s); it got INTERNAL",
            reason,
        )
        return False


_UNPARSABLE = _UnparsableMessages()


def quiet_grpc_parse_errors() -> None:
    """Turn gRPC's parse-failure tracebacks into rate-limited lines (idempotent)."""
    logger = logging.getLogger("grpc._common")
    if _UNPARSABLE not in logger.filters:
        logger.addFilter(_UNPARSABLE)
