"""Errors raised inside the server, each bound to the gRPC status it maps to."""

from __future__ import annotations

import logging

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


def log_failure(call: str, session_id: str, exc: SimServerError) -> None:
    """Log a failed session call: a sim that raised as a warning, a refused request as info."""
    level = logging.WARNING if exc.code == grpc.StatusCode.INTERNAL else logging.INFO
    log.log(level, "%s on session %s: %s", call, session_id[:8], exc.message)
