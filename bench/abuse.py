"""The abuse catalog: bad inputs and faulty sims against real servers, each outcome classified.

What an outside tester tries first (issue 14): bad RPC fields (NaN, infinities, huge strings
and lists, wrong session ids) on the unary calls, on ``PackedStream`` and on the packed socket;
bad frames on the packed socket; missing and wrong tokens; bad command-line values for every
numeric ``simserver`` flag (read from ``simserver --help``, so new flags are covered) and bad
files and addresses for ``simserver`` and ``simgym``; sims that raise, hang, return NaN, leak
or kill their process; slowloris clients. Cases are generated from compact tables.

Each outcome is classified:

* ``clean``: the expected status or exit code, one readable line (no newline, under 1 KiB),
  no traceback in the server log, the server alive and its health answering within 1 s;
* ``traceback`` (UNKNOWN or a traceback in the log or on stderr), ``wrong code``,
  ``long message``, ``hang`` (no answer in the case's bound, or health late), ``crash``
  (the server exited), ``accepted`` (a bad flag value the server started with).

A fault case counts as survived when the server is alive afterwards, answers health within
1 s and steps a fresh session.

    .venv/bin/python bench/abuse.py                    # the whole catalog (a few minutes)
    .venv/bin/python bench/abuse.py --only rpc packed  # some categories
    .venv/bin/python bench/abuse.py --json out.json    # also write every outcome as JSON

Servers get ``--isolate process`` and ``--max-sim-rss 200`` when ``simserver`` has them
(``--isolate thread``: the default in-process sims, to see what isolation buys).
"""

# ruff: noqa: E501  (the catalog's tables keep one case per line)
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
SIMS = REPO / "tests" / "sims"
sys.path.insert(0, str(REPO))

from simgym import PROTOCOL  # noqa: E402
from simgym.v1 import simulator_pb2 as pb  # noqa: E402
from simgym.v1 import simulator_pb2_grpc as pb_grpc  # noqa: E402
from simserver.process import ServerProcess  # noqa: E402

LENGTH = struct.Struct("<I")
MIB = 2**20
BIG = "x" * 1_000_000
NAN, INF = math.nan, math.inf
TOKEN = "s3cret"
SERVER_LEASE = 60.0
# The CLI cases' bad files ({tmp}/... in their command lines).
FILES = Path(tempfile.mkdtemp(prefix="abuse-"))


@dataclass
class Outcome:
    """One case's result."""

    category: str
    case: str
    expect: str
    got: str = ""
    verdict: str = "clean"
    detail: str = ""
    seconds: float = 0.0
    fault: bool = False


@dataclass
class Case:
    """A named bad input (or fault) and how to try it."""

    category: str
    name: str
    expect: str
    run: Callable[[Ctx], tuple[str, str]]  # -> (got, detail); raises Unclean
    server: str | None = None  # the server it runs against (checked afterwards)
    fault: bool = False


class Unclean(Exception):
    """A verdict other than clean, with what was seen."""

    def __init__(self, verdict: str, got: str, detail: str = "") -> None:
        super().__init__(detail)
        self.verdict, self.got, self.detail = verdict, got, detail


# ----------------------------------------------------------------------------- servers


def simserver_help() -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "simserver", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
        timeout=60,
    )
    return proc.stdout


def isolation_args(help_text: str, mode: str = "auto") -> list[str]:
    """The servers' isolation options: ``process`` (with --max-sim-rss) where simserver has it."""
    if mode == "thread" or "--isolate" not in help_text:
        return ["--isolate", "thread"] if mode == "thread" and "--isolate" in help_text else []
    args = ["--isolate", "process"]
    if "--max-sim-rss" in help_text:
        args += ["--max-sim-rss", "200"]
    return args


SERVERS: dict[str, tuple[str, str, list[str]]] = {
    # name: (target, transport, extra args)
    "toy": ("toy.py:Toy", "unix", ["--lease", str(SERVER_LEASE)]),
    "declared": ("toy.py:Declared", "unix", []),
    "token": ("toy.py:Toy", "unix", ["--token", TOKEN]),
    "token-tcp": ("toy.py:Toy", "tcp", ["--token", TOKEN]),
}


class Ctx:
    """The servers the cases run against, started on first use and restarted after a crash."""

    def __init__(self, isolation: list[str]) -> None:
        self.isolation = isolation
        self.servers: dict[str, ServerProcess] = {}
        self.channels: dict[str, grpc.Channel] = {}

    def server(self, name: str) -> ServerProcess:
        srv = self.servers.get(name)
        if srv is None or not srv.alive:
            if srv is not None:
                srv.cleanup()
                self.channels.pop(name).close()
            target, transport, extra = SERVERS[name]
            srv = ServerProcess(target, workdir=SIMS, transport=transport, args=extra)
            srv.start(timeout=60)
            self.servers[name] = srv
            self.channels[name] = grpc.insecure_channel(
                srv.address or "",
                options=[
                    ("grpc.max_send_message_length", 64 * MIB),
                    ("grpc.max_receive_message_length", 64 * MIB),
                ],
            )
        return srv

    def stub(self, name: str, token: str | None = None) -> Any:
        self.server(name)
        return _Authed(pb_grpc.SimulatorStub(self.channels[name]), token)

    def channel(self, name: str) -> grpc.Channel:
        self.server(name)
        return self.channels[name]

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        for srv in self.servers.values():
            srv.cleanup()


class _Authed:
    """A stub whose calls carry a bearer token (when given)."""

    def __init__(self, stub: Any, token: str | None) -> None:
        self._stub, self._token = stub, token

    def __getattr__(self, rpc: str) -> Callable[..., Any]:
        method = getattr(self._stub, rpc)
        metadata = [("authorization", f"Bearer {self._token}")] if self._token else None

        def call(request: Any, timeout: float = 15.0) -> Any:
            return method(request, timeout=timeout, metadata=metadata)

        return call


def health_ok(channel: grpc.Channel, bound: float = 1.0) -> str:
    """'' when health answers SERVING within ``bound`` s, else what happened."""
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="simgym.v1.Simulator"), timeout=bound
        )
    except grpc.RpcError as exc:
        return f"health: {exc.code().name}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"health: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return ""


def log_size(srv: ServerProcess) -> int:
    try:
        return srv.log_file.stat().st_size
    except OSError:
        return 0


def log_since(srv: ServerProcess, offset: int) -> str:
    try:
        with srv.log_file.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def rss(pid: int | None) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------- RPC cases


def _status(exc: grpc.RpcError) -> tuple[str, str]:
    return exc.code().name, exc.details() or ""


def _readable(got: str, details: str, expect: str) -> tuple[str, str]:
    """Classify a status against the expected codes (``A|B``)."""
    if got == "UNKNOWN":
        raise Unclean("traceback", got, details[:200])
    if got == "DEADLINE_EXCEEDED":
        raise Unclean("hang", got, details[:200])
    if got not in expect.split("|"):
        raise Unclean("wrong code", got, details[:200])
    if "\n" in details or len(details) > 1024:
        raise Unclean("long message", got, f"{len(details)} chars: {details[:120]!r}")
    return got, details[:160]


@contextlib.contextmanager
def live_session(
    ctx: Ctx, server: str, token: str | None = None, reset: bool = True
) -> Iterator[str]:
    stub = ctx.stub(server, token)
    sid = stub.Open(pb.OpenRequest(protocol=PROTOCOL, action_names=["u"])).session_id
    if reset:
        stub.Reset(pb.ResetRequest(session_id=sid, seq=1))
    try:
        yield sid
    finally:
        with contextlib.suppress(grpc.RpcError):
            stub.Close(pb.SessionRef(session_id=sid))


def _fill(value: Any, sid: str) -> Any:
    if value == "LIVE":
        return sid
    if isinstance(value, list):
        return [_fill(v, sid) for v in value]
    return value


def unary(
    server: str,
    rpc: str,
    fields: dict[str, Any],
    expect: str,
    *,
    reset: bool = True,
    post: Callable[[Any], str] | None = None,
    token: str | None = None,
) -> Callable[[Ctx], tuple[str, str]]:
    """A unary call with ``fields`` (``"LIVE"``: the case's own session; ``config``: a dict)."""

    def run(ctx: Ctx) -> tuple[str, str]:
        with live_session(
            ctx, server, reset=reset, token=TOKEN if server.startswith("token") else None
        ) as sid:
            kw = {k: _fill(v, sid) for k, v in fields.items() if k != "config"}
            request = {
                "Open": pb.OpenRequest,
                "Reset": pb.ResetRequest,
                "Step": pb.StepRequest,
                "States": pb.SessionRef,
                "Termination": pb.SessionRef,
                "Close": pb.SessionRef,
            }[rpc](**kw)
            if "config" in fields:
                request.config.update(fields["config"])
            try:
                reply = getattr(ctx.stub(server, token), rpc)(request)
            except grpc.RpcError as exc:
                return _readable(*_status(exc), expect)
            if rpc == "Open":
                with contextlib.suppress(grpc.RpcError):
                    ctx.stub(server, token).Close(pb.SessionRef(session_id=reply.session_id))
            problem = post(reply) if post else ""
            if problem:
                raise Unclean("wrong code", "OK", problem)
            return _readable("OK", "", expect)

    return run


def _lease_capped(reply: Any) -> str:
    lease = reply.lease_seconds
    if not (math.isfinite(lease) and 0 < lease <= SERVER_LEASE):
        return f"granted lease {lease} (server's --lease is {SERVER_LEASE:g})"
    return ""


def _deep(depth: int) -> dict[str, Any]:
    value: Any = 1.0
    for _ in range(depth):
        value = {"k": value}
    return value


# fmt: off
RPC_TABLE: list[tuple[str, str, dict[str, Any], str]] = [
    # (case, rpc, fields, expected codes)
    ("Open: protocol simgym.v0", "Open", {"protocol": "simgym.v0", "action_names": ["u"]}, "FAILED_PRECONDITION"),
    ("Open: 1 MB protocol string", "Open", {"protocol": BIG, "action_names": ["u"]}, "FAILED_PRECONDITION"),
    ("Open: 1 MB client name", "Open", {"protocol": PROTOCOL, "client": BIG, "action_names": ["u"]}, "OK"),
    ("Open: no action names (undeclared)", "Open", {"protocol": PROTOCOL}, "INVALID_ARGUMENT"),
    ("Open: duplicate action names", "Open", {"protocol": PROTOCOL, "action_names": ["u", "u"]}, "INVALID_ARGUMENT"),
    ("Open: 50k duplicate action names", "Open", {"protocol": PROTOCOL, "action_names": ["u"] * 50_000}, "INVALID_ARGUMENT"),
    ("Open: a 1 MB action name", "Open", {"protocol": PROTOCOL, "action_names": [BIG]}, "OK|INVALID_ARGUMENT"),
    ("Open: lease NaN", "Open", {"protocol": PROTOCOL, "action_names": ["u"], "lease_seconds": NAN}, "OK|INVALID_ARGUMENT"),
    ("Open: lease +inf", "Open", {"protocol": PROTOCOL, "action_names": ["u"], "lease_seconds": INF}, "OK|INVALID_ARGUMENT"),
    ("Open: lease -inf", "Open", {"protocol": PROTOCOL, "action_names": ["u"], "lease_seconds": -INF}, "OK|INVALID_ARGUMENT"),
    ("Open: lease -1", "Open", {"protocol": PROTOCOL, "action_names": ["u"], "lease_seconds": -1.0}, "OK|INVALID_ARGUMENT"),
    ("Open: lease 1e308", "Open", {"protocol": PROTOCOL, "action_names": ["u"], "lease_seconds": 1e308}, "OK|INVALID_ARGUMENT"),
    ("Reset: unknown session", "Reset", {"session_id": "nope"}, "NOT_FOUND"),
    ("Reset: empty session id", "Reset", {"session_id": ""}, "NOT_FOUND"),
    ("Reset: 1 MB session id", "Reset", {"session_id": BIG}, "NOT_FOUND"),
    ("Reset: config NaN", "Reset", {"session_id": "LIVE", "config": {"x0": NAN}}, "INVALID_ARGUMENT"),
    ("Reset: config +inf", "Reset", {"session_id": "LIVE", "config": {"x0": INF}}, "INVALID_ARGUMENT"),
    ("Reset: config -inf in a list", "Reset", {"session_id": "LIVE", "config": {"l": [1.0, -INF]}}, "INVALID_ARGUMENT"),
    ("Reset: config NaN nested", "Reset", {"session_id": "LIVE", "config": {"a": {"b": NAN}}}, "INVALID_ARGUMENT"),
    ("Reset: config 60 levels deep", "Reset", {"session_id": "LIVE", "config": _deep(60)}, "OK|INVALID_ARGUMENT"),
    ("Reset: config 1 MB string", "Reset", {"session_id": "LIVE", "config": {"s": BIG}}, "OK|INVALID_ARGUMENT"),
    ("Reset: config x0 a string (sim raises)", "Reset", {"session_id": "LIVE", "config": {"x0": "abc"}}, "INTERNAL|INVALID_ARGUMENT"),
    ("Reset: seed int64 min", "Reset", {"session_id": "LIVE", "seed": -(2**63)}, "OK"),
    ("Reset: seed int64 max", "Reset", {"session_id": "LIVE", "seed": 2**63 - 1}, "OK"),
    ("Reset: seq uint64 max", "Reset", {"session_id": "LIVE", "seq": 2**64 - 1}, "OK"),
    ("Step: unknown session", "Step", {"session_id": "nope", "action": [0.0]}, "NOT_FOUND"),
    ("Step: no action", "Step", {"session_id": "LIVE", "action": []}, "INVALID_ARGUMENT"),
    ("Step: NaN action", "Step", {"session_id": "LIVE", "action": [NAN]}, "INVALID_ARGUMENT"),
    ("Step: +inf action", "Step", {"session_id": "LIVE", "action": [INF]}, "INVALID_ARGUMENT"),
    ("Step: -inf action", "Step", {"session_id": "LIVE", "action": [-INF]}, "INVALID_ARGUMENT"),
    ("Step: two actions for one", "Step", {"session_id": "LIVE", "action": [0.0, 1.0]}, "INVALID_ARGUMENT"),
    ("Step: 1M actions", "Step", {"session_id": "LIVE", "action": [0.0] * 1_000_000}, "INVALID_ARGUMENT"),
    ("Step: 1e308 (finite)", "Step", {"session_id": "LIVE", "action": [1e308], "seq": 2}, "OK"),
    ("Step: seq uint64 max", "Step", {"session_id": "LIVE", "action": [0.0], "seq": 2**64 - 1}, "OK"),
    ("States: unknown session", "States", {"session_id": "nope"}, "NOT_FOUND"),
    ("Termination: 1 MB session id", "Termination", {"session_id": BIG}, "NOT_FOUND"),
    ("Close: unknown session", "Close", {"session_id": "nope"}, "OK"),
    ("Close: 1 MB session id", "Close", {"session_id": BIG}, "OK"),
]
# fmt: on


def rpc_cases() -> list[Case]:
    cases = [
        Case(
            "rpc",
            name,
            expect,
            unary(
                "toy",
                rpc,
                fields,
                expect,
                post=_lease_capped if name.startswith("Open: lease") else None,
            ),
            server="toy",
        )
        for name, rpc, fields, expect in RPC_TABLE
    ]
    cases += [
        Case(
            "rpc",
            "Step before the first reset",
            "FAILED_PRECONDITION",
            unary(
                "toy",
                "Step",
                {"session_id": "LIVE", "action": [0.0]},
                "FAILED_PRECONDITION",
                reset=False,
            ),
            server="toy",
        ),
        Case(
            "rpc",
            "States before the first reset",
            "FAILED_PRECONDITION",
            unary("toy", "States", {"session_id": "LIVE"}, "FAILED_PRECONDITION", reset=False),
            server="toy",
        ),
        Case(
            "rpc",
            "Reset: 50k unknown config keys (declared sim)",
            "INVALID_ARGUMENT",
            unary(
                "declared",
                "Reset",
                {"session_id": "LIVE", "config": {f"k{i}": 1 for i in range(50_000)}},
                "INVALID_ARGUMENT",
            ),
            server="declared",
        ),
        Case(
            "rpc",
            "Open: actions unlike the declared ones",
            "INVALID_ARGUMENT",
            unary(
                "declared",
                "Open",
                {"protocol": PROTOCOL, "action_names": ["v"]},
                "INVALID_ARGUMENT",
            ),
            server="declared",
        ),
    ]
    return cases


# ----------------------------------------------------------------------------- packed cases


def _frame(kind: int, body: bytes) -> bytes:
    return LENGTH.pack(len(body) + 1) + bytes((kind,)) + body


HELLO = pb.PackedSocketHello(protocol=PROTOCOL)


def _packed_conversation(
    path: str, chunks: list[bytes], hello: pb.PackedSocketHello | None, bound: float = 15.0
) -> list[tuple[int, bytes]]:
    """Send ``chunks`` (after ``hello``), end our side; the frames back before the server closes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(bound)
    sock.connect(path)
    data = b""
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if hello is not None:
                sock.sendall(_frame(pb.PACKED_SOCKET_KIND_HELLO, hello.SerializeToString()))
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                got = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise Unclean("hang", "-", f"no answer or close within {bound:g} s") from None
            if not got:
                break
            data += got
    finally:
        sock.close()
    frames = []
    while len(data) >= 4:
        (length,) = LENGTH.unpack_from(data)
        frames.append((data[4], data[5 : 4 + length]))
        data = data[4 + length :]
    return frames


def _socket_outcome(frames: list[tuple[int, bytes]], expect: str) -> tuple[str, str]:
    """The last frame's code (``OK`` for a reply or a 0 status) against the expected codes."""
    got, details = "CLOSED", ""
    for kind, body in frames:
        if kind == pb.PACKED_SOCKET_KIND_REPLY:
            reply = pb.PackedReply.FromString(body)
            slot_codes = sorted({_code(e.code).name for e in reply.errors})
            got = "OK" if not slot_codes else "OK/" + "+".join(slot_codes)
            details = "; ".join(e.message[:80] for e in reply.errors[:2])
        elif kind == pb.PACKED_SOCKET_KIND_STATUS:
            status = pb.PackedSocketStatus.FromString(body)
            got, details = (_code(status.code).name if status.code else "OK"), status.message
    return _readable(got, details, expect)


def _code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def packed(
    server: str,
    build: Callable[[str], pb.PackedRequest],
    expect: str,
    on_socket: bool,
    token: str | None = None,
) -> Callable[[Ctx], tuple[str, str]]:
    """One packed request on PackedStream or the packed socket; per-slot codes read ``OK/CODE``."""

    def run(ctx: Ctx) -> tuple[str, str]:
        own = TOKEN if server.startswith("token") else None  # the case's session is opened rightly
        with live_session(ctx, server, token=own) as sid:
            request = build(sid)
            if on_socket:
                path = (ctx.server(server).address or "").removeprefix("unix:") + ".packed"
                hello = pb.PackedSocketHello(protocol=PROTOCOL, token=token or "")
                body = request.SerializeToString()
                return _socket_outcome(
                    _packed_conversation(
                        path, [_frame(pb.PACKED_SOCKET_KIND_REQUEST, body)], hello
                    ),
                    expect,
                )
            stub = pb_grpc.SimulatorStub(ctx.channel(server))
            metadata = [("authorization", f"Bearer {token}")] if token else None
            try:
                (reply,) = stub.PackedStream(iter([request]), timeout=30, metadata=metadata)
            except grpc.RpcError as exc:
                return _readable(*_status(exc), expect)
            codes = sorted({_code(e.code).name for e in reply.errors})
            got = "OK" if not codes else "OK/" + "+".join(codes)
            return _readable(got, "; ".join(e.message[:80] for e in reply.errors[:2]), expect)

    return run


def _req(
    ids: list[str],
    actions: list[float],
    seqs: list[int] | None = None,
    resets: list[tuple[int, dict[str, Any]]] = (),
) -> Callable[[str], pb.PackedRequest]:
    def build(sid: str) -> pb.PackedRequest:
        request = pb.PackedRequest(
            session_ids=[sid if i == "LIVE" else i for i in ids], actions=actions, seqs=seqs or []
        )
        for slot, config in resets:
            request.resets.add(slot=slot).config.update(config)
        return request

    return build


# fmt: off
PACKED_TABLE: list[tuple[str, Callable[[str], pb.PackedRequest], str]] = [
    ("no slots", _req([], []), "OK"),
    ("actions for no slots", _req([], [1.0]), "INVALID_ARGUMENT"),
    ("actions not a whole number per slot", _req(["LIVE", "LIVE"], [0.0, 1.0, 2.0]), "INVALID_ARGUMENT"),
    ("seqs of the wrong length", _req(["LIVE"], [0.0], [1, 2]), "INVALID_ARGUMENT"),
    ("a reset naming slot K", _req(["LIVE"], [0.0], resets=[(1, {})]), "INVALID_ARGUMENT"),
    ("a slot reset twice", _req(["LIVE"], [0.0], resets=[(0, {}), (0, {})]), "INVALID_ARGUMENT"),
    ("a NaN action in a slot", _req(["LIVE"], [NAN], [5]), "OK/INVALID_ARGUMENT"),
    ("an unknown session in a slot", _req(["nope"], [0.0]), "OK/NOT_FOUND"),
    ("a 1 MB session id in a slot", _req([BIG], [0.0]), "OK/NOT_FOUND"),
    ("a reset config with NaN", _req(["LIVE"], [0.0], [5], [(0, {"x0": NAN})]), "OK/INVALID_ARGUMENT|INVALID_ARGUMENT"),
    ("a reset config with +inf", _req(["LIVE"], [0.0], [5], [(0, {"x0": INF})]), "OK/INVALID_ARGUMENT|INVALID_ARGUMENT"),
    ("100k unknown-session slots", _req(["nope"] * 100_000, [0.0] * 100_000), "OK/NOT_FOUND|INVALID_ARGUMENT|RESOURCE_EXHAUSTED"),
]
# fmt: on


def packed_cases() -> list[Case]:
    out = []
    for on_socket in (False, True):
        where = "packed socket" if on_socket else "PackedStream"
        for name, build, expect in PACKED_TABLE:
            run = packed("toy", build, expect, on_socket)
            if name.startswith("100k"):
                run = _bounded_cost(run)
            out.append(Case("packed", f"{where}: {name}", expect, run, server="toy"))
    return out


def _bounded_cost(run: Callable[[Ctx], tuple[str, str]]) -> Callable[[Ctx], tuple[str, str]]:
    """A huge request may cost at most 1 MB of log and 100 MiB of kept server RSS."""

    def bounded(ctx: Ctx) -> tuple[str, str]:
        srv = ctx.server("toy")
        logged, before = log_size(srv), rss(srv.pid)
        started = time.monotonic()
        got, detail = run(ctx)
        took = time.monotonic() - started
        grew, kept = log_size(srv) - logged, rss(srv.pid) - before
        detail = f"{took:.1f} s, log +{grew / 1e6:.1f} MB, RSS +{kept / MIB:.0f} MiB"
        if grew > 1_000_000 or kept > 100 * MIB:
            raise Unclean("unbounded", got, detail)
        return got, detail

    return bounded


# fmt: off
FRAME_TABLE: list[tuple[str, list[bytes], pb.PackedSocketHello | None, str]] = [
    # (case, chunks, hello, expected code)
    ("a REQUEST before HELLO", [_frame(pb.PACKED_SOCKET_KIND_REQUEST, b"")], None, "INVALID_ARGUMENT"),
    ("HELLO that does not parse", [_frame(pb.PACKED_SOCKET_KIND_HELLO, b"\xff\xff\xff")], None, "INVALID_ARGUMENT"),
    ("HELLO of protocol simgym.v0", [_frame(pb.PACKED_SOCKET_KIND_HELLO, pb.PackedSocketHello(protocol="simgym.v0").SerializeToString())], None, "FAILED_PRECONDITION"),
    ("HELLO with a 1 MB protocol", [_frame(pb.PACKED_SOCKET_KIND_HELLO, pb.PackedSocketHello(protocol=BIG).SerializeToString())], None, "FAILED_PRECONDITION"),
    ("an empty frame", [LENGTH.pack(0)], None, "INVALID_ARGUMENT"),
    ("a frame of 4 GiB announced", [LENGTH.pack(2**32 - 1)], None, "RESOURCE_EXHAUSTED"),
    ("a frame of 17 MiB announced", [LENGTH.pack(17 * MIB)], HELLO, "RESOURCE_EXHAUSTED"),
    ("a REPLY frame from the client", [_frame(pb.PACKED_SOCKET_KIND_REPLY, b"")], HELLO, "INVALID_ARGUMENT"),
    ("a STATUS frame from the client", [_frame(pb.PACKED_SOCKET_KIND_STATUS, b"")], HELLO, "INVALID_ARGUMENT"),
    ("kind 255", [_frame(255, b"abc")], HELLO, "INVALID_ARGUMENT"),
    ("a REQUEST that does not parse", [_frame(pb.PACKED_SOCKET_KIND_REQUEST, b"\x0a\xff")], HELLO, "INVALID_ARGUMENT"),
    ("HELLO twice", [_frame(pb.PACKED_SOCKET_KIND_HELLO, HELLO.SerializeToString())], HELLO, "INVALID_ARGUMENT"),
    ("a truncated header, then EOF", [b"\x05\x00"], HELLO, "INVALID_ARGUMENT|CLOSED"),
    ("a truncated frame, then EOF", [LENGTH.pack(100) + b"\x02abc"], HELLO, "INVALID_ARGUMENT|CLOSED"),
    ("1 KiB of random bytes", [os.urandom(1024)], HELLO, "INVALID_ARGUMENT|RESOURCE_EXHAUSTED"),
    ("1 KiB of random bytes instead of HELLO", [os.urandom(1024)], None, "INVALID_ARGUMENT|RESOURCE_EXHAUSTED"),
    ("HELLO, then EOF", [], HELLO, "OK"),
]
# fmt: on


def frame_cases() -> list[Case]:
    def case(
        chunks: list[bytes], hello: pb.PackedSocketHello | None, expect: str
    ) -> Callable[[Ctx], tuple[str, str]]:
        def run(ctx: Ctx) -> tuple[str, str]:
            path = (ctx.server("toy").address or "").removeprefix("unix:") + ".packed"
            return _socket_outcome(_packed_conversation(path, chunks, hello), expect)

        return run

    return [
        Case("frames", name, expect, case(chunks, hello, expect), server="toy")
        for name, chunks, hello, expect in FRAME_TABLE
    ]


# ----------------------------------------------------------------------------- auth


def auth_cases() -> list[Case]:
    out = []
    tokens = [
        ("no token", None),
        ("a wrong token", "wrong"),
        ("an empty token", ""),
        ("a whitespace token", "   "),
        ("the token with a trailing space", TOKEN + " "),
        ("a 4 KiB token", "t" * 4096),
    ]
    open_fields = {"protocol": PROTOCOL, "action_names": ["u"]}
    for server in ("token", "token-tcp"):
        for label, token in tokens:
            out.append(
                Case(
                    "auth",
                    f"{server}: Open with {label}",
                    "UNAUTHENTICATED",
                    _open_with(server, token, open_fields),
                    server=server,
                )
            )
        out.append(
            Case(
                "auth",
                f"{server}: PackedStream with no token",
                "UNAUTHENTICATED",
                packed(server, _req([], []), "UNAUTHENTICATED", False, token=None),
                server=server,
            )
        )
        out.append(
            Case(
                "auth",
                f"{server}: health without a token",
                "OK",
                _health_without_token(server),
                server=server,
            )
        )
    for label, token in tokens[1:4]:
        hello = pb.PackedSocketHello(protocol=PROTOCOL, token=token or "")
        out.append(
            Case(
                "auth",
                f"packed socket HELLO with {label}",
                "UNAUTHENTICATED",
                _hello_case("token", hello),
                server="token",
            )
        )
    out.append(
        Case(
            "auth",
            "packed socket HELLO without a token",
            "UNAUTHENTICATED",
            _hello_case("token", pb.PackedSocketHello(protocol=PROTOCOL)),
            server="token",
        )
    )
    return out


def _open_with(
    server: str, token: str | None, fields: dict[str, Any]
) -> Callable[[Ctx], tuple[str, str]]:
    def run(ctx: Ctx) -> tuple[str, str]:
        stub = pb_grpc.SimulatorStub(ctx.channel(server))
        metadata = [("authorization", f"Bearer {token}")] if token is not None else None
        try:
            stub.Open(pb.OpenRequest(**fields), timeout=15, metadata=metadata)
        except grpc.RpcError as exc:
            return _readable(*_status(exc), "UNAUTHENTICATED")
        return _readable("OK", "", "UNAUTHENTICATED")

    return run


def _health_without_token(server: str) -> Callable[[Ctx], tuple[str, str]]:
    def run(ctx: Ctx) -> tuple[str, str]:
        problem = health_ok(ctx.channel(server), 5.0)
        if problem:
            raise Unclean("wrong code", problem)
        return "OK", ""

    return run


def _hello_case(server: str, hello: pb.PackedSocketHello) -> Callable[[Ctx], tuple[str, str]]:
    def run(ctx: Ctx) -> tuple[str, str]:
        path = (ctx.server(server).address or "").removeprefix("unix:") + ".packed"
        return _socket_outcome(_packed_conversation(path, [], hello), "UNAUTHENTICATED")

    return run


# ----------------------------------------------------------------------------- CLI


def _cli(
    cmd: list[str],
    expect_code: int,
    needle: str = "",
    bound: float = 60.0,
    address_file: Path | None = None,
) -> Callable[[Ctx], tuple[str, str]]:
    """A command that must fail with ``expect_code`` and one line on stderr (naming ``needle``)."""

    def run(ctx: Ctx) -> tuple[str, str]:
        with tempfile.TemporaryDirectory() as tmp:
            af = address_file or Path(tmp) / "address"
            full = [
                a.replace("{tmp}", str(FILES)).replace("{port}", str(_busy_port())) for a in cmd
            ]
            if full[:3] == [sys.executable, "-m", "simserver"] and "--address-file" not in full:
                full += ["--address-file", str(af)]
            proc = subprocess.Popen(
                full,
                cwd=SIMS,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "COLUMNS": "200"},
            )
            ends = time.monotonic() + bound
            while proc.poll() is None and time.monotonic() < ends:
                if af.exists():  # it serves: the bad value was accepted
                    proc.kill()
                    proc.communicate()
                    raise Unclean("accepted", "served", "the server started with it")
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
                raise Unclean("hang", "-", f"still running after {bound:g} s")
            stderr = proc.communicate()[1]
        lines = [line for line in stderr.splitlines() if line.strip()]
        got = f"exit {proc.returncode}"
        if "Traceback" in stderr:
            raise Unclean("traceback", got, lines[-1][:160] if lines else "")
        if proc.returncode != expect_code:
            raise Unclean("wrong code", got, (lines[-1] if lines else "")[:160])
        usage = [line for line in lines if "Invalid value" in line or "Missing" in line]
        if usage and lines[0].startswith("Usage:"):
            # typer's own usage error: a short block naming the option, exit 2.
            lines = [" ".join(usage[0].strip("│ ").split())]
        if len(lines) != 1:
            raise Unclean("long message", got, f"{len(lines)} lines: {' | '.join(lines)[:200]}")
        if needle and needle not in lines[0]:
            raise Unclean("wrong message", got, lines[0][:160])
        return got, lines[0][:160]

    return run


SIMSERVER = [sys.executable, "-m", "simserver"]
SIMGYM = [str(Path(sys.executable).parent / "simgym")]
NUMERIC_SKIP = {"--parent-pid"}
NEEDS_ISOLATE = {"--max-sim-rss"}


def numeric_flags(help_text: str) -> list[tuple[str, str]]:
    """(flag, "int"|"float") of every numeric option ``simserver --help`` lists."""
    return [
        (flag, kind)
        for flag, kind in re.findall(r"(--[a-z][a-z-]+)\s+(?:-\w\s+)?<(int|float)>", help_text)
        if flag not in NUMERIC_SKIP
    ]


def cli_cases(help_text: str) -> list[Case]:
    out = []
    for flag, kind in numeric_flags(help_text):
        values = ["nan", "inf", "-inf", "-1"] if kind == "float" else ["-1", "abc"]
        if flag == "--port":
            values = ["-1", "65536", "abc"]
        base = [*SIMSERVER, "toy.py:Toy"] + ([] if flag == "--port" else ["--port", "0"])
        if flag in NEEDS_ISOLATE and "--isolate" in help_text:
            base += ["--isolate", "process"]
        for value in values:
            name = f"simserver {flag} {value}"
            out.append(Case("cli", name, "exit 2", _cli([*base, flag, value], 2, flag)))
    bad_utf8 = "{tmp}/bad.yaml"
    # fmt: off
    table: list[tuple[str, list[str], int, str]] = [
        ("simserver --lease 0", ["toy.py:Toy", "--port", "0", "--lease", "0"], 2, "--lease"),
        ("simserver --max-message-mb 0", ["toy.py:Toy", "--port", "0", "--max-message-mb", "0"], 2, "--max-message-mb"),
        ("simserver --max-sessions 0", ["toy.py:Toy", "--port", "0", "--max-sessions", "0"], 2, "--max-sessions"),
        ("simserver --workers 1", ["toy.py:Toy", "--port", "0", "--workers", "1"], 2, "--workers"),
        ("simserver --log-file in a missing folder", ["toy.py:Toy", "--port", "0", "--log-file", "/nonexistent/d/x.log"], 2, "/nonexistent"),
        ("simserver --address-file in a missing folder", ["toy.py:Toy", "--port", "0", "--address-file", "/nonexistent/d/a"], 2, "/nonexistent"),
        ("simserver --unix in a missing folder", ["toy.py:Toy", "--unix", "/nonexistent/d/s.sock"], 2, "/nonexistent"),
        ("simserver --unix path too long", ["toy.py:Toy", "--unix", "/tmp/" + "p" * 200 + ".sock"], 2, ""),
        ("simserver --kwargs-file missing", ["toy.py:Toy", "--port", "0", "--kwargs-file", "/nonexistent.yaml"], 2, "kwargs"),
        ("simserver --kwargs-file not UTF-8", ["toy.py:Toy", "--port", "0", "--kwargs-file", bad_utf8], 2, "kwargs"),
        ("simserver --kwargs-file a list", ["toy.py:Toy", "--port", "0", "--kwargs-file", "{tmp}/list.yaml"], 2, "mapping"),
        ("simserver --token-file missing", ["toy.py:Toy", "--port", "0", "--token-file", "/nonexistent.tok"], 2, "token"),
        ("simserver --token-file not UTF-8", ["toy.py:Toy", "--port", "0", "--token-file", bad_utf8], 2, "token"),
        ("simserver whitespace --token on 0.0.0.0", ["toy.py:Toy", "--port", "0", "--host", "0.0.0.0", "--token", "   "], 2, "--token"),
        ("simserver --host 0.0.0.0 without a token", ["toy.py:Toy", "--port", "0", "--host", "0.0.0.0"], 2, "--token"),
        ("simserver --tls-cert missing", ["toy.py:Toy", "--port", "0", "--tls-cert", "/no.pem", "--tls-key", "/no.key"], 2, "--tls-cert"),
        ("simserver --tls-cert without --tls-key", ["toy.py:Toy", "--port", "0", "--tls-cert", "/no.pem"], 2, "--tls"),
        ("simserver --chdir missing", ["toy.py:Toy", "--port", "0", "--chdir", "/nonexistent"], 2, "/nonexistent"),
        ("simserver -k without =", ["toy.py:Toy", "--port", "0", "-k", "oops"], 2, "name=value"),
        ("simserver a missing file", ["nosuch.py:Toy", "--port", "0"], 2, "no such file"),
        ("simserver a missing class", ["toy.py:Nope", "--port", "0"], 2, "Nope"),
        ("simserver a target without a class", ["toy.py", "--port", "0"], 2, ""),
        ("simserver a sim whose constructor fails", ["toy.py:BadCtor", "--port", "0"], 2, "license"),
        ("simserver an unknown Gymnasium id", ["gymnasium:NoSuchEnv-v9", "--port", "0"], 2, "NoSuchEnv"),
        ("simserver a non-UTF-8 sim file", ["{tmp}/bad.py:X", "--port", "0"], 2, ""),
        ("simserver --isolate fork", ["toy.py:Toy", "--port", "0", "--isolate", "fork"], 2, "--isolate"),
        ("simserver a port in use", ["toy.py:Toy", "--port", "{port}"], 2, "cannot listen"),
        ("simserver --log-level nonsense", ["toy.py:Toy", "--port", "0", "--log-level", "LOUD"], 2, "--log-level"),
    ]
    # fmt: on
    for name, args, code, needle in table:
        out.append(Case("cli", name, f"exit {code}", _cli([*SIMSERVER, *args], code, needle)))
    # fmt: off
    simgym_table: list[tuple[str, list[str], int, str]] = [
        ("simgym check a missing spec", ["check", "/nonexistent.yaml"], 2, "nonexistent"),
        ("simgym check a non-UTF-8 spec", ["check", bad_utf8], 2, "bad.yaml"),
        ("simgym check invalid YAML", ["check", "{tmp}/invalid.yaml"], 2, "invalid.yaml"),
        ("simgym check an unknown spec key", ["check", "{tmp}/unknown.yaml"], 2, "unknown.yaml"),
        ("simgym check --address port 70000", ["check", str(SIMS / "toy_spec.yaml"), "--address", "127.0.0.1:70000"], 2, "70000"),
        ("simgym check --episodes 0", ["check", str(SIMS / "toy_spec.yaml"), "--episodes", "0"], 2, "episodes"),
        ("simgym check --transport carrier-pigeon", ["check", str(SIMS / "toy_spec.yaml"), "--transport", "pigeon"], 2, "pigeon"),
        ("simgym check a missing sim file", ["check", "{tmp}/nosim.yaml"], 2, ""),
        ("simgym train a missing spec", ["train", "/nonexistent.yaml"], 2, "nonexistent"),
        ("simgym train --max-time soon", ["train", str(SIMS / "train_toy.yaml"), "--max-time", "soon"], 2, "soon"),
    ]
    # fmt: on
    for name, args, code, needle in simgym_table:
        out.append(Case("cli", name, f"exit {code}", _cli([*SIMGYM, *args], code, needle)))
    return out


_BUSY: list[socket.socket] = []


def _busy_port() -> int:
    """A loopback port some socket of ours listens on."""
    if not _BUSY:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        _BUSY.append(sock)
    return _BUSY[0].getsockname()[1]


def _write_bad_files(d: Path) -> None:
    (d / "bad.yaml").write_bytes(b"sim:\n  target: \xff\xfe caf\xe9\n")
    (d / "bad.py").write_bytes(b"X = '\xff\xfe'\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "invalid.yaml").write_text("sim: [unclosed\n")
    (d / "unknown.yaml").write_text((SIMS / "toy_spec.yaml").read_text() + "no_such_key: 1\n")
    (d / "nosim.yaml").write_text(
        (SIMS / "toy_spec.yaml").read_text().replace("toy.py:Toy", "missing.py:Toy")
    )


# ----------------------------------------------------------------------------- faults


# fmt: off
FAULT_TABLE: list[tuple[str, str, dict[str, Any]]] = [
    # (case, target, kwargs)
    ("a sim that raises at step 3", "toy.py:Raising", {"fail_at": 3}),
    ("a sim that hangs (1 h) at step 2", "toy.py:Hanging", {"hang": 3600.0}),
    ("a sim that returns NaN", "toy.py:NaNSim", {}),
    ("a sim that prints 2 kB per step", "toy.py:Chatty", {}),
    ("a sim that kills its process at step 3", "toy.py:Crashing", {"crash_at": 3}),
    # Flaky seeds its draws from its instance number in its process; isolated, every worker
    # holds instance 1, so every fresh session replays the same draws. seed 0 hangs at the
    # first step (a sim that always hangs, not a flaky one); seed 3 steps 3 times, then raises.
    ("a flaky sim (raise, NaN, hang 5 s)", "toy.py:Flaky", {"p_raise": 0.1, "p_nan": 0.1, "p_hang": 0.05, "hang": 5.0, "seed": 3}),
    ("a sim whose constructor takes 3 s", "faults.py:SlowCtor", {"delay": 3.0}),
    ("a sim NaN at reset", "faults.py:NaNAtReset", {}),
]
# fmt: on
# fmt: off
SOAK_PROFILES: list[tuple[str, dict[str, float]]] = [
    ("a sim that hangs on 20 % of steps", {"p_hang": 0.2}),
    ("a sim that leaks 1 MiB per step", {"leak_kb": 1024.0}),
    ("a sim that kills its process on 10 % of steps", {"p_kill": 0.1}),
    ("a sim that raises on 50 % of steps", {"p_raise": 0.5}),
]
# fmt: on


def fault_case(
    target: str,
    kwargs: dict[str, Any],
    config: dict[str, float] | None,
    steps: int,
    isolation: list[str],
) -> Callable[[Ctx], tuple[str, str]]:
    """Step ``steps`` times through SimEnv (errors end the episode), reopening as needed.

    Survived: the server is alive, answers health within 1 s, and a fresh session steps;
    its main process kept under 200 MiB more RSS than at its start.
    """

    def run(ctx: Ctx) -> tuple[str, str]:
        from gymclient import SimEnv, load_spec
        from gymclient.spec import Lesson

        srv = ServerProcess(
            target,
            workdir=SIMS,
            kwargs=kwargs,
            args=["--hung-grace", "1", "--lease", "10", *isolation],
        )
        srv.start(timeout=90)
        start_rss = rss(srv.pid)
        errors: dict[str, int] = {}
        try:
            spec = load_spec(SIMS / "toy_spec.yaml").model_copy(update={"on_error": "truncate"})
            if config:
                spec = spec.model_copy(
                    update={"lessons": {k: Lesson(values=[v]) for k, v in config.items()}}
                )
            env = None
            done = 0
            ends = time.monotonic() + 60
            while done < steps and time.monotonic() < ends:
                try:
                    if env is None:
                        env = SimEnv(
                            {
                                "spec": spec,
                                "address": srv.address,
                                "timeout": 1.0,
                                "reset_timeout": 20.0,
                                "connect_timeout": 5.0,
                            }
                        )
                        env.reset(seed=done)
                    _o, _r, term, trunc, info = env.step(env.action_space.sample())
                    done += 1
                    if "simgym_error_type" in info:
                        errors[info["simgym_error_type"]] = (
                            errors.get(info["simgym_error_type"], 0) + 1
                        )
                    if term or trunc:
                        env.reset(seed=done)
                except Exception as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    if env is not None:
                        with contextlib.suppress(Exception):
                            env.close()
                    env = None
                    if not srv.alive:
                        break
                    time.sleep(0.1)  # a refused Open is not retried in a tight loop
            if env is not None:
                with contextlib.suppress(Exception):
                    env.close()
            summary = f"{done} steps, errors {errors}"
            if not srv.alive:
                raise Unclean("crash", f"exit {srv.proc.returncode if srv.proc else '?'}", summary)
            with grpc.insecure_channel(srv.address or "") as channel:
                problem = health_ok(channel)
                if problem:
                    raise Unclean("hang", problem, summary)
                stub = pb_grpc.SimulatorStub(channel)
                try:
                    sid = stub.Open(
                        pb.OpenRequest(protocol=PROTOCOL, action_names=["u"]), timeout=20
                    ).session_id
                    stub.Reset(pb.ResetRequest(session_id=sid, seq=1), timeout=20)
                    stub.Step(pb.StepRequest(session_id=sid, action=[0.0], seq=2), timeout=5)
                except grpc.RpcError as exc:
                    raise Unclean(
                        "hang", exc.code().name, f"a fresh session could not step; {summary}"
                    ) from None
            grew = rss(srv.pid) - start_rss
            if grew > 200 * MIB:
                raise Unclean("unbounded", "OK", f"server RSS +{grew / MIB:.0f} MiB; {summary}")
            return "survived", f"{summary}; RSS +{grew / MIB:.0f} MiB"
        finally:
            srv.kill()
            srv.cleanup()

    return run


def fault_cases(isolation: list[str]) -> list[Case]:
    out = [
        Case("faults", name, "survived", fault_case(target, kw, None, 30, isolation), fault=True)
        for name, target, kw in FAULT_TABLE
    ]
    out += [
        Case(
            "faults",
            name,
            "survived",
            fault_case("soak_sim.py:Soak", {}, cfg, 300 if "leak" in name else 60, isolation),
            fault=True,
        )
        for name, cfg in SOAK_PROFILES
    ]
    out += [
        Case(
            "faults",
            f"simgym check: {name}",
            f"exit 1 naming {needle}",
            _check(sim, lessons, needle),
            fault=True,
        )
        for name, sim, lessons, needle in CHECK_TABLE
    ]
    out.append(
        Case(
            "faults",
            "20 hung calls whose clients close their sessions",
            "survived",
            _many_hangs(isolation),
            fault=True,
        )
    )
    return out


# fmt: off
CHECK_TABLE: list[tuple[str, str, str, str]] = [
    # (case, the spec's sim target and kwargs, its lessons, what the verdict must name)
    ("a sim that kills its server at step 3", "toy.py:Crashing\n  kwargs: {crash_at: 3}", "", "code 3"),
    ("a sim that leaks 1 MiB per step", "soak_sim.py:Soak", "  leak_kb: 1024\n", "memory"),
]
# fmt: on


def _check(
    sim: str, lessons: str, needle: str, bound: float = 120.0
) -> Callable[[Ctx], tuple[str, str]]:
    """``simgym check`` on a faulty sim: not SOUND (exit 1) within ``bound`` s, naming the fault."""

    def run(ctx: Ctx) -> tuple[str, str]:
        for name in ("toy.py", "soak_sim.py", "reward.py"):
            (FILES / name).write_text((SIMS / name).read_text())
        text = (SIMS / "toy_spec.yaml").read_text()
        text = text.replace("toy.py:Toy\n  kwargs: {gain: 2.0}", sim)
        text = text.replace("lessons:\n", "lessons:\n" + lessons)
        spec = FILES / f"check-{sim.split(':')[0]}.yaml"
        spec.write_text(text)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [*SIMGYM, "check", str(spec), "--episodes", "6"],
                capture_output=True,
                text=True,
                timeout=bound,
                cwd=FILES,
            )
        except subprocess.TimeoutExpired:
            raise Unclean("hang", "-", f"still running after {bound:g} s") from None
        took = time.monotonic() - started
        out = proc.stdout + proc.stderr
        got = f"exit {proc.returncode}"
        if "Traceback" in out:
            raise Unclean("traceback", got, f"{took:.0f} s")
        if proc.returncode != 1 or needle not in out:
            last = [line for line in out.splitlines() if line.strip()][-1:]
            raise Unclean("wrong code", got, f"{took:.0f} s; {needle!r} not said; last line {last}")
        return got, f"{took:.0f} s, names {needle!r}"

    return run


def _many_hangs(isolation: list[str]) -> Callable[[Ctx], tuple[str, str]]:
    """Issue 14 finding 1: hung calls whose sessions the client closes must not wedge health."""

    def run(ctx: Ctx) -> tuple[str, str]:
        srv = ServerProcess(
            "toy.py:Hanging",
            workdir=SIMS,
            kwargs={"hang": 3600.0},
            args=["--hung-grace", "1", "--max-sessions", "4", *isolation],
        )
        srv.start(timeout=90)
        try:
            with grpc.insecure_channel(srv.address or "") as channel:
                stub = pb_grpc.SimulatorStub(channel)
                for i in range(20):
                    try:
                        sid = stub.Open(pb.OpenRequest(protocol=PROTOCOL), timeout=5).session_id
                        stub.Reset(pb.ResetRequest(session_id=sid, seq=1), timeout=5)
                        stub.Step(pb.StepRequest(session_id=sid, action=[0.0], seq=2), timeout=5)
                        with contextlib.suppress(grpc.RpcError):
                            stub.Step(
                                pb.StepRequest(session_id=sid, action=[0.0], seq=3), timeout=0.5
                            )
                        stub.Close(pb.SessionRef(session_id=sid), timeout=5)
                    except grpc.RpcError as exc:
                        raise Unclean("hang", exc.code().name, f"after {i} hung calls") from None
                problem = health_ok(channel)
                if problem:
                    raise Unclean("hang", problem, "after 20 hung calls")
            return "survived", "20 hung calls; health answers"
        finally:
            srv.kill()
            srv.cleanup()

    return run


# ----------------------------------------------------------------------------- slowloris


def slowloris_cases() -> list[Case]:
    return [
        Case(
            "slowloris",
            "packed socket: HELLO, part of a frame, silence",
            "closed by the server",
            _partial_frame_held(),
            server="toy",
        ),
        Case(
            "slowloris",
            "packed socket: connect, send nothing",
            "closed by the server",
            _silent_connection(),
            server="toy",
        ),
        Case(
            "slowloris",
            "packed socket: 64 connections announcing 16 MiB frames",
            "RSS +<200 MiB",
            _announced_frames(),
            server="toy",
        ),
        Case(
            "slowloris",
            "48 PackedStream calls that never send",
            "health and Open answer",
            _idle_streams(),
            server="toy",
        ),
    ]


def _held_until_closed(sock: socket.socket, bound: float) -> float | None:
    """Seconds until the server closed ``sock`` (or sent something), None if not within ``bound``."""
    started = time.monotonic()
    sock.settimeout(bound)
    try:
        sock.recv(65536)
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


SLOWLORIS_BOUND = 90.0


def _partial_frame_held() -> Callable[[Ctx], tuple[str, str]]:
    def run(ctx: Ctx) -> tuple[str, str]:
        path = (ctx.server("toy").address or "").removeprefix("unix:") + ".packed"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.sendall(_frame(pb.PACKED_SOCKET_KIND_HELLO, HELLO.SerializeToString()))
        sock.recv(64)
        sock.sendall(LENGTH.pack(1000) + b"\x02abc")
        took = _held_until_closed(sock, SLOWLORIS_BOUND)
        sock.close()
        if took is None:
            raise Unclean("hang", "held", f"still open after {SLOWLORIS_BOUND:g} s")
        return "closed", f"after {took:.1f} s"

    return run


def _silent_connection() -> Callable[[Ctx], tuple[str, str]]:
    def run(ctx: Ctx) -> tuple[str, str]:
        path = (ctx.server("toy").address or "").removeprefix("unix:") + ".packed"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        took = _held_until_closed(sock, SLOWLORIS_BOUND)
        sock.close()
        if took is None:
            raise Unclean("hang", "held", f"still open after {SLOWLORIS_BOUND:g} s")
        return "closed", f"after {took:.1f} s"

    return run


def _announced_frames() -> Callable[[Ctx], tuple[str, str]]:
    def run(ctx: Ctx) -> tuple[str, str]:
        srv = ctx.server("toy")
        path = (srv.address or "").removeprefix("unix:") + ".packed"
        before = rss(srv.pid)
        socks = []
        for _ in range(64):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            try:
                sock.connect(path)
                sock.sendall(_frame(pb.PACKED_SOCKET_KIND_HELLO, HELLO.SerializeToString()))
                sock.recv(64)
                sock.sendall(LENGTH.pack(16 * MIB) + b"\x02\x0a")
            except OSError:
                sock.close()
                continue
            socks.append(sock)
        time.sleep(2.0)
        grew = rss(srv.pid) - before
        for sock in socks:
            sock.close()
        detail = f"{len(socks)} held, RSS +{grew / MIB:.0f} MiB"
        if grew > 200 * MIB:
            raise Unclean("unbounded", "OK", detail)
        return "bounded", detail

    return run


def _idle_streams() -> Callable[[Ctx], tuple[str, str]]:
    def run(ctx: Ctx) -> tuple[str, str]:
        stop = threading.Event()

        def silence() -> Iterator[pb.PackedRequest]:
            stop.wait()
            return
            yield

        channel = grpc.insecure_channel(ctx.server("toy").address or "")
        stub = pb_grpc.SimulatorStub(channel)
        calls = [stub.PackedStream(silence()) for _ in range(48)]
        try:
            time.sleep(1.0)
            problem = health_ok(ctx.channel("toy"))
            if problem:
                raise Unclean("hang", problem, "48 idle PackedStream calls")
            try:
                sid = ctx.stub("toy").Open(
                    pb.OpenRequest(protocol=PROTOCOL, action_names=["u"]), timeout=5
                )
                ctx.stub("toy").Close(pb.SessionRef(session_id=sid.session_id), timeout=5)
            except grpc.RpcError as exc:
                raise Unclean("hang", exc.code().name, "Open behind 48 idle streams") from None
            return "answers", "health and Open behind 48 idle streams"
        finally:
            stop.set()
            for call in calls:
                call.cancel()
            channel.close()

    return run


# ----------------------------------------------------------------------------- running


def run_case(ctx: Ctx, case: Case) -> Outcome:
    outcome = Outcome(case.category, case.name, case.expect, fault=case.fault)
    srv = ctx.server(case.server) if case.server else None
    mark = log_size(srv) if srv else 0
    started = time.monotonic()
    try:
        outcome.got, outcome.detail = case.run(ctx)
    except Unclean as exc:
        outcome.verdict, outcome.got, outcome.detail = exc.verdict, exc.got, exc.detail
    except Exception as exc:  # the catalog itself must go on
        outcome.verdict, outcome.got, outcome.detail = "error", type(exc).__name__, str(exc)[:200]
    outcome.seconds = round(time.monotonic() - started, 2)
    if srv is not None and case.server:
        if not srv.alive:
            outcome.verdict, outcome.detail = "crash", f"the server exited: {srv.log_tail(2)[:200]}"
        elif "Traceback" in log_since(srv, mark):
            last = [line for line in log_since(srv, mark).splitlines() if line.strip()][-1]
            outcome.verdict, outcome.detail = "traceback", f"in the server log: {last[:160]}"
        elif outcome.verdict == "clean" and (problem := health_ok(ctx.channel(case.server))):
            outcome.verdict, outcome.detail = "hang", f"after the case, {problem}"
    return outcome


def catalog(only: list[str] | None, help_text: str, isolation: list[str]) -> list[Case]:
    groups = {
        "rpc": rpc_cases,
        "packed": packed_cases,
        "frames": frame_cases,
        "auth": auth_cases,
        "cli": lambda: cli_cases(help_text),
        "slowloris": slowloris_cases,
        "faults": lambda: fault_cases(isolation),
    }
    return [case for name, make in groups.items() if not only or name in only for case in make()]


def print_table(outcomes: list[Outcome]) -> dict[str, Any]:
    width = max(len(o.case) for o in outcomes)
    print(f"{'category':10} {'case':{width}} {'expect':22} {'got':22} verdict   detail")
    for o in outcomes:
        print(
            f"{o.category:10} {o.case:{width}} {o.expect[:22]:22} {o.got[:22]:22} {o.verdict:9} {o.detail[:100]}"
        )
    inputs = [o for o in outcomes if not o.fault]
    faults = [o for o in outcomes if o.fault]
    totals = {
        "bad_inputs_tried": len(inputs),
        "bad_inputs_clean": sum(o.verdict == "clean" for o in inputs),
        "faults_tried": len(faults),
        "faults_survived": sum(o.verdict == "clean" for o in faults),
        "by_verdict": {
            v: sum(o.verdict == v for o in outcomes) for v in sorted({o.verdict for o in outcomes})
        },
    }
    print()
    print(
        f"bad inputs tried / handled cleanly: {totals['bad_inputs_tried']} / {totals['bad_inputs_clean']}"
    )
    print(f"faults survived: {totals['faults_survived']} of {totals['faults_tried']}")
    print(f"verdicts: {totals['by_verdict']}")
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="*", help="categories: rpc packed frames auth cli slowloris faults"
    )
    parser.add_argument("--json", help="write the outcomes and totals here")
    parser.add_argument(
        "--isolate",
        choices=["auto", "thread", "process"],
        default="auto",
        help="where the servers run their sims (auto: process, when simserver has it)",
    )
    args = parser.parse_args()
    help_text = simserver_help()
    isolation = isolation_args(help_text, args.isolate)
    ctx = Ctx(isolation)
    SERVERS.update({k: (t, tr, [*extra, *isolation]) for k, (t, tr, extra) in SERVERS.items()})
    outcomes: list[Outcome] = []
    _write_bad_files(FILES)
    try:
        for case in catalog(args.only, help_text, isolation):
            outcome = run_case(ctx, case)
            print(
                f"  {outcome.verdict:9} {outcome.category}: {outcome.case} ({outcome.seconds:.1f} s)",
                file=sys.stderr,
            )
            outcomes.append(outcome)
    finally:
        ctx.close()
        shutil.rmtree(FILES, ignore_errors=True)
    totals = print_table(outcomes)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "server_args": isolation,
                    "totals": totals,
                    "outcomes": [asdict(o) for o in outcomes],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
