"""simserver's bounds (issue 14): what one client can cost the server, through real sockets.

Echoed input, idle streams, slow or greedy packed-socket peers, log volume: each test sets up
the abuse and checks that the server answers, with a short status, within a bounded wait.
"""

from __future__ import annotations

import queue
import re
import time

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

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


# --------------------------------------------------------------------------- idle gRPC streams


def _silent_stream(stub: pb_grpc.SimulatorStub, hold: queue.Queue, first=None):
    """A PackedStream call whose client sends ``first`` (if any), then nothing until released."""

    def requests():
        if first is not None:
            yield first
        while (item := hold.get()) is not None:
            yield item

    return stub.PackedStream(requests())


def _wait_done(calls, count: int, within: float) -> list:
    deadline = time.monotonic() + within
    while sum(c.done() for c in calls) < count:
        assert time.monotonic() < deadline, f"only {sum(c.done() for c in calls)} streams ended"
        time.sleep(0.05)
    return [c for c in calls if c.done()]


def test_idle_streams_are_capped_and_health_and_open_still_answer(start_server):
    # 4 sessions: a pool of 12 threads, which 16 silent streams used to take entirely.
    server = start_server("toy.py:Toy", args=["--max-sessions", "4"])
    channel, stub = _stub(server.address)
    hold: queue.Queue = queue.Queue()
    with channel:
        calls = [_silent_stream(stub, hold) for _ in range(16)]
        try:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert stub.Open(pb.OpenRequest(action_names=["u"]), timeout=10).session_id
            refused = _wait_done(calls, 12, within=30)
            for call in refused:
                assert call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, call.details()
                assert "--max-streams" in call.details()
            # The admitted ones, silent since they opened, are ended soon after.
            _wait_done(calls, 16, within=60)
            ended = [c for c in calls if c.code() == grpc.StatusCode.CANCELLED]
            assert len(ended) == 4 and all("no first message" in c.details() for c in ended)
        finally:
            for _ in calls:
                hold.put(None)


def test_a_stream_idle_past_the_lease_is_ended_with_a_reason(start_server):
    server = start_server("toy.py:Toy", args=["--lease", "1"])
    channel, stub = _stub(server.address)
    hold: queue.Queue = queue.Queue()
    with channel:
        call = _silent_stream(stub, hold, first=pb.PackedRequest())
        try:
            assert next(call) == pb.PackedReply(state_width=2)  # served, then idle
            _wait_done([call], 1, within=60)
            assert call.code() == grpc.StatusCode.CANCELLED
            assert "no message for 1 s" in call.details()
        finally:
            hold.put(None)


# --------------------------------------------------------------------------- log volume


def test_a_flood_of_failing_slots_makes_a_line_and_a_count_not_a_line_each(start_server):
    # 100k slots for unknown sessions, in requests of 1,000 (under any slot cap).
    server = start_server("toy.py:Toy")
    channel, stub = _stub(server.address)
    ids = [f"ghost{i:05d}" for i in range(1000)]
    requests = [pb.PackedRequest(session_ids=ids, actions=[0.0] * 1000) for _ in range(100)]
    with channel:
        replies = list(stub.PackedStream(iter(requests), timeout=300))
    assert len(replies) == 100 and all(len(r.errors) == 1000 for r in replies)
    # The held-back lines are summed up once the window closes.
    deadline = time.monotonic() + 60
    while "more like it" not in server.log_file.read_text():
        assert time.monotonic() < deadline, server.log_tail(20)
        time.sleep(0.2)
    lines = [ln for ln in server.log_file.read_text().splitlines() if "unknown session" in ln]
    # A line and a summary per 10 s window: all in one, or a few on a slow machine.
    assert len(lines) <= 10, lines[:10]
    held = [re.search(r"and ([\d,]+) more like it", ln) for ln in lines]
    counted = sum(int(m.group(1).replace(",", "")) if m else 1 for m in held)
    assert counted == 100_000, lines


def test_unparsable_messages_log_a_line_not_a_traceback_each(start_server):
    server = start_server("toy.py:Toy")
    with grpc.insecure_channel(server.address) as channel:
        step = channel.unary_unary("/simgym.v1.Simulator/Step")  # raw bytes, no serializer
        for _ in range(50):
            error = _status_of(lambda: step(b"\xff\xff\xff\xff", timeout=10))
            assert error.code() == grpc.StatusCode.INTERNAL
    log = server.log_file.read_text()
    assert "Traceback" not in log, log[-3000:]
    lines = [ln for ln in log.splitlines() if "does not parse as simgym.v1" in ln]
    assert len(lines) == 1, lines
