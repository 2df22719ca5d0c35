"""Fuzz: mutated ``simgym.v1`` messages and packed-socket frames against one real server.

Hypothesis draws requests with hostile field values (NaN and infinities, huge strings and
repeated fields within the message cap, deep or wide reset configs, wrong session ids, random
bytes as serialized messages) and packed-socket byte streams (random bytes after HELLO,
truncated frames, wrong and huge announced lengths, unknown kinds). After every example the
server must answer health (SERVING) within a bounded wait, and every answer must be a proper
status: a code other than UNKNOWN (an unhandled exception), DEADLINE_EXCEEDED or UNAVAILABLE,
a short message (client input is quoted clipped, issue 14 finding 7), INTERNAL only for a sim
that raised. At the end the server's log must hold no traceback.

The default suite runs a few dozen examples per test; ``-m slow`` runs the same tests with
many more (``SIMGYM_FUZZ_EXAMPLES`` sets how many).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simgym import PROTOCOL
from simgym.v1 import simulator_pb2 as pb
from simgym.v1 import simulator_pb2_grpc as pb_grpc
from simserver.process import ServerProcess

from .conftest import SIMS

LENGTH = struct.Struct("<I")
MAX_BYTES = 16 * 2**20  # the server's default message cap
MESSAGE_LIMIT = 2048  # longest status message accepted: client input must come back clipped
BAD_CODES = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
}
SIZES = {"quick": 150, "long": int(os.environ.get("SIMGYM_FUZZ_EXAMPLES", "1000"))}
DEPTH = ["quick", pytest.param("long", marks=pytest.mark.slow)]
UNARY = {
    "Open": (pb.OpenRequest, pb.OpenReply),
    "Reset": (pb.ResetRequest, pb.TransitionReply),
    "Step": (pb.StepRequest, pb.TransitionReply),
    "States": (pb.SessionRef, pb.StatesReply),
    "Termination": (pb.SessionRef, pb.TerminationReply),
    "Close": (pb.SessionRef, pb.CloseReply),
}


def _settings(depth: str) -> settings:
    return settings(
        max_examples=SIZES[depth],
        deadline=None,
        database=None,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ----------------------------------------------------------------------------- the server


class Fuzzed:
    """The module's server, a channel to it and the checks every example ends with."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.address = server.address or ""
        self.channel = grpc.insecure_channel(
            self.address,
            options=[
                ("grpc.max_send_message_length", MAX_BYTES),
                ("grpc.max_receive_message_length", MAX_BYTES),
            ],
        )
        self.stub = pb_grpc.SimulatorStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    @contextlib.contextmanager
    def session(self) -> Iterator[str]:
        """A fresh, reset session for one example; closed after it."""
        sid = self.stub.Open(pb.OpenRequest(protocol=PROTOCOL, action_names=["u"]), timeout=30)
        self.stub.Reset(pb.ResetRequest(session_id=sid.session_id, seq=1), timeout=30)
        try:
            yield sid.session_id
        finally:
            self.stub.Close(pb.SessionRef(session_id=sid.session_id), timeout=30)

    def answers(self) -> None:
        """Health answers SERVING within a bounded wait, and the process lives."""
        assert self.server.alive, f"the server exited: {self.server.log_tail(20)}"
        try:
            reply = self.health.Check(
                health_pb2.HealthCheckRequest(service="simgym.v1.Simulator"), timeout=5
            )
        except grpc.RpcError as exc:
            raise AssertionError(f"health did not answer within 5 s: {exc.code().name}") from None
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply


def proper(code: grpc.StatusCode, details: str, what: str) -> None:
    """A status a well-behaved server gives to bad input."""
    assert code not in BAD_CODES, f"{what}: {code.name}: {details[:300]}"
    assert len(details) <= MESSAGE_LIMIT, f"{what}: {len(details)}-char message: {details[:200]}"
    assert "metadata" not in details.lower(), f"{what}: the status outgrew metadata: {details}"
    if code == grpc.StatusCode.INTERNAL:
        assert details.startswith("sim "), f"{what}: INTERNAL without a sim to blame: {details}"


def proper_slots(reply: pb.PackedReply, what: str) -> None:
    for error in reply.errors:
        proper(_code(error.code), error.message, f"{what} slot {error.slot}")


def _code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    raise AssertionError(f"status number {number} is no gRPC code")


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    server = ServerProcess(
        "toy.py:Toy", workdir=SIMS, args=["--max-sessions", "64", "--lease", "60"]
    )
    server.start(timeout=60)
    fz = Fuzzed(server)
    try:
        yield fz
    finally:
        fz.channel.close()
        server.kill()  # nothing left to see in a graceful stop; it would cost its grace
        server.cleanup()


# ----------------------------------------------------------------------------- strategies

floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0]
)
huge_text = st.builds(lambda n, c: c * n, st.integers(10_000, 1_500_000), st.sampled_from("xé\x00"))
texts = st.text(max_size=40) | huge_text
json_values = st.recursive(
    st.none() | st.booleans() | floats | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
wide_config = st.builds(
    lambda n, v: {f"k{i}": v for i in range(n)}, st.integers(1000, 60_000), floats
)
configs = st.dictionaries(st.text(max_size=20), json_values, max_size=8) | wide_config
uint64 = st.integers(0, 2**64 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
action_lists = st.lists(floats, max_size=6) | st.builds(
    lambda n, v: [v] * n, st.integers(1000, 500_000), floats
)
name_lists = st.lists(texts, max_size=6) | st.builds(
    lambda n: [f"a{i}" for i in range(n)], st.integers(1000, 50_000)
)
# Session ids: the example's live session, or anything else.
LIVE = object()
session_ids = st.just(LIVE) | st.just("") | texts


def _sid(value: Any, live: str) -> str:
    return live if value is LIVE else value


@st.composite
def unary_requests(draw: st.DrawFn) -> tuple[str, Any]:
    """(RPC name, a function of the live session id giving its request)."""
    rpc = draw(st.sampled_from(sorted(UNARY)))
    sid = draw(session_ids)
    if rpc == "Open":
        fields = {
            "protocol": draw(st.just(PROTOCOL) | texts),
            "client": draw(texts),
            "action_names": draw(st.just(["u"]) | name_lists),
            "lease_seconds": draw(floats),
        }
        return rpc, lambda live: pb.OpenRequest(**fields)
    if rpc == "Reset":
        config, seed, seq = draw(configs), draw(st.none() | int64), draw(uint64)

        def reset(live: str) -> pb.ResetRequest:
            request = pb.ResetRequest(session_id=_sid(sid, live), seed=seed, seq=seq)
            request.config.update(config)
            return request

        return rpc, reset
    if rpc == "Step":
        action, seq = draw(action_lists), draw(uint64)
        return rpc, lambda live: pb.StepRequest(session_id=_sid(sid, live), action=action, seq=seq)
    return rpc, lambda live: pb.SessionRef(session_id=_sid(sid, live))


@st.composite
def packed_requests(draw: st.DrawFn) -> Any:
    """A function of the live session id giving a mutated PackedRequest."""
    count = draw(st.integers(0, 40) | st.integers(41, 3000))
    ids = draw(st.lists(session_ids, min_size=count, max_size=count)) if count <= 40 else None
    width = draw(st.integers(0, 3))
    actions = (
        draw(st.lists(floats, min_size=count * width, max_size=count * width))
        if (count * width <= 200)
        else [0.0] * (count * width)
    )
    actions += draw(st.lists(floats, max_size=2))  # sometimes not a whole number per slot
    seqs = draw(
        st.just([])
        | st.lists(uint64, min_size=count, max_size=count)
        | st.lists(uint64, max_size=3)
    )
    resets = draw(
        st.lists(
            st.tuples(st.integers(0, count + 2), configs | st.just({}), st.none() | int64),
            max_size=4,
        )
    )

    def build(live: str) -> pb.PackedRequest:
        sids = [_sid(s, live) for s in ids] if ids is not None else ["nope"] * count
        request = pb.PackedRequest(session_ids=sids, actions=actions, seqs=seqs[: count + 3])
        for slot, config, seed in resets:
            reset = request.resets.add(slot=slot, seed=seed)
            reset.config.update(config)
        return request

    return build


# ----------------------------------------------------------------------------- packed socket


def _frame(kind: int, body: bytes) -> bytes:
    return LENGTH.pack(len(body) + 1) + bytes((kind,)) + body


HELLO = _frame(
    pb.PACKED_SOCKET_KIND_HELLO, pb.PackedSocketHello(protocol=PROTOCOL).SerializeToString()
)


def _conversation(fz: Fuzzed, chunks: list[bytes], hello: bool) -> list[tuple[int, bytes]]:
    """Send ``chunks`` on a packed-socket connection (after HELLO), then end our side.

    Returns:
        The frames the server sent back before it closed (which it must, within 10 s).
    """
    path = fz.address.removeprefix("unix:") + ".packed"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    data = b""
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if hello:
                sock.sendall(HELLO)
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                got = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(
                    f"the server neither answered nor closed within 10 s after our end ({len(data)} bytes so far)"
                ) from None
            if not got:
                break
            data += got
    finally:
        sock.close()
    frames = []
    while data:
        assert len(data) >= 4, f"a truncated frame header from the server: {data!r}"
        (length,) = LENGTH.unpack_from(data)
        assert 1 <= length <= len(data) - 4, f"a truncated frame from the server ({length})"
        frames.append((data[4], data[5 : 4 + length]))
        data = data[4 + length :]
    return frames


def _check_frames(frames: list[tuple[int, bytes]], what: str) -> None:
    for kind, body in frames:
        if kind == pb.PACKED_SOCKET_KIND_REPLY:
            proper_slots(pb.PackedReply.FromString(body), what)
        else:
            assert kind == pb.PACKED_SOCKET_KIND_STATUS, f"{what}: server sent frame kind {kind}"
            status = pb.PackedSocketStatus.FromString(body)
            if status.code:
                proper(_code(status.code), status.message, what)


pieces = st.one_of(
    st.binary(max_size=200),  # random bytes
    st.builds(lambda k, b: _frame(k, b), st.integers(0, 255), st.binary(max_size=200)),
    st.builds(lambda b: _frame(pb.PACKED_SOCKET_KIND_REQUEST, b), st.binary(max_size=300)),
    st.builds(lambda n: LENGTH.pack(n), st.integers(0, 2**32 - 1)),  # a header, any length
    st.builds(
        lambda n, b: LENGTH.pack(n) + b,
        st.integers(MAX_BYTES + 1, 2**32 - 1),
        st.binary(max_size=20),
    ),
    st.builds(lambda f, cut: f[:cut], st.just(HELLO), st.integers(0, len(HELLO))),  # truncated
)


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("depth", DEPTH)
def test_fuzz_unary_calls(fuzzed, depth):
    @_settings(depth)
    @given(case=unary_requests())
    def run(case: tuple[str, Any]) -> None:
        rpc, build = case
        with fuzzed.session() as live:
            request = build(live)
            try:
                reply = getattr(fuzzed.stub, rpc)(request, timeout=10)
            except grpc.RpcError as exc:
                proper(exc.code(), exc.details() or "", rpc)
            else:
                if rpc == "Open":
                    fuzzed.stub.Close(pb.SessionRef(session_id=reply.session_id), timeout=30)
                    granted = reply.lease_seconds
                    assert math.isfinite(granted) and granted > 0, f"Open granted lease {granted}"
        fuzzed.answers()

    run()


@pytest.mark.parametrize("depth", DEPTH)
def test_fuzz_packed_requests(fuzzed, depth):
    @_settings(depth)
    @given(build=packed_requests(), on_socket=st.booleans())
    def run(build: Any, on_socket: bool) -> None:
        with fuzzed.session() as live:
            request = build(live)
            if on_socket:
                body = request.SerializeToString()
                frames = _conversation(fuzzed, [_frame(pb.PACKED_SOCKET_KIND_REQUEST, body)], True)
                _check_frames(frames, "packed socket")
            else:
                try:
                    (reply,) = fuzzed.stub.PackedStream(iter([request]), timeout=30)
                except grpc.RpcError as exc:
                    proper(exc.code(), exc.details() or "", "PackedStream")
                else:
                    proper_slots(reply, "PackedStream")
        fuzzed.answers()

    run()


@pytest.mark.parametrize("depth", DEPTH)
def test_fuzz_random_bytes_as_messages(fuzzed, depth):
    @_settings(depth)
    @given(rpc=st.sampled_from([*sorted(UNARY), "PackedStream"]), body=st.binary(max_size=400))
    def run(rpc: str, body: bytes) -> None:
        method = f"/simgym.v1.Simulator/{rpc}"
        try:
            if rpc == "PackedStream":
                call = fuzzed.channel.stream_stream(method)
                list(call(iter([body]), timeout=10))
            else:
                fuzzed.channel.unary_unary(method)(body, timeout=10)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            # Bytes that are no message at all: gRPC's own answer, before any simgym code runs.
            if not (code == grpc.StatusCode.INTERNAL and "deserializ" in details):
                proper(code, details, rpc)
        fuzzed.answers()

    run()


@pytest.mark.parametrize("depth", DEPTH)
def test_fuzz_packed_socket_frames(fuzzed, depth):
    @_settings(depth)
    @given(chunks=st.lists(pieces, min_size=1, max_size=4), hello=st.booleans())
    def run(chunks: list[bytes], hello: bool) -> None:
        _check_frames(_conversation(fuzzed, chunks, hello), "packed socket frames")
        fuzzed.answers()

    run()


def test_fuzzed_server_logged_no_traceback(fuzzed):
    # Runs after the fuzz tests of this module (pytest keeps file order): whatever they sent,
    # the server logged one line per failure, never an unhandled exception.
    log = fuzzed.server.log_file.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 500 : log.index("Traceback") + 2500]
