"""The packed socket (PackedStream's messages on PATH.packed) through real servers and sockets."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from gymclient import SimEnv, load_spec
from gymclient.connection import Connection, ConnectOptions
from gymclient.errors import AuthError, RemoteError, ServerUnavailable, SimTimeout
from gymclient.lane import PackedLane
from gymclient.packedsocket import SocketPackedStream, packed_socket_path
from gymclient.stream import PackedStream
from gymclient.vector import SimVectorEnv
from simgym import PROTOCOL
from simgym.v1 import simulator_pb2 as pb

from .conftest import SIMS
from .test_tls import certs  # noqa: F401  (the fixture)

SPEC = SIMS / "toy_spec.yaml"
LENGTH = struct.Struct("<I")
OLD_HELLO = pb.PackedSocketHello(protocol="simgym.v0").SerializeToString()


def _path(address: str) -> Path:
    return Path(address.removeprefix("unix:") + ".packed")


def _frame(kind: int, body: bytes) -> bytes:
    return LENGTH.pack(len(body) + 1) + bytes((kind,)) + body


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            assert chunk, "the server closed the socket before a whole frame"
            out += chunk
        return out

    (length,) = LENGTH.unpack(exactly(4))
    body = exactly(length)
    return body[0], body[1:]


def _status(sock: socket.socket) -> pb.PackedSocketStatus:
    kind, body = _read_frame(sock)
    assert kind == pb.PACKED_SOCKET_KIND_STATUS
    return pb.PackedSocketStatus.FromString(body)


def _raw(address: str, hello: pb.PackedSocketHello | None = None) -> socket.socket:
    """A raw connection to the packed socket, HELLO sent and accepted when given."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(_path(address)))
    if hello is not None:
        sock.sendall(_frame(pb.PACKED_SOCKET_KIND_HELLO, hello.SerializeToString()))
        assert _status(sock).code == 0
    return sock


def _vector_stream(spec: object, address: str, **overrides: object) -> type:
    """The stream class a 2-env SimVectorEnv stepped over (after a reset and a step)."""
    env = SimVectorEnv(spec, 2, [address], **overrides)
    try:
        env.reset(seed=0)
        env.step(np.zeros((2, 1), np.float32))
        return type(env._episodes.lanes[0]._stream)
    finally:
        env.close()


def _closed(sock: socket.socket) -> bool:
    return sock.recv(1) == b""


@pytest.fixture
def toy(start_server):
    spec = load_spec(SPEC)
    server = start_server("toy.py:Toy", kwargs=spec.sim.kwargs)
    return spec, server


def test_unix_servers_offer_it_and_envs_use_it_with_the_same_results(toy):
    spec, server = toy
    assert _path(server.address).is_socket()
    fast = SimVectorEnv(spec, 3, [server.address])
    slow = SimVectorEnv(spec, 3, [server.address], packed_socket=False)
    try:
        assert fast._episodes.sessions[0].info.packed_socket
        np.testing.assert_array_equal(fast.reset(seed=7)[0], slow.reset(seed=7)[0])
        rng = np.random.default_rng(0)
        for _ in range(45):  # crosses episode ends (horizon 20): resets ride the socket too
            actions = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
            a, b = fast.step(actions), slow.step(actions)
            for x, y in zip(a[:4], b[:4], strict=True):
                np.testing.assert_array_equal(x, y)
        assert isinstance(fast._episodes.lanes[0]._stream, SocketPackedStream)
        assert isinstance(slow._episodes.lanes[0]._stream, PackedStream)
    finally:
        fast.close()
        slow.close()
    env = SimEnv({"spec": spec, "address": server.address})
    try:
        env.reset(seed=1)
        assert env.step(np.array([0.5], np.float32))[0].shape == env.observation_space.shape
        assert isinstance(env._episodes.lanes[0]._stream, SocketPackedStream)
    finally:
        env.close()


def test_tcp_tls_and_opted_out_servers_do_not_offer_it(start_server, certs):  # noqa: F811
    tcp = start_server("toy.py:Toy", transport="tcp")
    off = start_server("toy.py:Toy", args=["--no-packed-socket"])
    tls = start_server(
        "toy.py:Toy",
        args=["--tls-cert", str(certs / "cert.pem"), "--tls-key", str(certs / "key.pem")],
    )
    assert not _path(off.address).exists() and not _path(tls.address).exists()
    for address in (tcp.address, off.address):
        with Connection(address) as conn:
            session = conn.open(["u"])
            lane = PackedLane(conn, [session])
            session.reset({})
            assert lane.run_single([0.5], None).states
            assert isinstance(lane._stream, PackedStream)
            assert not session.info.packed_socket
            lane.close()
    tls_conn = Connection(tls.address, ConnectOptions(tls=True))
    assert packed_socket_path(tls_conn) is None  # never offered, never tried over TLS
    tls_conn.close()


def test_a_packed_socket_this_client_cannot_reach_falls_back_to_grpc(toy):
    # E.g. a container that sees the gRPC socket through a volume but not its sibling.
    spec, server = toy
    _path(server.address).unlink()
    env = SimVectorEnv(spec, 2, [server.address])
    try:
        env.reset(seed=0)
        env.step(np.zeros((2, 1), np.float32))
        lane = env._episodes.lanes[0]
        assert isinstance(lane._stream, PackedStream) and not lane.connection.packed_socket
    finally:
        env.close()


def test_the_token_is_required(start_server):
    spec = load_spec(SPEC)
    server = start_server("toy.py:Toy", kwargs=spec.sim.kwargs, args=["--token", "s3cret"])
    for hello in (pb.PackedSocketHello(protocol=PROTOCOL), pb.PackedSocketHello(token="wrong")):
        sock = _raw(server.address)
        sock.sendall(_frame(pb.PACKED_SOCKET_KIND_HELLO, hello.SerializeToString()))
        status = _status(sock)
        assert status.code == grpc.StatusCode.UNAUTHENTICATED.value[0], status
        assert _closed(sock)
        sock.close()
    with Connection(server.address, ConnectOptions(token="wrong")) as conn:
        with pytest.raises(AuthError):
            SocketPackedStream(conn, 5.0)
    assert _vector_stream(spec, server.address, token="s3cret") is SocketPackedStream


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([_frame(pb.PACKED_SOCKET_KIND_REQUEST, b"")], "INVALID_ARGUMENT"),  # no HELLO first
        ([_frame(pb.PACKED_SOCKET_KIND_HELLO, b"\xff\xff\xff")], "INVALID_ARGUMENT"),
        ([LENGTH.pack(0)], "INVALID_ARGUMENT"),
        ([LENGTH.pack(64 * 2**20)], "RESOURCE_EXHAUSTED"),  # over --max-message-mb
        ([_frame(pb.PACKED_SOCKET_KIND_HELLO, OLD_HELLO)], "FAILED_PRECONDITION"),
        (["hello", _frame(pb.PACKED_SOCKET_KIND_REPLY, b"")], "INVALID_ARGUMENT"),
        (["hello", _frame(pb.PACKED_SOCKET_KIND_REQUEST, b"\x0a\xff")], "INVALID_ARGUMENT"),
    ],
    ids=["request-first", "bad-hello", "empty", "oversized", "protocol", "kind", "bad-request"],
)
def test_malformed_frames_get_a_status_and_the_server_serves_on(toy, frames, code):
    spec, server = toy
    sock = _raw(server.address)
    for f in frames:
        if f == "hello":
            sock.sendall(
                _frame(pb.PACKED_SOCKET_KIND_HELLO, pb.PackedSocketHello().SerializeToString())
            )
            assert _status(sock).code == 0
        else:
            sock.sendall(f)
    status = _status(sock)
    assert status.code == getattr(grpc.StatusCode, code).value[0] and status.message
    assert _closed(sock)
    sock.close()
    assert _vector_stream(spec, server.address) is SocketPackedStream  # still serving


def test_a_frame_that_arrives_in_pieces_is_read_whole(toy):
    _spec, server = toy
    with Connection(server.address) as conn:
        session = conn.open(["u"])
        sock = _raw(server.address, pb.PackedSocketHello(protocol=PROTOCOL))
        request = pb.PackedRequest(session_ids=[session.id], actions=[0.0], seqs=[1])
        request.resets.add(slot=0)
        for byte in _frame(pb.PACKED_SOCKET_KIND_REQUEST, request.SerializeToString()):
            sock.sendall(bytes((byte,)))
            time.sleep(0.001)
        kind, body = _read_frame(sock)
        assert kind == pb.PACKED_SOCKET_KIND_REPLY
        reply = pb.PackedReply.FromString(body)
        assert not reply.errors and len(reply.states) == reply.state_width > 0
        sock.close()


def test_a_malformed_request_ends_the_stream_with_invalid_argument(toy):
    _spec, server = toy
    with Connection(server.address) as conn:
        session = conn.open(["u"])
        stream = SocketPackedStream(conn, 5.0)
        stream.send(pb.PackedRequest(session_ids=[session.id], actions=[0.0], seqs=[1, 2]))
        with pytest.raises(RemoteError, match="seqs has 2 value") as info:
            stream.receive()
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and not stream.alive
        # Per-slot failures stay per slot, as on gRPC: an unknown session in one slot.
        lane = PackedLane(conn, [session])
        session.reset({})
        result = lane.run([0.5], {})
        assert not result.errors
        lane._ids[0] = "nope"
        assert lane.run([0.5], {}).errors[0].code == grpc.StatusCode.NOT_FOUND
        lane.close()


def test_a_hung_sim_times_out_and_is_let_go_of_once_the_client_leaves(start_server):
    server = start_server(
        "toy.py:Hanging",
        kwargs={"hang": 3600.0},
        args=["--max-sessions", "1", "--hung-grace", "0.5", "--lease", "0.5"],
    )
    with Connection(server.address, ConnectOptions(timeout=0.5)) as conn:
        session = conn.open()
        lane = PackedLane(conn, [session])
        lane.run_single([0.0], ({}, None))
        lane.run_single([0.0], None)
        with pytest.raises(SimTimeout, match=r"no reply within 0\.5 s"):
            lane.run_single([0.0], None)  # hangs on the server (for an hour)
        assert lane._stream is None or not lane._stream.alive
        # The client left (its socket closed): the reaper takes the call as hung.
        deadline = time.monotonic() + 60
        while "taken as hung" not in server.log_tail(50):
            assert time.monotonic() < deadline, server.log_tail(50)
            time.sleep(0.1)
    server.kill()  # its hung thread would hold a graceful exit for the whole hang


def test_a_killed_server_raises_unavailable_not_a_hang(toy):
    _spec, server = toy
    with Connection(server.address, ConnectOptions(timeout=30.0)) as conn:
        session = conn.open(["u"])
        lane = PackedLane(conn, [session])
        lane.run_single([0.0], ({}, None))
        assert isinstance(lane._stream, SocketPackedStream)
        server.kill()
        started = time.monotonic()
        with pytest.raises(ServerUnavailable):
            lane.run_single([0.0], None)
        assert time.monotonic() - started < 10  # well before the 30 s deadline


def test_connections_are_bounded_and_a_full_socket_falls_back_to_grpc(start_server):
    server = start_server("toy.py:Toy", args=["--max-sessions", "1"])
    first = _raw(server.address, pb.PackedSocketHello())
    second = _raw(server.address)
    assert _status(second).code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    second.close()
    with Connection(server.address) as conn:
        session = conn.open(["u"])
        lane = PackedLane(conn, [session])
        lane.run_single([0.0], ({}, None))
        assert isinstance(lane._stream, PackedStream) and not lane.connection.packed_socket
        lane.close()
    first.close()


def test_a_stale_packed_socket_is_replaced_and_both_files_go_at_stop(start_server, tmp_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    folder = tmp_path / "s"
    folder.mkdir()
    stale.bind(str(folder / "sim.sock.packed"))  # a server killed with -9 leaves this
    stale.close()
    from simserver.process import ServerProcess

    server = ServerProcess("toy.py:Toy", workdir=SIMS, args=[])
    server.folder = folder  # its sockets in our folder, next to the stale file
    server.start(timeout=60)
    try:
        with Connection(server.address) as conn:
            session = conn.open(["u"])
            lane = PackedLane(conn, [session])
            lane.run_single([0.0], ({}, None))
            assert isinstance(lane._stream, SocketPackedStream)
            lane.close()
    finally:
        server.stop()
    assert not (folder / "sim.sock").exists() and not (folder / "sim.sock.packed").exists()
    server.cleanup()


def test_the_conformance_kit_checks_an_offered_packed_socket(toy):
    from gymclient.conformance import protocol_checks

    spec, server = toy
    checks = {c.name: c for c in protocol_checks(spec, server.address)[0]}
    check = checks["packed socket step matches a unary step"]
    assert check.ok and not check.warning, check.detail
    _path(server.address).unlink()  # offered, but not reachable from here: a warning
    check = {c.name: c for c in protocol_checks(spec, server.address)[0]}[check.name]
    assert not check.ok and check.warning and "not reachable" in check.detail


# --------------------------------------------------------------------------- bounds (issue 14)


def _hello_then(address: str, data: bytes) -> socket.socket:
    sock = _raw(address, pb.PackedSocketHello(protocol=PROTOCOL))
    sock.sendall(data)
    return sock


def test_a_frame_begun_and_left_unfinished_is_closed(toy):
    # Slowloris: a header, part of a body, silence. Idle between frames a client may wait
    # (its lane between steps), but a begun frame must complete.
    _spec, server = toy
    request = _frame(pb.PACKED_SOCKET_KIND_REQUEST, pb.PackedRequest().SerializeToString() * 20)
    sock = _hello_then(server.address, LENGTH.pack(1000) + bytes((pb.PACKED_SOCKET_KIND_REQUEST,)))
    sock.settimeout(60)  # a bounded wait: the server's frame timeout is far shorter
    status = _status(sock)
    assert status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], status
    assert "did not arrive whole" in status.message
    assert _closed(sock)
    sock.close()
    sock = _hello_then(server.address, request)  # the server serves on
    assert _read_frame(sock)[0] == pb.PACKED_SOCKET_KIND_REPLY
    sock.close()


def test_a_connection_idle_past_the_lease_is_closed_with_a_reason(start_server):
    server = start_server("toy.py:Toy", args=["--lease", "1"])
    sock = _raw(server.address, pb.PackedSocketHello(protocol=PROTOCOL))
    sock.settimeout(60)
    status = _status(sock)
    assert status.code == grpc.StatusCode.CANCELLED.value[0], status
    assert "no request for 1 s" in status.message
    sock.close()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_announced_frames_cost_memory_only_as_their_bytes_arrive(toy):
    # 64 connections (the default cap) each announce a 16 MiB frame (the default limit) and
    # send one byte of it: the server used to allocate every announced frame up front.
    _spec, server = toy
    assert server.pid is not None
    before = _rss_mib(server.pid)
    announce = LENGTH.pack(16 * 2**20) + bytes((pb.PACKED_SOCKET_KIND_REQUEST,))
    socks = [_hello_then(server.address, announce) for _ in range(64)]
    try:
        peak = before
        deadline = time.monotonic() + 5  # long enough for every connection to read its byte
        while time.monotonic() < deadline:
            peak = max(peak, _rss_mib(server.pid))
            time.sleep(0.1)
        # Generous: 64 reads of 16 MiB would be 1 GiB.
        assert peak - before < 200, f"RSS grew {peak - before:.0f} MiB"
    finally:
        for sock in socks:
            sock.close()


def test_the_frame_reader_grows_with_the_bytes_not_the_announced_length():
    from simgym.framing import FrameReader

    size = 64 * 2**20
    a, b = socket.socketpair()
    with a, b:
        reader = FrameReader(a, size)
        b.sendall(LENGTH.pack(size) + b"x" * 100_000)  # fits in the socket's buffer
        with pytest.raises(TimeoutError):
            reader.read(time.monotonic() + 1.0)
        assert reader.partial and len(reader._buf) < 2**20  # not the 64 MiB announced
        rest = threading.Thread(target=b.sendall, args=(b"y" * (size - 100_000),))
        rest.start()
        kind, payload = reader.read(time.monotonic() + 60)
        rest.join()
        assert kind == ord("x") and len(payload) == size - 1 and payload[-1:] == b"y"
