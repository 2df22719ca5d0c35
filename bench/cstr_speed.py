"""Time one CSTR control step: the sample ``examples/cstr/sim.py`` vs the faithful reference.

The sample runs twice, on its compiled accelerator (``_cstr_native``, when installed: what
``CSTR()`` uses) and on its pure-Python path (``CSTR(native=False)``); all three run the same
workloads in the same process, interleaved repeat by repeat so that machine load hits them
alike: whole episodes (reset, then step + termination() + truncation() until the
episode ends) over Cref_signal 1-5, with
* zero actions (the plant settles; cheap to integrate),
* seeded uniform random actions in [-10, 10] K (an untrained agent: often near runaway, where
  the dynamics are fast and integration is most expensive),
* a feedforward + proportional controller tracking Cref (a stand-in for a trained agent:
  mostly at the high-conversion point).
Prints the median µs per step of each (the policy's own cost included) and each path's ratio
to the reference.

    .venv/bin/python bench/cstr_speed.py [--steps 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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


Policy = Callable[[int, dict], float]  # (step index, states) -> Tc_adjust


def zero_policy(n: int, states: dict) -> float:
    return 0.0


def random_policy(steps: int) -> Policy:
    rng = random.Random(0)
    actions = [rng.uniform(-10, 10) for _ in range(steps)]
    return lambda n, states: actions[n]


def tracking_policy(n: int, states: dict) -> float:
    """Feedforward coolant for the reference plus a P term (a stand-in for a trained agent)."""
    # Steady-state coolant: 292 K at Cref = 8.5698, about 305 K at Cref = 2.
    feedforward = 292.0 + (8.5698 - states["Cref"]) / 6.5698 * 13.03
    return feedforward + 2.0 * (states["Cr"] - states["Cref"]) - states["Tc"]


def run(make: Callable[[], Any], policy: Policy, steps: int, noise: float) -> float:
    """Seconds per step over whole episodes until `steps` steps are done."""
    sim = make()
    episode = 0
    n = 0
    started = time.perf_counter()
    while n < steps:
        states = sim.reset({"Cref_signal": episode % 5 + 1, "noise_percentage": noise})
        episode += 1
        while n < steps:
            states = sim.step({"Tc_adjust": policy(n, states)})
            n += 1
            if sim.termination() or sim.truncation():
                break
    return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per repeat (>= 2000)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    if args.steps < 2000:
        parser.error("--steps must be >= 2000")
    sample, reference = load_fast(), load_reference()
    paths: dict[str, Callable[[], Any]] = {"python": functools.partial(sample, native=False)}
    if sample().implementation == "native":
        paths = {"native": functools.partial(sample, native=True), **paths}
    workloads: dict[str, tuple[Policy, float]] = {
        "zero actions, noise 0%": (zero_policy, 0.0),
        "random actions, noise 5%": (random_policy(args.steps), 5.0),
        "tracking (P), noise 5%": (tracking_policy, 5.0),
    }
    print(f"Python {sys.version.split()[0]}, {args.steps} steps x {args.repeats} repeats")
    if "native" in paths:
        print("the sample: CSTR() steps with the native accelerator (_cstr_native)")
    else:
        print("the sample: CSTR() runs pure Python (_cstr_native is not installed)")
    header = f"{'workload':28s}"
    for path in paths:
        header += f" {path + ' µs/step':>16s}"
    header += f" {'reference µs/step':>18s}"
    for path in paths:
        header += f" {path + ' ratio':>13s}"
    print(header)
    # The reference prints on every terminal condition; keep that out of the timing output.
    with open(os.devnull, "w") as devnull:
        for name, (policy, noise) in workloads.items():
            times: dict[str, list[float]] = {path: [] for path in paths}
            ref_t: list[float] = []
            for _ in range(args.repeats):
                for path, make in paths.items():
                    times[path].append(run(make, policy, args.steps, noise))
                with contextlib.redirect_stdout(devnull):
                    ref_t.append(run(reference, policy, args.steps, noise))
            r = statistics.median(ref_t) * 1e6
            medians = {path: statistics.median(t) * 1e6 for path, t in times.items()}
            line = f"{name:28s}"
            for m in medians.values():
                line += f" {m:16.2f}"
            line += f" {r:18.1f}"
            for m in medians.values():
                line += f" {r / m:12.1f}x"
            print(line)


if __name__ == "__main__":
    main()
