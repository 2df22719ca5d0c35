"""simserver's bounds (issue 14): what one client can cost the server, through real sockets.

Echoed input, idle streams, slow or greedy packed-socket peers, log volume: each test sets up
the abuse and checks that the server answers, with a short status, within a bounded wait.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from simgym.v1 import simulator_pb2 as pb
from simgym.v1 import simulator_pb2_grpc as pb_grpc

# A client refuses a status whose metadata exceeds 8 KiB (gRPC's default): a status that
# quotes input must stay far below it.
SHORT = 1024


def _stub(address: str) -> tuple[grpc.Channel, pb_grpc.SimulatorStub]:
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.SimulatorStub(channel)


def _status_of(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


# --------------------------------------------------------------------------- echoed input


def test_a_huge_protocol_string_gets_its_code_and_a_short_message(start_server):
    server = start_server("toy.py:Toy")
    channel, stub = _stub(server.address)
    with channel:
        request = pb.OpenRequest(protocol="v" * 2**20, action_names=["u"])
        error = _status_of(lambda: stub.Open(request, timeout=30))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
    assert len(error.details()) < SHORT and "protocol mismatch" in error.details()
    assert "1,048,576 chars" in error.details()


def test_fifty_thousand_unknown_config_keys_get_a_short_invalid_argument(start_server):
    server = start_server("toy.py:Declared")
    channel, stub = _stub(server.address)
    with channel:
        session = stub.Open(pb.OpenRequest(), timeout=30).session_id
        config = struct_pb2.Struct()
        config.update({f"unknown_key_{i}": 1.0 for i in range(50_000)})
        request = pb.ResetRequest(session_id=session, config=config, seq=1)
        error = _status_of(lambda: stub.Reset(request, timeout=60))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert len(error.details()) < SHORT and "unknown config key" in error.details()
