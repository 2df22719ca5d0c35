"""CartPole-v1 through simgym (hosted by simserver, Discrete(2)) vs RLlib's in-process CartPole.

Both sides train PPO with the hyperparameters of RLlib's tuned CartPole example
(``rllib/examples/algorithms/ppo/cartpole_ppo.py`` in ray 2.x, formerly
``tuned_examples/ppo/cartpole_ppo.py``): lr 3e-4, 6 epochs, vf_loss_coeff 0.01, one hidden
layer of 32 linear units with a shared value layer, and RLlib's PPO defaults for the rest
(2 env runners, 4000-step batches, minibatches of 128, gamma 0.99, clip 0.3).

* **rllib**: ``PPOConfig().environment("CartPole-v1")``, the env in the env runner's process.
* **simgym**: ``simserver gymnasium:CartPole-v1`` on a unix socket, the env spec below (the
  action ``{}`` takes the server's ``Discrete(2)``), and the config ``simgym train`` builds
  (``launcher.rllib_setup.build_config``: its env runner, ``SimVectorEnv``, callbacks), with
  the tuned example's settings on top. Observations are the spec's ranges mapped to [-1, 1].

It prints the episode return (RLlib's ``episode_return_mean``, a mean over recent episodes)
against env steps for both, side by side, the env steps each needed to reach a return of 400
and 450, and their ratio (simgym / rllib). ``--quick``: 20k env steps each (a smoke run).

    .venv/bin/python bench/cartpole.py [--quick] [--steps N] [--seed S] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TUNED = {"lr": 3e-4, "num_epochs": 6, "vf_loss_coeff": 0.01}
MODEL = {"fcnet_hiddens": [32], "fcnet_activation": "linear", "vf_share_layers": True}
ENV_RUNNERS = 2  # RLlib's PPO default
THRESHOLDS = (400.0, 450.0)

SPEC = """\
name: cartpole-hosted
sim: {{address: '{address}'}}
observations:                       # CartPole-v1's observation, by the server's names
  'obs[0]': {{min: -2.4, max: 2.4}}   # cart position (the episode ends beyond 2.4)
  'obs[1]': {{min: -3, max: 3}}       # cart velocity
  'obs[2]': {{min: -0.21, max: 0.21}} # pole angle (ends beyond 0.2095 rad)
  'obs[3]': {{min: -3.5, max: 3.5}}   # pole angular velocity
actions:
  action: {{}}                        # the server's Discrete(2): push left (0) or right (1)
"""


def _model_config() -> Any:
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    return DefaultModelConfig(**MODEL)


def rllib_config(seed: int) -> Any:
    """RLlib's tuned CartPole PPO, the env in process."""
    from ray.rllib.algorithms.ppo import PPOConfig

    return (
        PPOConfig()
        .environment("CartPole-v1")
        .training(**TUNED)
        .rl_module(model_config=_model_config())
        .env_runners(num_env_runners=ENV_RUNNERS)
        .debugging(seed=seed)
    )


def simgym_config(spec_path: Path, address: str, seed: int) -> Any:
    """What ``simgym train`` builds for the hosted CartPole, with the tuned example's settings."""
    from launcher.rllib_setup import build_config, env_config
    from launcher.trainspec import TrainSpec

    train = TrainSpec.model_validate(
        {
            "env": str(spec_path),
            "algorithm": "PPO",
            # RLlib's PPO defaults where simgym's ALGO_DEFAULTS differ (epochs, minibatch).
            "config": {
                **TUNED,
                "minibatch_size": 128,
                "train_batch_size_per_learner": 4000,
                "min_time_s_per_iteration": 0,
            },
            "resources": {"env_runners": ENV_RUNNERS, "envs_per_runner": 1},
            "seed": seed,
        }
    )
    env_spec = train.load_env_spec()
    config = build_config(train, env_spec, [address])
    config = config.environment(env_config=env_config(env_spec, [address]))
    # RLlib's fragment length ("auto": batch / runners) instead of simgym's 50: the one
    # sampling setting simgym sets, levelled so only the env differs.
    return config.env_runners(rollout_fragment_length="auto").rl_module(
        model_config=_model_config()
    )


def run(name: str, config: Any, steps: int, max_seconds: float) -> list[tuple[int, float]]:
    """Train until ``steps`` env steps (or ``max_seconds``); (env steps, return) per iteration."""
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_RETURN_MEAN,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
    )

    algo = config.build_algo()
    curve: list[tuple[int, float]] = []
    started = time.monotonic()
    try:
        while True:
            result = algo.train()
            runners = result.get(ENV_RUNNER_RESULTS, {})
            done = int(runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0))
            ret = float(runners.get(EPISODE_RETURN_MEAN, math.nan))
            curve.append((done, ret))
            elapsed = time.monotonic() - started
            print(
                f"  {name:7s} {done:>8,} steps  return {ret:7.1f}  ({elapsed:5.0f} s)", flush=True
            )
            if done >= steps or elapsed > max_seconds:
                break
    finally:
        algo.stop()
    return curve


def first_reaching(curve: list[tuple[int, float]], threshold: float) -> int | None:
    """Env steps at the first iteration whose mean return is >= threshold."""
    return next((s for s, r in curve if r >= threshold), None)


def value_at(curve: list[tuple[int, float]], steps: int) -> float:
    """The return of the last iteration at or before ``steps`` env steps."""
    before = [r for s, r in curve if s <= steps]
    return before[-1] if before else math.nan


def main() -> None:
    """Run both sides and print the side-by-side table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k env steps each (smoke run)")
    parser.add_argument("--steps", type=int, default=200_000, help="env steps per side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=900, help="per side")
    parser.add_argument("--json", type=Path, help="write both curves here")
    args = parser.parse_args()
    steps = 20_000 if args.quick else args.steps

    import ray

    from simserver.process import ServerProcess

    logging.getLogger("ray").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(num_cpus=ENV_RUNNERS + 1, include_dashboard=False, logging_level=logging.ERROR)
    server = ServerProcess("gymnasium:CartPole-v1", transport="unix")
    server.start(timeout=60)
    try:
        assert server.address is not None
        with tempfile.TemporaryDirectory() as tmp:
            spec_path = Path(tmp) / "cartpole.yaml"
            spec_path.write_text(SPEC.format(address=server.address))
            print(f"simgym: PPO on CartPole-v1 hosted by simserver ({server.address}), Discrete(2)")
            t0 = time.monotonic()
            simgym = run(
                "simgym", simgym_config(spec_path, server.address, args.seed), steps,
                args.max_seconds,
            )  # fmt: skip
            t_simgym = time.monotonic() - t0
        print("rllib: PPO on CartPole-v1 in process (RLlib's tuned example)")
        t0 = time.monotonic()
        rllib = run("rllib", rllib_config(args.seed), steps, args.max_seconds)
        t_rllib = time.monotonic() - t0
    finally:
        server.cleanup()
        ray.shutdown()

    print()
    print(f"{'env steps':>10} {'rllib':>8} {'simgym':>8}")
    marks = sorted({s for s, _ in rllib} | {s for s, _ in simgym})
    every = max(1, len(marks) // 12)
    for s in marks[every - 1 :: every]:
        print(f"{s:>10,} {value_at(rllib, s):>8.1f} {value_at(simgym, s):>8.1f}")
    print()
    for threshold in THRESHOLDS:
        a, b = first_reaching(rllib, threshold), first_reaching(simgym, threshold)
        ratio = f"{b / a:.2f}" if a and b else "-"
        print(
            f"return >= {threshold:.0f}: rllib at {a or '-':>8} env steps, simgym at "
            f"{b or '-':>8} (simgym / rllib {ratio})"
        )
    best_r, best_s = max(r for _, r in rllib), max(r for _, r in simgym)
    print(f"best return: rllib {best_r:.1f}, simgym {best_s:.1f}")
    print(f"wall time: rllib {t_rllib:.0f} s, simgym {t_simgym:.0f} s")
    if args.json:
        seconds = {"rllib": t_rllib, "simgym": t_simgym}
        out = {"steps": steps, "seed": args.seed, "rllib": rllib, "simgym": simgym}
        args.json.write_text(json.dumps({**out, "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
