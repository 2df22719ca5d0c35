"""The one table of gRPC status codes and their numbers, for messages that carry a number.

``PackedReply.errors`` and the packed socket's STATUS frames carry a status as its number
(``google.rpc.Code``); both sides translate with these two functions.
"""

from __future__ import annotations

import grpc

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def code_of(number: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a status number (``UNKNOWN`` for a number it does not know)."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


def number_of(code: grpc.StatusCode) -> int:
    """The number a status code travels as."""
    return int(code.value[0])
