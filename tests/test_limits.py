"""Values that must not switch a protection off or cost the server per item (issue 14).

K slots per packed request, ``Open.lease_seconds``, numbers in a reset config, a packed
request's slot timeout: each gets its status code and a short message, through real sockets.
"""

from __future__ import annotations

import math
import sys

import grpc
import pytest
from google.protobuf import struct_pb2

from gymclient.errors import SpecMismatch
from gymclient.spec import load_spec
from gymclient.vector import SimVectorEnv
from simgym import PROTOCOL
from simgym.v1 import simulator_pb2 as pb
from simgym.v1 import simulator_pb2_grpc as pb_grpc

from .conftest import SIMS


def _stub(address: str) -> tuple[grpc.Channel, pb_grpc.SimulatorStub]:
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.SimulatorStub(channel)


def _packed_status(stub: pb_grpc.SimulatorStub, request: pb.PackedRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.PackedStream(iter([request]), timeout=60))
    return info.value


def test_slots_per_packed_request_are_bounded_before_any_slot_runs(start_server):
    server = start_server("toy.py:Declared", args=["--max-slots", "8"])
    channel, stub = _stub(server.address)
    with channel:
        error = _packed_status(stub, pb.PackedRequest(session_ids=["nope"] * 9, actions=[0.0] * 9))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 8" in error.details() and "--max-slots" in error.details()
        # Within the bound, unknown sessions fail their slots only.
        replies = list(
            stub.PackedStream(iter([pb.PackedRequest(session_ids=["nope"] * 8)]), timeout=60)
        )
        assert [e.code for e in replies[0].errors] == [grpc.StatusCode.NOT_FOUND.value[0]] * 8


def test_the_default_slot_bound_refuses_a_hundred_thousand_slots(start_server):
    server = start_server("toy.py:Declared")
    channel, stub = _stub(server.address)
    with channel:
        error = _packed_status(stub, pb.PackedRequest(session_ids=["x"] * 100_000))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert "at most 1024" in error.details()


@pytest.mark.parametrize("lease", [math.nan, -1.0])
def test_a_lease_that_means_nothing_is_refused(start_server, lease):
    server = start_server("toy.py:Declared")
    channel, stub = _stub(server.address)
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.Open(pb.OpenRequest(protocol=PROTOCOL, lease_seconds=lease), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lease_seconds" in info.value.details()


def test_an_infinite_lease_gets_the_server_maximum(start_server):
    server = start_server("toy.py:Declared", args=["--lease", "60"])
    channel, stub = _stub(server.address)
    with channel:
        reply = stub.Open(pb.OpenRequest(protocol=PROTOCOL, lease_seconds=math.inf), timeout=30)
    assert reply.lease_seconds == 60


def _config(**values: object) -> struct_pb2.Struct:
    config = struct_pb2.Struct()
    config.update(values)
    return config


def test_a_non_finite_config_value_is_an_invalid_argument_naming_its_key(start_server):
    server = start_server("toy.py:Toy")
    channel, stub = _stub(server.address)
    with channel:
        sid = stub.Open(pb.OpenRequest(protocol=PROTOCOL, action_names=["u"]), timeout=30)
        for config, key in ((_config(x0=math.nan), "x0"), (_config(x0=[1.0, math.inf]), "x0[1]")):
            with pytest.raises(grpc.RpcError) as info:
                stub.Reset(pb.ResetRequest(session_id=sid.session_id, config=config), timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
            assert f"config {key} is not finite" in info.value.details()
        # In a packed request, the slot fails alone.
        request = pb.PackedRequest(session_ids=[sid.session_id], actions=[0.0])
        request.resets.add(slot=0, config=_config(x0=-math.inf))
        (reply,) = list(stub.PackedStream(iter([request]), timeout=60))
        assert reply.errors[0].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        # The session is fine: a finite config resets it.
        stub.Reset(pb.ResetRequest(session_id=sid.session_id, config=_config(x0=1.0)), timeout=30)


@pytest.mark.parametrize("timeout", [-1.0, math.nan, math.inf])
def test_a_bad_slot_timeout_fails_the_request(start_server, timeout):
    server = start_server("toy.py:Declared")
    channel, stub = _stub(server.address)
    with channel:
        error = _packed_status(stub, pb.PackedRequest(slot_timeout_seconds=timeout))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "slot_timeout_seconds" in error.details()


def test_a_failed_vector_env_constructor_raises_one_error_only(start_server, monkeypatch):
    # Before: the garbage collector's close of the half-built env failed too, and Python
    # printed "Exception ignored in: <function VectorEnv.__del__ ...>" with a traceback.
    server = start_server("toy.py:Toy")
    spec = load_spec(SIMS / "toy_spec.yaml")
    spec = spec.model_copy(
        update={"observations": {**spec.observations, "nope": spec.observations["x"]}}
    )
    ignored: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    with pytest.raises(SpecMismatch):
        SimVectorEnv(spec, 2, [server.address])
    import gc

    gc.collect()
    assert ignored == []
