"""What the simgym bridge costs per env step, against its baselines, measured in one run.

Every case drives the CSTR sample (``examples/cstr/sim.py:CSTR``): one step is ``step`` +
``termination`` + ``truncation`` with the next value of one seeded table of Tc_adjust moves in
[-1, 1] K, and an episode that ends is reset (scenario ``Cref_signal`` 1-5 in turn, 5 % noise,
the episode index as seed; SimEnv/SimVectorEnv draw from the spec's lessons instead). Resets are
timed but only steps are counted. Clients run in this process, each server in its own process:

* ``in-process``: the sim called directly (no transport at all);
* ``raw socket``: a unix stream socket, struct-packed request (1 double) / reply (the sim's
  N states as doubles + 2 flags), a thread-per-connection server around the same sim (the
  floor for any IPC);
* ``bare grpcio``: a grpcio server with generic bytes-only handlers carrying the same packed
  payloads and calling the same sim (unary, lock-step stream, K requests in one message) —
  what gRPC itself costs;
* ``trivial pb``: gymclient's own client (``RemoteSession``, ``PackedLane``)
  against a trivial ``simgym.v1.Simulator`` servicer in the bare grpcio server (same generated
  stubs and protobuf messages, none of simserver's logic): separates protobuf + client library
  (vs bare) from simserver's own work (vs simgym);
* ``simgym``: a real ``simserver`` hosting CSTR: ``RemoteSession.step`` (unix socket and TCP
  127.0.0.1), ``SimEnv.step`` (Gymnasium level: normalisation, reward), ``PackedLane`` and
  ``SimVectorEnv.step`` over K sessions, over gRPC's ``PackedStream`` or the packed socket;
* ``isolation``: ``PackedLane`` on the packed socket, K=1 and K=64, against two ``simserver``s
  that differ only in ``--isolate thread`` / ``--isolate process`` (each sim in a worker
  process of its own): what a sim the server can kill costs per step;
* ``dm-env-rpc``: DeepMind's dm-env-rpc (the peer anchor): its ``DmEnvAdaptor`` (dm_env API)
  over its own bidi-stream protocol, against a minimal dm_env_rpc server for CSTR written in
  the pattern of dm_env_rpc's example server (bench/_bridge_dmenv.py).

Cases are interleaved: every repeat runs all cases once, in an order rotated each repeat, so
that load changes on a noisy machine hit them alike. The table shows medians over repeats; the
ratios are medians of per-repeat ratios (paired: both sides measured in the same repeat).
Client CPU is this process's CPU time, server CPU the server process's, per env step.

    .venv/bin/python bench/bridge.py              # full run (5 repeats, a few minutes)
    .venv/bin/python bench/bridge.py --quick      # smoke run (seconds; numbers meaningless)
    .venv/bin/python bench/bridge.py --only simgym --repeats 3 --json out.json

dm-env-rpc is a bench-only extra: ``.venv/bin/pip install dm-env-rpc``. Without it the
dm-env-rpc row says why it is missing; ``--dm-python /other/venv/bin/python`` runs its client
and server with another interpreter instead.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import queue
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import _bridge_dmenv as dmenv  # noqa: E402
from _bridge_servers import (  # noqa: E402
    N_STATES,
    OP_RESET,
    OP_STEP,
    REPLY,
    REQUEST,
    episode_config,
    load_cstr,
)

SPEC = REPO / "examples" / "cstr" / "spec.yaml"
TARGET = "examples/cstr/sim.py:CSTR"
N_ACTIONS = 4096
ACTION_AMPLITUDE = 1.0  # K; small moves keep episodes running to truncation (91 steps)
CALL_TIMEOUT = 10.0  # every gRPC call carries a deadline, as gymclient's do

TARGETS = {
    "unary": ("simgym unary step / bare grpcio unary", "<=", 1.2),
    # simgym's unbatched step: one session over its single-session transport (SimEnv's).
    "peer": ("dm-env-rpc step / simgym single-session step (PackedStream K=1)", ">=", 2.0),
    # Batched: the packed stream SimVectorEnv uses; unbatched: unary RemoteSession.step.
    "batch": ("batched K=64 env-steps/s (PackedStream) / unary env-steps/s", ">=", 20.0),
}


def action_table() -> list[float]:
    rng = random.Random(0)
    return [rng.uniform(-ACTION_AMPLITUDE, ACTION_AMPLITUDE) for _ in range(N_ACTIONS)]


ACTIONS = action_table()


# --------------------------------------------------------------------------- processes


def proc_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HelperServer:
    """A baseline server script run as a child process that writes its address to a file."""

    def __init__(self, name: str, argv: Sequence[str], python: str = sys.executable) -> None:
        self.name = name
        self._tmp = tempfile.TemporaryDirectory(prefix="bridge-")
        self.folder = Path(self._tmp.name)
        self.argv = [a.replace("{dir}", str(self.folder)) for a in argv]
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 60.0) -> str:
        address_file = self.folder / "address"
        log = open(self.folder / "server.log", "wb")
        try:
            self.proc = subprocess.Popen(
                [
                    self.python,
                    *self.argv,
                    "--address-file",
                    str(address_file),
                    "--parent-pid",
                    str(os.getpid()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if address_file.exists():
                self.address = address_file.read_text().strip()
                return self.address
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = (self.folder / "server.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"{self.name} server did not start:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def cleanup(self) -> None:
        self.stop()
        self._tmp.cleanup()


# --------------------------------------------------------------------------- clients


class InProcess:
    """The sim called directly: the cost every other case adds transport to."""

    def __init__(self) -> None:
        self.sim = load_cstr()()
        self.episode = 0
        self.t = 0
        self._reset()

    def _reset(self) -> None:
        self.sim.reset(episode_config(self.episode), seed=self.episode)
        self.episode += 1

    def run(self, steps: int) -> int:
        sim, actions, t = self.sim, ACTIONS, self.t
        for _ in range(steps):
            sim.step({"Tc_adjust": actions[t % N_ACTIONS]})
            t += 1
            if sim.termination() or sim.truncation():
                self._reset()
        self.t = t
        return steps


class RawSocket:
    """Struct-packed request/reply over a unix stream socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address.removeprefix("unix:"))
        self.buf = bytearray(REPLY.size)
        self.episode = 0
        self.t = 0
        self._call(OP_RESET, self._next_episode())

    def _next_episode(self) -> float:
        self.episode += 1
        return float(self.episode - 1)

    def _call(self, op: int, value: float) -> tuple[Any, ...]:
        self.sock.sendall(REQUEST.pack(op, 0, value))
        view, got = memoryview(self.buf), 0
        while got < REPLY.size:
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise ConnectionError("raw server closed the connection")
            got += n
        return REPLY.unpack(self.buf)

    def run(self, steps: int) -> int:
        for _ in range(steps):
            reply = self._call(OP_STEP, ACTIONS[self.t % N_ACTIONS])
            self.t += 1
            if reply[N_STATES] or reply[N_STATES + 1]:
                self._call(OP_RESET, self._next_episode())
        return steps

    def close(self) -> None:
        self.sock.close()


class BareGrpc:
    """grpcio with bytes-only generic methods: unary, or lock-step stream; K sims per message."""

    def __init__(self, address: str, k: int = 1, stream: bool = False) -> None:
        import grpc

        self.channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.k = k
        self.t = 0
        self.episode = 0
        self._queue: queue.Queue[bytes | None] | None = None
        if stream:
            self._queue = queue.Queue()
            method = self.channel.stream_stream("/bare.Sim/Stream")
            self._replies: Iterator[bytes] = method(iter(self._queue.get, None))
            self._call = self._stream_call
        elif k == 1:
            self._unary = self.channel.unary_unary("/bare.Sim/Step")
            self._call = self._unary_call
        else:
            self._unary = self.channel.unary_unary("/bare.Sim/Batch")
            self._call = self._unary_call
        # Slots: this client's sims on the server (a fresh range per client).
        self.base = BareGrpc._next_base
        BareGrpc._next_base += k
        self.reset_pending = [True] * k

    _next_base = 0

    def _unary_call(self, payload: bytes) -> bytes:
        return self._unary(payload, timeout=CALL_TIMEOUT)

    def _stream_call(self, payload: bytes) -> bytes:
        assert self._queue is not None
        self._queue.put(payload)
        return next(self._replies)

    def run(self, steps: int) -> int:
        done = 0
        k, base, pending = self.k, self.base, self.reset_pending
        size = REPLY.size
        while done < steps:
            parts = []
            for i in range(k):
                if pending[i]:
                    parts.append(REQUEST.pack(OP_RESET, base + i, float(self.episode)))
                    self.episode += 1
                else:
                    parts.append(REQUEST.pack(OP_STEP, base + i, ACTIONS[self.t % N_ACTIONS]))
                    self.t += 1
            reply = self._call(b"".join(parts))
            for i in range(k):
                values = REPLY.unpack_from(reply, i * size)
                if pending[i]:
                    pending[i] = False
                else:
                    done += 1
                    pending[i] = values[N_STATES] or values[N_STATES + 1]
        return done

    def close(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
            with contextlib.suppress(Exception):
                for _ in self._replies:
                    pass
        self.channel.close()


class SimgymUnary:
    """``RemoteSession.step`` through a real simserver (one unary Step per env step)."""

    def __init__(self, address: str) -> None:
        from gymclient.connection import Connection

        self.conn = Connection(address)
        self.session = self.conn.open(["Tc_adjust"], client="bench/bridge unary")
        self.episode = 0
        self.t = 0
        self._reset()

    def _reset(self) -> None:
        self.session.reset(episode_config(self.episode), seed=self.episode)
        self.episode += 1

    def run(self, steps: int) -> int:
        session = self.session
        for _ in range(steps):
            tr = session.step([ACTIONS[self.t % N_ACTIONS]])
            self.t += 1
            if tr.terminated or tr.truncated:
                self._reset()
        return steps

    def close(self) -> None:
        self.session.close()
        self.conn.close()


class SimgymEnv:
    """``SimEnv.step``: the Gymnasium env (normalisation, reward, info).

    ``socket``: the server's packed socket carries the stream's messages instead of gRPC's
    ``PackedStream`` (the default on a unix server; off here unless asked, so that
    "PackedStream" is gRPC).
    """

    def __init__(self, address: str, socket: bool = False) -> None:
        import numpy as np

        from gymclient.env import SimEnv

        self.np = np
        self.env = SimEnv({"spec": str(SPEC), "address": address, "packed_socket": socket})
        self.env.reset(seed=0)
        # The agent's normalised actions for the same physical moves (spec range ±10 K).
        self.actions = [np.array([a / 10.0], np.float32) for a in ACTIONS]
        self.t = 0

    def run(self, steps: int) -> int:
        env, actions = self.env, self.actions
        for _ in range(steps):
            _obs, _r, term, trunc, _info = env.step(actions[self.t % N_ACTIONS])
            self.t += 1
            if term or trunc:
                env.reset()
        return steps

    def close(self) -> None:
        self.env.close()


class SimgymLane:
    """``gymclient.lane.PackedLane``: K sessions per packed message (what the envs use).

    Over the lock-step gRPC ``PackedStream`` or, with ``socket``, the server's packed socket
    (no HTTP/2). Finished sessions are reset in the next message; only steps count. K = 1
    goes through ``run_single``, as ``SimEnv``.
    """

    def __init__(self, address: str, k: int, socket: bool = False) -> None:
        from gymclient.connection import Connection, ConnectOptions
        from gymclient.lane import PackedLane
        from gymclient.packedsocket import SocketPackedStream

        self.conn = Connection(address, ConnectOptions(packed_socket=socket))
        self.sessions = [
            self.conn.open(["Tc_adjust"], client=f"bench/bridge lane {i}") for i in range(k)
        ]
        self.lane = PackedLane(self.conn, self.sessions)
        if socket:  # the case must time what it says: one round opens the transport
            self.lane.run([0.0] * k, {i: (episode_config(0), 0) for i in range(k)})
            if not isinstance(self.lane._stream, SocketPackedStream):
                raise RuntimeError(f"{address} serves no packed socket reachable from here")
        self.k = k
        self.t = 0
        self.episode = 0
        self.pending = [True] * k

    def run(self, steps: int) -> int:
        done = 0
        k, lane, pending = self.k, self.lane, self.pending
        while done < steps:
            resets: dict[int, tuple[dict[str, Any], int]] = {}
            actions = []
            for i in range(k):
                if pending[i]:
                    resets[i] = (episode_config(self.episode), self.episode)
                    self.episode += 1
                    actions.append(0.0)
                else:
                    actions.append(ACTIONS[self.t % N_ACTIONS])
                    self.t += 1
            if k == 1:
                tr = lane.run_single(actions, resets.get(0))
                flags = [(tr.terminated, tr.truncated)]
            else:
                result = lane.run(actions, resets)
                if result.errors:
                    slot, err = next(iter(result.errors.items()))
                    raise RuntimeError(f"slot {slot} failed: {err}")
                flags = list(zip(result.terminated, result.truncated, strict=True))
            for i, (term, trunc) in enumerate(flags):
                if pending[i]:
                    pending[i] = False
                else:
                    done += 1
                    pending[i] = term or trunc
        return done

    def close(self) -> None:
        self.lane.close()
        for s in self.sessions:
            s.close()
        self.conn.close()


class SimgymVector:
    """``SimVectorEnv.step``: K sub-envs, one packed message per step (Gymnasium vector API).

    Over the gRPC ``PackedStream``, or with ``socket`` over the server's packed socket.
    """

    def __init__(self, address: str, k: int, socket: bool = False) -> None:
        import numpy as np

        from gymclient.vector import SimVectorEnv

        self.env = SimVectorEnv(str(SPEC), k, addresses=[address], packed_socket=socket)
        self.env.reset(seed=0)
        table = np.array(ACTIONS, np.float32) / 10.0
        self.batches = [
            np.take(table, np.arange(j * k, (j + 1) * k), mode="wrap").reshape(k, 1)
            for j in range(64)
        ]
        self.j = 0

    def run(self, steps: int) -> int:
        env = self.env
        start = env.totals["steps"]
        while env.totals["steps"] - start < steps:
            env.step(self.batches[self.j % 64])
            self.j += 1
        return int(env.totals["steps"] - start)

    def close(self) -> None:
        self.env.close()


class DmEnvRpc:
    """dm-env-rpc's ``DmEnvAdaptor.step`` (in this process)."""

    def __init__(self, address: str) -> None:
        self.client = dmenv.DmClient(address)
        self.t = 0

    def run(self, steps: int) -> int:
        done = self.client.run(steps, ACTIONS, self.t)
        self.t += steps
        return done

    def close(self) -> None:
        self.client.close()


class DmEnvRpcSubprocess:
    """dm-env-rpc's client run by another interpreter (``--dm-python``): one process per repeat."""

    def __init__(self, address: str, python: str) -> None:
        self.address = address
        self.python = python

    def measure(self, steps: int) -> tuple[float, float, int]:
        proc = subprocess.run(
            [
                self.python,
                str(BENCH / "_bridge_dmenv.py"),
                "client",
                "--address",
                self.address,
                "--steps",
                str(steps),
                "--actions",
                json.dumps(ACTIONS[:512]),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        return out["seconds"], out["cpu_seconds"], out["steps"]

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    key: str
    group: str
    label: str
    transport: str
    steps: int
    make: Callable[[], Any]
    server: Callable[[], int | None] = lambda: None
    server_name: str | None = None
    client: Any = None
    error: str | None = None
    reps: list[int] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # client + server, per repeat

    def measure(self, steps: int, rep: int) -> None:
        gc.collect()
        pid = self.server()
        s0 = proc_cpu_seconds(pid)
        if hasattr(self.client, "measure"):
            wall, cpu, done = self.client.measure(steps)
        else:
            c0, t0 = time.process_time(), time.perf_counter()
            done = self.client.run(steps)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        s1 = proc_cpu_seconds(pid)
        self.reps.append(rep)
        self.wall.append(wall / done * 1e6)
        self.client_cpu.append(cpu / done * 1e6)
        server = 0.0
        if s0 is not None and s1 is not None:
            server = (s1 - s0) / done * 1e6
            self.server_cpu.append(server)
        self.cpu.append(cpu / done * 1e6 + server)

    @property
    def us(self) -> float:
        return statistics.median(self.wall)


# key, group, label, transport, env steps per repeat (full run), server, client factory
CASES: list[tuple[str, str, str, str, int, str | None, Callable[[str], Any]]] = [
    ("inproc", "baseline", "CSTR in-process", "-", 30000, None, lambda a: InProcess()),
    ("raw", "baseline", "raw socket, struct-packed", "unix", 10000, "raw", RawSocket),
    ("bare-unix", "bare grpcio", "unary", "unix", 3000, "bare-unix", BareGrpc),
    ("bare-tcp", "bare grpcio", "unary", "tcp", 3000, "bare-tcp", BareGrpc),
    ("bare-stream", "bare grpcio", "bidi stream, lock-step", "unix", 3000, "bare-unix",
     lambda a: BareGrpc(a, stream=True)),
    ("bare-k8", "bare grpcio", "unary, K=8 per message", "unix", 8000, "bare-unix",
     lambda a: BareGrpc(a, k=8)),
    ("bare-k64", "bare grpcio", "unary, K=64 per message", "unix", 25600, "bare-unix",
     lambda a: BareGrpc(a, k=64)),
    ("bare-stream-k64", "bare grpcio", "stream, K=64 per message", "unix", 25600, "bare-unix",
     lambda a: BareGrpc(a, k=64, stream=True)),
    ("pb-unix", "trivial pb", "RemoteSession.step (unary)", "unix", 3000, "bare-unix",
     SimgymUnary),
    ("pb-lane1", "trivial pb", "PackedStream, K=1", "unix", 3000, "bare-unix",
     lambda a: SimgymLane(a, 1)),
    ("pb-pstream64", "trivial pb", "PackedStream, K=64", "unix", 25600, "bare-unix",
     lambda a: SimgymLane(a, 64)),
    ("sg-unix", "simgym", "RemoteSession.step (unary)", "unix", 3000, "sg-unix", SimgymUnary),
    ("sg-tcp", "simgym", "RemoteSession.step (unary)", "tcp", 3000, "sg-tcp", SimgymUnary),
    ("sg-lane1", "simgym", "PackedStream, K=1 (SimEnv's transport)", "unix", 3000, "sg-unix",
     lambda a: SimgymLane(a, 1)),
    ("sg-env", "simgym", "SimEnv.step (Gymnasium, PackedStream)", "unix", 3000, "sg-unix",
     SimgymEnv),
    ("sg-sock1", "simgym", "packed socket, K=1 (SimEnv's transport on unix)", "unix", 10000,
     "sg-unix", lambda a: SimgymLane(a, 1, socket=True)),
    ("sg-env-sock", "simgym", "SimEnv.step (Gymnasium, packed socket)", "unix", 10000,
     "sg-unix", lambda a: SimgymEnv(a, socket=True)),
    ("sg-pstream64", "simgym", "PackedStream, K=64", "unix", 25600, "sg-batch",
     lambda a: SimgymLane(a, 64)),
    ("sg-sock64", "simgym", "packed socket, K=64", "unix", 25600, "sg-batch",
     lambda a: SimgymLane(a, 64, socket=True)),
    ("sg-vec8", "simgym", "SimVectorEnv.step, K=8", "unix", 8000, "sg-batch",
     lambda a: SimgymVector(a, 8)),
    ("sg-vec16", "simgym", "SimVectorEnv.step, K=16 (the recipe's)", "unix", 16000,
     "sg-batch", lambda a: SimgymVector(a, 16)),
    ("sg-vec16-sock", "simgym", "SimVectorEnv.step, K=16, packed socket", "unix", 16000,
     "sg-batch", lambda a: SimgymVector(a, 16, socket=True)),
    ("sg-vec64", "simgym", "SimVectorEnv.step, K=64", "unix", 25600, "sg-batch",
     lambda a: SimgymVector(a, 64)),
    ("sg-vec64-sock", "simgym", "SimVectorEnv.step, K=64, packed socket", "unix", 25600,
     "sg-batch", lambda a: SimgymVector(a, 64, socket=True)),
    ("dm", "peer", "dm-env-rpc DmEnvAdaptor.step", "unix", 3000, "dm", DmEnvRpc),
    # What sims in worker processes cost (simserver --isolate): the same lanes, both modes.
    ("iso-thread1", "isolation", "packed socket, K=1, --isolate thread", "unix", 10000,
     "sg-thread", lambda a: SimgymLane(a, 1, socket=True)),
    ("iso-process1", "isolation", "packed socket, K=1, --isolate process", "unix", 10000,
     "sg-process", lambda a: SimgymLane(a, 1, socket=True)),
    ("iso-thread64", "isolation", "packed socket, K=64, --isolate thread", "unix", 25600,
     "sg-thread", lambda a: SimgymLane(a, 64, socket=True)),
    ("iso-process64", "isolation", "packed socket, K=64, --isolate process", "unix", 25600,
     "sg-process", lambda a: SimgymLane(a, 64, socket=True)),
]  # fmt: skip


RUN_ORDER = [
    "inproc", "raw", "bare-unix", "pb-unix", "sg-unix", "sg-lane1", "dm", "sg-env", "pb-lane1",
    "bare-stream", "bare-tcp", "sg-tcp", "bare-k8", "sg-vec8", "bare-k64", "sg-pstream64",
    "pb-pstream64", "sg-vec64", "bare-stream-k64", "sg-sock1", "sg-env-sock", "sg-sock64",
    "sg-vec16", "sg-vec16-sock", "sg-vec64-sock", "iso-thread1", "iso-process1",
    "iso-thread64", "iso-process64",
]  # fmt: skip


def build_cases(args: argparse.Namespace, servers: dict[str, Any]) -> list[Case]:
    """The selected cases; ``servers`` will hold the started servers by name."""
    dm_why = None if args.dm_python else dmenv.available()
    cases = []
    for key, group, label, transport, steps, server, factory in CASES:
        if args.only and not any(o in key or o in group for o in args.only):
            continue
        if key == "dm" and args.dm_python:
            python = args.dm_python

            def factory(a: str, python: str = python) -> Any:
                return DmEnvRpcSubprocess(a, python)

        def make(factory: Callable[[str], Any] = factory, server: str | None = server) -> Any:
            return factory(servers[server].address if server else "")

        def pid(server: str | None = server) -> int | None:
            return servers[server].pid if server else None

        case = Case(key, group, label, transport, max(50, int(steps * args.scale)), make, pid)
        case.server_name = server
        if key == "dm" and dm_why is not None:
            case.error = f"dm-env-rpc not available ({dm_why}); pip install dm-env-rpc"
        cases.append(case)
    return cases


def make_server(name: str, args: argparse.Namespace) -> Any:
    from simserver.process import ServerProcess

    servers_py = str(BENCH / "_bridge_servers.py")
    dm_py = str(BENCH / "_bridge_dmenv.py")
    if name == "raw":
        return HelperServer(name, [servers_py, "raw", "--unix", "{dir}/raw.sock"])
    if name == "bare-unix":
        return HelperServer(name, [servers_py, "grpc", "--unix", "{dir}/bare.sock"])
    if name == "bare-tcp":
        return HelperServer(name, [servers_py, "grpc", "--port", "0"])
    if name == "dm":
        python = args.dm_python or sys.executable
        return HelperServer(name, [dm_py, "serve", "--unix", "{dir}/dm.sock"], python=python)
    log = ["--log-level", "WARNING"]
    if name == "sg-unix":  # the default server, as `simgym` starts it
        return ServerProcess(TARGET, workdir=REPO, transport="unix", args=log)
    if name == "sg-tcp":
        return ServerProcess(TARGET, workdir=REPO, transport="tcp", args=log)
    if name == "sg-batch":  # room for every batched case's sessions
        return ServerProcess(
            TARGET, workdir=REPO, transport="unix", args=[*log, "--max-sessions", "512"]
        )
    if name in ("sg-thread", "sg-process"):  # --isolate named, whatever the default
        isolate = ["--isolate", name.removeprefix("sg-"), "--max-sessions", "128"]
        return ServerProcess(TARGET, workdir=REPO, transport="unix", args=[*log, *isolate])
    raise KeyError(name)


# --------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    import google.protobuf
    import grpc

    info = {
        "nproc": str(os.cpu_count()),
        "cpu": "?",
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "kernel": platform.release(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    try:
        from importlib.metadata import version

        info["dm-env-rpc"] = version("dm-env-rpc")
    except Exception:
        info["dm-env-rpc"] = "not installed"
    return info


def fmt_us(us: float) -> str:
    return f"{us:.1f}" if us < 100 else f"{us:.0f}"


def paired(
    cases: dict[str, Case], num: str, den: str, inverse: bool = False, attr: str = "wall"
) -> list[float]:
    """Per-repeat ratios num/den of µs per step (or den/num: a throughput ratio).

    ``attr``: ``wall`` (elapsed time) or ``cpu`` (client + server CPU time).
    """
    a, b = cases.get(num), cases.get(den)
    if a is None or b is None or not a.wall or not b.wall:
        return []
    other = dict(zip(b.reps, getattr(b, attr), strict=True))
    mine = getattr(a, attr)
    pairs = [(x, other[r]) for r, x in zip(a.reps, mine, strict=True) if r in other]
    return [(y / x) if inverse else (x / y) for x, y in pairs]


def report(cases: list[Case], args: argparse.Namespace, info: dict[str, str]) -> dict[str, Any]:
    by_key = {c.key: c for c in cases}
    base = {k: by_key[k].us for k in ("inproc", "raw") if k in by_key and by_key[k].wall}
    bare = {t: by_key[k].us for t, k in (("unix", "bare-unix"), ("tcp", "bare-tcp"))
            if k in by_key and by_key[k].wall}  # fmt: skip
    header = (
        f"{'group':12s} {'case':32s} {'via':4s} {'µs/step':>8s} {'min–max':>13s} "
        f"{'steps/s':>8s} {'cli CPU':>7s} {'srv CPU':>7s} {'×in-proc':>8s} {'×raw':>6s} "
        f"{'×grpc':>6s}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    for c in cases:
        if c.error or not c.wall:
            print(f"{c.group:12s} {c.label:32s} {c.transport:4s} n/a: {c.error or 'no data'}")
            rows.append({"key": c.key, "label": c.label, "error": c.error})
            continue
        us = c.us
        cli = statistics.median(c.client_cpu)
        srv = statistics.median(c.server_cpu) if c.server_cpu else None
        x_in = us / base["inproc"] if "inproc" in base else None
        x_raw = us / base["raw"] if "raw" in base else None
        x_grpc = us / bare[c.transport] if c.transport in bare else None

        def r(x: float | None) -> str:
            return f"{x:.2f}" if x is not None and x < 10 else (f"{x:.0f}" if x else "-")

        print(
            f"{c.group:12s} {c.label:32s} {c.transport:4s} {fmt_us(us):>8s} "
            f"{fmt_us(min(c.wall)) + '–' + fmt_us(max(c.wall)):>13s} {1e6 / us:8.0f} "
            f"{fmt_us(cli):>7s} {fmt_us(srv) if srv is not None else '-':>7s} "
            f"{r(x_in):>8s} {r(x_raw):>6s} {r(x_grpc):>6s}"
        )
        rows.append(
            {
                "cpu_us": statistics.median(c.cpu),
                "key": c.key,
                "group": c.group,
                "label": c.label,
                "transport": c.transport,
                "us_per_step": us,
                "us_per_step_repeats": c.wall,
                "steps_per_s": 1e6 / us,
                "client_cpu_us": cli,
                "server_cpu_us": srv,
                "x_inproc": x_in,
                "x_raw": x_raw,
                "x_bare_grpc": x_grpc,
                "steps_per_repeat": c.steps,
            }
        )
    print()
    print(
        "Ratios: median of per-repeat paired ratios of wall time, [min–max] over repeats; "
        "then the same from CPU time (client + server), less sensitive to machine load:"
    )
    ratios = []
    specs = [
        ("unary", "simgym RemoteSession.step / bare grpcio unary, unix", "sg-unix", "bare-unix", False),  # noqa: E501
        (None, "simgym RemoteSession.step / bare grpcio unary, tcp", "sg-tcp", "bare-tcp", False),
        (None, "simgym SimEnv.step / bare grpcio unary, unix", "sg-env", "bare-unix", False),
        ("peer", "dm-env-rpc DmEnvAdaptor.step / simgym PackedStream K=1", "dm", "sg-lane1", False),
        (None, "dm-env-rpc DmEnvAdaptor.step / simgym SimEnv.step (PackedStream)", "dm", "sg-env", False),  # noqa: E501
        (None, "dm-env-rpc DmEnvAdaptor.step / simgym RemoteSession.step", "dm", "sg-unix", False),
        (None, "dm-env-rpc DmEnvAdaptor.step / bare grpcio stream", "dm", "bare-stream", False),
        (None, "dm-env-rpc DmEnvAdaptor.step / simgym packed socket K=1", "dm", "sg-sock1", False),
        (None, "dm-env-rpc DmEnvAdaptor.step / simgym SimEnv.step (packed socket)", "dm", "sg-env-sock", False),  # noqa: E501
        (None, "simgym packed socket K=1 / PackedStream K=1 (gRPC), µs", "sg-sock1", "sg-lane1", False),  # noqa: E501
        (None, "simgym packed socket K=1 / raw socket, µs", "sg-sock1", "raw", False),
        (None, "SimEnv.step: packed socket / gRPC PackedStream, µs", "sg-env-sock", "sg-env", False),  # noqa: E501
        (None, "SimVectorEnv K=16: packed socket / gRPC PackedStream, µs", "sg-vec16-sock", "sg-vec16", False),  # noqa: E501
        (None, "SimVectorEnv K=64: packed socket / gRPC PackedStream, µs", "sg-vec64-sock", "sg-vec64", False),  # noqa: E501
        (None, "packed socket K=64 / RemoteSession.step, steps/s", "sg-sock64", "sg-unix", True),
        (None, "simgym PackedStream K=1 / bare grpcio stream, µs", "sg-lane1", "bare-stream", False),  # noqa: E501
        ("batch", "PackedStream K=64 / RemoteSession.step, steps/s", "sg-pstream64", "sg-unix", True),  # noqa: E501
        (None, "SimVectorEnv K=64 / RemoteSession.step, steps/s", "sg-vec64", "sg-unix", True),
        (None, "SimVectorEnv K=64 / SimEnv.step, steps/s", "sg-vec64", "sg-env", True),
        (None, "PackedStream K=64 / PackedStream K=1, steps/s", "sg-pstream64", "sg-lane1", True),
        (None, "simgym PackedStream K=64 / bare grpcio stream K=64, µs", "sg-pstream64", "bare-stream-k64", False),  # noqa: E501
        (None, "bare grpcio unary / raw socket, µs", "bare-unix", "raw", False),
        (None, "bare grpcio stream / unary, µs", "bare-stream", "bare-unix", False),
        (None, "simgym unary / trivial pb servicer unary: simserver's own cost", "sg-unix", "pb-unix", False),  # noqa: E501
        (None, "trivial pb unary / bare grpcio unary: protobuf + gymclient", "pb-unix", "bare-unix", False),  # noqa: E501
        (None, "simgym PackedStream K=1 / trivial pb PackedStream K=1", "sg-lane1", "pb-lane1", False),  # noqa: E501
        (None, "trivial pb PackedStream K=1 / bare grpcio stream", "pb-lane1", "bare-stream", False),  # noqa: E501
        (None, "simgym PackedStream K=64 / trivial pb PackedStream K=64", "sg-pstream64", "pb-pstream64", False),  # noqa: E501
        (None, "trivial pb PackedStream K=64 / bare grpcio stream K=64", "pb-pstream64", "bare-stream-k64", False),  # noqa: E501
        (None, "--isolate process / thread, packed socket K=1, µs", "iso-process1", "iso-thread1", False),  # noqa: E501
        (None, "--isolate process / thread, packed socket K=64, µs", "iso-process64", "iso-thread64", False),  # noqa: E501
    ]  # fmt: skip
    for target_key, label, num, den, inverse in specs:
        values = paired(by_key, num, den, inverse)
        if not values:
            if target_key:
                print(f"  {label:58s}    n/a  (a side was not measured)")
            continue
        med = statistics.median(values)
        verdict = ""
        if target_key:
            _, op, bound = TARGETS[target_key]
            ok = med <= bound if op == "<=" else med >= bound
            verdict = f"  target {op} {bound:g}: {'PASS' if ok else 'MISS'}"
        cpu = paired(by_key, num, den, inverse, "cpu")
        cpu_med = statistics.median(cpu) if cpu else None
        cpu_txt = f"cpu {cpu_med:6.2f}" if cpu_med is not None else ""
        print(
            f"  {label:58s} {med:6.2f}  [{min(values):.2f}–{max(values):.2f}]  {cpu_txt}{verdict}"
        )
        ratios.append(
            {"label": label, "median": med, "min": min(values), "max": max(values),
             "cpu_median": cpu_med, "target": TARGETS[target_key][1:] if target_key else None}
        )  # fmt: skip
    return {"machine": info, "args": vars(args), "rows": rows, "ratios": ratios}


def markdown(result: dict[str, Any]) -> str:
    """The table and the ratios as Markdown (for docs/performance.md)."""

    def num(x: float | None, digits: int = 2) -> str:
        if x is None:
            return "-"
        return f"{x:.{digits}f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"

    lines = [
        "| group | case | via | µs/env-step (median) | min–max | env-steps/s "
        "| client CPU µs | server CPU µs | × in-process | × raw socket | × bare grpcio unary |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in result["rows"]:
        if r.get("error") or "us_per_step" not in r:
            lines.append(f"| {r.get('group', '')} | {r['label']} | | n/a: {r.get('error')} |")
            continue
        reps = r["us_per_step_repeats"]
        lines.append(
            f"| {r['group']} | {r['label']} | {r['transport']} | **{fmt_us(r['us_per_step'])}** "
            f"| {fmt_us(min(reps))}–{fmt_us(max(reps))} | {r['steps_per_s']:,.0f} "
            f"| {fmt_us(r['client_cpu_us'])} "
            f"| {fmt_us(r['server_cpu_us']) if r['server_cpu_us'] is not None else '-'} "
            f"| {num(r['x_inproc'], 1)} | {num(r['x_raw'])} | {num(r['x_bare_grpc'])} |"
        )
    lines += [
        "",
        "| ratio | wall (median) | min–max | from CPU time | target |",
        "|---|--:|--:|--:|---|",
    ]
    for q in result["ratios"]:
        target = ""
        if q["target"]:
            op, bound = q["target"]
            ok = q["median"] <= bound if op == "<=" else q["median"] >= bound
            target = f"{'≤' if op == '<=' else '≥'} {bound:g}: **{'pass' if ok else 'MISS'}**"
        lines.append(
            f"| {q['label']} | **{q['median']:.2f}** | {q['min']:.2f}–{q['max']:.2f} "
            f"| {num(q['cpu_median'])} | {target} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps, 1 repeat")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 5; quick 1)")
    parser.add_argument(
        "--scale", type=float, help="multiply every case's steps per repeat (default 1; quick .03)"
    )
    parser.add_argument("--only", nargs="*", help="run cases whose key or group contains these")
    parser.add_argument("--dm-python", help="interpreter with dm-env-rpc, for its server+client")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--markdown", help="also write the table and ratios here as Markdown")
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.scale = args.scale or (0.03 if args.quick else 1.0)
    if not args.quick and args.repeats < 3:
        print("note: fewer than 3 repeats: medians are not robust", file=sys.stderr)

    # A SIGTERM must still run the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = machine()
    print(
        "bench/bridge.py: "
        + ", ".join(f"{k} {v}" for k, v in info.items())
        + f"; load {os.getloadavg()[0]:.2f}"
    )
    servers: dict[str, Any] = {}
    cases: list[Case] = []
    try:
        cases = build_cases(args, servers)
        needed = sorted({c.server_name for c in cases if c.server_name and not c.error})
        for name in needed:
            servers[name] = make_server(name, args)
            servers[name].start()
        for c in cases:
            if c.error:
                continue
            try:
                c.client = c.make()
                if not hasattr(c.client, "measure"):
                    c.client.run(max(20, min(300, c.steps // 10)))  # warm-up: connect, caches
            except Exception as exc:
                c.error = f"setup failed: {type(exc).__name__}: {exc}"
        # Run order: the two sides of each ratio next to each other (load drifts in time).
        live = sorted(
            (c for c in cases if not c.error),
            key=lambda c: RUN_ORDER.index(c.key) if c.key in RUN_ORDER else len(RUN_ORDER),
        )
        print(
            f"{len(live)} cases x {args.repeats} repeats, interleaved "
            f"(steps per repeat: {min(c.steps for c in live)}–{max(c.steps for c in live)})",
            flush=True,
        )
        for rep in range(args.repeats):
            started = time.perf_counter()
            order = live[rep % len(live) :] + live[: rep % len(live)]
            for c in order:
                try:
                    c.measure(c.steps, rep)
                except Exception as exc:
                    c.error = f"failed: {type(exc).__name__}: {exc}"
                    live.remove(c)
            print(
                f"  repeat {rep + 1}/{args.repeats}: {time.perf_counter() - started:.1f} s, "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        print()
        result = report(cases, args, info)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        if args.markdown:
            Path(args.markdown).write_text(markdown(result))
    finally:
        for c in cases:
            if c.client is not None and hasattr(c.client, "close"):
                with contextlib.suppress(Exception):
                    c.client.close()
        for s in servers.values():
            with contextlib.suppress(Exception):
                s.cleanup()


if __name__ == "__main__":
    main()
