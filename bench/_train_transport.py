"""Where a bridged vector step's time goes, outside RLlib (evidence for docs/performance.md).

For N sessions of examples/cstr/sim.py:CSTR on one local simserver (unix socket), interleaved
over ``--repeats`` rounds, median per vector step (N env steps):

* ``local``: bench/_train_local.py's in-process vector env step (the sims + the spec codec);
* ``SimVectorEnv``: simgym's vector env step (one packed message per step), over the server's
  packed socket and over gRPC's ``PackedStream``, wall and client CPU;
* ``PackedLane.run``: the same rounds sent by hand on a lane of the N sessions (request
  building, the exchange, decoding), over either transport, and the request building alone;
* ``server handling``: the server's packed engine (``simserver.packed.run``), timed
  in-process without a transport (sessions, sim steps, filling the reply).

    .venv/bin/python bench/_train_transport.py [--envs 16 64] [--steps 400] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CSTR_DIR = REPO / "examples" / "cstr"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def timed(fn: Any, steps: int) -> tuple[float, float]:
    """Median-free: (wall s, process CPU s) per call over ``steps`` calls."""
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps, (time.process_time() - c) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from simserver.process import ServerProcess

    target = f"{CSTR_DIR / 'sim.py'}:CSTR"
    with ServerProcess(target, workdir=CSTR_DIR, args=["--max-sessions", "1024"]) as server:
        assert server.address is not None
        for n in args.envs:
            _client_side(n, server.address, args)
        print()
        _server_side(args)


def _client_side(n: int, address: str, args: argparse.Namespace) -> None:
    """The vector envs and hand-made packed rounds at N sessions, over both transports."""
    from _train_local import LocalSimVectorEnv

    from gymclient.codec import DeclarativeCodec, sample_config
    from gymclient.connection import Connection, ConnectOptions
    from gymclient.lane import PackedLane, Reset
    from gymclient.spec import load_spec
    from gymclient.vector import SimVectorEnv

    spec = load_spec(CSTR_DIR / "spec.yaml")
    rng = np.random.default_rng(0)
    local = LocalSimVectorEnv(spec, n)
    vecs = {
        socket: SimVectorEnv(spec, n, [address], packed_socket=socket) for socket in (True, False)
    }
    conns = {socket: Connection(address, ConnectOptions(packed_socket=socket)) for socket in vecs}
    lanes = {
        socket: PackedLane(conn, [conn.open(["Tc_adjust"]) for _ in range(n)])
        for socket, conn in conns.items()
    }
    first = lanes[True].sessions[0]
    codec = DeclarativeCodec(spec, first.state_names, first.action_names)
    counter = {"k": 0}

    def round_() -> tuple[list[float], dict[int, Reset]]:
        # Every 90th round resets all sessions (an episode lasts 91 steps).
        counter["k"] += 1
        if counter["k"] % 90 == 1:
            config = sample_config(codec.lessons, rng)
            return [0.0] * n, {k: (config, 1) for k in range(n)}
        return codec.decode_batch(rng.uniform(-0.2, 0.2, (n, 1))).ravel().tolist(), {}

    def run(lane: PackedLane) -> Any:
        return lambda: lane.run(*round_())

    actions = [rng.uniform(-0.2, 0.2, (n, 1)).astype(np.float32) for _ in range(64)]
    idx = {"i": 0}

    def step_env(env: Any) -> Any:
        def go() -> None:
            idx["i"] = (idx["i"] + 1) % 64
            env.step(actions[idx["i"]])

        return go

    local.reset(seed=0)
    for vec in vecs.values():
        vec.reset(seed=0)
    for lane in lanes.values():
        lane.run([0.0] * n, {k: ({}, 1) for k in range(n)})
    counter["k"] = 0
    cases = {
        "local (in-process env)": step_env(local),
        "SimVectorEnv.step, packed socket": step_env(vecs[True]),
        "SimVectorEnv.step, PackedStream": step_env(vecs[False]),
        "PackedLane.run, packed socket": run(lanes[True]),
        "PackedLane.run, PackedStream": run(lanes[False]),
        "request building only": lambda: lanes[True]._request(*round_()),
    }
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            w, c = timed(fn, args.steps)
            wall[name].append(w)
            cpu[name].append(c)
    print(f"\nN = {n} sessions; per vector step (median of {args.repeats} x {args.steps})")
    for name in cases:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"  {name:<34} {w * 1e3:7.3f} ms wall  {c * 1e3:7.3f} ms client CPU  "
            f"{w * 1e6 / n:6.1f} µs/env step"
        )
    for vec in vecs.values():
        vec.close()
    for lane in lanes.values():
        lane.close()
        for s in lane.sessions:
            s.close()
        lane.connection.close()


def _server_side(args: argparse.Namespace) -> None:
    """The server's packed engine in-process: what the server spends, transport aside."""
    from simgym.v1 import simulator_pb2 as pb
    from simserver import packed
    from simserver.loader import load_factory
    from simserver.sessions import NO_DEADLINE, SessionManager

    rng = np.random.default_rng(0)
    for n in args.envs:
        manager = SessionManager(load_factory(f"{CSTR_DIR / 'sim.py'}:CSTR"), max_sessions=n)
        ids = [manager.open(["Tc_adjust"], 0, "bench").id for _ in range(n)]
        seq = {"k": 0}

        def request(seq: dict[str, int] = seq, ids: list[str] = ids, n: int = n) -> Any:
            seq["k"] += 1
            k = seq["k"]
            resets = [pb.PackedReset(slot=j) for j in range(n)] if k % 90 == 1 else []
            return pb.PackedRequest(
                session_ids=ids,
                actions=rng.uniform(-2, 2, n).tolist(),
                seqs=[k] * n,
                resets=resets,
            )

        reqs = [request() for _ in range(args.steps)]
        times, cpus = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            for r in reqs:
                reply = packed.run(manager, r, NO_DEADLINE)
            times.append((time.perf_counter() - t) / len(reqs))
            cpus.append((time.process_time() - c) / len(reqs))
            # New requests (new seqs): resets restart the episodes, so steps stay valid.
            reqs = [request() for _ in range(args.steps)]
        assert not reply.errors, reply.errors[0].message
        w, c = statistics.median(times), statistics.median(cpus)
        print(
            f"server handling, in-process (N = {n}): {w * 1e3:7.3f} ms wall per packed request "
            f"({c * 1e3:.3f} ms CPU), {w * 1e6 / n:6.1f} µs/env step"
        )


if __name__ == "__main__":
    main()
