"""Time one CSTR control step: the fast ``examples/cstr/sim.py`` vs the faithful reference.

Both run the same workloads in the same process, interleaved repeat by repeat so that machine
load hits them alike: whole episodes (reset, then step + termination() + truncation() until the
episode ends) over Cref_signal 1-5, with zero actions and with seeded uniform random actions in
[-10, 10] K. Prints the median µs per step of each and the ratio.

    .venv/bin/python bench/cstr_speed.py [--steps 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CSTR_DIR = REPO / "examples" / "cstr"


def load_fast() -> type:
    spec = importlib.util.spec_from_file_location("cstr_fast_sim", CSTR_DIR / "sim.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CSTR


def load_reference() -> type:
    # The reference imports its helpers as `sim.<module>` from its own folder.
    sys.path.insert(0, str(CSTR_DIR / "reference"))
    try:
        from sim.simulator_model import SimulatorModel  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(CSTR_DIR / "reference"))
    return SimulatorModel


def run(make: Callable[[], Any], actions: list[float], noise: float) -> float:
    """Seconds per step over whole episodes until len(actions) steps are done."""
    sim = make()
    episode = 0
    n = 0
    started = time.perf_counter()
    while n < len(actions):
        sim.reset({"Cref_signal": episode % 5 + 1, "noise_percentage": noise})
        episode += 1
        while n < len(actions):
            sim.step({"Tc_adjust": actions[n]})
            n += 1
            if sim.termination() or sim.truncation():
                break
    return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per repeat (>= 2000)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    fast, reference = load_fast(), load_reference()
    rng = random.Random(0)
    workloads = {
        "zero actions, noise 0%": ([0.0] * args.steps, 0.0),
        "random actions, noise 5%": ([rng.uniform(-10, 10) for _ in range(args.steps)], 5.0),
    }
    print(f"Python {sys.version.split()[0]}, {args.steps} steps x {args.repeats} repeats")
    print(f"{'workload':28s} {'fast µs/step':>13s} {'reference µs/step':>18s} {'ratio':>7s}")
    # The reference prints on every terminal condition; keep that out of the timing output.
    with open(os.devnull, "w") as devnull:
        for name, (actions, noise) in workloads.items():
            fast_t: list[float] = []
            ref_t: list[float] = []
            for _ in range(args.repeats):
                fast_t.append(run(fast, actions, noise))
                with contextlib.redirect_stdout(devnull):
                    ref_t.append(run(reference, actions, noise))
            f = statistics.median(fast_t) * 1e6
            r = statistics.median(ref_t) * 1e6
            print(f"{name:28s} {f:13.2f} {r:18.1f} {r / f:6.1f}x")


if __name__ == "__main__":
    main()
