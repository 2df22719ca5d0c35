"""``simgym train``: spec → sidecar sims → RLlib algorithm → train loop → metrics → checkpoints.

Reads top to bottom like the loop it runs. Everything that can be wrong with the
user's setup (spec, sims, addresses, token, spec/sim mismatch, lesson keys) is
checked by ``preflight`` before Ray starts, so mistakes cost seconds, not a
cluster start-up.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gymclient.codec import build_codec, declared_action_names, sample_config
from gymclient.connection import Connection
from gymclient.env import connect_options
from gymclient.errors import SimgymError
from gymclient.spec import EnvSpec
from launcher.sidecars import SidecarPool
from launcher.trainspec import TrainSpec, load_train_spec
from simserver.process import ServerStartError

log = logging.getLogger("simgym.train")


class TrainingError(SimgymError):
    """Training failed; ``error.txt`` in the run folder says why."""


@dataclass
class Progress:
    """What the terminal shows after each iteration."""

    iteration: int
    env_steps: int
    episodes: int
    elapsed: float
    time_left: float | None
    metrics: dict[str, float]
    checkpoint: str | None = None
    restarts: int = 0


@dataclass
class RunState:
    """Persisted in ``run.json``: what ``--resume`` needs."""

    spec: str
    mlflow_run_id: str = ""
    iteration: int = 0
    env_steps: int = 0
    episodes: int = 0
    checkpoints: list[str] = field(default_factory=list)
    finished: bool = False
    stop_reason: str = ""

    def save(self, run_dir: Path) -> None:
        """Write ``run.json`` atomically."""
        tmp = run_dir / "run.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(run_dir / "run.json")

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        """Read ``run.json``.

        Raises:
            TrainingError: No run there.
        """
        path = run_dir / "run.json"
        if not path.exists():
            raise TrainingError(f"--resume {run_dir}: not a simgym run folder (no run.json)")
        return cls(**json.loads(path.read_text()))


def new_run_dir(spec: TrainSpec) -> Path:
    """``<output>/<experiment>-<timestamp>`` (never reuses a folder)."""
    root = Path(spec.output)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        run_dir = (
            root / f"{spec.experiment}-{stamp}"
            if n == 0
            else root / f"{spec.experiment}-{stamp}-{n}"
        )
        try:
            run_dir.mkdir()
            return run_dir.resolve()
        except FileExistsError:
            continue
    raise TrainingError(f"cannot create a run folder under {root}")


def preflight(env_spec: EnvSpec, addresses: list[str], seed: int | None) -> None:
    """Open a session on every server, match the spec, run one reset with a lesson draw.

    Raises:
        SimgymError: Unreachable server, wrong token, spec/sim mismatch, rejected lesson key.
    """
    options = connect_options(env_spec)
    actions = declared_action_names(env_spec)
    rng = np.random.default_rng(seed)
    for address in addresses:
        with Connection(address, options) as conn:
            session = conn.open(actions, client="simgym train preflight")
            try:
                codec = build_codec(env_spec, session.state_names, session.action_names)
                config = sample_config(codec.lessons, rng)
                try:
                    session.reset(config, 0)
                except SimgymError as exc:
                    raise SimgymError(
                        f"{env_spec.source}: lessons: the sim at {address} rejected the "
                        "reset config "
                        f"{config}: {exc}"
                    ) from None
            finally:
                session.close()


def _checkpoint(algo: Any, run_dir: Path, state: RunState, keep: int) -> str:
    path = run_dir / "checkpoints" / f"iter_{state.iteration:06d}"
    path.parent.mkdir(exist_ok=True)
    algo.save_to_path(str(path.resolve()))  # RLlib needs an absolute path
    state.checkpoints.append(str(path))
    while len(state.checkpoints) > keep:
        shutil.rmtree(state.checkpoints.pop(0), ignore_errors=True)
    state.save(run_dir)
    return str(path)


def _write_error(run_dir: Path, what: str, exc: BaseException, pool: SidecarPool | None) -> Path:
    """``error.txt``: one paragraph first (what failed, where), then the details."""
    lines = [f"simgym train failed while {what}: {type(exc).__name__}: {exc}", ""]
    if pool is not None:
        for event in pool.events:
            lines.append(f"sidecar: {event.detail}")
        for i, server in enumerate(pool.servers):
            tail = server.log_tail(10)
            if "Traceback" in tail or "error" in tail.lower():
                lines += [f"--- last lines of sim server {i} log ({server.log_file}) ---", tail]
    lines += ["", "--- traceback ---", "".join(traceback.format_exception(exc))]
    path = run_dir / "error.txt"
    path.write_text("\n".join(lines))
    return path


def _init_ray(spec: TrainSpec, ray_address: str | None) -> None:
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


def _sync_weights(algo: Any) -> None:
    """Push restored weights to the env runners before sampling (they start with fresh ones)."""
    try:
        algo.env_runner_group.sync_weights(
            from_worker_or_learner_group=algo.learner_group, inference_only=True
        )
    except (
        Exception
    ) as exc:  # older/newer RLlib: not fatal, sampling catches up at the next broadcast
        log.warning("could not push restored weights to env runners: %s", exc)


def train(
    spec_path: str | os.PathLike[str],
    *,
    resume: Path | None = None,
    ray_address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[Path, list[str]], None] | None = None,
    max_time: float | None = None,
    node_sims: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Path, RunState]:
    """Run a training spec to a stop condition; returns the run folder and its final state.

    ``node_sims``: the sims are per-node sidecars started by ``simgym node`` (these are the
    driver's node's, for the preflight); each env runner takes its own node's addresses from
    its environment and needs ``sim_slot`` resources. ``overrides``: top-level spec keys
    replaced (e.g. ``output``, ``experiment``).

    Raises:
        SimgymError: A setup problem found before Ray starts (one readable line).
        TrainingError: Training failed; ``error.txt`` in the run folder explains.
    """
    spec = load_train_spec(spec_path)
    if overrides:
        spec = spec.model_copy(update=overrides)
    if max_time is not None:
        spec = spec.model_copy(update={"stop": spec.stop.model_copy(update={"max_time": max_time})})
    env_spec = spec.load_env_spec()
    launch = None if node_sims is not None else spec.launch(env_spec)

    if resume is not None:
        run_dir = resume.resolve()
        state = RunState.load(run_dir)
        if not state.checkpoints:
            raise TrainingError(f"--resume {run_dir}: no checkpoint to resume from")
    else:
        run_dir = new_run_dir(spec)
        state = RunState(spec=str(Path(spec_path).resolve()))
    (run_dir / "spec.resolved.yaml").write_text(
        yaml.safe_dump(
            {
                "train": spec.model_dump(exclude={"base_dir", "source"}),
                "env": env_spec.model_dump(),
            },
            sort_keys=False,
        )
    )
    state.save(run_dir)

    pool: SidecarPool | None = None
    algo: Any = None
    tracker: Any = None
    stage = "starting the sim servers"
    try:
        # 1. Sims: sidecars we supervise, or servers the user runs.
        if launch is not None:
            workdir = (
                env_spec.path(env_spec.sim.workdir)
                if env_spec.sim.workdir
                else Path(env_spec.base_dir)
            )
            pool = SidecarPool(launch, workdir, run_dir / "sims")
            try:
                addresses = pool.start()
            except ServerStartError as exc:
                raise SimgymError(
                    str(exc).splitlines()[0] + f" (log: {run_dir / 'sims'})"
                ) from None
        else:
            addresses = env_spec.sim.address_list() if node_sims is None else list(node_sims)
        stage = "checking the sims (preflight)"
        preflight(env_spec, addresses, spec.seed)
        if on_start:
            on_start(run_dir, addresses)

        # 2. RLlib.
        stage = "starting Ray and building the algorithm"
        from launcher.rllib_setup import build_config
        from launcher.tracking import Tracker, extract, plot_learning_curve

        _init_ray(spec, ray_address)
        slots = None if node_sims is None else {"sim_slot": float(spec.resources.envs_per_runner)}
        algo = build_config(spec, env_spec, addresses, slots).build_algo()
        if resume is not None:
            algo.restore_from_path(str(Path(state.checkpoints[-1]).resolve()))
            _sync_weights(algo)
        tracker = Tracker(
            run_dir, spec.experiment, spec.tracking_uri, run_name=run_dir.name,
            resume_run_id=state.mlflow_run_id or None,
        )  # fmt: skip
        state.mlflow_run_id = tracker.run_id
        if resume is None:
            tracker.log_params(
                {"algorithm": spec.algorithm, "env": spec.env, "seed": spec.seed,
                 **spec.resources.model_dump(),
                 **{f"config.{k}": v for k, v in spec.config.items()}}
            )  # fmt: skip
        state.save(run_dir)

        # 3. The loop.
        stage = "training"
        started = time.monotonic()
        base_steps, base_episodes = state.env_steps, state.episodes
        stop = spec.stop
        reason = ""
        while not reason:
            result = algo.train()
            state.iteration += 1
            metrics = extract(result, env_spec.log_states)
            # RLlib restarts its lifetime counters on restore: continue ours instead.
            steps = int(metrics.get("env_steps_total", 0))
            episodes = int(metrics.get("episodes_total", 0))
            if resume is not None and steps < base_steps:
                steps, episodes = base_steps + steps, base_episodes + episodes
            state.env_steps, state.episodes = (
                max(state.env_steps, steps),
                max(state.episodes, episodes),
            )
            metrics["env_steps_total"], metrics["episodes_total"] = state.env_steps, state.episodes
            elapsed = time.monotonic() - started
            metrics["env_steps_per_s"] = result.get(
                "num_env_steps_sampled_lifetime_throughput", 0.0
            ) or ((state.env_steps - base_steps) / elapsed if elapsed > 0 else 0.0)
            if pool is not None:
                metrics["sim_restarts"] = pool.total_restarts
                if pool.failed():
                    raise TrainingError(pool.failed()[0].detail)
            tracker.log(state.iteration, metrics)
            checkpoint = None
            if state.iteration % spec.checkpoint.every == 0:
                checkpoint = _checkpoint(algo, run_dir, state, spec.checkpoint.keep)
            state.save(run_dir)
            reward = metrics.get("episode_reward_mean")
            if stop.max_time is not None and elapsed >= stop.max_time:
                reason = f"max_time {stop.max_time:.0f} s reached"
            elif stop.env_steps is not None and state.env_steps >= stop.env_steps:
                reason = f"env_steps {stop.env_steps} reached"
            elif stop.iterations is not None and state.iteration >= stop.iterations:
                reason = f"iterations {stop.iterations} reached"
            elif (
                stop.episode_reward_mean is not None
                and reward is not None
                and reward >= stop.episode_reward_mean
            ):
                reason = f"episode_reward_mean {reward:.4g} >= {stop.episode_reward_mean}"
            if on_progress:
                time_left = max(0.0, stop.max_time - elapsed) if stop.max_time is not None else None
                on_progress(
                    Progress(state.iteration, state.env_steps, state.episodes, elapsed, time_left,
                             metrics,
                             checkpoint, pool.total_restarts if pool else 0)
                )  # fmt: skip

        # 4. Wrap up: final checkpoint, curve, summary.
        stage = "saving the final checkpoint"
        if not state.checkpoints or not state.checkpoints[-1].endswith(f"{state.iteration:06d}"):
            _checkpoint(algo, run_dir, state, spec.checkpoint.keep)
        state.finished, state.stop_reason = True, reason
        state.save(run_dir)
        png = plot_learning_curve(
            tracker.rows, run_dir / "learning_curve.png", f"{spec.experiment}: {spec.algorithm}"
        )
        for artifact in (png, run_dir / "metrics.csv", run_dir / "spec.resolved.yaml"):
            if artifact is not None and artifact.exists():
                tracker.log_artifact(artifact)
        tracker.close("FINISHED")
        tracker = None
        return run_dir, state
    except SimgymError as exc:
        if stage != "training":
            # Setup problems are the user's to fix: one line, no error.txt noise.
            raise
        path = _write_error(run_dir, stage, exc, pool)
        raise TrainingError(f"{exc} (details: {path})") from None
    except KeyboardInterrupt:
        if algo is not None and state.iteration:
            _checkpoint(algo, run_dir, state, spec.checkpoint.keep)
        raise
    except Exception as exc:
        path = _write_error(run_dir, stage, exc, pool)
        raise TrainingError(
            f"{stage} failed: {type(exc).__name__}: {exc} (details: {path})"
        ) from None
    finally:
        if tracker is not None:
            tracker.close("FAILED")
        if algo is not None:
            try:
                algo.stop()
            except Exception as exc:
                log.warning("stopping the algorithm: %s", exc)
        if pool is not None:
            pool.stop()
