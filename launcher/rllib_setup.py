"""RLlib wiring: the env creator, env runner, callbacks and algorithm config for a training spec.

Imported only when training (Ray and torch are the ``train`` extra).
"""

from __future__ import annotations

import os
from typing import Any

from gymclient.spec import EnvSpec
from launcher.trainspec import TrainSpec

ENV_NAME = "simgym"
_WORKER_VAR = "SIMGYM_WORKER_INDEX"
_WORKERS_VAR = "SIMGYM_NUM_WORKERS"

# Defaults that learn a continuous-action control task on a small CPU machine
# (see docs/training.md). IMPALA's default lr (5e-4) let the entropy term blow up
# the Gaussian's log-std on CSTR; 1e-4 learned.
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "IMPALA": {"lr": 1e-4, "entropy_coeff": 0.0, "vf_loss_coeff": 0.5, "grad_clip": 40.0},
    "APPO": {"lr": 1e-4, "entropy_coeff": 0.0, "vf_loss_coeff": 0.5},
    "PPO": {"lr": 3e-4, "entropy_coeff": 0.0, "num_epochs": 10, "minibatch_size": 256},
}


def make_env(ctx: Any) -> Any:
    """RLlib env creator: one ``SimVectorEnv`` (batched) or ``SimEnv`` per call.

    RLlib's vector entry point passes ``EnvContext | {"num_envs": n}``, a plain dict
    that has lost the env runner's index; ``SimgymEnvRunner`` puts it in the
    process environment instead, so sessions still spread over servers.
    """
    from gymclient.env import SimEnv
    from gymclient.vector import SimVectorEnv

    cfg = dict(ctx)
    worker = int(getattr(ctx, "worker_index", os.environ.get(_WORKER_VAR, 0)))
    workers = int(getattr(ctx, "num_workers", os.environ.get(_WORKERS_VAR, 0)))
    num_envs = cfg.pop("num_envs", None)
    # Under `simgym node`, every env runner steps the sims of the node it runs on.
    from launcher.node import node_sim_addresses

    cfg["addresses"] = node_sim_addresses(worker) or cfg.get("addresses")
    if num_envs is not None:
        return SimVectorEnv(
            cfg["spec"],
            int(num_envs),
            cfg.get("addresses"),
            worker_index=worker,
            num_workers=workers,
        )
    return SimEnv({**cfg, "worker_index": worker, "num_workers": workers})


def env_runner_class() -> type:
    """A ``SingleAgentEnvRunner`` that tells the env creator which runner it is in."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    class SimgymEnvRunner(SingleAgentEnvRunner):  # type: ignore[misc]
        """Publishes its worker index to the env creator (see ``make_env``)."""

        def make_env(self) -> None:
            """Build the env, after exporting the runner's index."""
            os.environ[_WORKER_VAR] = str(self.worker_index)
            os.environ[_WORKERS_VAR] = str(self.num_workers)
            super().make_env()

    return SimgymEnvRunner


def callbacks_class(log_states: list[str]) -> type:
    """Callbacks that log the spec's ``log_states`` and the bridge's health per episode."""
    from ray.rllib.callbacks.callbacks import RLlibCallback

    class SimgymCallbacks(RLlibCallback):  # type: ignore[misc]
        """Per-episode state means, sim errors and sim step latency as RLlib metrics."""

        def on_episode_end(
            self, *, episode: Any, metrics_logger: Any = None, **kwargs: Any
        ) -> None:
            """Log the episode's mean and final value of each log state."""
            if metrics_logger is None:
                return
            infos = episode.get_infos()
            last = infos[-1] if len(infos) else {}
            means = last.get("log_states_mean") if isinstance(last, dict) else None
            finals = last.get("log_states_final") if isinstance(last, dict) else None
            for name in log_states:
                if means and name in means:
                    metrics_logger.log_value(f"state_mean/{name}", means[name], reduce="mean")
                if finals and name in finals:
                    metrics_logger.log_value(f"state_final/{name}", finals[name], reduce="mean")

        def on_sample_end(
            self, *, env_runner: Any = None, metrics_logger: Any = None, **kwargs: Any
        ) -> None:
            """Log the bridge's counters since the last sample."""
            if metrics_logger is None or env_runner is None:
                return
            env = getattr(getattr(env_runner, "env", None), "unwrapped", None)
            take = getattr(env, "take_counters", None)
            if take is None:
                return
            counters = take()
            metrics_logger.log_value("sim_errors", counters["sim_errors"], reduce="sum")
            metrics_logger.log_value("sim_nonfinite", counters["nonfinite"], reduce="sum")
            if counters["steps"]:
                metrics_logger.log_value(
                    "sim_step_ms", 1000 * counters["sim_seconds"] / counters["steps"], reduce="mean"
                )
                metrics_logger.log_value(
                    "bridge_step_ms",
                    1000 * counters["call_seconds"] / counters["steps"],
                    reduce="mean",
                )

    return SimgymCallbacks


def build_config(
    spec: TrainSpec,
    env_spec: EnvSpec,
    addresses: list[str],
    custom_resources: dict[str, float] | None = None,
) -> Any:
    """The RLlib ``AlgorithmConfig`` for a training spec.

    ``custom_resources``: Ray resources each env runner needs (``simgym node`` asks for
    ``sim_slot``s, so a node hosts no more env runners than its sims can serve).

    Raises:
        SpecError: Unknown RLlib config keys in ``config``.
    """
    from ray.rllib.algorithms.appo import APPOConfig
    from ray.rllib.algorithms.impala import IMPALAConfig
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    from gymclient.errors import SpecError

    register_env(ENV_NAME, make_env)
    classes = {"IMPALA": IMPALAConfig, "APPO": APPOConfig, "PPO": PPOConfig}
    config = classes[spec.algorithm]()
    r = spec.resources
    env_spec = env_spec.model_copy(update={"on_error": "truncate"})
    config = (
        config.environment(ENV_NAME, env_config={"spec": env_spec, "addresses": addresses})
        .env_runners(
            num_env_runners=r.env_runners,
            num_envs_per_env_runner=r.envs_per_runner,
            env_runner_cls=env_runner_class(),
            gym_env_vectorize_mode="vector_entry_point",
            rollout_fragment_length=50,
            custom_resources_per_env_runner=custom_resources or {},
        )
        .fault_tolerance(restart_failed_env_runners=True, restart_failed_sub_environments=True)
        .callbacks(callbacks_class(list(env_spec.log_states)))
        .debugging(seed=spec.seed)
    )
    training = {**ALGO_DEFAULTS[spec.algorithm], **spec.config}
    # Iterations of a few seconds: enough episodes per row of metrics, little per-row overhead.
    config = config.reporting(min_time_s_per_iteration=training.pop("min_time_s_per_iteration", 5))
    if spec.algorithm in ("IMPALA", "APPO"):
        training.setdefault("train_batch_size_per_learner", 500)
    unknown = [k for k in training if not hasattr(config, k)]
    if unknown:
        raise SpecError(
            spec.source, f"config.{unknown[0]}", f"not an RLlib {spec.algorithm} setting"
        )
    try:
        config = config.training(**training)
    except TypeError:
        # Keys RLlib's training() does not take as arguments are plain attributes.
        for key, value in training.items():
            setattr(config, key, value)
    return config
