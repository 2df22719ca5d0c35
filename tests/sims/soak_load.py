"""The soak test's load and probe, each run as a process of its own by ``tests/test_soak.py``.

``python soak_load.py load ADDRESS --roles good-env,hang-env,... --seconds T --out F`` runs
each role as a thread against the server at ADDRESS for T seconds and writes one JSON object
per role to F: steps, episodes, steps in the last quarter of the run, errors by type and notes.
Clients in their own process keep their GIL away from the probe's timing.

``python soak_load.py probe ADDRESS... --out F`` asks every server's health
(``simgym.v1.Simulator``) every 0.25 s with a 1 s deadline until its stdin closes, then writes
the count, the worst latency and every probe that failed or was late.

Roles (``ROLES``): well-behaved clients (``good-*``: SimEnv and SimVectorEnv on the packed
socket and on gRPC's PackedStream), faulty ones whose sims hang, raise, kill their process or
leak (``hang-*``, ``kill-env``, ``leak-env``), and abusive ones (``slowloris-packed``: HELLO,
then part of a frame, then silence; ``slowloris-grpc``: PackedStream calls that never send;
``churn``: connections opened and dropped, sessions opened and never closed; ``vanish``:
clients that leave in the middle of a call).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gymclient import SimEnv, load_spec
from gymclient.spec import Lesson
from gymclient.vector import SimVectorEnv
from simgym import PROTOCOL
from simgym.v1 import simulator_pb2 as pb
from simgym.v1 import simulator_pb2_grpc as pb_grpc

SIMS = Path(__file__).resolve().parent
LENGTH = struct.Struct("<I")
SERVICE = "simgym.v1.Simulator"
MAX_FRAME = 16 * 2**20  # the server's default message cap: a frame it must accept the header of

# Fault profiles, sent as each session's reset config (tests/sims/soak_sim.py reads them).
PROFILES: dict[str, dict[str, float]] = {
    "good": {},
    "hang": {"p_hang": 0.02, "p_raise": 0.02},
    "kill": {"p_kill": 0.01, "p_raise": 0.02},
    "leak": {"leak_kb": 256.0},
}


@dataclass
class Tally:
    """What one role did."""

    steps: int = 0
    episodes: int = 0
    steps_at_mark: int = -1
    errors: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        late = self.steps - self.steps_at_mark if self.steps_at_mark >= 0 else self.steps
        return {
            "steps": self.steps,
            "episodes": self.episodes,
            "late_steps": late,
            "errors": dict(self.errors),
            "notes": dict(self.notes),
        }


def _spec(profile: str) -> Any:
    lessons = {k: Lesson(values=[v]) for k, v in PROFILES[profile].items()}
    lessons["x0"] = Lesson(values=[0.0, 0.5])
    rules = {"lessons": lessons, "on_error": "raise" if profile == "good" else "truncate"}
    return load_spec(SIMS / "toy_spec.yaml").model_copy(update=rules)


def _label(kind: str, message: str) -> str:
    """An error's type, and for a sim call's INTERNAL whether the sim raised or its worker died."""
    if kind == "SimCallError":
        return kind + (" (worker died)" if "exited with code" in message else " (sim raised)")
    return kind


def _count_info_errors(info: dict[str, Any], tally: Tally) -> None:
    kinds = info.get("simgym_error_type")
    if kinds is None:
        return
    if isinstance(kinds, str):
        tally.errors[_label(kinds, str(info.get("simgym_error", "")))] += 1
        return
    messages = info.get("simgym_error", [""] * len(kinds))
    mask = info.get("_simgym_error_type", np.ones(len(kinds), bool))
    for kind, message, present in zip(kinds, messages, mask, strict=False):
        if present:
            tally.errors[_label(str(kind), str(message))] += 1


def _env_role(
    profile: str, vector: int, packed_socket: bool, timeout: float
) -> Callable[[str, threading.Event, Tally], None]:
    """A client stepping a SimEnv (``vector`` 0) or a SimVectorEnv of ``vector`` sub-envs."""

    def role(address: str, stop: threading.Event, tally: Tally) -> None:
        spec = _spec(profile)
        options = {
            "timeout": timeout,
            "reset_timeout": 30.0,
            "connect_timeout": 10.0,
            "packed_socket": packed_socket,
        }
        env: Any = None
        seed = 0
        while not stop.is_set():
            try:
                if env is None:
                    if vector:
                        env = SimVectorEnv(spec, vector, [address], **options)
                    else:
                        env = SimEnv({"spec": spec, "address": address, **options})
                    seed += 1
                    env.reset(seed=seed)
                _obs, _r, term, trunc, info = env.step(env.action_space.sample())
                tally.steps += vector or 1
                _count_info_errors(info, tally)
                if not vector and (term or trunc):
                    tally.episodes += 1
                    seed += 1
                    env.reset(seed=seed)
                elif vector:
                    tally.episodes += int(np.sum(np.logical_or(term, trunc)))
            except Exception as exc:  # counted by type; the client starts over
                tally.errors[type(exc).__name__] += 1
                if env is not None:
                    with contextlib.suppress(Exception):
                        env.close()
                env = None
                stop.wait(0.2)
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()

    return role


def _frame(kind: int, body: bytes) -> bytes:
    return LENGTH.pack(len(body) + 1) + bytes((kind,)) + body


def _packed_path(address: str) -> str:
    return address.removeprefix("unix:") + ".packed"


def _dial(address: str, timeout: float = 5.0) -> socket.socket:
    """A raw connection to a server's gRPC socket (TCP or unix)."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address.removeprefix("unix:"))
        return sock
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout)


def _hello(address: str) -> tuple[socket.socket | None, int]:
    """A packed-socket connection past its HELLO, or None and the status code refusing it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5.0)
    try:
        sock.connect(_packed_path(address))
        hello = pb.PackedSocketHello(protocol=PROTOCOL).SerializeToString()
        sock.sendall(_frame(pb.PACKED_SOCKET_KIND_HELLO, hello))
        header = sock.recv(4, socket.MSG_WAITALL)
        (length,) = LENGTH.unpack(header)
        body = sock.recv(length, socket.MSG_WAITALL)
        code = pb.PackedSocketStatus.FromString(body[1:]).code
    except (OSError, struct.error, ValueError):
        sock.close()
        return None, -1
    if code != 0:
        sock.close()
        return None, code
    return sock, 0


def slowloris_packed(address: str, stop: threading.Event, tally: Tally, count: int = 16) -> None:
    """Hold ``count`` packed-socket connections: HELLO, a frame's first bytes, then silence.

    Each announces a frame of the server's full message size. A connection the server ends
    is counted (``closed_by_server``) and opened again: the pressure never lets up.
    """
    if not address.startswith("unix:"):
        return
    held: list[socket.socket] = []
    while not stop.is_set():
        while len(held) < count and not stop.is_set():
            sock, code = _hello(address)
            if sock is None:
                tally.notes[f"refused code {code}"] += 1
                break
            try:
                sock.sendall(
                    LENGTH.pack(MAX_FRAME) + bytes((pb.PACKED_SOCKET_KIND_REQUEST,)) + b"\x0a"
                )
            except OSError:
                sock.close()
                continue
            tally.notes["held"] += 1
            held.append(sock)
        readable, _, _ = select.select(held, [], [], 0.5) if held else ([], [], [])
        for sock in readable:
            with contextlib.suppress(OSError):
                sock.recv(65536)
            tally.notes["closed_by_server"] += 1
            held.remove(sock)
            sock.close()
        if not held:
            stop.wait(0.5)
    for sock in held:
        sock.close()


def slowloris_grpc(address: str, stop: threading.Event, tally: Tally, count: int = 20) -> None:
    """Hold ``count`` PackedStream calls that never send a message; reopen those that end."""
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.SimulatorStub(channel)

    def silence() -> Any:
        stop.wait()
        return
        yield  # a generator that sends nothing until the soak ends

    calls: list[Any] = []
    while not stop.is_set():
        while len(calls) < count:
            calls.append(stub.PackedStream(silence()))
            tally.notes["opened"] += 1
        stop.wait(0.5)
        for call in [c for c in calls if c.done()]:
            tally.notes[f"ended {call.code().name}"] += 1
            calls.remove(call)
    for call in calls:
        call.cancel()
    channel.close()


def churn(address: str, stop: threading.Event, tally: Tally) -> None:
    """Connections opened and dropped; sessions opened by clients that then vanish."""
    cycle = 0
    while not stop.wait(0.25):
        cycle += 1
        try:
            if cycle % 4 == 0:
                # A client that opens a session and vanishes: only its lease ends it.
                with grpc.insecure_channel(address) as channel:
                    pb_grpc.SimulatorStub(channel).Open(
                        pb.OpenRequest(protocol=PROTOCOL, client="soak churn"), timeout=30
                    )
                tally.notes["open-and-vanish"] += 1
            elif cycle % 4 == 1:
                _dial(address).close()
                tally.notes["connect-drop"] += 1
            elif cycle % 4 == 2:
                sock = _dial(address)
                sock.sendall(os.urandom(64))
                sock.close()
                tally.notes["garbage-drop"] += 1
            elif address.startswith("unix:"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(_packed_path(address))
                sock.close()
                tally.notes["packed-connect-drop"] += 1
        except (OSError, grpc.RpcError) as exc:
            name = exc.code().name if isinstance(exc, grpc.RpcError) else type(exc).__name__
            tally.errors[name] += 1


def vanish(address: str, stop: threading.Event, tally: Tally) -> None:
    """Clients that leave in the middle of a call (a 2 s reset) and never close their session."""
    cycle = 0
    while not stop.wait(1.5):
        cycle += 1
        try:
            with grpc.insecure_channel(address) as channel:
                stub = pb_grpc.SimulatorStub(channel)
                sid = stub.Open(pb.OpenRequest(protocol=PROTOCOL), timeout=30).session_id
                request = pb.ResetRequest(session_id=sid, seq=1)
                request.config.update({"delay": 2.0})
                if cycle % 2 and address.startswith("unix:"):
                    sock, code = _hello(address)
                    if sock is None:
                        tally.notes[f"packed refused code {code}"] += 1
                        continue
                    packed = pb.PackedRequest(session_ids=[sid], actions=[0.0], seqs=[1])
                    packed.resets.add(slot=0).config.update({"delay": 2.0})
                    sock.sendall(_frame(pb.PACKED_SOCKET_KIND_REQUEST, packed.SerializeToString()))
                    sock.close()
                    tally.notes["packed-vanished"] += 1
                else:
                    with contextlib.suppress(grpc.RpcError):
                        stub.Reset(request, timeout=0.3)
                    tally.notes["grpc-vanished"] += 1
        except (OSError, grpc.RpcError) as exc:
            name = exc.code().name if isinstance(exc, grpc.RpcError) else type(exc).__name__
            tally.errors[name] += 1


ROLES: dict[str, Callable[[str, threading.Event, Tally], None]] = {
    "good-vector": _env_role("good", 3, True, 10.0),
    "good-env": _env_role("good", 0, False, 10.0),
    "good-env-socket": _env_role("good", 0, True, 10.0),
    "hang-env": _env_role("hang", 0, False, 1.0),
    "hang-vector": _env_role("hang", 2, True, 1.0),
    "kill-env": _env_role("kill", 0, False, 2.0),
    "leak-env": _env_role("leak", 0, True, 5.0),
    "slowloris-packed": slowloris_packed,
    "slowloris-grpc": slowloris_grpc,
    "churn": churn,
    "vanish": vanish,
}


def run_load(address: str, roles: list[str], seconds: float) -> dict[str, Any]:
    """Run ``roles`` against ``address`` for ``seconds``; each role's tally."""
    stop = threading.Event()
    tallies = {name: Tally() for name in roles}
    threads = [
        threading.Thread(target=ROLES[name], args=(address, stop, tallies[name]), daemon=True)
        for name in roles
    ]
    for t in threads:
        t.start()
    time.sleep(seconds * 0.75)
    for tally in tallies.values():
        tally.steps_at_mark = tally.steps
    time.sleep(seconds * 0.25)
    stop.set()
    ended = time.monotonic() + 60  # every client call is bounded by its timeouts
    for t in threads:
        t.join(max(0.0, ended - time.monotonic()))
    out = {name: tally.as_dict() for name, tally in tallies.items()}
    stuck = [name for name, t in zip(roles, threads, strict=True) if t.is_alive()]
    for name in stuck:
        out[name]["notes"]["still running 60 s after the end"] = 1
    return out


def run_probe(addresses: list[str], period: float = 0.25, deadline: float = 1.0) -> dict[str, Any]:
    """Ask each server's health until stdin closes; per server: count, worst, failures."""
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    channels = {a: grpc.insecure_channel(a) for a in addresses}
    stubs = {a: health_pb2_grpc.HealthStub(c) for a, c in channels.items()}
    out: dict[str, Any] = {
        a: {"probes": 0, "worst": 0.0, "failures": [], "streak": 0, "worst_streak": 0}
        for a in addresses
    }
    took_all: dict[str, list[float]] = {a: [] for a in addresses}
    began = time.monotonic()
    while not closed.wait(period):
        for address, stub in stubs.items():
            started = time.monotonic()
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=deadline)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                status = exc.code().name
            took = time.monotonic() - started
            rec = out[address]
            rec["probes"] += 1
            rec["worst"] = max(rec["worst"], took)
            took_all[address].append(took)
            if status != "SERVING" or took > deadline:
                rec["failures"].append([round(started - began, 2), status, round(took, 3)])
                rec["streak"] += 1
                rec["worst_streak"] = max(rec["worst_streak"], rec["streak"])
            else:
                rec["streak"] = 0
    for channel in channels.values():
        channel.close()
    for address, took in took_all.items():
        took.sort()
        if took:
            out[address]["p50"] = round(took[len(took) // 2], 3)
            out[address]["p99"] = round(took[min(len(took) - 1, len(took) * 99 // 100)], 3)
    return out


def main() -> None:
    """Command line: ``load`` or ``probe`` (see the module docstring)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["load", "probe"])
    parser.add_argument("addresses", nargs="+")
    parser.add_argument("--roles", default="")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.mode == "load":
        # Below the servers and the probe: the soak measures the server's answers, not how
        # this machine schedules its clients.
        os.nice(10)
        result = run_load(args.addresses[0], args.roles.split(","), args.seconds)
    else:
        result = run_probe(args.addresses)
    Path(args.out).write_text(json.dumps(result, indent=1))
    sys.stdout.flush()
    os._exit(0)  # client threads stuck in a call must not hold the exit


if __name__ == "__main__":
    main()
