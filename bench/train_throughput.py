"""Training throughput on CSTR: the env in-process (a) vs through simgym's bridge (b).

Both train the shipped recipe's RLlib config (examples/cstr/train.yaml via
``launcher.rllib_setup.build_config``: PPO, 4000-step batches, 1 env runner x 16 envs, seed 0;
``algo=IMPALA`` swaps in the product's default algorithm with simgym's defaults for it):

* (a) ``local``: an in-process vector env applying the same spec codec (``DeclarativeCodec``:
  observation/action normalisation, reward, lessons) to ``examples/cstr/sim.py`` instances,
  no gRPC (bench/_train_local.py);
* (b) ``bridge``: simgym's ``SimVectorEnv`` talking to sidecar sim servers
  (``launcher.sims.start_sims``, unix sockets), one packed message per server and step,
  over each sidecar's packed socket (``bridge:socket=0``: over the gRPC ``PackedStream``).

Every trial runs in a fresh process (Ray started and stopped in it), trains ``--warmup`` seconds
unmeasured, then ``--seconds`` measured; env steps/s come from RLlib's
``num_env_steps_sampled_lifetime`` over the measured window. Configurations are interleaved
(a, b, a, b, ...) ``--repeats`` times and medians printed, with (b)/(a) (target: >= 0.90), both
as the ratio of the medians and round by round (each round's pair ran back to back).

    .venv/bin/python bench/train_throughput.py                       # a,b x2, 90 s each
    .venv/bin/python bench/train_throughput.py --seconds 30 --repeats 1
    .venv/bin/python bench/train_throughput.py --configs local bridge bridge:envs=64,servers=2 \
        local:envs=64
    .venv/bin/python bench/train_throughput.py --configs local bridge local:algo=IMPALA \
        bridge:algo=IMPALA

A configuration is ``local`` or ``bridge`` with optional
``:envs=N,runners=N,servers=N,socket=0|1,wait=S,algo=NAME,pin=CPU`` (servers, socket: bridge
only; wait: IMPALA's ``timeout_s_sampler_manager``, seconds the driver blocks for samples instead
of polling; pin: every thread of the env runners and sim servers on that one core).
Ratios pair each bridge configuration with the local one of the same algorithm, runners, envs
and wait when it was measured, else with the first local one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TARGET = 0.90


def parse_config(text: str) -> dict[str, Any]:
    """``bridge:envs=64,servers=2`` -> {"mode": "bridge", "envs": 64, "servers": 2}."""
    mode, _, rest = text.partition(":")
    if mode not in ("local", "bridge"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected local[:...] or bridge[:...]")
    out: dict[str, Any] = {"mode": mode, "label": text}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key == "algo":
            # Another algorithm than the recipe's, with simgym's defaults for it (the
            # recipe's tuned settings belong to its own algorithm).
            if value not in ("IMPALA", "APPO", "PPO"):
                raise argparse.ArgumentTypeError(f"{text!r}: algo is IMPALA, APPO or PPO")
            out["algorithm"] = value
            continue
        if key == "wait":
            # IMPALA's timeout_s_sampler_manager: the driver blocks up to this long for
            # samples instead of polling (the default, 0, spins a core).
            try:
                out["config"] = {"timeout_s_sampler_manager": float(value)}
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r}: bad setting {item!r}") from None
            continue
        if key not in ("envs", "runners", "servers", "socket", "pin") or not value.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r}: bad setting {item!r}")
        if key in ("servers", "socket") and mode != "bridge":
            raise argparse.ArgumentTypeError(f"{text!r}: {key} is for bridge only")
        out[key] = int(value)
    return out


def run_in_subprocess(options: dict[str, Any]) -> dict[str, Any]:
    """One trial in a fresh interpreter (a clean Ray, no state shared between trials)."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--trial", json.dumps(options)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
    raise RuntimeError(f"trial {options['label']} failed (exit {proc.returncode})")


def machine_line() -> str:
    import platform

    import ray
    import torch

    load = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"ray {ray.__version__}, torch {torch.__version__}; "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def _key(c: dict[str, Any]) -> tuple[Any, ...]:
    return (
        c.get("algorithm"),
        c.get("runners"),
        c.get("envs"),
        json.dumps(c.get("config"), sort_keys=True),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="measured window per trial")
    parser.add_argument("--warmup", type=float, default=20.0, help="unmeasured training first")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the configurations")
    parser.add_argument(
        "--configs", nargs="+", type=parse_config, default=None, help="default: local bridge"
    )
    parser.add_argument("--json", type=Path, help="also write every trial's figures here")
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.trial:
        sys.path.insert(0, str(BENCH))
        from _train_trial import run_trial

        result = run_trial(json.loads(args.trial))
        print("RESULT " + json.dumps(result), flush=True)
        return

    configs = args.configs or [parse_config("local"), parse_config("bridge")]
    print(machine_line())
    print(
        f"{len(configs)} configurations x {args.repeats} rounds, "
        f"{args.warmup:.0f} s warm-up + {args.seconds:.0f} s measured each",
        flush=True,
    )
    trials: dict[str, list[dict[str, Any]]] = {c["label"]: [] for c in configs}
    for round_ in range(args.repeats):
        for c in configs:
            options = {**c, "seconds": args.seconds, "warmup": args.warmup}
            started = time.monotonic()
            r = run_in_subprocess(options)
            trials[c["label"]].append(r)
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_per_s"].items())
            extra = (
                f", bridge {r['bridge_step_ms']:.3f} ms/step, sim {r['sim_step_ms']:.3f} ms/step"
                if r.get("bridge_step_ms") is not None
                else ""
            )
            if r.get("sample_s") is not None and r.get("learn_s") is not None:
                extra += (
                    f"; per iteration: sample {r['sample_s']:.2f} s, learn {r['learn_s']:.2f} s"
                )
            print(
                f"round {round_ + 1} {c['label']:<28} {r['steps_per_s']:8.0f} env steps/s "
                f"({r['env_steps']} in {r['seconds']:.1f} s, {r['iterations']} iters); "
                f"CPU/s: {cpu}; machine busy {r['machine_busy_cpus']:.2f} CPUs "
                f"(others {r['other_cpus']:.2f}){extra}; "
                f"trial {time.monotonic() - started:.0f} s",
                flush=True,
            )

    medians = {
        label: statistics.median(r["steps_per_s"] for r in rs) for label, rs in trials.items()
    }
    print("\nmedian env steps/s")
    for label, value in medians.items():
        print(f"  {label:<28} {value:8.0f}")
    locals_ = [c for c in configs if c["mode"] == "local"]
    ratios = {}
    if locals_:
        for c in configs:
            if c["mode"] != "bridge":
                continue
            base = next((a for a in locals_ if _key(a) == _key(c)), locals_[0])
            ratio = medians[c["label"]] / medians[base["label"]]
            # Round by round: each pair ran back to back, so the machine's slow drift (±15 %
            # between trials here) cancels; their median is the steadier estimate.
            paired = [
                b["steps_per_s"] / a["steps_per_s"]
                for a, b in zip(trials[base["label"]], trials[c["label"]], strict=True)
            ]
            ratios[c["label"]] = {"base": base["label"], "ratio": ratio, "paired": paired}
            verdict = "meets" if ratio >= TARGET else "misses"
            print(
                f"  ratio {c['label']} / {base['label']} = {ratio:.3f} "
                f"({verdict} the {TARGET:.0%} target); per round "
                f"{', '.join(f'{x:.2f}' for x in paired)}, median {statistics.median(paired):.3f}"
            )
    if args.json:
        args.json.write_text(
            json.dumps({"trials": trials, "medians": medians, "ratios": ratios}, indent=2)
        )


if __name__ == "__main__":
    main()
