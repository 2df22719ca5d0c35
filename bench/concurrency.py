"""Sims that wait: one ``SimVectorEnv`` step over N sessions whose sims take 20 ms per step.

Two sims (``bench/_concurrency_sim.py``): ``Sleeping`` waits 20 ms with the GIL released (a
sim waiting on a socket, an external tool or a C extension), ``Spinning`` computes 20 ms of
CPU time in Python, holding the GIL (the contrast: threads cannot help it). Each is hosted
by one ``simserver`` per way of running it:

* ``serial``: ``--parallel-slots off``, in-thread sims one after the other (before issue 15);
* ``auto``: the default, in-thread sims on the slot pool when their calls wait (measured);
* ``process``: ``--isolate process``, each sim in a worker process of its own;
* ``bonsai``: the same sims behind the real Bonsai SDK (``microsoft-bonsai-api``, the
  ``bonsai`` extra), one connector process per sim (``bench/_concurrency_bonsai.py``),
  registered with ``simserver --bonsai-port``.

For N = 1, 4, 16, 64 sessions in one ``SimVectorEnv`` (one server, its packed socket), the
median time of a vector step after a few warm-up steps (auto decides within them), its
ratio to one sim's step (the same server at N = 1) and to N × 20 ms (the serial time).

    .venv/bin/python bench/concurrency.py                 # full run (a few minutes)
    .venv/bin/python bench/concurrency.py --quick         # N = 1, 4, 16, fewer steps (< 1 min)
    .venv/bin/python bench/concurrency.py --json concurrency.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

DELAY = 0.02  # seconds per sim step
SIMS = {"sleep": "Sleeping", "cpu": "Spinning"}
MODES = {
    "serial": ["--parallel-slots", "off"],
    "auto": [],
    "process": ["--isolate", "process"],
    "bonsai": [],  # BonsaiServer
}
SPEC = """
sim: {target: TARGET}
observations:
  t: {min: 0, max: 1000000}
actions:
  u: {min: -1, max: 1}
reward: t
"""


class BonsaiServer:
    """``simserver --bonsai-port 0`` with ``count`` SDK connectors of one sim kind registered.

    The same surface as ``ServerProcess`` for ``run_case``: ``start``, ``address``, ``cleanup``.
    """

    def __init__(self, kind: str, count: int, folder: Path, args: list[str]) -> None:
        self.kind, self.count, self.folder = kind, count, folder
        self.address: str | None = None
        self.log = folder / f"bonsai-{kind}.log"
        grpc_file, url_file = folder / f"{kind}.grpc", folder / f"{kind}.url"
        self.files = (url_file, grpc_file)
        self.command = [
            sys.executable, "-m", "simserver", "--bonsai-port", "0", "--token", "bench",
            "--bonsai-address-file", str(url_file), "--unix", str(folder / f"{kind}.sock"),
            "--address-file", str(grpc_file), *args,
        ]  # fmt: skip
        self.procs: list[subprocess.Popen[bytes]] = []

    def _wait(self, path: Path, timeout: float) -> str:
        end = time.monotonic() + timeout
        while not path.exists():
            if self.procs[0].poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"simserver --bonsai-port: no {path.name}:\n{self.log_tail()}")
            time.sleep(0.05)
        return path.read_text().strip()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def start(self, timeout: float = 120.0) -> str:
        with self.log.open("wb") as log:
            self.procs.append(subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                               stderr=log, start_new_session=True))  # fmt: skip
        url = self._wait(self.files[0], timeout)
        env = {**os.environ, "SIM_API_HOST": url, "SIM_WORKSPACE": "bench",
               "SIM_ACCESS_KEY": "bench"}  # fmt: skip
        connector = [sys.executable, str(BENCH / "_concurrency_bonsai.py"), self.kind]
        for _ in range(self.count):
            self.procs.append(subprocess.Popen([*connector, "--delay", str(DELAY)], env=env,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                               start_new_session=True))  # fmt: skip
        self.address = self._wait(self.files[1], timeout)
        return self.address

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def measure(spec: Path, address: str, n: int, warmup: int, steps: int, **overrides: Any) -> float:
    """Median seconds of a ``SimVectorEnv`` step over ``n`` sessions of one server."""
    import numpy as np

    from gymclient.vector import SimVectorEnv

    env = SimVectorEnv(
        str(spec), n, addresses=[address], timeout=300.0, info_states=False, **overrides
    )
    try:
        env.reset(seed=0)
        actions = np.zeros((n, 1), np.float32)
        times = []
        for i in range(warmup + steps):
            started = time.perf_counter()
            env.step(actions)
            if i >= warmup:
                times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        env.close()


def run_case(
    kind: str, mode: str, sizes: list[int], warmup: int, steps: int, folder: Path
) -> list[dict[str, Any]]:
    """Every size for one sim and one way of hosting it, on one server."""
    from simserver.process import ServerProcess

    target = f"{BENCH / '_concurrency_sim.py'}:{SIMS[kind]}"
    spec = folder / f"{kind}.yaml"
    spec.write_text(SPEC.replace("TARGET", target))
    args = ["--log-level", "WARNING", "--max-sessions", str(2 * max(sizes)), *MODES[mode]]
    server: Any
    if mode == "bonsai":
        server = BonsaiServer(kind, max(sizes), folder, args)
    else:
        server = ServerProcess(target, workdir=BENCH, transport="unix", args=args,
                               kwargs={"delay": DELAY})  # fmt: skip
    rows = []
    try:
        server.start(timeout=120)
        assert server.address is not None
        for n in sizes:
            token = {"token": "bench"} if mode == "bonsai" else {}
            seconds = measure(spec, server.address, n, warmup, steps, **token)
            rows.append({"sim": kind, "mode": mode, "n": n, "step_s": seconds})
            print(f"  {kind:5s} {mode:8s} N={n:<3d} {seconds * 1e3:8.1f} ms", flush=True)
    finally:
        server.cleanup()
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    """Add each row's ratios (to one sim's step, to N x 20 ms) and print the table."""
    one = {(r["sim"], r["mode"]): r["step_s"] for r in rows if r["n"] == 1}
    print()
    print(
        f"{'sim':6s} {'mode':8s} {'N':>3s} {'step ms':>9s} {'x one sim':>10s} {'/ N x 20ms':>11s}"
    )
    for r in rows:
        base = one.get((r["sim"], r["mode"]))
        r["x_one_sim"] = r["step_s"] / base if base else None
        r["x_serial_ideal"] = r["step_s"] / (r["n"] * DELAY)
        x_one = f"{r['x_one_sim']:.2f}" if r["x_one_sim"] is not None else "-"
        print(
            f"{r['sim']:6s} {r['mode']:8s} {r['n']:3d} {r['step_s'] * 1e3:9.1f} {x_one:>10s} "
            f"{r['x_serial_ideal']:11.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 4, 16, fewer steps")
    parser.add_argument("--sizes", type=int, nargs="*", help="session counts (default 1 4 16 64)")
    parser.add_argument("--sims", nargs="*", choices=list(SIMS), default=list(SIMS))
    parser.add_argument("--modes", nargs="*", choices=list(MODES), default=list(MODES))
    parser.add_argument("--steps", type=int, help="measured steps per case (default 20; quick 5)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    sizes = args.sizes or ([1, 4, 16] if args.quick else [1, 4, 16, 64])
    steps = args.steps or (5 if args.quick else 20)
    warmup = 6  # auto measures 3 serial steps, then tries parallel
    print(
        f"bench/concurrency.py: {DELAY * 1e3:g} ms per sim step, N = {sizes}, {warmup} warm-up "
        f"+ {steps} measured steps; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="concurrency-") as tmp:
        for kind in args.sims:
            for mode in args.modes:
                rows += run_case(kind, mode, sizes, warmup, steps, Path(tmp))
    report(rows)
    if args.json:
        with contextlib.suppress(OSError):
            Path(args.json).write_text(json.dumps({"delay_s": DELAY, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
