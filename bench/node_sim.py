"""The JS CSTR sample (sdk/node) against the Python one: step cost through the bridge, one run.

Both servers host the same plant with the same algorithm (sdk/node/sample/cstr.js is a port of
examples/cstr/sim.py) and step the same episodes: one seeded table of Tc_adjust moves, episodes
reset to ``Cref_signal`` 1-5 in turn with 5 % noise and the episode index as seed (the clients
and episodes of bench/bridge.py). Every case is measured against three servers, each its own
process:

* ``py``: ``simserver examples/cstr/sim.py:CSTR``, the Python sample as shipped (its step in
  the compiled accelerator when installed, as ``make`` installs it);
* ``py-pure``: the same with ``SIMGYM_CSTR_NATIVE=0``: the step in pure Python, the same
  algorithm in an interpreter, as the JS one;
* ``js``: ``node sdk/node/bin/sample.js`` (what ``npm run sample`` runs).

Cases: the sim called in-process (Python in this process, JS in a node child: no transport);
``RemoteSession.step`` (one unary Step per env step) on TCP; ``PackedLane`` with K = 1 (what
``SimEnv`` steps through) over gRPC's ``PackedStream`` and over the packed socket; K = 64 over
both; ``SimVectorEnv.step`` with 16 sub-envs (the CSTR recipe's) on the packed socket.

Repeats are interleaved (every repeat runs every case once, in an order rotated per repeat);
the table shows medians; ``js/py`` and ``js/py-pure`` are medians of per-repeat ratios of
µs per env step. Server CPU is the server process's CPU time per env step.

    .venv/bin/python bench/node_sim.py                # full run (3 repeats, ~1.5 min)
    .venv/bin/python bench/node_sim.py --quick        # smoke run (numbers meaningless)
    .venv/bin/python bench/node_sim.py --json out.json

Needs ``npm ci --prefix sdk/node`` (``make`` does it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

from _bridge_servers import NOISE_PERCENTAGE  # noqa: E402
from bridge import (  # noqa: E402
    ACTIONS,
    TARGET,
    HelperServer,
    InProcess,
    SimgymLane,
    SimgymUnary,
    SimgymVector,
    proc_cpu_seconds,
)

SAMPLE = REPO / "sdk" / "node" / "bin" / "sample.js"
SERVERS = ("py", "py-pure", "js")


class NodeServer(HelperServer):
    """The JS sample as a child process (``HelperServer`` runs ``python``: here ``node``)."""

    def __init__(self, name: str, args: list[str]) -> None:
        node = shutil.which("node")
        if node is None:
            raise SystemExit("node not found: the JS sample needs Node.js >= 18 (and make)")
        super().__init__(name, [str(SAMPLE), *args, "--log-level", "WARNING"], python=node)


def make_server(name: str, transport: str) -> Any:
    """A started-later server of kind ``name`` (py, py-pure, js) on ``transport``."""
    from simserver.process import ServerProcess

    args = ["--log-level", "WARNING", "--max-sessions", "256"]
    if name == "js":
        where = ["--unix", "{dir}/js.sock"] if transport == "unix" else ["--port", "0"]
        return NodeServer(f"js-{transport}", [*where, "--max-sessions", "256"])
    env = {"SIMGYM_CSTR_NATIVE": "0"} if name == "py-pure" else {}
    return ServerProcess(TARGET, workdir=REPO, transport=transport, args=args, env=env)


class NodeInProcess:
    """The JS sim called directly, in a node child: its own timing of ``steps`` steps."""

    def __init__(self, steps: int, repeats: int) -> None:
        job = {"actions": ACTIONS, "steps": steps, "repeats": repeats, "noise": NOISE_PERCENTAGE}
        node = shutil.which("node") or "node"
        out = subprocess.run(
            [node, str(BENCH / "_node_inproc.mjs")],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
        self.results = [json.loads(line) for line in out.splitlines()]


@dataclass
class Case:
    """One client against one server: µs per env step per repeat."""

    key: str
    label: str
    server: str  # py, py-pure, js
    steps: int
    make: Callable[[str], Any]
    transport: str = "unix"
    client: Any = None
    pid: int | None = None
    error: str | None = None
    wall: dict[int, float] = field(default_factory=dict)
    server_cpu: dict[int, float] = field(default_factory=dict)

    def measure(self, rep: int) -> None:
        gc.collect()
        s0 = proc_cpu_seconds(self.pid)
        t0 = time.perf_counter()
        done = self.client.run(self.steps)
        wall = time.perf_counter() - t0
        s1 = proc_cpu_seconds(self.pid)
        self.wall[rep] = wall / done * 1e6
        if s0 is not None and s1 is not None:
            self.server_cpu[rep] = (s1 - s0) / done * 1e6


# key, label, transport, env steps per repeat (full run), client factory
KINDS: list[tuple[str, str, str, int, Callable[[str], Any]]] = [
    ("unary-tcp", "RemoteSession.step (unary)", "tcp", 2000, SimgymUnary),
    ("stream1", "PackedStream, K=1", "unix", 3000, lambda a: SimgymLane(a, 1)),
    ("sock1", "packed socket, K=1 (SimEnv's on unix)", "unix", 6000,
     lambda a: SimgymLane(a, 1, socket=True)),
    ("stream64", "PackedStream, K=64", "unix", 25600, lambda a: SimgymLane(a, 64)),
    ("sock64", "packed socket, K=64", "unix", 25600, lambda a: SimgymLane(a, 64, socket=True)),
    ("vec16", "SimVectorEnv.step, K=16, packed socket", "unix", 16000,
     lambda a: SimgymVector(a, 16, socket=True)),
]  # fmt: skip


def inprocess(steps: int, repeats: int) -> dict[str, list[float]]:
    """µs per step of each sim called directly (no server), per repeat."""
    out: dict[str, list[float]] = {"py": [], "py-pure": [], "js": []}
    for name, native in (("py", None), ("py-pure", "0")):
        saved = os.environ.pop("SIMGYM_CSTR_NATIVE", None)
        if native is not None:
            os.environ["SIMGYM_CSTR_NATIVE"] = native
        try:
            sim = InProcess()
            sim.run(min(steps, 5000))  # warm-up
            for _ in range(repeats):
                t0 = time.perf_counter()
                sim.run(steps)
                out[name].append((time.perf_counter() - t0) / steps * 1e6)
        finally:
            os.environ.pop("SIMGYM_CSTR_NATIVE", None)
            if saved is not None:
                os.environ["SIMGYM_CSTR_NATIVE"] = saved
    out["js"] = [r["us"] for r in NodeInProcess(steps, repeats).results]
    return out


def ratio(a: Case | None, b: Case | None) -> float | None:
    """Median over repeats of a's µs per step over b's, both measured in the same repeat."""
    if a is None or b is None:
        return None
    pairs = [a.wall[r] / b.wall[r] for r in a.wall if r in b.wall]
    return statistics.median(pairs) if pairs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps, 1 repeat")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    scale = 0.05 if args.quick else 1.0
    repeats = 1 if args.quick else args.repeats

    servers: dict[tuple[str, str], Any] = {}
    addresses: dict[tuple[str, str], str] = {}
    cases: list[Case] = []
    try:
        for server in SERVERS:
            for transport in ("unix", "tcp"):
                proc = make_server(server, transport)
                servers[server, transport] = proc
                if isinstance(proc, HelperServer):
                    addresses[server, transport] = proc.start()
                else:
                    proc.start(timeout=60)
                    addresses[server, transport] = proc.address
        for key, label, transport, steps, make in KINDS:
            for server in SERVERS:
                case = Case(key, label, server, max(64, int(steps * scale)), make, transport)
                proc = servers[server, transport]
                case.pid = proc.pid if isinstance(proc, HelperServer) else proc.proc.pid
                try:
                    case.client = make(addresses[server, transport])
                    case.client.run(min(case.steps, 500))  # warm-up (JIT, connections)
                except Exception as exc:  # a case that cannot run is reported, not fatal
                    case.error = f"{type(exc).__name__}: {exc}"
                cases.append(case)
        inproc_steps = max(1000, int(30000 * scale))
        inproc = inprocess(inproc_steps, repeats)
        live = [c for c in cases if c.error is None]
        for rep in range(repeats):
            shift = rep % max(1, len(live))
            for case in live[shift:] + live[:shift]:
                case.measure(rep)
    finally:
        for case in cases:
            if case.client is not None:
                case.client.close()
        for proc in servers.values():
            proc.cleanup() if isinstance(proc, HelperServer) else proc.stop()

    result = report(cases, inproc)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def report(cases: list[Case], inproc: dict[str, list[float]]) -> dict[str, Any]:
    """Print the table; return it as data."""
    by = {(c.key, c.server): c for c in cases}
    med = statistics.median
    header = (
        f"{'case':40s} {'py µs':>7s} {'py-pure':>7s} {'js µs':>7s} {'js/py':>6s} "
        f"{'js/pure':>7s} {'srv CPU py/pure/js µs':>22s}"
    )
    print(header)
    print("-" * len(header))
    py, pure, js = (med(inproc[k]) for k in ("py", "py-pure", "js"))
    print(f"{'sim called in-process (no transport)':40s} {py:7.2f} {pure:7.2f} {js:7.2f} "
          f"{js / py:6.2f} {js / pure:7.2f}")  # fmt: skip
    rows: list[dict[str, Any]] = [
        {"case": "in-process", "us": {"py": py, "py-pure": pure, "js": js}}
    ]
    for key, label, _transport, _steps, _make in KINDS:
        c = {s: by.get((key, s)) for s in SERVERS}
        if any(x is None or x.error or not x.wall for x in c.values()):
            why = next((x.error for x in c.values() if x is not None and x.error), "no data")
            print(f"{label:40s} n/a: {why}")
            rows.append({"case": key, "error": why})
            continue
        us = {s: med(c[s].wall.values()) for s in SERVERS}  # type: ignore[union-attr]
        cpu = {s: med(c[s].server_cpu.values()) if c[s].server_cpu else None for s in SERVERS}  # type: ignore[union-attr]
        r_py, r_pure = ratio(c["js"], c["py"]), ratio(c["js"], c["py-pure"])
        cpu_text = "/".join(f"{cpu[s]:.1f}" if cpu[s] is not None else "?" for s in SERVERS)
        print(
            f"{label:40s} {us['py']:7.1f} {us['py-pure']:7.1f} {us['js']:7.1f} "
            f"{r_py or 0:6.2f} {r_pure or 0:7.2f} {cpu_text:>22s}"
        )
        rows.append({"case": key, "label": label, "us": us, "server_cpu_us": cpu,
                     "js_over_py": r_py, "js_over_py_pure": r_pure})  # fmt: skip
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"\nnode {node}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    return {"rows": rows, "node": node, "python": sys.version.split()[0]}


if __name__ == "__main__":
    main()
