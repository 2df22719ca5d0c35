"""The client's exception hierarchy: callers catch meaningful types, not ``grpc.RpcError``."""

from __future__ import annotations

from collections.abc import Sequence

import grpc


class SimgymError(Exception):
    """Base class of every simgym error; its message is one readable line."""


class SpecError(SimgymError):
    """A spec file is malformed; the message names the file and the key.

    ``more``: further problems of the same file, as (key, problem) pairs. With any, the
    message is a first line that counts them, then one line per problem naming the file and
    the key (every problem at once, not the first of several).
    """

    def __init__(
        self, file: str, key: str, problem: str, more: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.problems = [(key, problem), *more]

        def line(key: str, problem: str) -> str:
            return f"{file}: {key}: {problem}" if key else f"{file}: {problem}"

        if len(self.problems) == 1:
            text = line(key, problem)
        else:
            text = f"{file}: {len(self.problems)} problems:" + "".join(
                f"\n  {line(k, p)}" for k, p in self.problems
            )
        super().__init__(text)
        self.file, self.key, self.problem = file, key, problem


class SpecMismatch(SimgymError):
    """The spec and the sim disagree (an observation name the sim does not have, ...)."""


class RewardError(SimgymError):
    """The spec's reward function raised or returned something that is not a reward.

    The message names the spec file, the key (``reward.function`` or ``rl_sim_spec``), the
    function and the exception, so a bad reward reads as a configuration error.
    """


class RemoteError(SimgymError):
    """A call to a sim server failed. ``code`` is the gRPC status."""

    code: grpc.StatusCode | None = None

    def __init__(
        self, message: str, *, code: grpc.StatusCode | None = None, address: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.address = address


class ServerUnavailable(RemoteError):
    """The server cannot be reached (not started, died, or the network is down)."""


class SimTimeout(RemoteError):
    """The server did not answer within the call's deadline (a hung or too slow sim)."""


class SimCallError(RemoteError):
    """The simulator raised inside the server; the message names the call and exception."""


class SessionLost(RemoteError):
    """The session is gone (closed, expired, or the server restarted)."""


class AuthError(RemoteError):
    """The server rejected the token (or none was given)."""


class ServerBusy(RemoteError):
    """Session limit reached, or the session is busy in another call (a hung sim)."""


class InvalidRequest(RemoteError):
    """The server rejected the request as malformed (wrong action length, NaN, bad config)."""


class ProtocolMismatch(RemoteError):
    """Client and server speak different protocol versions, or the episode state disagrees."""


_BY_CODE: dict[grpc.StatusCode, type[RemoteError]] = {
    grpc.StatusCode.UNAVAILABLE: ServerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: SimTimeout,
    grpc.StatusCode.INTERNAL: SimCallError,
    grpc.StatusCode.NOT_FOUND: SessionLost,
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ServerBusy,
    grpc.StatusCode.ABORTED: ServerBusy,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: ProtocolMismatch,
}


def from_status(code: grpc.StatusCode, details: str, *, address: str, call: str) -> RemoteError:
    """Build the specific exception for a gRPC status."""
    cls = _BY_CODE.get(code, RemoteError)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        details = f"no answer within the deadline ({details})"
    elif code == grpc.StatusCode.UNAVAILABLE:
        details = f"server unavailable ({details})"
    return cls(f"{call} on {address}: {details}", code=code, address=address)
