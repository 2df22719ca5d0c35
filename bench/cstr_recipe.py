"""The shipped CSTR recipe, end to end: train it, then evaluate the final policy deterministically.

1. Trains ``examples/cstr/train.yaml`` (PPO, 1 env runner x 16 envs, one sidecar sim server,
   20 minutes; ``--max-time 600`` for the 10-minute figure) with ``launcher.train.train()``;
   the run folder goes to ``runs/`` under the current folder (git-ignored), as ``simgym
   train`` would put it.
2. Loads the final checkpoint's policy with ``RLModule.from_checkpoint`` (no Ray) and drives a
   ``gymclient.SimEnv`` through a real ``simserver`` hosting ``examples/cstr/sim.py:CSTR``; the
   deterministic action is the mean of the Gaussian (first half of ``action_dist_inputs``).
3. Same fixed scenarios for the trained policy and the zero-action policy (coolant never moved):
   ``Cref_signal`` 1-5 x seeds 0-2 x ``noise_percentage`` 0 and 5, each scenario reset with
   ``SimEnv.reset(seed=..., options={"config": {...}})``.

Prints per policy: mean per-step reward, mean episode return, mean final
``kpi_rms_conc_error`` (``info["states"]``), termination rate; overall and per noise level.

    .venv/bin/python bench/cstr_recipe.py                      # train 20 min, then evaluate
    .venv/bin/python bench/cstr_recipe.py --max-time 60        # a short training (development)
    .venv/bin/python bench/cstr_recipe.py --run runs/cstr-ppo-...   # evaluate an existing run
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CSTR_DIR = REPO / "examples" / "cstr"
TRAIN_SPEC = CSTR_DIR / "train.yaml"
ENV_SPEC = CSTR_DIR / "spec.yaml"
SIGNALS = (1, 2, 3, 4, 5)
SEEDS = (0, 1, 2)
NOISES = (0, 5)

Policy = Callable[[np.ndarray], np.ndarray]


def train_recipe(spec: Path, max_time: float | None) -> dict[str, Any]:
    """Train with ``launcher.train.train()``; returns the run folder, wall time and counters."""
    import ray

    from launcher.train import train
    from launcher.trainspec import load_train_spec

    train_spec = load_train_spec(spec)
    started = time.monotonic()
    # The same Ray start as `simgym train` (launcher.rllib_setup.init_ray), but always a private
    # instance: a bare ray.init() joins a cluster someone else started with `ray start`.
    ray.init(
        address="local",
        num_cpus=train_spec.resources.cpus,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    last: dict[str, Any] = {}

    def progress(p: Any) -> None:
        last.update(iteration=p.iteration, env_steps=p.env_steps, elapsed=p.elapsed)
        reward = p.metrics.get("episode_reward_mean")
        if p.iteration % 10 == 0:
            print(
                f"  iter {p.iteration:4d}  {p.elapsed:6.0f} s  {p.env_steps:9d} env steps  "
                f"episode_reward_mean {reward if reward is None else round(reward, 2)}",
                flush=True,
            )

    try:
        run_dir, state = train(spec, max_time=max_time, on_progress=progress)
    finally:
        ray.shutdown()
    wall = time.monotonic() - started
    return {
        "run_dir": str(run_dir),
        "wall_s": wall,
        "train_loop_s": last.get("elapsed"),
        "iterations": state.iteration,
        "env_steps": state.env_steps,
        "episodes": state.episodes,
        "stop_reason": state.stop_reason,
        "checkpoint": state.checkpoints[-1],
    }


def curve(run_dir: Path) -> list[dict[str, str]]:
    """``metrics.csv`` rows of a run."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def load_policy(checkpoint: Path) -> Policy:
    """The deterministic policy of a checkpoint: the Gaussian's mean, no Ray needed."""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(
        str(checkpoint / "learner_group" / "learner" / "rl_module" / "default_policy")
    )
    module.eval()

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.as_tensor(obs[None], dtype=torch.float32)})
        inputs = out["action_dist_inputs"][0].numpy()
        return inputs[: inputs.shape[0] // 2]

    return act


def zero_policy(obs: np.ndarray) -> np.ndarray:
    """Tc_adjust 0: the agent's 0 maps to the middle of [-10, 10] K."""
    return np.zeros(1, np.float32)


def evaluate(env: Any, policy: Policy) -> list[dict[str, Any]]:
    """One episode per fixed scenario; returns per-episode figures."""
    episodes = []
    for noise in NOISES:
        for signal in SIGNALS:
            for seed in SEEDS:
                config = {"Cref_signal": signal, "noise_percentage": noise}
                obs, info = env.reset(seed=seed, options={"config": config})
                rewards: list[float] = []
                terminated = truncated = False
                while not (terminated or truncated):
                    obs, reward, terminated, truncated, info = env.step(policy(obs))
                    rewards.append(float(reward))
                episodes.append(
                    {
                        "signal": signal,
                        "seed": seed,
                        "noise": noise,
                        "steps": len(rewards),
                        "return": sum(rewards),
                        "terminated": bool(terminated),
                        "final_kpi": float(info["states"]["kpi_rms_conc_error"]),
                    }
                )
    return episodes


def summarise(episodes: list[dict[str, Any]]) -> dict[str, float]:
    """Mean per-step reward (all steps pooled), mean return, mean final KPI, termination rate."""
    steps = sum(e["steps"] for e in episodes)
    return {
        "episodes": len(episodes),
        "reward_per_step": sum(e["return"] for e in episodes) / steps,
        "episode_return": statistics.fmean(e["return"] for e in episodes),
        "episode_len": steps / len(episodes),
        "final_kpi_rms_conc_error": statistics.fmean(e["final_kpi"] for e in episodes),
        "termination_rate": sum(e["terminated"] for e in episodes) / len(episodes),
    }


def print_table(results: dict[str, list[dict[str, Any]]]) -> None:
    header = (
        f"{'policy':<8} {'noise':>5} {'episodes':>8} {'reward/step':>11} {'return':>8} "
        f"{'length':>6} {'final KPI':>9} {'terminated':>10}"
    )
    print(header)
    for name, episodes in results.items():
        for noise in (*NOISES, None):
            subset = [e for e in episodes if noise is None or e["noise"] == noise]
            s = summarise(subset)
            label = "all" if noise is None else f"{noise}%"
            print(
                f"{name:<8} {label:>5} {s['episodes']:>8} {s['reward_per_step']:>11.4f} "
                f"{s['episode_return']:>8.2f} {s['episode_len']:>6.1f} "
                f"{s['final_kpi_rms_conc_error']:>9.3f} {s['termination_rate']:>10.0%}"
            )
    print("\nper Cref_signal (both noise levels, 3 seeds): reward/step, terminated")
    for name, episodes in results.items():
        parts = []
        for signal in SIGNALS:
            s = summarise([e for e in episodes if e["signal"] == signal])
            parts.append(f"{signal}: {s['reward_per_step']:.3f} {s['termination_rate']:.0%}")
        print(f"  {name:<8} " + "   ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=TRAIN_SPEC, help="training spec")
    parser.add_argument("--max-time", type=float, help="override stop.max_time (seconds)")
    parser.add_argument("--run", type=Path, help="evaluate this run folder; do not train")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import ray
    import torch

    from gymclient.env import SimEnv
    from simserver.process import ServerProcess

    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, ray "
        f"{ray.__version__}, torch {torch.__version__}; load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    report: dict[str, Any] = {}
    if args.run is None:
        print(f"training {args.spec} (max_time {args.max_time or 'from the spec'})", flush=True)
        report["training"] = train_recipe(args.spec, args.max_time)
        run_dir = Path(report["training"]["run_dir"])
        checkpoint = Path(report["training"]["checkpoint"])
    else:
        run_dir = args.run.resolve()
        state = json.loads((run_dir / "run.json").read_text())
        checkpoint = Path(state["checkpoints"][-1])
        report["training"] = {
            "run_dir": str(run_dir),
            "iterations": state["iteration"],
            "env_steps": state["env_steps"],
            "episodes": state["episodes"],
            "stop_reason": state["stop_reason"],
            "checkpoint": str(checkpoint),
        }
    rows = curve(run_dir)
    if rows:
        first, final = rows[0], rows[-1]
        report["training"]["episode_reward_mean_first"] = first.get("episode_reward_mean")
        report["training"]["episode_reward_mean_final"] = final.get("episode_reward_mean")
        report["training"]["env_steps_per_s_final"] = final.get("env_steps_per_s")
    t = report["training"]
    print(f"\nrun: {t['run_dir']}")
    if "wall_s" in t:
        print(
            f"training: {t['wall_s']:.0f} s wall in all (train loop {t['train_loop_s']:.0f} s), "
            f"{t['iterations']} iterations, {t['env_steps']} env steps, {t['episodes']} episodes; "
            f"stopped: {t['stop_reason']}"
        )
    else:
        print(f"training: {t['iterations']} iterations, {t['env_steps']} env steps")
    if rows:
        print(
            f"episode_reward_mean (training, stochastic policy): first iteration "
            f"{t['episode_reward_mean_first']}, last {t['episode_reward_mean_final']}"
        )
    print(f"checkpoint: {checkpoint}\n")

    results: dict[str, list[dict[str, Any]]] = {}
    with ServerProcess(f"{CSTR_DIR / 'sim.py'}:CSTR", workdir=CSTR_DIR) as server:
        assert server.address is not None
        env = SimEnv({"spec": str(ENV_SPEC), "address": server.address})
        try:
            results["trained"] = evaluate(env, load_policy(checkpoint))
            results["zero"] = evaluate(env, zero_policy)
        finally:
            env.close()
    print_table(results)
    report["evaluation"] = {name: summarise(eps) for name, eps in results.items()}
    report["episodes"] = results
    trained, zero = report["evaluation"]["trained"], report["evaluation"]["zero"]
    verdict = "above" if trained["reward_per_step"] > zero["reward_per_step"] else "NOT above"
    print(
        f"\ntrained mean reward/step {trained['reward_per_step']:.4f} vs zero-action "
        f"{zero['reward_per_step']:.4f}: {verdict} "
        f"(difference {trained['reward_per_step'] - zero['reward_per_step']:+.4f})"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
