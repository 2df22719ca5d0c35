"""Parallel packed slots (``simserver.slots``): in-thread sims that wait step together.

The sims (``tests/sims/waiting.py``) report when each step ran, on the machine's monotonic
clock, so overlap is proved from the intervals themselves, never from how long a step took;
``Gathering`` only returns once N steps are in flight at once (a bounded wait that fails
saying how many came).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gymclient.connection import Connection, ConnectOptions
from gymclient.errors import ServerBusy, SimTimeout
from gymclient.lane import PackedLane
from gymclient.vector import SimVectorEnv

SIMS = Path(__file__).parent / "sims"
SPEC = """
sim: {target: WAITING}
observations:
  t: {min: 0, max: 100}
actions:
  u: {min: -1, max: 1}
reward: t
lessons:
  delay: {values: [0.1]}
""".replace("WAITING", f"{SIMS / 'waiting.py'}:Waiting")


def _overlap(rows: list[tuple[float, float]]) -> bool:
    """Were all these (started, ended) intervals running at one moment?"""
    return max(s for s, _ in rows) < min(e for _, e in rows)


def _lane(address: str, n: int, timeout: float = 30.0) -> PackedLane:
    conn = Connection(address, ConnectOptions(timeout=timeout, reset_timeout=30.0))
    return PackedLane(conn, [conn.open(["u"]) for _ in range(n)])


def test_sims_that_wait_step_in_parallel_by_default_across_servers(start_server, tmp_path: Path):
    # Before: each server ran its request's slots one after the other, so no two steps of
    # one server ever overlapped. The lanes of the two servers are in flight together too.
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    a, b = start_server("waiting.py:Waiting"), start_server("waiting.py:Waiting")
    env = SimVectorEnv(str(spec), 4, addresses=[a.address, b.address], timeout=30.0)
    try:
        env.reset(seed=0)
        seen = []
        for step in range(1, 13):  # auto first measures a few serial steps
            _, _, _, _, info = env.step(np.zeros((4, 1), np.float32))
            states = list(info["states"])
            assert [s["t"] for s in states] == [step] * 4
            seen.append([(s["started"], s["ended"]) for s in states])
            if _overlap(seen[-1]):
                break
        else:
            raise AssertionError(f"no step of 4 sessions on 2 servers overlapped: {seen[-3:]}")
    finally:
        env.close()


def test_parallel_slots_on_has_every_slot_in_flight_at_once(start_server):
    server = start_server(
        "waiting.py:Gathering", args=["--parallel-slots", "on", "-k", "parties=4"]
    )
    lane = _lane(server.address, 4)
    lane.run([0.0] * 4, {k: ({}, None) for k in range(4)})
    result = lane.run([0.0] * 4, {})
    assert not result.errors, result.errors
    assert result.states[:, 0].tolist() == [1.0] * 4


def test_a_session_named_twice_steps_in_order_while_others_overlap(start_server):
    server = start_server("waiting.py:Waiting", args=["--parallel-slots", "on"])
    conn = Connection(server.address, ConnectOptions(timeout=30.0))
    a, b = conn.open(["u"]), conn.open(["u"])
    lane = PackedLane(conn, [a, b, a])
    # Slot 2 steps the episode slot 0 has just reset: in order, or it would fail.
    first = lane.run([0.0] * 3, {0: ({"delay": 0.2}, None), 1: ({"delay": 0.2}, None)})
    assert not first.errors and first.states[2, 0] == 1.0, first.errors
    result = lane.run([0.0] * 3, {})
    assert not result.errors, result.errors
    (t0, s0, e0), (t1, s1, e1), (t2, s2, e2) = result.states.tolist()
    assert (t0, t1, t2) == (2.0, 1.0, 3.0)
    assert e0 <= s2, "the session's second slot started before its first returned"
    assert _overlap([(s0, e0), (s1, e1)]) or _overlap([(s2, e2), (s1, e1)]), "b ran alone"


def test_fast_sims_give_the_same_trajectories_in_parallel(start_server):
    spec = SIMS / "toy_spec.yaml"
    runs = []
    for mode in ("off", "on"):
        server = start_server("toy.py:Toy", args=["--parallel-slots", mode, "-k", "gain=2.0"])
        env = SimVectorEnv(str(spec), 6, addresses=[server.address])
        try:
            obs, _ = env.reset(seed=3)
            trace = [obs]
            rng = np.random.default_rng(0)
            for _ in range(30):  # episodes end and reset inside (horizon 20, |x| > 10)
                trace.append(env.step(rng.uniform(-1, 1, (6, 1)).astype(np.float32))[0])
            runs.append(np.array(trace))
        finally:
            env.close()
    np.testing.assert_array_equal(runs[0], runs[1])


def test_a_slot_that_fails_or_hangs_fails_alone(start_server):
    # Before: a hung in-thread slot held the whole reply: every slot of the round failed.
    server = start_server("waiting.py:Waiting", args=["--parallel-slots", "on", "-k", "hang=20"])
    lane = _lane(server.address, 3, timeout=1.0)
    lane.run([0.0] * 3, {0: ({"fail_at": 1}, None), 1: ({"hang_at": 1}, None), 2: ({}, None)})
    result = lane.run([0.0] * 3, {})
    assert sorted(result.errors) == [0, 1], result.errors
    assert "failed on purpose" in str(result.errors[0])
    assert isinstance(result.errors[1], SimTimeout), result.errors[1]
    assert "slot timeout of 1 s" in str(result.errors[1])
    assert result.states[2, 0] == 1.0
    server.kill()  # its hung thread would hold a graceful exit


def test_a_late_slot_is_taken_as_hung_and_its_thread_counted(start_server):
    # 2 sessions, 4 threads: one spare thread for a hung call. The late slot's client still
    # listens, but nobody awaits the call: hung after the grace, its thread counted, so the
    # server says NOT_SERVING and takes no new session (before: the round failed whole).
    tight = ["--max-sessions", "2", "--workers", "4", "--hung-grace", "0.2", "--lease", "2"]
    server = start_server(
        "waiting.py:Waiting", args=["--parallel-slots", "on", "-k", "hang=600", *tight]
    )
    lane = _lane(server.address, 2, timeout=1.0)
    lane.run([0.0] * 2, {0: ({"hang_at": 1}, None), 1: ({}, None)})
    result = lane.run([0.0] * 2, {})
    assert list(result.errors) == [0] and result.states[1, 0] == 1.0, result.errors
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="simgym.v1.Simulator")
        for _ in range(300):  # the reaper runs every 0.5 s; the bound is generous
            if (
                health.Check(request, timeout=5).status
                == health_pb2.HealthCheckResponse.NOT_SERVING
            ):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"health stayed SERVING:\n{server.log_tail(20)}")
    assert "taken as hung" in server.log_tail(50)
    with pytest.raises(ServerBusy, match="held by hung sim calls"):
        lane.connection.open(["u"])
    server.kill()


def test_a_bad_parallel_slots_value_is_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "simserver", f"{SIMS / 'toy.py'}:Toy", "--parallel-slots", "yes"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "simserver: error: --parallel-slots yes: give one of auto, on, off"
    )
