"""RLlib wiring: the env creator, env runner, callbacks and algorithm config; the driver's Ray.

The driver's part: start Ray, push restored weights, read RLlib's lifetime counters, end
the env runners.

Ray and torch (the ``train`` extra) are imported only inside functions.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import time
from typing import Any

import numpy as np

from gymclient.episode import NONFINITE
from gymclient.errors import SimTimeout
from gymclient.spec import EnvSpec
from launcher.failure import first_line
from launcher.placement import node_sims
from launcher.trainspec import TrainSpec

log = logging.getLogger("simgym.train")

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
    # Sims placed by Ray (launcher.raysims): every env runner steps its own node's sims.
    ray_sims = cfg.pop("ray_sims", None)
    if ray_sims:
        cfg["addresses"] = node_sims(ray_sims, worker)["addresses"]
    # RLlib keeps every step's info in its episodes, and a dict of states per step and
    # sub-env costs training throughput (more live objects for the garbage collector; see
    # docs/performance.md, issue 13): training reads only the episode-end entries.
    if num_envs is not None:
        env = SimVectorEnv(
            cfg["spec"],
            int(num_envs),
            cfg.get("addresses"),
            worker_index=worker,
            num_workers=workers,
            info_states=False,
        )
        # Several lessons: a (re)started runner begins with the run's lesson (resume), and
        # the trainer moves it on (launcher.curriculum).
        if cfg.get("lesson"):
            env.set_lesson(int(cfg["lesson"]))
        return env
    return SimEnv({**cfg, "worker_index": worker, "num_workers": workers, "info_states": False})


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


_last_written: dict[str, float] = {}  # per process: message -> when it was last written


def _record_sim_error(path: str | None, message: str) -> None:
    """Append a failed sim call to the run's ``sim_errors.log`` (read by ``error.txt``).

    A sim failing on every step would otherwise write thousands of lines a second: a
    message already written in the last 5 s is skipped. Best effort: a runner on another
    node cannot see the driver's run folder.
    """
    if not path:
        return
    now = time.time()
    if now - _last_written.get(message, -math.inf) < 5.0:
        return
    if len(_last_written) > 1000:  # messages name sessions: keep the memo bounded
        _last_written.clear()
    _last_written[message] = now
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    try:
        with open(path, "a") as f:
            f.write(f"{stamp} {message}\n")
    except OSError:
        pass


def callbacks_class(log_states: list[str], lessons: bool = False) -> type:
    """Callbacks that log the spec's ``log_states`` and the bridge's health per episode.

    ``lessons``: the spec has several lessons; the env runners note each episode's lesson
    and return, and the trainer decides when to move on (``launcher.curriculum``).
    """
    from ray.rllib.callbacks.callbacks import RLlibCallback

    from launcher import curriculum

    class SimgymCallbacks(RLlibCallback):  # type: ignore[misc]
        """Per-episode state means, sim errors and sim step latency as RLlib metrics."""

        def on_episode_end(
            self,
            *,
            episode: Any,
            env_runner: Any = None,
            metrics_logger: Any = None,
            **kwargs: Any,
        ) -> None:
            """Log the episode's mean and final value of each log state, and its sim error."""
            if lessons:
                curriculum.record_episode(
                    env_runner,
                    kwargs.get("env"),
                    kwargs.get("env_index"),
                    episode,
                    kwargs.get("prev_episode_chunks"),
                )
            if metrics_logger is None:
                return
            infos = episode.get_infos()
            last = infos[-1] if len(infos) else {}
            error = last.get("simgym_error") if isinstance(last, dict) else None
            # The env names the type of what ended the episode: a failed call's error
            # class (a hung sim is a SimTimeout), or NONFINITE for non-finite states.
            kind = last.get("simgym_error_type") if isinstance(last, dict) else None
            if error and kind != NONFINITE:
                timeout = kind == SimTimeout.__name__
                metrics_logger.log_value("sim_timeouts", int(timeout), reduce="sum")
                config = getattr(getattr(env_runner, "config", None), "env_config", None) or {}
                _record_sim_error(config.get("sim_error_log"), str(error))
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

        def on_train_result(self, *, algorithm: Any, result: dict[str, Any], **kwargs: Any) -> None:
            """Several lessons: move on when the lesson's advance rule holds (the trainer)."""
            if lessons:
                curriculum.on_train_result(algorithm, result)

    return SimgymCallbacks


# Settings simgym chooses for every algorithm (beyond ALGO_DEFAULTS); reported with the
# user's keys as the run's effective algorithm settings.
SIMGYM_SETTINGS = (
    "num_env_runners",
    "num_envs_per_env_runner",
    "rollout_fragment_length",
    "min_time_s_per_iteration",
    "train_batch_size_per_learner",
    "restart_failed_env_runners",
    "restart_failed_sub_environments",
    "seed",
)


def env_config(
    env_spec: EnvSpec, addresses: list[str], sim_error_log: str | None = None, lesson: int = 0
) -> dict[str, Any]:
    """What every env runner's ``make_env`` and callbacks receive.

    ``sim_error_log``: a file the env runners append failed sim calls to (``error.txt``
    quotes its last line); None to keep them in the metrics only. ``lesson``: the lesson
    (0-based) the env runners start with, and the trainer's curriculum too (a resumed run's).
    """
    # Training must go on when one sim call fails: the episode ends as truncated.
    spec = env_spec.model_copy(update={"on_error": "truncate"})
    config: dict[str, Any] = {"spec": spec, "addresses": addresses, "lesson": lesson}
    if sim_error_log:
        config["sim_error_log"] = sim_error_log
    return config


def build_config(
    spec: TrainSpec,
    env_spec: EnvSpec,
    addresses: list[str],
    custom_resources: dict[str, float] | None = None,
    *,
    sim_error_log: str | None = None,
) -> Any:
    """The RLlib ``AlgorithmConfig`` for a training spec, its keys checked.

    Needs neither Ray nor the sims: ``simgym train`` builds it (with no addresses yet) before
    it starts anything, so a wrong ``config`` key costs a second, then sets the sims'
    addresses with ``config.environment(env_config=env_config(...))``.

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
    config = (
        config.environment(ENV_NAME, env_config=env_config(env_spec, addresses, sim_error_log))
        .env_runners(
            num_env_runners=r.env_runners,
            num_envs_per_env_runner=r.envs_per_runner,
            env_runner_cls=env_runner_class(),
            gym_env_vectorize_mode="vector_entry_point",
            rollout_fragment_length=50,
            custom_resources_per_env_runner=custom_resources or {},
        )
        .fault_tolerance(restart_failed_env_runners=True, restart_failed_sub_environments=True)
        .callbacks(callbacks_class(list(env_spec.log_states), isinstance(env_spec.lessons, list)))
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
    # RLlib's checks of the values (config.validate(), e.g. a minibatch larger than the
    # batch) stay in build_algo(), where they fail as a training failure with an
    # error.txt: tests/test_node.py's failing multi-node training is such a config.
    return config


_SKIP = object()  # a value YAML and MLflow cannot hold


def _plain(value: Any) -> Any:
    """``value`` if YAML/MLflow can store it as it is (scalars, lists, dicts of those)."""
    if isinstance(value, enum.Enum):  # RLlib's str enums: YAML's safe dumper refuses them
        return _plain(value.value)
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return _SKIP if any(i is _SKIP for i in items) else items
    if isinstance(value, dict):
        out = {str(k): _plain(v) for k, v in value.items()}
        return _SKIP if any(v is _SKIP for v in out.values()) else out
    return _SKIP


def effective_settings(spec: TrainSpec, config: Any) -> dict[str, Any]:
    """The algorithm settings this run uses: simgym's defaults, the user's keys, simgym's own.

    Read back from the built config, so they show what RLlib will use (e.g. IMPALA's lr
    1e-4 from ``ALGO_DEFAULTS``, not RLlib's 5e-4).
    """
    keys = [*ALGO_DEFAULTS[spec.algorithm], *spec.config, *SIMGYM_SETTINGS]
    out: dict[str, Any] = {}
    for key in dict.fromkeys(keys):
        value = _plain(getattr(config, key, None))
        if value is not _SKIP:
            out[key] = value
    return out


def full_config(config: Any) -> dict[str, Any]:
    """Every RLlib setting that has a plain value (classes and callables are left out)."""
    out: dict[str, Any] = {}
    for key, value in sorted(config.to_dict().items()):
        plain = _plain(value)
        if plain is not _SKIP:
            out[key] = plain
    return out


# ----------------------------------------------------------------------------- the driver


def init_ray(spec: TrainSpec, ray_address: str | None) -> None:
    """Start Ray for the spec's resources, or join ``ray_address`` (once per process)."""
    import ray

    if ray.is_initialized():
        return
    # Worker logs stay in Ray's session folder: the terminal shows the progress table, and
    # failures reach the user through error.txt and metrics.
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.ERROR,
        "log_to_driver": False,
    }
    if ray_address:
        kwargs["address"] = ray_address
    else:
        kwargs["num_cpus"] = spec.resources.cpus
        if spec.resources.object_store_mb:
            kwargs["object_store_memory"] = spec.resources.object_store_mb * 2**20
    ray.init(**kwargs)


def sync_weights(algo: Any) -> None:
    """Push restored weights to the env runners before sampling (they start with fresh ones)."""
    try:
        algo.env_runner_group.sync_weights(
            from_worker_or_learner_group=algo.learner_group, inference_only=True
        )
    except Exception as exc:  # another RLlib: not fatal, the next broadcast catches up
        log.warning("could not push restored weights to env runners: %s", exc)


# How long the env runners get to close their sessions before they are killed.
_CLOSE_TIMEOUT = 10.0


def kill_env_runners(algo: Any, *, close_envs: bool, close_timeout: float = _CLOSE_TIMEOUT) -> None:
    """End the env runner actors at once (after a failure or Ctrl-C).

    Against sims that are gone for good, an env runner sits in Ray's restart loop, and
    ``algo.stop()`` asks every runner to stop without a timeout: it would wait a minute
    for a runner that never comes up. Killed first, there is nothing left to wait for.

    ``close_envs``: first let every healthy runner close its envs, for at most
    ``close_timeout`` seconds. A killed runner's sessions stay open on the servers until
    their lease expires (300 s by default), holding ``--max-sessions`` slots: against
    servers the user runs, a rerun right after would get RESOURCE_EXHAUSTED. Sidecars are
    stopped right after, their sessions with them, so they need no closing.
    """
    group = getattr(algo, "env_runner_group", None)
    if close_envs and group is not None:
        try:
            group.foreach_env_runner(
                lambda runner: runner.stop(),  # closes its envs (their sessions)
                local_env_runner=False,
                timeout_seconds=close_timeout,
            )
        except Exception as exc:  # a runner already dead: killed below all the same
            log.warning("closing the env runners' sessions: %s", first_line(exc))
    manager = getattr(group, "_worker_manager", None)
    try:
        if manager is not None:
            manager.clear()  # ray.kill() of each remote env runner
    except Exception as exc:  # another RLlib: algo.stop() does it the slow way
        log.warning("killing the env runners: %s", exc)


def lifetime_counters(algo: Any) -> tuple[int, int]:
    """RLlib's own lifetime env-step and episode counters (restored with a checkpoint)."""
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
        NUM_EPISODES_LIFETIME,
    )

    out = []
    for key in (NUM_ENV_STEPS_SAMPLED_LIFETIME, NUM_EPISODES_LIFETIME):
        try:
            value = algo.metrics.peek((ENV_RUNNER_RESULTS, key))
        except (KeyError, AttributeError):  # nothing sampled yet (or another RLlib)
            value = 0
        try:
            out.append(int(value) if np.isfinite(value) else 0)
        except (TypeError, ValueError):
            out.append(0)
    return out[0], out[1]
