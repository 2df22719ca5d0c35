"""Scaling: env steps/s of training as sims get slower, sim processes, sessions and nodes grow.

The sims (``bench/_scaling_sims.py``) cost what their name says per step: ``Cpu01``, ``Cpu1``,
``Cpu5`` compute 0.1 / 1 / 5 ms of CPU time in Python with the GIL held (as Python sims do),
``Io20`` waits 20 ms with the GIL released (a sim waiting on I/O), ``Cpu0`` costs nothing
(what the rest of a step costs). Every case trains PPO (or IMPALA) with simgym's RLlib
config (``launcher.rllib_setup.build_config``) in a fresh process (``bench/_scaling_trial.py``)
for a warm-up, then a measured window, and reports env steps/s from RLlib's own counter and
the CPU time per env step of each role (learner/driver, env runners, sim servers). Cases:

* ``local``: RLlib's env directly: the sims in the env runner's process (no transport);
* ``bridge``: simgym's ``SimVectorEnv`` over ``servers`` sidecar simservers (packed socket);
* ``nodes``: two Ray nodes on this machine (1 CPU each), each with its own sidecars, one env
  runner per node stepping its own node's sims (as ``simgym node`` places them).

Groups of cases (the first case of a group is its baseline; every ratio is against it, in
the same run):

* ``cpu``: the 1 ms sim in-process (one env runner) vs through the bridge with 1 and 2 sim
  processes, one env runner or two (target: 2 processes >= 1.6x the in-process baseline);
  in-process with two env runners for comparison;
* ``io``: the 20 ms waiting sim on one server, 1, 8, 64 sessions in one env runner and
  64 in two (target: 64 sessions >= 40x one session);
* ``cost``: 0.1 and 5 ms sims in-process vs the bridge with 2 processes; the 0 ms sim
  through the bridge (the per-step cost of everything but the sim: the capacity model's
  inputs, docs/performance.md "Scaling");
* ``nodes``: the 1 ms sim, two env runners, on one Ray node (2 CPUs) vs two Ray nodes of
  1 CPU each.

    .venv/bin/python bench/scaling.py --quick                 # smoke run, < 2 min
    .venv/bin/python bench/scaling.py --groups cpu --json cpu.json
    .venv/bin/python bench/scaling.py --groups io cost nodes --json rest.json
    .venv/bin/python bench/scaling.py --cases local:sim=Cpu1 bridge:sim=Cpu1,servers=2,epochs=2

A case is ``local``, ``bridge`` or ``nodes`` with optional ``:key=value,...``: ``sim``
(class in bench/_scaling_sims.py), ``envs`` (per env runner), ``runners``, ``servers`` (per
node), ``algo`` (PPO, IMPALA, APPO), ``batch`` (train batch), ``epochs``, ``mb`` (minibatch),
``wait`` (IMPALA/APPO: seconds the driver blocks for samples instead of polling).
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
SIMS = ("Cpu0", "Cpu01", "Cpu1", "Cpu5", "Io20")
COST_MS = {"Cpu0": 0.0, "Cpu01": 0.1, "Cpu1": 1.0, "Cpu5": 5.0, "Io20": 20.0}
INT_KEYS = ("envs", "runners", "servers", "nodes", "batch", "epochs", "mb")

# The settings for the targets on 2 cores (docs/performance.md, "Scaling"): PPO with the
# cheapest learner (one pass over each 4000-step batch in one minibatch), so that learning
# time does not dilute the sampler's speed-up; every case of a group trains the same. The
# 20 ms waiting sim trains APPO (learning beside sampling; its 1-session case would wait
# ~90 s for a PPO batch), the driver blocking 0.5 s for samples instead of polling.
CPU_SETTINGS = "batch=4000,epochs=1,mb=4000"
IO_SETTINGS = "algo=APPO,wait=0.5"
GROUPS: dict[str, list[str]] = {
    "cpu": [
        f"local:sim=Cpu1,envs=16,{CPU_SETTINGS}",
        f"bridge:sim=Cpu1,envs=16,servers=1,{CPU_SETTINGS}",
        f"bridge:sim=Cpu1,envs=16,servers=2,{CPU_SETTINGS}",
        # The setting that reaches the target: two env runners overlap one's compute with
        # the other's sims (one runner is lock-step: its sims wait while it computes).
        f"bridge:sim=Cpu1,runners=2,envs=16,servers=2,{CPU_SETTINGS}",
        f"local:sim=Cpu1,runners=2,envs=16,{CPU_SETTINGS}",
    ],
    "io": [
        f"bridge:sim=Io20,envs=1,{IO_SETTINGS}",
        f"bridge:sim=Io20,envs=8,{IO_SETTINGS}",
        f"bridge:sim=Io20,envs=64,{IO_SETTINGS}",
        f"bridge:sim=Io20,runners=2,envs=32,{IO_SETTINGS}",
    ],
    "cost": [
        f"bridge:sim=Cpu0,envs=16,servers=2,{CPU_SETTINGS}",
        f"local:sim=Cpu01,envs=16,{CPU_SETTINGS}",
        f"bridge:sim=Cpu01,envs=16,servers=2,{CPU_SETTINGS}",
        f"local:sim=Cpu5,envs=16,{CPU_SETTINGS}",
        f"bridge:sim=Cpu5,envs=16,servers=2,{CPU_SETTINGS}",
    ],
    "nodes": [
        f"bridge:sim=Cpu1,runners=2,envs=8,servers=1,{CPU_SETTINGS}",
        f"nodes:sim=Cpu1,runners=2,envs=8,servers=1,{CPU_SETTINGS}",
    ],
}
QUICK = [
    "local:sim=Cpu01,envs=4,batch=400,epochs=1,mb=200",
    "bridge:sim=Cpu01,envs=4,servers=2,batch=400,epochs=1,mb=200",
    "bridge:sim=Io20,envs=8,algo=APPO,wait=0.5",
]


def parse_case(text: str) -> dict[str, Any]:
    """``bridge:sim=Cpu1,servers=2`` -> {"mode": "bridge", "sim": "Cpu1", "servers": 2, ...}."""
    mode, _, rest = text.partition(":")
    if mode not in ("local", "bridge", "nodes"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected local, bridge or nodes[:...]")
    out: dict[str, Any] = {"mode": mode, "label": text, "sim": "Cpu1"}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key == "sim" and value in SIMS:
            out["sim"] = value
        elif key == "algo" and value.upper() in ("PPO", "IMPALA", "APPO"):
            out["algorithm"] = value.upper()
        elif key == "wait":
            out["wait"] = float(value)
        elif key in INT_KEYS and value.isdigit() and int(value) > 0:
            out[key] = int(value)
        else:
            raise argparse.ArgumentTypeError(f"{text!r}: bad setting {item!r}")
    if mode == "local" and out.get("servers"):
        raise argparse.ArgumentTypeError(f"{text!r}: servers is for bridge and nodes")
    out["config"] = rllib_config(out)
    return out


def rllib_config(case: dict[str, Any]) -> dict[str, Any]:
    """The training spec's ``config`` for a case (RLlib keys)."""
    algo = case.get("algorithm", "PPO")
    config: dict[str, Any] = {"min_time_s_per_iteration": 2}
    if "batch" in case:
        config["train_batch_size_per_learner"] = case["batch"]
        if algo == "PPO":
            # PPO wants fragment x envs x runners == batch (RLlib refuses a mismatch).
            sessions = max(case.get("runners", 1), 1) * case.get("envs", 16)
            config["rollout_fragment_length"] = max(case["batch"] // sessions, 1)
    if "epochs" in case:
        config["num_epochs"] = case["epochs"]
    if "mb" in case:
        config["minibatch_size"] = case["mb"]
    if "wait" in case and algo in ("IMPALA", "APPO"):
        config["timeout_s_sampler_manager"] = case["wait"]
    return config


def run_in_subprocess(options: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials in a fresh interpreter (a clean Ray, nothing shared with other runs).

    One trial per interpreter in a measurement; ``--quick`` runs its cases in one (saves
    Ray's and the learner's start-ups).
    """
    labels = ", ".join(o["label"] for o in options)
    for attempt in (1, 2):
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--trial", json.dumps(options)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("RESULT "):
                return list(json.loads(line[len("RESULT ") :]))
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        # Once more: on a loaded machine Ray's own start-up can time out.
        print(f"trial {labels} failed (exit {proc.returncode}, attempt {attempt})", flush=True)
    raise RuntimeError(f"trial {labels} failed twice")


def describe(r: dict[str, Any]) -> str:
    """One line: steps/s, CPU ms per env step by role, where an iteration's time goes."""
    cpu = ", ".join(f"{k} {v:.3f}" for k, v in r["cpu_ms_per_step"].items())
    parts = [
        f"{r['steps_per_s']:8.1f} env steps/s ({r['env_steps']} in {r['seconds']:.0f} s)",
        f"CPU ms/step: {cpu}",
        f"machine {r['machine_busy_cpus']:.2f} CPUs busy (others {r['other_cpus']:.2f})",
    ]
    if r.get("bridge_step_ms") is not None:
        parts.append(f"bridge {r['bridge_step_ms']:.3f} ms/step (sim {r['sim_step_ms']:.3f})")
    if r.get("sample_s") is not None and r.get("learn_s") is not None:
        parts.append(f"iteration: sample {r['sample_s']:.2f} s, learn {r['learn_s']:.2f} s")
    if r.get("runner_nodes"):
        parts.append(f"env runners on nodes {r['runner_nodes']}")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (< 2 min, no meaning)")
    parser.add_argument("--groups", nargs="+", choices=list(GROUPS), help="default: all")
    parser.add_argument("--cases", nargs="+", type=parse_case, help="instead of groups")
    parser.add_argument("--seconds", type=float, help="measured window per case (default 40)")
    parser.add_argument("--warmup", type=float, help="unmeasured training first (default 15)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the cases")
    parser.add_argument("--json", type=Path, help="write every figure and ratio here")
    parser.add_argument(
        "--model", nargs="+", type=Path, metavar="JSON",
        help="fit the capacity model to these runs' --json files, check it, print its table",
    )  # fmt: skip
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.model:
        model_report(args.model)
        return

    if args.trial:
        sys.path[:0] = [str(BENCH), str(REPO)]
        from _scaling_trial import run_trial, run_trials

        cases = json.loads(args.trial)
        results = run_trials(cases) if len(cases) > 1 else [run_trial(cases[0])]
        print("RESULT " + json.dumps(results), flush=True)
        return

    if args.cases:
        groups = {"cases": args.cases}
    elif args.quick:
        groups = {"quick": [parse_case(c) for c in QUICK]}
    else:
        groups = {g: [parse_case(c) for c in GROUPS[g]] for g in args.groups or GROUPS}
    seconds = args.seconds or (6.0 if args.quick else 40.0)
    warmup = args.warmup if args.warmup is not None else (0.0 if args.quick else 15.0)
    load = os.getloadavg()
    print(
        f"bench/scaling.py: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}; {warmup:.0f} s warm-up + {seconds:.0f} s measured per case, "
        f"{args.repeats} round(s)",
        flush=True,
    )
    trials: dict[str, dict[str, list[dict[str, Any]]]] = {
        g: {c["label"]: [] for c in cases} for g, cases in groups.items()
    }
    timing = {"seconds": seconds, "warmup": warmup}
    for round_ in range(args.repeats):
        for g, cases in groups.items():
            batches = [cases] if args.quick else [[c] for c in cases]
            for batch in batches:
                started = time.monotonic()
                results = run_in_subprocess([{**c, **timing} for c in batch])
                for c, r in zip(batch, results, strict=True):
                    trials[g][c["label"]].append(r)
                    print(
                        f"[{g} {round_ + 1}] {c['label']}: {describe(r)}; load {r['load']:.2f}; "
                        f"{time.monotonic() - started:.0f} s",
                        flush=True,
                    )
                if args.json:  # after every trial: a run cut short keeps what it measured
                    args.json.write_text(json.dumps({"load_at_start": load, "trials": trials}))
    summary = report(groups, trials)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"load_at_start": load, "seconds": seconds, "warmup": warmup, **summary,
                 "trials": trials},
                indent=2,
            )
        )  # fmt: skip


def model_report(paths: list[Path]) -> None:
    """Fit the capacity model (bench/_scaling_model.py) to runs, check it on them, tabulate."""
    sys.path.insert(0, str(BENCH))
    from _scaling_model import SIZES, best_settings, bottleneck, fit, predict_trial

    trials = [
        t
        for path in paths
        for group in json.loads(path.read_text())["trials"].values()
        for runs in group.values()
        for t in runs
    ]
    costs = fit(trials)
    print("per-step costs (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in costs.items()))
    cores = float(os.cpu_count() or 1)
    print(f"\n{'case':<58} {'measured':>9} {'model':>7} {'err':>6} {'model*':>7} {'err*':>6}")
    errors, errors_free = [], []
    for t in trials:
        model = predict_trial(costs, t, cores)
        # model*: the cores other work left this trial (its 'others' CPUs).
        free = max(cores - t["other_cpus"], 0.5)
        model_free = predict_trial(costs, t, free)
        err, err_free = model / t["steps_per_s"] - 1, model_free / t["steps_per_s"] - 1
        errors.append(abs(err))
        errors_free.append(abs(err_free))
        print(
            f"{t['label'][:58]:<58} {t['steps_per_s']:9.0f} {model:7.0f} {err:+6.0%} "
            f"{model_free:7.0f} {err_free:+6.0%}"
        )
    print(
        f"median |error|: {statistics.median(errors):.0%} ({cores:.0f} cores), "
        f"{statistics.median(errors_free):.0%} (cores left by other work)"
    )
    sims = ((0.1, False), (1.0, False), (5.0, False), (20.0, True))
    for sync in (False, True):
        algo = "PPO (sync, its learning time measured here)" if sync else "APPO (async)"
        print(f"\n{algo}: env steps/s, env runners x envs, sim processes per node, bound by")
        print("| size | nodes | 0.1 ms | 1 ms | 5 ms | 20 ms waiting |")
        print("|---|--:|--:|--:|--:|--:|")
        for name, (vcpus, gpu) in SIZES.items():
            for nodes in (1, 4):
                cells = []
                for sim_ms, waits in sims:
                    # A GPU size learns on its GPU (not measurable here): its row is the
                    # sampling its vCPUs can do, the learner left out.
                    use = {**costs, "learn": 0.0, "learner_cpu": 1e-9} if gpu else costs
                    rate, how = best_settings(use, sim_ms, waits, nodes, vcpus, sync)
                    binds = bottleneck(
                        use, sim_ms=sim_ms, waits=waits, mode="bridge",
                        runners=how["runners"], envs=how["envs"],
                        servers=how["servers_per_node"], nodes=nodes, cores=vcpus, sync=sync,
                    )  # fmt: skip
                    cells.append(
                        f"{rate:,.0f} ({how['runners']}x{how['envs']}, "
                        f"{how['servers_per_node']}; {binds})"
                    )
                label = f"{name} ({vcpus} vCPU{', ' + gpu if gpu else ''})"
                print(f"| {label} | {nodes} | " + " | ".join(cells) + " |")


def report(
    groups: dict[str, list[dict[str, Any]]], trials: dict[str, dict[str, list[dict[str, Any]]]]
) -> dict[str, Any]:
    """Print each group's medians and ratios to its first case; return them."""
    medians: dict[str, dict[str, float]] = {}
    ratios: dict[str, dict[str, float]] = {}
    for g, cases in groups.items():
        med = {
            c["label"]: statistics.median(r["steps_per_s"] for r in trials[g][c["label"]])
            for c in cases
        }
        base = cases[0]["label"]
        medians[g] = med
        ratios[g] = {label: v / med[base] for label, v in med.items()} if med[base] else {}
        print(f"\n{g}: median env steps/s, ratio to {base}")
        for label, v in med.items():
            print(f"  {label:<60} {v:9.1f}  x{ratios[g].get(label, float('nan')):.2f}")
    return {"medians": medians, "ratios": ratios}


if __name__ == "__main__":
    main()
