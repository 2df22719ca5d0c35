"""Baseline servers for bench/bridge.py: the CSTR sim behind a raw socket and bare grpcio.

Both carry the same payload as a simgym step, struct-packed: a request is ``<BHd`` (op, slot,
value: 11 bytes; op 0 = step with ``Tc_adjust = value``, op 1 = reset to episode ``int(value)``),
a reply is ``<Nd??`` (the N states in ``CSTR.state_names`` order + terminated + truncated;
N = 9 for the reference's states: 74 bytes).
A step calls ``step`` + ``termination`` + ``truncation``, as simserver does; a reset uses the
bench's episode config (``episode_config``). ``slot`` picks one of the server's sims, so one
server can hold several (the batched baselines send K requests back to back in one message).

    python bench/_bridge_servers.py raw  --unix PATH          --address-file F [--parent-pid P]
    python bench/_bridge_servers.py grpc (--unix PATH | --port 0) --address-file F [--parent-pid P]

The gRPC server registers generic handlers with no (de)serialiser (bytes in, bytes out):
``/bare.Sim/Step`` (unary, one request), ``/bare.Sim/Batch`` (unary, K requests concatenated) and
``/bare.Sim/Stream`` (bidi, lock-step, each message as Batch). What it costs over the raw socket is
what gRPC itself costs. It also serves ``simgym.v1.Simulator`` with a trivial servicer
(``TrivialSimulator``: the generated stub, the same protobuf messages, none of simserver's logic),
so that gymclient's own client can be timed against it: the gap to bytes is protobuf plus the
client library, the gap to simserver is simserver's own work. Each server exits when its parent
process disappears.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CSTR_FILE = REPO / "examples" / "cstr" / "sim.py"
sys.path.insert(0, str(REPO))  # simgym.v1, when run as a script

from simgym.v1 import simulator_pb2 as pb  # noqa: E402
from simgym.v1 import simulator_pb2_grpc as pb_grpc  # noqa: E402

OP_STEP, OP_RESET = 0, 1
NOISE_PERCENTAGE = 5.0


def load_cstr() -> Any:
    """``examples/cstr/sim.py:CSTR``, loaded by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bridge_cstr_sim", CSTR_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CSTR


# The reply is sized from the sim's own state list, so the baselines carry exactly what a
# simgym transition carries even when the sample gains states.
N_STATES = len(load_cstr().state_names)
REQUEST = struct.Struct("<BHd")
REPLY = struct.Struct(f"<{N_STATES}d??")


def episode_config(episode: int) -> dict[str, Any]:
    """The scenario of episode ``episode`` (all cases reset to the same ones)."""
    return {"Cref_signal": episode % 5 + 1, "noise_percentage": NOISE_PERCENTAGE}


class SimSlots:
    """Sims by slot number, each driven exactly as simserver drives a session's sim."""

    def __init__(self) -> None:
        self._cls = load_cstr()
        self._sims: dict[int, Any] = {}
        self._names = tuple(self._cls.state_names)

    def run(self, op: int, slot: int, value: float) -> tuple[list[float], bool, bool]:
        """Reset (``value``: episode index) or step (``value``: Tc_adjust) one sim."""
        sim = self._sims.get(slot)
        if sim is None:
            sim = self._sims[slot] = self._cls()
        if op == OP_RESET:
            episode = int(value)
            states = sim.reset(episode_config(episode), seed=episode)
        else:
            states = sim.step({"Tc_adjust": value})
        return [states[n] for n in self._names], bool(sim.termination()), bool(sim.truncation())

    def handle(self, op: int, slot: int, value: float) -> bytes:
        values, term, trunc = self.run(op, slot, value)
        return REPLY.pack(*values, term, trunc)

    def handle_many(self, data: bytes) -> bytes:
        size = REQUEST.size
        handle = self.handle
        return b"".join(
            handle(*REQUEST.unpack_from(data, off)) for off in range(0, len(data), size)
        )


# --------------------------------------------------------------------------- raw socket


def _recv_exact(conn: socket.socket, buf: bytearray) -> bool:
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = conn.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def _serve_raw_connection(conn: socket.socket, slots: SimSlots) -> None:
    buf = bytearray(REQUEST.size)
    with conn:
        while _recv_exact(conn, buf):
            conn.sendall(slots.handle(*REQUEST.unpack(buf)))


def serve_raw(path: str, ready: Callable[[str], None]) -> None:
    """A unix stream socket server: one thread per connection, one reply per request."""
    slots = SimSlots()
    Path(path).unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    ready(f"unix:{path}")
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve_raw_connection, args=(conn, slots), daemon=True).start()


# --------------------------------------------------------------------------- bare grpcio


def serve_grpc(target: str, ready: Callable[[str], None]) -> None:
    """A grpcio server with generic, bytes-only handlers (no protobuf, no simgym code)."""
    import grpc

    slots = SimSlots()

    def step(request: bytes, context: Any) -> bytes:
        return slots.handle(*REQUEST.unpack(request))

    def batch(request: bytes, context: Any) -> bytes:
        return slots.handle_many(request)

    def stream(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for request in requests:
            yield slots.handle_many(request)

    handler = grpc.method_handlers_generic_handler(  # bytes in, bytes out
        "bare.Sim",
        {
            "Step": grpc.unary_unary_rpc_method_handler(step),
            "Batch": grpc.unary_unary_rpc_method_handler(batch),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    pb_grpc.add_SimulatorServicer_to_server(TrivialSimulator(slots), server)
    port = server.add_insecure_port(target)
    server.start()
    ready(target if target.startswith("unix:") else f"127.0.0.1:{port}")
    server.wait_for_termination()


class TrivialSimulator(pb_grpc.SimulatorServicer):
    """The ``simgym.v1.Simulator`` contract at its most trivial, over the same ``SimSlots``.

    Same protobuf messages and generated stubs as simserver, so gymclient's ``Connection`` and
    ``RemoteSession`` can drive it, but none of simserver's work (no session manager, leases,
    locks, seq retry cache, validation, adapters, non-finite checks): a session id is a slot
    number and a reset's seed is the episode index (the bench's clients send it so).
    """

    def __init__(self, slots: SimSlots) -> None:
        self.pb = pb
        self.slots = slots
        self.next_slot = 1 << 15  # clear of the slots the bytes clients use
        self.states = [pb.Variable(name=n) for n in slots._names]

    def Open(self, request: Any, context: Any) -> Any:
        self.next_slot += 1
        return self.pb.OpenReply(
            session_id=str(self.next_slot),
            protocol="simgym.v1",
            sim_name="CSTR",
            states=self.states,
            actions=[self.pb.Variable(name="Tc_adjust")],
            seedable=True,
        )

    def _fill(self, t: Any, op: int, slot: str, value: float) -> None:
        values, t.terminated, t.truncated = self.slots.run(op, int(slot), value)
        t.states.extend(values)

    def Reset(self, request: Any, context: Any) -> Any:
        reply = self.pb.TransitionReply()
        self._fill(reply.transition, OP_RESET, request.session_id, float(request.seed))
        return reply

    def Step(self, request: Any, context: Any) -> Any:
        reply = self.pb.TransitionReply()
        self._fill(reply.transition, OP_STEP, request.session_id, request.action[0])
        return reply

    def Close(self, request: Any, context: Any) -> Any:
        return self.pb.CloseReply()

    def PackedStream(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        # Slots step with their action, or reset (the seed is the episode index).
        run = self.slots.run
        for request in requests:
            resets = {r.slot: float(r.seed) for r in request.resets}
            states: list[float] = []
            terminated: list[bool] = []
            truncated: list[bool] = []
            for k, sid in enumerate(request.session_ids):
                if k in resets:
                    values, term, trunc = run(OP_RESET, int(sid), resets[k])
                else:
                    values, term, trunc = run(OP_STEP, int(sid), request.actions[k])
                states += values
                terminated.append(term)
                truncated.append(trunc)
            yield self.pb.PackedReply(
                state_width=N_STATES, states=states, terminated=terminated, truncated=truncated
            )


# --------------------------------------------------------------------------- main


def write_address(path: str, address: str) -> None:
    """Atomically, so the parent never reads half a line."""
    tmp = f"{path}.{os.getpid()}.tmp"
    Path(tmp).write_text(address + "\n")
    os.replace(tmp, path)


def watch_parent(pid: int) -> None:
    """Exit when the bench that started us is gone (no orphan servers)."""

    def loop() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=loop, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("raw", "grpc"))
    parser.add_argument("--unix")
    parser.add_argument("--port", type=int)
    parser.add_argument("--address-file", required=True)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if args.parent_pid:
        watch_parent(args.parent_pid)

    def ready(address: str) -> None:
        write_address(args.address_file, address)

    if args.kind == "raw":
        if not args.unix:
            parser.error("raw needs --unix")
        serve_raw(args.unix, ready)
    else:
        if args.unix:
            target = f"unix:{Path(args.unix).resolve()}"
        elif args.port is not None:
            target = f"127.0.0.1:{args.port}"
        else:
            parser.error("grpc needs --unix or --port")
        serve_grpc(target, ready)


if __name__ == "__main__":
    main()
