"""Sims in worker processes (``simserver --isolate process``): killed when hung, dead or too big.

Real servers on real sockets, with ``tests/sims/faults.py:Faulty`` misbehaving as each
session's reset config says.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gymclient.connection import Connection, ConnectOptions
from gymclient.errors import ServerBusy, SimCallError, SimTimeout
from gymclient.lane import PackedLane
from gymclient.spec import load_spec
from gymclient.vector import SimVectorEnv

from .conftest import SIMS

PROCESS = ["--isolate", "process"]


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="simgym.v1.Simulator"), timeout=5
        )
    return reply.status


def _reset_when_free(session, config):
    """Reset once the killed call has let go of the session (polled; the bound is generous)."""
    for _ in range(300):
        try:
            return session.reset(config)
        except ServerBusy:
            time.sleep(0.1)
    raise AssertionError("the session stayed busy")


def test_hung_sims_are_killed_and_never_hold_a_server_thread(start_server):
    # 1 session and 3 threads: in-thread, the third hung call would hold the last thread
    # for good. Each hung call here is killed at its deadline plus the grace, and the
    # session's next reset starts a fresh worker under the same session id.
    server = start_server(
        "faults.py:Faulty",
        args=[*PROCESS, "--max-sessions", "1", "--workers", "3", "--hung-grace", "0.3"],
    )
    with Connection(server.address, ConnectOptions(timeout=0.5)) as conn:
        s = conn.open()
        for _ in range(5):
            _reset_when_free(s, {"hang_at": 1})
            with pytest.raises(SimTimeout):
                s.step([0.1])
        _reset_when_free(s, {})
        assert s.step([0.5]).states[0] == pytest.approx(0.5)
    assert _health(server.address) == health_pb2.HealthCheckResponse.SERVING
    log = server.log_tail(400)
    assert "past its client's deadline" in log and "was killed" in log, log


def test_a_dead_worker_fails_its_call_with_the_exit_code(start_server):
    server = start_server("faults.py:Faulty", args=PROCESS)
    with Connection(server.address, ConnectOptions(timeout=10)) as conn:
        s = conn.open()
        s.reset({"exit_at": 2})
        s.step([0.1])
        with pytest.raises(SimCallError, match="exited with code 3"):
            s.step([0.1])
        s.reset({})  # the same session, a fresh worker
        assert s.step([0.25]).states[0] == pytest.approx(0.25)


def test_a_leaking_sim_is_stopped_at_max_sim_rss(start_server):
    server = start_server("faults.py:Faulty", args=[*PROCESS, "--max-sim-rss", "150"])
    with Connection(server.address, ConnectOptions(timeout=10)) as conn:
        s = conn.open()
        s.reset({"leak_mb": 10})
        with pytest.raises(ServerBusy, match=r"over --max-sim-rss 150 MiB") as err:
            for _ in range(40):  # 10 MiB a step: the limit is passed well before the end
                s.step([0.0])
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        s.reset({})  # a fresh worker, back to its start-up size
        for _ in range(5):
            s.step([0.0])


def test_max_sim_rss_needs_process_isolation(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "simserver", "toy.py:Toy", "--port", "0"]
    done = subprocess.run(
        [*cmd, "--max-sim-rss", "100"], cwd=SIMS, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "simserver: error: --max-sim-rss needs --isolate process (a sim's own process)"
    )


def _lane(conn: Connection, count: int, configs: list[dict]) -> PackedLane:
    lane = PackedLane(conn, [conn.open() for _ in range(count)])
    result = lane.run([0.0] * count, {k: (configs[k], None) for k in range(count)})
    assert not result.errors, result.errors
    return lane


def test_the_slots_of_a_packed_request_step_in_parallel(start_server):
    # 8 sims of 50 ms a step: in parallel, a round takes about one step's time, well under
    # the sum of the eight (the best of three rounds, on a shared machine).
    server = start_server("faults.py:Faulty", args=PROCESS)
    with Connection(server.address, ConnectOptions(timeout=30)) as conn:
        lane = _lane(conn, 8, [{"step_delay": 0.05}] * 8)
        ratios = []
        for _ in range(3):
            started = time.perf_counter()
            result = lane.run([0.1] * 8, {})
            elapsed = time.perf_counter() - started
            assert not result.errors
            ratios.append(elapsed / sum(result.sim_seconds))
        lane.close()
    assert min(ratios) < 0.5, ratios


@pytest.mark.parametrize("packed_socket", [True, False], ids=["socket", "grpc"])
def test_a_late_slot_fails_alone(start_server, packed_socket):
    server = start_server("faults.py:Faulty", args=PROCESS)
    options = ConnectOptions(timeout=1.0, reset_timeout=30, packed_socket=packed_socket)
    with Connection(server.address, options) as conn:
        lane = _lane(conn, 4, [{}, {}, {"hang_at": 1}, {}])
        result = lane.run([0.5] * 4, {})
        assert list(result.errors) == [2]
        assert isinstance(result.errors[2], SimTimeout)
        assert "slot timeout of 1 s" in str(result.errors[2])
        assert result.states[[0, 1, 3], 0].tolist() == [0.5, 0.5, 0.5]
        # The slot's session lives on: its next reset starts a fresh worker.
        result = lane.run([0.0] * 4, {2: ({}, None)})
        assert not result.errors
        lane.close()


@pytest.mark.parametrize("packed_socket", [True, False], ids=["socket", "grpc"])
def test_a_hung_sub_env_truncates_only_itself_and_counts_once(start_server, packed_socket):
    spec = load_spec(SIMS / "toy_spec.yaml").model_copy(update={"on_error": "truncate"})
    server = start_server("faults.py:Faulty", args=PROCESS)
    venv = SimVectorEnv(spec, 4, [server.address], timeout=1.0, packed_socket=packed_socket)
    try:
        venv.reset(seed=0)
        # Sub-env 2 restarts its episode with a sim that hangs at its first step.
        lane = venv._episodes.lanes[0]
        assert not lane.run([0.0] * 4, {2: ({"hang_at": 1}, None)}).errors
        _, _, terms, truncs, infos = venv.step(np.zeros((4, 1), np.float32))
        assert truncs.tolist() == [False, False, True, False] and not terms.any()
        assert infos["simgym_error_type"][2] == "SimTimeout"
        assert venv.totals["sim_errors"] == 1
        obs, _, _, truncs, _ = venv.step(np.zeros((4, 1), np.float32))  # 2 resets, the rest step
        assert not truncs.any() and np.isfinite(obs).all()
    finally:
        venv.close()
