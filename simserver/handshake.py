"""The handshake both transports share: the bearer token and the protocol version.

gRPC checks the token on every call (``TokenAuth``) and the protocol in ``Open``; the packed
socket checks both in its HELLO. One rule each, the same messages and status codes.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc

from simgym import PROTOCOL
from simserver.errors import FailedPrecondition, Unauthenticated, clip

WRONG_TOKEN = "missing or wrong token"
_UNAUTHENTICATED_OK = ("/grpc.health.v1.Health/",)


def _same(given: str | bytes, expected: str) -> bool:
    """Constant-time comparison (a timing difference must not reveal the token)."""
    got = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(got, expected.encode())


def check_token(token: str | None, given: str | bytes) -> None:
    """Admit ``given`` when the server requires no token or it is the token.

    Raises:
        Unauthenticated: The token is missing or wrong.
    """
    if token is not None and not _same(given, token):
        raise Unauthenticated(WRONG_TOKEN)


def check_protocol(spoken: str) -> None:
    """Admit a client speaking this server's protocol (or not saying which).

    Raises:
        FailedPrecondition: Naming both versions.
    """
    if spoken and spoken != PROTOCOL:
        raise FailedPrecondition(
            f"protocol mismatch: client speaks {clip(spoken)}, this server speaks {PROTOCOL}; "
            "upgrade the older side"
        )


class TokenAuth(grpc.ServerInterceptor):
    """Rejects gRPC calls without ``authorization: Bearer <token>`` metadata (UNAUTHENTICATED).

    Health checks stay open so that orchestrators can probe readiness.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}"

        def deny(_request: Any, context: grpc.ServicerContext) -> None:
            context.abort(
                Unauthenticated.code,
                f"{WRONG_TOKEN} (send 'authorization: Bearer <token>')",
            )

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Pass authenticated calls on; deny the rest."""
        method = handler_call_details.method
        if method.startswith(_UNAUTHENTICATED_OK):
            return continuation(handler_call_details)
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and _same(value, self._expected):
                return continuation(handler_call_details)
        # Streaming methods (PackedStream, reflection) need a streaming denial.
        if method.endswith("Stream") or "Reflection" in method:
            return self._deny_stream
        return self._deny_unary
