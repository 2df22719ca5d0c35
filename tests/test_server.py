"""simserver through real sockets: the protocol, its errors, limits, auth and shutdown."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gymclient.connection import Connection, ConnectOptions
from gymclient.errors import (
    AuthError,
    InvalidRequest,
    ProtocolMismatch,
    ServerBusy,
    ServerUnavailable,
    SessionLost,
    SimCallError,
    SimTimeout,
)
from gymclient.lane import PackedLane
from simgym import status
from simgym.v1 import simulator_pb2 as pb
from simgym.v1 import simulator_pb2_grpc as pb_grpc

from .conftest import SIMS, unix_simserver_cmd


def test_handshake_reset_step(start_server, transport):
    server = start_server("toy.py:Toy", transport=transport, kwargs={"gain": 2.0})
    assert (
        server.address.startswith("unix:")
        if transport == "unix"
        else server.address.startswith("127.0.0.1:")
    )
    with Connection(server.address) as conn:
        session = conn.open(["u"])
        assert session.info.protocol == "simgym.v1"
        assert session.state_names == ["x", "t"]
        assert session.action_names == ["u"]
        assert session.info.seedable
        t = session.reset({"x0": 1.0})
        assert list(t.states) == [1.0, 0.0] and t.step == 0
        t = session.step([0.5])
        assert list(t.states) == [2.0, 1.0] and t.step == 1
        assert not t.terminated and not t.truncated
        assert session.states() == [2.0, 1.0]
        assert session.termination() == (False, False)
        session.close()
        session.close()  # idempotent


def test_declared_names_config_and_bounds(start_server):
    server = start_server("toy.py:Declared")
    with Connection(server.address) as conn:
        session = conn.open()  # the sim declares its actions: the client need not
        assert session.info.sim_name == "declared-toy"
        assert [v.name for v in session.info.config] == ["x0"]
        (u,) = session.info.actions
        assert (u.low, u.high) == (-1.0, 1.0)
        with pytest.raises(InvalidRequest, match="unknown config key"):
            session.reset({"x1": 3})
        with pytest.raises(InvalidRequest, match="do not match"):
            conn.open(["v"])


def test_undeclared_actions_must_be_named(start_server):
    server = start_server("toy.py:Toy")
    with Connection(server.address) as conn, pytest.raises(InvalidRequest, match="action names"):
        conn.open([])


def test_bad_requests_get_precise_codes(start_server):
    server = start_server("toy.py:Toy")
    with Connection(server.address) as conn:
        session = conn.open(["u"])
        with pytest.raises(ProtocolMismatch, match="call Reset first"):
            session.step([0.0])
        session.reset({})
        with pytest.raises(InvalidRequest, match="expects 1"):
            session.step([0.0, 1.0])
        with pytest.raises(InvalidRequest, match="finite"):
            session.step([math.nan])
        with pytest.raises(InvalidRequest, match="finite"):
            session.step([math.inf])
        ghost = pb.StepRequest(session_id="nope", action=[0.0], seq=1)
        with pytest.raises(SessionLost, match="unknown session"):
            conn._call("Step", ghost, 5)
        # The session survived all of that.
        assert session.step([1.0]).step == 1
        with pytest.raises(ProtocolMismatch, match="protocol mismatch"):
            conn._call("Open", pb.OpenRequest(protocol="simgym.v0", action_names=["u"]), 5)


def test_episode_end_requires_reset(start_server):
    server = start_server("toy.py:Toy", kwargs={"horizon": 2})
    with Connection(server.address) as conn:
        s = conn.open(["u"])
        s.reset({})
        s.step([0.0])
        assert s.step([0.0]).truncated
        with pytest.raises(ProtocolMismatch):
            s.step([0.0])
        assert s.reset({}).step == 0


def test_retried_request_is_applied_once(start_server):
    server = start_server("toy.py:Toy")
    with Connection(server.address) as conn:
        s = conn.open(["u"])
        s.reset({})
        request = s.step_request([1.0])
        first = conn._call("Step", request, 5).transition
        second = conn._call("Step", request, 5).transition
        assert first.step == second.step == 1
        assert list(first.states) == list(second.states) == [1.0, 1.0]
        assert s.step([1.0]).step == 2


def test_sim_exception_names_call_and_server_keeps_serving(start_server):
    server = start_server("toy.py:Raising", kwargs={"fail_at": 2})
    with Connection(server.address) as conn:
        bad, good = conn.open(), conn.open()
        bad.reset({})
        good.reset({})
        bad.step([0.0])
        with pytest.raises(
            SimCallError, match=r"sim step\(\) raised ZeroDivisionError: boom in the sim"
        ):
            bad.step([0.0])
        assert good.step([0.0]).step == 1  # other sessions unaffected
        with pytest.raises(ProtocolMismatch):  # the failed episode is over...
            bad.step([0.0])
        assert bad.reset({}).step == 0  # ...and the session can be reset
    assert "ZeroDivisionError" in server.log_tail(50)


def test_hung_sim_hits_the_deadline_and_session_reports_busy(start_server):
    server = start_server("toy.py:Hanging", kwargs={"hang": 20.0})
    with Connection(server.address, ConnectOptions(timeout=1.0)) as conn:
        s = conn.open()
        other = conn.open()
        s.reset({})
        s.step([0.0])
        started = time.monotonic()
        with pytest.raises(SimTimeout):
            s.step([0.0])
        assert time.monotonic() - started < 5.0  # bounded by the deadline, not the hang
        with pytest.raises(ServerBusy, match="busy"):
            s.reset({})
        other.reset({})  # the server still serves other sessions
        assert other.step([0.0]).step == 1


def test_chatty_sim_does_not_block(tmp_path):
    # The server's stdout and stderr are pipes nobody reads: a sim printing 2 kB per
    # step would fill a 64 kB pipe within ~30 steps unless its prints go to the log.
    sock = tmp_path / "chatty.sock"
    log_file = tmp_path / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simserver",
            "toy.py:Chatty",
            "--unix",
            str(sock),
            "-k",
            "horizon=10000",
            "--log-file",
            str(log_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=SIMS,
    )
    try:
        with Connection(f"unix:{sock}", ConnectOptions(timeout=5.0)) as conn:
            s = conn.open()
            s.reset({})
            for _ in range(300):
                s.step([0.0])
        assert "chatty step" in log_file.read_text()
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("log_to", ["file", "stderr"])
def test_prints_before_serving_never_precede_the_address(tmp_path, log_to):
    # loud.py prints (print and os.write(1, ...)) at import, in its constructor and in the
    # probing reset: all before the server knows its address. The first stdout line must
    # still be the address, and every print must be in the log.
    log_file = tmp_path / "server.log"
    args = ["--log-file", str(log_file)] if log_to == "file" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "simserver", "loud.py:Loud", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=SIMS,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("127.0.0.1:") and int(first.rsplit(":", 1)[1]) > 0, first
        with Connection(first) as conn:
            s = conn.open()
            s.reset({})  # prints again, while serving
            assert s.step([1.0]).states[0] == 1.0
        # Nothing else ever reaches stdout: it is closed after the address.
        assert proc.stdout.read() == ""
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=15)
    log = log_file.read_text() if log_to == "file" else stderr
    for where in ("at import", "in the constructor", "in reset"):
        assert f"loud: printed {where}" in log, log
        assert f"loud: fd 1 {where}" in log, log
    assert "loud: partial line" in log


def test_nonfinite_states_are_reported(start_server):
    server = start_server("toy.py:NaNSim")
    with Connection(server.address) as conn:
        s = conn.open()
        s.reset({})
        assert list(s.step([0.0]).nonfinite) == []
        t = s.step([0.0])
        assert list(t.nonfinite) == [0] and math.isnan(t.states[0])


def test_max_sessions(start_server):
    server = start_server("toy.py:Toy", args=["--max-sessions", "2"])
    with Connection(server.address) as conn:
        a = conn.open(["u"])
        conn.open(["u"])
        with pytest.raises(ServerBusy, match="session limit"):
            conn.open(["u"])
        a.close()
        conn.open(["u"])  # a closed session frees its slot


def test_idle_sessions_expire(start_server):
    server = start_server("toy.py:Toy", args=["--lease", "0.5"])
    with Connection(server.address) as conn:
        s = conn.open(["u"])
        s.reset({})
        time.sleep(2.0)
        with pytest.raises(SessionLost):
            s.step([0.0])


def test_token_auth(start_server, transport):
    server = start_server("toy.py:Toy", transport=transport, args=["--token", "s3cret"])
    with (
        Connection(server.address, ConnectOptions(connect_timeout=2)) as conn,
        pytest.raises(AuthError),
    ):
        conn.open(["u"])
    with Connection(server.address, ConnectOptions(token="wrong", connect_timeout=2)) as conn:
        with pytest.raises(AuthError):
            conn.open(["u"])
    with Connection(server.address, ConnectOptions(token="s3cret")) as conn:
        s = conn.open(["u"])
        s.reset({})
        assert s.step([1.0]).step == 1
        # PackedStream is guarded alike.
        lane = PackedLane(conn, [s])
        assert lane.run_single([1.0], None).states == [2.0, 2.0]
        lane.close()
    with Connection(server.address, ConnectOptions(token="wrong")) as conn:
        with pytest.raises(grpc.RpcError) as info:
            _packed_stream(conn, pb.PackedRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Health stays reachable without a token (orchestrator probes).
    with grpc.insecure_channel(server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="simgym.v1.Simulator"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_token_on_all_interfaces(start_server):
    # Bound to 0.0.0.0 (traffic stays on 127.0.0.1 here): the announced address is one a
    # client can dial, the token is enforced, and the log warns that it travels in clear.
    server = start_server(
        "toy.py:Toy", transport="tcp", args=["--host", "0.0.0.0", "--token", "s3cret"]
    )
    assert server.address.startswith("127.0.0.1:"), server.address
    with Connection(server.address, ConnectOptions(connect_timeout=2)) as conn:
        with pytest.raises(AuthError):
            conn.open(["u"])
    with Connection(server.address, ConnectOptions(token="s3cret")) as conn:
        s = conn.open(["u"])
        s.reset({})
        assert s.step([1.0]).step == 1
    log = server.log_tail(50)
    assert "token travels in plain text" in log and "--tls-cert" in log
    assert "listening on all interfaces (0.0.0.0:" in log


def test_insecure_on_all_interfaces(start_server):
    server = start_server("toy.py:Toy", transport="tcp", args=["--host", "0.0.0.0", "--insecure"])
    assert server.address.startswith("127.0.0.1:"), server.address
    with Connection(server.address) as conn:  # no token needed: that is what --insecure means
        s = conn.open(["u"])
        s.reset({})
        assert s.step([1.0]).step == 1
    assert "--insecure: port" in server.log_tail(50)


def test_loopback_server_does_not_warn(start_server):
    server = start_server("toy.py:Toy", transport="tcp", args=["--token", "s3cret"])
    assert "WARNING" not in server.log_tail(50)


def test_client_lease_is_capped_at_the_server_lease(start_server):
    server = start_server("toy.py:Toy", args=["--lease", "5"])
    for asked, granted in ((3600.0, 5.0), (2.0, 2.0), (0.0, 5.0)):
        with Connection(server.address, ConnectOptions(lease_seconds=asked)) as conn:
            assert conn.open(["u"]).info.lease_seconds == granted


def _open_when_free(conn: Connection) -> object:
    """Open a session once a --max-sessions slot is free (polled; the bound is generous)."""
    for _ in range(600):
        try:
            return conn.open()
        except ServerBusy:
            time.sleep(0.1)
    raise AssertionError("no slot became free")


def _log_has(server: object, text: str, lines: int = 200) -> bool:
    """Poll the server's log until ``text`` shows (the bound is generous)."""
    for _ in range(600):
        if text in server.log_tail(lines):  # type: ignore[attr-defined]
            return True
        time.sleep(0.1)
    return False


def test_hung_session_is_let_go_of(start_server):
    # A sim stuck in a call past its client's deadline (and the grace) no longer holds a
    # --max-sessions slot. It hangs far longer than the test may run: only letting it go
    # can free the slot.
    server = start_server(
        "toy.py:Hanging",
        kwargs={"hang": 3600.0},
        args=[
            *["--isolate", "thread", "--lease", "0.5"],
            *["--max-sessions", "1", "--hung-grace", "0.5"],
        ],
    )
    with Connection(server.address, ConnectOptions(timeout=0.5)) as conn:
        s = conn.open()
        s.reset({})
        s.step([0.0])
        with pytest.raises(SimTimeout):
            s.step([0.0])  # hangs on the server
        other = _open_when_free(conn)
        other.reset({})  # type: ignore[attr-defined]
        assert other.step([0.0]).step == 1  # type: ignore[attr-defined]
        with pytest.raises(SessionLost, match="hung"):
            s.reset({})
    assert "taken as hung" in server.log_tail(50)
    server.kill()  # its hung thread would hold a graceful exit for the whole hang


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_slow_call_within_its_deadline_is_not_hung(start_server, stream):
    # A reset far longer than the lease (and twice it) but within the client's deadline is
    # healthy: its session stays, and the next step finds it.
    server = start_server("faults.py:LogsClose", args=["--lease", "0.5", "--hung-grace", "0.5"])
    with Connection(server.address, ConnectOptions(reset_timeout=120.0)) as conn:
        s = conn.open()
        if stream:
            lane = PackedLane(conn, [s])
            t = lane.run_single([0.0], ({"delay": 3.0, "x0": 2.0}, None))
            assert t.states[0] == 2.0
            assert lane.run_single([1.0], None).states[0] == 3.0
            lane.close()
        else:
            assert s.reset({"delay": 3.0, "x0": 2.0}).states[0] == 2.0
            assert s.step([1.0]).states[0] == 3.0
    assert "taken as hung" not in server.log_tail(200)


def test_hung_sessions_let_go_of_are_capped_by_spare_threads(start_server):
    # Each hung call keeps a server thread: with 4 threads for 2 sessions, one hung session
    # may be let go of (one thread stays for Open/Close/health); a second stays counted,
    # health says NOT_SERVING, and Open gets RESOURCE_EXHAUSTED instead of waiting for a
    # thread that never comes.
    server = start_server(
        "toy.py:Hanging",
        kwargs={"hang": 3600.0},
        args=[
            *["--isolate", "thread", "--lease", "0.5", "--max-sessions", "2"],
            *["--workers", "4", "--hung-grace", "0.5"],
        ],
    )
    with Connection(server.address, ConnectOptions(timeout=0.5)) as conn:
        sessions = [conn.open(), conn.open()]
        for s in sessions:
            s.reset({})
            s.step([0.0])
            with pytest.raises(SimTimeout):
                s.step([0.0])
        assert _log_has(server, "spare threads are held by hung calls")
        with pytest.raises(ServerBusy, match="held by hung sim calls"):
            conn.open()
    with grpc.insecure_channel(server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="simgym.v1.Simulator"), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    server.kill()


def test_close_during_a_call_closes_the_sim_after_it(start_server):
    # gymclient closes a session after its reset timed out: the sim must not be closed
    # from a second thread while that reset still runs in it.
    server = start_server("faults.py:LogsClose", args=["--isolate", "thread"])
    with Connection(server.address, ConnectOptions(reset_timeout=1.0)) as conn:
        s = conn.open()
        with pytest.raises(SimTimeout):
            s.reset({"delay": 4.0})
        s.close()
        assert _log_has(server, "close called")
    log = server.log_tail(200)
    assert "reset returned (delay 4.0)" in log
    assert log.index("reset returned (delay 4.0)") < log.rindex("close called"), log


def test_no_token_server_accepts_any_client(start_server):
    server = start_server("toy.py:Toy")
    with Connection(server.address, ConnectOptions(token="whatever")) as conn:
        conn.open(["u"]).reset({})


def test_reflection_lists_services(start_server):
    server = start_server("toy.py:Toy", transport="tcp")
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"simgym.v1.Simulator", "grpc.health.v1.Health"} <= names


def test_killed_server_raises_fast(start_server):
    server = start_server("toy.py:Toy", transport="tcp")
    with Connection(server.address, ConnectOptions(timeout=3.0)) as conn:
        s = conn.open(["u"])
        s.reset({})
        server.kill()
        # A dead server is unreachable, not slow: the specific error (a deadline would raise
        # SimTimeout instead).
        with pytest.raises(ServerUnavailable):
            s.step([0.0])


def test_connect_retries_until_the_server_is_up(tmp_path):
    # A client started before its server connects once the server is up.
    import threading

    sock = tmp_path / "late.sock"
    result: dict[str, object] = {}

    def client() -> None:
        with Connection(f"unix:{sock}", ConnectOptions(connect_timeout=30)) as conn:
            result["session"] = conn.open(["u"]).id

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(1.0)
    proc = subprocess.Popen(
        unix_simserver_cmd(sock), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        thread.join(40)
        assert result.get("session")
    finally:
        proc.terminate()
        proc.wait(10)


def test_open_is_not_retried_after_its_deadline(start_server):
    # Open is not idempotent: a retry after a deadline would build another sim while the
    # first is still being built, and both would hold --max-sessions slots.
    server = start_server("faults.py:SlowCtor", kwargs={"delay": 2.0})
    options = ConnectOptions(reset_timeout=0.5, connect_timeout=10.0)
    with Connection(server.address, options) as conn:
        conn.open()  # the instance built for probing: no constructor runs
        with pytest.raises(SimTimeout, match="not retried"):
            conn.open()
        # A marker session, opened after the timeout: its constructor (2 s) ends after the
        # timed-out one's, and after any retry's, which would have started before it.
    with Connection(server.address, ConnectOptions(reset_timeout=60.0)) as patient:
        patient.open()
    opened = [line for line in server.log_tail(200).splitlines() if "opened session" in line]
    # The first, the timed-out one, the marker: no retried Open built a fourth.
    assert len(opened) == 3, opened


def test_auth_errors_are_not_retried(start_server):
    # connect_timeout far past the pytest timeout: only an unretried refusal returns.
    server = start_server("toy.py:Toy", args=["--token", "s3cret"])
    with Connection(server.address, ConnectOptions(token="wrong", connect_timeout=3600)) as conn:
        with pytest.raises(AuthError):
            conn.open(["u"])


def test_unreachable_server_fails_within_connect_timeout(tmp_path):
    # reset_timeout far past the pytest timeout: the error comes from connect_timeout.
    address = f"unix:{tmp_path}/none.sock"
    options = ConnectOptions(connect_timeout=1.5, reset_timeout=3600)
    with Connection(address, options) as conn:
        started = time.monotonic()
        with pytest.raises(ServerUnavailable, match="Is simserver running") as info:
            conn.open(["u"])
        assert time.monotonic() - started >= 1.5  # it waited for the server to come up
    assert address in str(info.value)


def test_open_waits_for_the_connection_not_its_own_deadline(tmp_path):
    # A reset_timeout shorter than connection set-up: Open is sent only once connected,
    # so it does not end in DEADLINE_EXCEEDED ("may still be building this session's sim").
    sock = tmp_path / "late.sock"
    result: dict[str, object] = {}
    import threading

    def client() -> None:
        options = ConnectOptions(connect_timeout=120, reset_timeout=1.0)
        try:
            with Connection(f"unix:{sock}", options) as conn:
                result["session"] = conn.open(["u"]).id
        except Exception as exc:  # reported below, with its message
            result["error"] = exc

    thread = threading.Thread(target=client)
    thread.start()
    proc = subprocess.Popen(
        unix_simserver_cmd(sock), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        thread.join(150)
        assert result.get("session"), result
    finally:
        proc.terminate()
        proc.wait(10)


def test_sigterm_shuts_down_gracefully(start_server):
    server = start_server("toy.py:Toy")
    with Connection(server.address) as conn:
        conn.open(["u"]).reset({})
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    assert "stopped" in server.log_tail()
    assert not (server.folder / "sim.sock").exists()


def _simserver(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simserver", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=SIMS,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["toy.py:Toy", "--host", "0.0.0.0"], "--token"),
        (["nosuch.py:Toy"], "no such file"),
        (["toy.py:Nope"], "has no attribute 'Nope'"),
        (["toy.py"], "must look like"),
        (["toy.py:BadCtor"], "cannot find license server"),
        (["gymnasium:NoSuchEnv-v9"], "unknown Gymnasium env id"),
        (["toy.py:Toy", "-k", "oops"], "expected name=value"),
        (["toy.py:Toy", "--port", "99999"], "--port 99999: a TCP port is 0"),
        (["toy.py:Toy", "--port", "-1"], "--port -1: a TCP port is 0"),
    ],
)
def test_cli_errors_are_one_line(args, message):
    proc = _simserver(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("simserver: error:") and message in lines[0]
    assert "Traceback" not in proc.stderr


def test_port_in_use_is_a_clear_error(start_server):
    server = start_server("toy.py:Toy", transport="tcp")
    port = server.address.rsplit(":", 1)[1]
    proc = _simserver("toy.py:Toy", "--port", port)
    assert proc.returncode == 2
    assert "cannot listen" in proc.stderr


def test_address_printed_and_written(tmp_path):
    address_file = tmp_path / "addr"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simserver",
            "toy.py:Toy",
            "--port",
            "0",
            "--address-file",
            str(address_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=SIMS,
    )
    try:
        assert proc.stdout is not None
        printed = proc.stdout.readline().strip()
        assert printed.startswith("127.0.0.1:") and int(printed.rsplit(":", 1)[1]) > 0
        for _ in range(100):
            if address_file.exists():
                break
            time.sleep(0.05)
        assert address_file.read_text().strip() == printed
    finally:
        proc.terminate()
        proc.wait(10)


# --------------------------------------------------------------------------- packed fast path


def _packed(sessions, actions, resets=(), seqs=None):
    """A PackedRequest for `sessions` (advancing their seqs unless `seqs` is given)."""
    if seqs is None:
        seqs = []
        for s in sessions:
            s.seq += 1
            seqs.append(s.seq)
    request = pb.PackedRequest(session_ids=[s.id for s in sessions], actions=actions, seqs=seqs)
    for slot, config in resets:
        request.resets.add(slot=slot).config.update(config)
    return request


def _packed_stream(conn, *requests):
    """Send ``requests`` on one PackedStream; its replies."""
    stub = pb_grpc.SimulatorStub(conn._channel)
    return list(stub.PackedStream(iter(requests), timeout=10, metadata=conn._metadata))


def _send(conn, request):
    """Run one packed request (on a stream of its own); its reply."""
    (reply,) = _packed_stream(conn, request)
    return reply


def _rows(reply):
    w = reply.state_width
    return [list(reply.states[k * w : (k + 1) * w]) for k in range(len(reply.terminated))]


def test_packed_matches_per_session_stepping(start_server):
    server = start_server("toy.py:Toy", kwargs={"horizon": 3})
    with Connection(server.address) as conn:
        packed = [conn.open(["u"]) for _ in range(3)]
        single = [conn.open(["u"]) for _ in range(3)]
        requests = []

        def send(request):
            requests.append(request)
            return _send(conn, request)

        configs = [{"x0": float(i)} for i in range(3)]
        reply = send(_packed(packed, [0.0] * 3, resets=list(enumerate(configs))))
        expected = [s.reset(c) for s, c in zip(single, configs, strict=True)]
        assert reply.state_width == 2 and not reply.errors
        assert _rows(reply) == [list(t.states) for t in expected]
        assert list(reply.steps) == [0, 0, 0]
        actions = [[0.5, -1.0, 2.0], [1.0, 1.0, 1.0], [0.0, 0.25, -0.5]]
        for row in actions:
            reply = send(_packed(packed, row))
            expected = [s.step([a]) for s, a in zip(single, row, strict=True)]
            assert not reply.errors
            assert _rows(reply) == [list(t.states) for t in expected]
            assert list(reply.terminated) == [t.terminated for t in expected]
            assert list(reply.truncated) == [t.truncated for t in expected]
            assert list(reply.steps) == [t.step for t in expected]
            assert len(reply.sim_seconds) == 3 and not reply.rewards and not reply.nonfinite
        assert list(reply.truncated) == [True, True, True]  # horizon 3
        # Next-step autoreset: slot 1 resets in the same message as the others' steps,
        # which fail (their episodes are over) without affecting it.
        reply = send(_packed(packed, [0.0, 9.0, 0.0], resets=[(1, {"x0": 5.0})]))
        assert [e.slot for e in reply.errors] == [0, 2]
        assert {e.code for e in reply.errors} == {grpc.StatusCode.FAILED_PRECONDITION.value[0]}
        assert _rows(reply)[1] == [5.0, 0.0] and reply.steps[1] == 0
        assert all(math.isnan(v) for v in _rows(reply)[0] + _rows(reply)[2])
        # The retry rule holds per slot: the same request again is not applied again.
        again = send(requests[-1])
        assert _rows(again)[1] == [5.0, 0.0]
        assert _send(conn, _packed(packed[1:2], [1.0])).states[0] == 6.0
        # One lock-step stream answers each message in order.
        replies = _packed_stream(conn, *(_packed(packed[1:2], [1.0]) for _ in range(2)))
        assert [r.states[0] for r in replies] == [7.0, 8.0] and replies[-1].truncated[0]


def test_packed_rejects_malformed_requests_as_a_whole(start_server):
    server = start_server("toy.py:Toy")
    with Connection(server.address) as conn:
        a, b = conn.open(["u"]), conn.open(["u"])
        bad = [
            (pb.PackedRequest(session_ids=[a.id, b.id], actions=[0.0, 1.0, 2.0]), "not a whole"),
            (pb.PackedRequest(session_ids=[a.id, b.id], actions=[0.0, 1.0], seqs=[1]), "seqs"),
            (_packed([a, b], [0.0, 0.0], resets=[(2, {})]), "slot 2"),
            (_packed([a, b], [0.0, 0.0], resets=[(1, {}), (1, {})]), "twice"),
            (pb.PackedRequest(actions=[1.0]), "no session_ids"),
        ]
        for request, message in bad:
            # The stream ends at the malformed message, after the replies before it.
            with pytest.raises(grpc.RpcError) as info:
                _packed_stream(conn, pb.PackedRequest(), request, pb.PackedRequest())
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in info.value.details()
        # Nothing was applied: both sessions still await their first reset.
        assert _send(conn, pb.PackedRequest()).state_width == 2
        reply = _send(conn, _packed([a, b], [0.0, 0.0], resets=[(0, {}), (1, {})]))
        assert not reply.errors


def test_packed_per_slot_errors_leave_other_slots_alone(start_server):
    server = start_server("toy.py:Raising", kwargs={"fail_at": 2})
    with Connection(server.address) as conn:
        good, failing, closed, nan_action = (conn.open() for _ in range(4))
        sessions = [good, failing, closed, nan_action]
        reply = _send(conn, _packed(sessions, [0.0] * 4, resets=[(k, {}) for k in range(4)]))
        assert not reply.errors
        closed.close()
        reply = _send(conn, _packed(sessions, [1.0, 1.0, 1.0, math.nan]))
        codes = {e.slot: status.code_of(e.code) for e in reply.errors}
        assert codes == {
            2: grpc.StatusCode.NOT_FOUND,
            3: grpc.StatusCode.INVALID_ARGUMENT,
        }
        assert "finite" in reply.errors[1].message
        assert _rows(reply)[:2] == [[1.0, 1.0], [1.0, 1.0]]
        # Slot 1's sim raises on its second step: only that slot fails, naming the call.
        # Slot 0 is reset meanwhile; slot 3's rejected NaN never reached its sim.
        reply = _send(conn, _packed(sessions, [1.0] * 4, resets=[(0, {})]))
        errors = {e.slot: e for e in reply.errors}
        assert sorted(errors) == [1, 2]
        assert errors[1].code == grpc.StatusCode.INTERNAL.value[0]
        assert "sim step() raised ZeroDivisionError" in errors[1].message
        assert errors[2].code == grpc.StatusCode.NOT_FOUND.value[0]
        assert _rows(reply)[0] == [0.0, 0.0] and _rows(reply)[3] == [1.0, 1.0]
        assert list(reply.steps) == [0, 0, 0, 1]
        # Wrong action width for these sessions: every slot fails on its own.
        reply = _send(conn, _packed([good, failing], [0.0, 0.0, 0.0, 0.0]))
        assert [e.slot for e in reply.errors] == [0, 1]
        assert "expects 1" in reply.errors[0].message
        # The failed episode is over; a reset in the next message and it goes on.
        reply = _send(conn, _packed([failing], [0.0]))
        assert reply.errors[0].code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        reply = _send(conn, _packed([good, failing], [1.0, 0.0], resets=[(1, {})]))
        assert not reply.errors and _rows(reply) == [[1.0, 1.0], [0.0, 0.0]]


def test_packed_reports_nonfinite_states_and_sim_rewards(start_server):
    server = start_server("toy.py:NaNSim")
    with Connection(server.address) as conn:
        sessions = [conn.open(), conn.open()]
        _send(conn, _packed(sessions, [0.0, 0.0], resets=[(0, {}), (1, {})]))
        _send(conn, _packed(sessions[:1], [0.0]))  # session 0 is one step ahead
        reply = _send(conn, _packed(sessions, [0.0, 0.0]))
        assert list(reply.nonfinite) == [0]  # slot 0, state x (flat index 0 * 2 + 0)
        assert math.isnan(reply.states[0]) and math.isfinite(reply.states[2])
    gym = start_server("gymnasium:Pendulum-v1")
    with Connection(gym.address) as conn:
        sessions = [conn.open(), conn.open()]
        reply = _send(conn, _packed(sessions, [0.0, 0.0], resets=[(0, {}), (1, {})]))
        assert not reply.rewards  # a reset carries no reward
        reply = _send(conn, _packed(sessions, [1.0, -1.0]))
        assert len(reply.rewards) == 2 and all(r <= 0 for r in reply.rewards)
