"""Hung sims in the server's threads (``--isolate thread``): the server stays answerable.

A call Python cannot interrupt keeps its thread until it returns; these tests show that no
client can make such calls use up the pool (closing the session does not hide one), and that
health says NOT_SERVING while every spare thread is held, SERVING again once one returns.
"""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gymclient.connection import Connection, ConnectOptions
from gymclient.errors import ServerBusy, SimTimeout

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# 1 session and 3 threads: one spare thread may be held by a hung call, one stays for
# Open, Close and health. No hung call is let go of by the reaper (the grace is long).
TIGHT = ["--isolate", "thread", "--max-sessions", "1", "--workers", "3", "--hung-grace", "600"]


def _health(address: str) -> int:
    """The server's health, which must answer within a bounded wait whatever hangs."""
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="simgym.v1.Simulator"), timeout=5
        )
    return reply.status


def test_closing_sessions_whose_calls_hang_cannot_use_up_the_threads(start_server):
    # Before: each closed session freed its slot although its hung call kept a thread, so
    # the third such call took the last thread and every RPC, health included, timed out.
    server = start_server("faults.py:SlowReset", args=TIGHT)
    options = ConnectOptions(timeout=0.5, reset_timeout=0.5)
    refused = None
    with Connection(server.address, options) as conn:
        for _ in range(4):
            try:
                s = conn.open()
            except ServerBusy as exc:
                refused = exc
                break
            with pytest.raises(SimTimeout):
                s.reset({"delay": 3600.0})
            s.close()
    assert refused is not None and "held by hung sim calls" in str(refused), refused
    assert _health(server.address) == NOT_SERVING
    server.kill()  # its hung thread would hold a graceful exit for the whole hang


def test_health_is_serving_again_once_the_hung_call_returns(start_server):
    server = start_server("faults.py:SlowReset", args=TIGHT)
    with Connection(server.address, ConnectOptions(timeout=0.5, reset_timeout=0.5)) as conn:
        s = conn.open()
        with pytest.raises(SimTimeout):
            s.reset({"delay": 4.0})
        s.close()
        assert _health(server.address) == NOT_SERVING
        for _ in range(600):  # the call returns after 4 s; the bound is generous
            if _health(server.address) == SERVING:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("health stayed NOT_SERVING")
        conn.open().reset({})
    assert "SERVING again" in server.log_tail(100)
