"""Where a bridged vector step's time goes, outside RLlib (evidence for docs/performance.md).

For N sessions of examples/cstr/sim.py:CSTR on one local simserver (unix socket), interleaved
over ``--repeats`` rounds, median per vector step (N env steps):

* ``local``: bench/_train_local.py's in-process vector env step (the sims + the spec codec);
* ``SimVectorEnv``: simgym's vector env step (one unary ``Batch`` per step), wall and client CPU;
* ``Batch unary``: the same Batch requests sent by hand with a blocking unary call, and
  ``Batch stream``: the same requests over one lock-step ``Stream`` call (the proto's fast
  path that saves the per-call setup), each split into request building and the call itself;
* ``server handling``: the servicer's own Batch handling (``_batch``), timed in-process
  without gRPC (sessions, sim steps, filling the reply).

    .venv/bin/python bench/_train_transport.py [--envs 16 64] [--steps 400] [--repeats 5]
"""

from __future__ import annotations

import argparse
import queue
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
    with ServerProcess(target, workdir=CSTR_DIR, args=["--max-sessions", "512"]) as server:
        assert server.address is not None
        for n in args.envs:
            _client_side(n, server.address, args)
        print()
        _server_side(args)


def _client_side(n: int, address: str, args: argparse.Namespace) -> None:
    """The vector envs and hand-made Batch calls at N sessions."""
    from _train_local import LocalSimVectorEnv

    from gymclient.codec import DeclarativeCodec, sample_config
    from gymclient.connection import Connection
    from gymclient.spec import load_spec
    from gymclient.vector import SimVectorEnv
    from simgym.v1 import simulator_pb2 as pb

    spec = load_spec(CSTR_DIR / "spec.yaml")
    rng = np.random.default_rng(0)
    local = LocalSimVectorEnv(spec, n)
    vec = SimVectorEnv(spec, n, [address])
    conn = Connection(address)
    sessions = [conn.open(["Tc_adjust"]) for _ in range(n)]
    codec = DeclarativeCodec(spec, sessions[0].state_names, sessions[0].action_names)
    stub, meta = conn._stub, conn._metadata
    counter = {"k": 0}

    def build() -> pb.BatchRequest:
        # Every 90th call resets all sessions (an episode lasts 91 steps).
        counter["k"] += 1
        if counter["k"] % 90 == 1:
            config = sample_config(codec.lessons, rng)
            items = [pb.BatchItem(reset=s.reset_request(config, 1)) for s in sessions]
        else:
            a = codec.decode_batch(rng.uniform(-0.2, 0.2, (n, 1))).tolist()
            items = [pb.BatchItem(step=s.step_request(a[i])) for i, s in enumerate(sessions)]
        return pb.BatchRequest(items=items)

    # Lock-step stream: one request queued per reply read.
    requests: queue.Queue[pb.BatchRequest | None] = queue.Queue()
    replies = stub.Stream(iter(requests.get, None), metadata=meta)

    def unary() -> None:
        stub.Batch(build(), timeout=10, metadata=meta)

    def stream() -> None:
        requests.put(build())
        next(replies)

    def build_only() -> None:
        build()

    actions = [rng.uniform(-0.2, 0.2, (n, 1)).astype(np.float32) for _ in range(64)]
    idx = {"i": 0}

    def step_env(env: Any) -> Any:
        def go() -> None:
            idx["i"] = (idx["i"] + 1) % 64
            env.step(actions[idx["i"]])

        return go

    local.reset(seed=0)
    vec.reset(seed=0)
    cases = {
        "local (in-process env)": step_env(local),
        "SimVectorEnv.step": step_env(vec),
        "Batch unary (build + call)": unary,
        "Batch stream (build + call)": stream,
        "request building only": build_only,
    }
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            w, c = timed(fn, args.steps)
            wall[name].append(w)
            cpu[name].append(c)
    requests.put(None)
    print(f"\nN = {n} sessions; per vector step (median of {args.repeats} x {args.steps})")
    for name in cases:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"  {name:<30} {w * 1e3:7.3f} ms wall  {c * 1e3:7.3f} ms client CPU  "
            f"{w * 1e6 / n:6.1f} µs/env step"
        )
    vec.close()
    for s in sessions:
        s.close()
    conn.close()


def _server_side(args: argparse.Namespace) -> None:
    """The servicer's Batch handling in-process: what the server spends, gRPC aside."""
    from simgym.v1 import simulator_pb2 as pb
    from simserver.loader import load_factory
    from simserver.servicer import SimulatorServicer
    from simserver.sessions import SessionManager

    rng = np.random.default_rng(0)
    for n in args.envs:
        manager = SessionManager(load_factory(f"{CSTR_DIR / 'sim.py'}:CSTR"), max_sessions=n)
        servicer = SimulatorServicer(manager, 16 * 2**20)
        ids = [manager.open(["Tc_adjust"], 0, "bench").id for _ in range(n)]
        seq = {"k": 0}

        def request(seq: dict[str, int] = seq, ids: list[str] = ids, n: int = n) -> Any:
            seq["k"] += 1
            k = seq["k"]
            if k % 90 == 1:
                return pb.BatchRequest(
                    items=[pb.BatchItem(reset=pb.ResetRequest(session_id=i, seq=k)) for i in ids]
                )
            a = rng.uniform(-2, 2, n).tolist()
            return pb.BatchRequest(
                items=[
                    pb.BatchItem(step=pb.StepRequest(session_id=i, action=[a[j]], seq=k))
                    for j, i in enumerate(ids)
                ]
            )

        reqs = [request() for _ in range(args.steps)]
        times, cpus = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            for r in reqs:
                servicer._batch(r)
            times.append((time.perf_counter() - t) / len(reqs))
            cpus.append((time.process_time() - c) / len(reqs))
            # Replaying the same requests: resets restart the episodes, so steps stay valid.
            reqs = [request() for _ in range(args.steps)]
        w, c = statistics.median(times), statistics.median(cpus)
        print(
            f"server handling, in-process (N = {n}): {w * 1e3:7.3f} ms wall per Batch "
            f"({c * 1e3:.3f} ms CPU), {w * 1e6 / n:6.1f} µs/env step"
        )


if __name__ == "__main__":
    main()
