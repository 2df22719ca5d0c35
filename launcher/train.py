"""``simgym train``: spec → sidecar sims → RLlib algorithm → train loop → metrics → checkpoints.

Reads top to bottom like the loop it runs. Everything that can be wrong with the
user's setup is checked before Ray starts, so mistakes cost seconds, not a cluster
start-up: the spec and its RLlib ``config`` before anything at all starts, then the
sims (addresses, token, spec/sim mismatch, lesson keys) by ``preflight``.

Whatever fails once the run folder exists leaves an ``error.txt`` there whose first
paragraph says what failed (which sim, which call, the sim's own error); the run's
events (sims ready, sidecar restarts, checkpoints, resume, stop) go to ``train.log``.
A run that cannot go on (sims down for good, iterations that collect nothing, a sim
failing on most steps: ``launcher.watchdog``) also leaves a final checkpoint, and
``stop.max_time`` ends an iteration mid-way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gymclient.errors import SimgymError, SpecError
from gymclient.spec import EnvSpec
from launcher import ranges
from launcher.bonsai_sims import BonsaiPlan
from launcher.curriculum import RESULT_EVENT, RESULT_LESSON
from launcher.failure import (
    SIM_ERROR_LOG,
    SetupError,
    TrainingError,
    first_line,
    message,
    missing_extra,
    sim_error_log_size,
    write_error,
)
from launcher.quiet import ThirdPartyOutput
from launcher.raysims import RaySims
from launcher.rllib_setup import (
    build_config,
    effective_settings,
    env_config,
    full_config,
    init_ray,
    kill_env_runners,
    lifetime_counters,
    sync_weights,
)
from launcher.runfolder import (
    Counters,
    RunLog,
    RunState,
    older_checkpoint_counters,
    open_run,
    save_checkpoint,
)
from launcher.sidecars import SidecarPool
from launcher.sims import SimPlan, preflight, start_sims, train_plan
from launcher.trainspec import Stop, TrainSpec, load_train_spec
from launcher.watchdog import FaultRules, RunFault, Watchdog
from simserver.process import ServerStartError

log = logging.getLogger("simgym.train")

# Set on a log record whose message the caller also gets as the raised error: handlers
# that show the user the error (the CLI's terminal view) skip it.
RAISED = "simgym_raised"
# Set on an INFO record the terminal shows too (a notice: what simgym chose for the user).
NOTICE = "simgym_notice"
_SETUP_STAGES = (
    "starting the sim servers",
    "checking the sims (preflight)",
    "estimating observation ranges",
)


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
    events: list[str] = field(default_factory=list)  # sidecar events since the last one


def _prepare_config(
    spec: TrainSpec, env_spec: EnvSpec, launch: SimPlan | None, slots: dict[str, float] | None
) -> tuple[Any, dict[str, Any]]:
    """The RLlib config (no sim addresses yet) and ``spec.resolved.yaml``'s content.

    Runs before anything starts, so what fails here must fail as one line (the CLI's
    exit 2), never as a traceback: there is no run folder and no ``error.txt`` yet.

    Raises:
        SpecError: Unknown ``config`` keys, or values RLlib's builder methods refuse.
        SimgymError: The ``train`` extra is missing, or the config cannot be resolved.
    """
    try:
        config = build_config(spec, env_spec, [], slots)
    except SpecError:
        raise
    except Exception as exc:
        hint = missing_extra(exc)
        if hint:
            raise SimgymError(hint) from None
        if isinstance(exc, (ValueError, TypeError)):
            # RLlib's .training()/.env_runners() check some values as they are set.
            raise SpecError(spec.source, "config", f"RLlib refuses it: {message(exc)}") from None
        raise SimgymError(
            f"{spec.source}: building the RLlib config failed: {first_line(exc)}"
        ) from None
    try:
        resolved = _resolved_spec(spec, env_spec, launch, config)
    except Exception as exc:
        raise SimgymError(
            f"{spec.source}: cannot resolve the spec for spec.resolved.yaml: {first_line(exc)}"
        ) from None
    return config, resolved


def _resolved_spec(
    spec: TrainSpec, env_spec: EnvSpec, launch: SimPlan | None, config: Any
) -> dict[str, Any]:
    """``spec.resolved.yaml``: the training spec as run, with nothing left to defaults.

    ``train.sim.launch`` is the sidecar plan actually started (target and kwargs taken from
    the env spec when the training spec leaves them out), or ``train.sim.bonsai`` the Bonsai
    sims (their copies counted, no token); ``algorithm_config`` the settings
    the algorithm runs with (simgym's defaults such as IMPALA's lr 1e-4, then the user's
    ``config``); ``rllib`` every plain-valued setting of the RLlib config.
    """
    train_part = spec.model_dump(exclude={"base_dir", "source"})
    if isinstance(launch, BonsaiPlan):
        sims = launch.sims.model_dump(exclude={"token"})
        train_part["sim"]["bonsai"] = {**sims, "copies": launch.copies}
    elif launch is not None:
        train_part["sim"]["launch"] = launch.model_dump()
    return {
        "train": train_part,
        "algorithm_config": effective_settings(spec, config),
        "env": env_spec.model_dump(),
        "rllib": full_config(config),
    }


def _params(spec: TrainSpec, resolved: dict[str, Any]) -> dict[str, Any]:
    """MLflow params: the resolved launch plan and algorithm settings, flattened."""
    params: dict[str, Any] = {
        "algorithm": spec.algorithm,
        "env": spec.env,
        "seed": spec.seed,
        **spec.resources.model_dump(),
    }
    for section in ("launch", "bonsai"):
        for key, value in (resolved["train"]["sim"].get(section) or {}).items():
            params[f"{section}.{key}"] = value
    for key in ("address", "addresses"):
        if resolved["train"]["sim"].get(key):
            params[f"sim.{key}"] = resolved["train"]["sim"][key]
    for key, value in resolved["algorithm_config"].items():
        params[f"config.{key}"] = value
    return params


def _max_time_reached(stop: Stop) -> str:
    assert stop.max_time is not None
    return f"max_time {stop.max_time:.0f} s reached"


def _stop_reason(stop: Stop, progress: Progress) -> str:
    """Which stop condition the latest iteration reached ("" for none yet).

    ``progress.elapsed`` is the invocation's wall time, set-up included.
    """
    reward = progress.metrics.get("episode_reward_mean")
    if stop.max_time is not None and progress.elapsed >= stop.max_time:
        return _max_time_reached(stop)
    if stop.env_steps is not None and progress.env_steps >= stop.env_steps:
        return f"env_steps {stop.env_steps} reached"
    if stop.iterations is not None and progress.iteration >= stop.iterations:
        return f"iterations {stop.iterations} reached"
    if stop.episode_reward_mean is not None and reward is not None:
        if reward >= stop.episode_reward_mean:
            return f"episode_reward_mean {reward:.4g} >= {stop.episode_reward_mean}"
    return ""


class _Run:
    """One training run's moving parts: its folder and state, sims, algorithm and tracker.

    ``stage`` says what the run is doing, for ``error.txt`` and the raised error.
    """

    def __init__(
        self,
        spec: TrainSpec,
        env_spec: EnvSpec,
        run_dir: Path,
        state: RunState,
        quiet_third_party: bool = False,
    ) -> None:
        self.spec, self.env_spec, self.dir, self.state = spec, env_spec, run_dir, state
        self.stage = _SETUP_STAGES[0]
        # The sims we supervise: here (a local pool), or through Ray on every node.
        self.pool: SidecarPool | RaySims | None = None
        self.algo: Any = None
        self.tracker: Any = None
        self.sim_errors = 0
        self.sim_error_start = sim_error_log_size(run_dir)  # a resumed run appends to it
        self.log = RunLog(run_dir)
        self.rules = FaultRules(spec.stop.max_empty_iterations, spec.stop.max_sim_error_rate)
        self.cut_short = False  # an iteration was ended mid-way (its env runners still run)
        # Offsets from RLlib's lifetime counters to ours: zero unless a checkpoint did not
        # bring RLlib's counters back (RLlib restores them with its metrics logger).
        self.offsets = (0, 0)
        self.lesson_index = 0  # several lessons: the one the env runners start with
        # Third-party stderr lines into train.log only, from here to close().
        self.quiet: contextlib.AbstractContextManager[Any] = (
            ThirdPartyOutput() if quiet_third_party else contextlib.nullcontext()
        )
        self.quiet.__enter__()

    def announce(self, spec_path: str | os.PathLike[str], resumed: bool) -> None:
        """``train.log``'s first line; for an env spec given as such, the defaults it implies."""
        log.info("%s %s (spec %s)", "resuming" if resumed else "starting", self.dir, spec_path)
        spec = self.spec
        if spec.implied:
            max_time = spec.stop.max_time
            self.notice(
                f"{spec_path} is an env spec: training with the defaults of docs/training.md "
                f"({spec.algorithm}, {spec.resources.env_runners} env runner x "
                f"{spec.resources.envs_per_runner} envs"
                + (f", stop.max_time {max_time:.0f} s" if max_time else "")
                + f", experiment {spec.experiment!r}; all of them in spec.resolved.yaml)"
            )

    def before_algo(self, addresses: list[str], resumed: bool, resolved: dict[str, Any]) -> None:
        """Ranges of unranged observations and the lesson to start with, before RLlib starts."""
        if self.fill_ranges(addresses, resumed):
            resolved["env"] = self.env_spec.model_dump()
            text = yaml.safe_dump(resolved, sort_keys=False)
            (self.dir / "spec.resolved.yaml").write_text(text)
        if resumed:
            self.lesson_index = self.resumed_lesson()

    def notice(self, message: str) -> None:
        """Tell the user (terminal and ``train.log``) what simgym chose for them."""
        log.info("%s", message, extra={NOTICE: True})

    def fill_ranges(self, addresses: list[str], resumed: bool) -> bool:
        """Observations without min/max: estimated (a new run) or read back (a resumed one).

        Returns True when the env spec changed (``spec.resolved.yaml`` must show it).

        Raises:
            SimgymError: The estimate failed (the sim, or an observation never finite).
        """
        missing = ranges.unranged(self.env_spec)
        if not missing:
            return False
        saved = ranges.load(self.dir) if resumed else None
        if saved is not None and set(missing) <= set(saved):
            self.env_spec = ranges.with_ranges(self.env_spec, saved)
            self.notice(f"observations without min/max: ranges from {ranges.RANGES_FILE}")
            return True
        self.stage = "estimating observation ranges"
        seed = self.spec.seed or 0
        found = ranges.estimate(self.env_spec, addresses[0], episodes=10, seed=seed)
        ranges.save(self.dir, found, 10, seed)
        self.env_spec = ranges.with_ranges(
            self.env_spec, {n: e.as_dict() for n, e in found.items()}
        )
        self.notice(ranges.describe(found, 10) + f" (written to {ranges.RANGES_FILE})")
        return True

    def resumed_lesson(self) -> int:
        """The lesson (0-based) of the checkpoint a resume starts from."""
        saved = Counters.load(Path(self.state.checkpoints[-1]))
        return (saved.lesson if saved is not None else self.state.lesson) - 1

    def start_sims(self, launch: SimPlan | None, ray_address: str | None) -> list[str]:
        """Sidecars we supervise, or the servers the user runs; checked.

        On a Ray cluster (``ray_address``) the sims are placed by Ray, one host actor per
        node (``launcher.raysims``): Ray starts first, then this node's sims.
        """
        if launch is not None and ray_address:
            init_ray(self.spec, ray_address)
            self.pool = RaySims(self.env_spec, launch, self.dir, self.spec.seed)
            addresses = self.pool.start()
        elif launch is not None:
            self.pool = start_sims(self.env_spec, launch, self.dir / "sims")
            addresses = self.pool.addresses
        else:
            addresses = self.env_spec.sim.address_list()
        if isinstance(launch, BonsaiPlan):  # every node's endpoint has the run's token
            self.env_spec = launch.connect_spec(self.env_spec)
        self.stage = _SETUP_STAGES[1]
        preflight(self.env_spec, addresses, self.spec.seed)
        log.info("sims ready: %s", ", ".join(addresses))
        return addresses

    def build_algo(self, config: Any, addresses: list[str], ray_address: str | None) -> None:
        """Ray, and the algorithm stepping ``addresses``."""
        self.stage = "starting Ray and building the algorithm"
        error_log = str(self.dir / SIM_ERROR_LOG)
        settings = env_config(self.env_spec, addresses, error_log, self.lesson_index)
        if isinstance(self.pool, RaySims):  # each env runner steps its own node's sims
            settings["ray_sims"] = self.pool.locator
        config.environment(env_config=settings)
        init_ray(self.spec, ray_address)
        self.algo = config.build_algo()

    def restore(self) -> None:
        """Back to the last checkpoint: its weights, and its counters (later iterations repeat)."""
        state, checkpoint = self.state, Path(self.state.checkpoints[-1])
        self.algo.restore_from_path(str(checkpoint.resolve()))
        sync_weights(self.algo)
        restored_steps, restored_episodes = lifetime_counters(self.algo)
        saved = Counters.load(checkpoint)
        if saved is None:  # written before simgym.json: see older_checkpoint_counters
            saved, source = older_checkpoint_counters(
                self.dir, checkpoint, state, restored_steps, restored_episodes
            )
            log.warning("%s has no %s: counters from %s", checkpoint.name, Counters.FILE, source)
        lost = state.iteration - saved.iteration
        state.iteration, state.env_steps, state.episodes, state.lesson = (
            saved.iteration, saved.env_steps, saved.episodes, saved.lesson,
        )  # fmt: skip
        self.offsets = (saved.env_steps - restored_steps, saved.episodes - restored_episodes)
        log.info(
            "resumed from %s: iteration %d, env steps %d, episodes %d (%d later iteration(s) lost)",
            checkpoint.name, saved.iteration, saved.env_steps, saved.episodes, lost,
        )  # fmt: skip

    def open_tracker(self, resumed: bool, resolved: dict[str, Any]) -> None:
        """MLflow (continuing the run's MLflow run on a resume) and ``metrics.csv``."""
        from launcher.tracking import Tracker

        state = self.state
        self.tracker = Tracker(
            self.dir, self.spec.experiment, self.spec.tracking_uri, run_name=self.dir.name,
            resume_run_id=state.mlflow_run_id or None,
            keep_until=state.iteration if resumed else None,
        )  # fmt: skip
        state.mlflow_run_id = self.tracker.run_id
        if not resumed:
            self.tracker.log_params(_params(self.spec, resolved))
        state.save(self.dir)

    def due(self, invoked: float) -> str:
        """Why the run must stop now, mid-iteration if need be ("" to go on).

        Asked by the watchdog's thread: sims down for good, or the time budget used up.
        """
        if self.pool is not None and self.pool.failed():
            return "sims down"
        max_time = self.spec.stop.max_time
        if max_time is not None and time.monotonic() - invoked >= max_time:
            return _max_time_reached(self.spec.stop)
        return ""

    def check_sims(self) -> None:
        """Raise when a sidecar is down for good.

        Raises:
            RunFault: Naming the server, how it died and its log's error.
        """
        if self.pool is not None and self.pool.failed():
            raise RunFault(self.pool.failed()[0].detail)

    def iterate(
        self, clock: tuple[float, float], start_steps: int, seen_events: int, watchdog: Watchdog
    ) -> Progress | None:
        """One ``algo.train()``: counters, metrics, sidecar health, a checkpoint when due.

        ``clock``: when the invocation and the loop started. None when the watchdog ended
        the iteration (or it was due before it began); ``watchdog.reason`` says why.

        Raises:
            RunFault: Sims down for good, or a fault rule broken.
        """
        from launcher.tracking import extract

        state, pool = self.state, self.pool
        steps_before = state.env_steps
        result = watchdog.iteration(self.algo.train)
        if result is None:
            self.cut_short = True
            return None
        state.iteration += 1
        metrics = extract(result, self.env_spec.log_states)
        # RLlib's lifetime counters, continued across resumes (see the offsets).
        if "env_steps_total" in metrics:
            steps = int(metrics["env_steps_total"]) + self.offsets[0]
            state.env_steps = max(state.env_steps, steps)
        if "episodes_total" in metrics:
            episodes = int(metrics["episodes_total"]) + self.offsets[1]
            state.episodes = max(state.episodes, episodes)
        metrics["env_steps_total"], metrics["episodes_total"] = state.env_steps, state.episodes
        events: list[str] = []
        if RESULT_LESSON in result:  # several lessons (launcher.curriculum)
            state.lesson = metrics["lesson"] = int(result[RESULT_LESSON])
            for key in ("simgym_lesson_reward_mean", "simgym_lesson_success_rate"):
                if key in result:
                    metrics[key.removeprefix("simgym_")] = float(result[key])
            if result.get(RESULT_EVENT):  # train.log has it (launcher.curriculum logs it)
                events.append(str(result[RESULT_EVENT]))
        self.sim_errors += int(metrics.get("sim_errors", 0))
        now = time.monotonic()
        elapsed, training = now - clock[0], now - clock[1]
        metrics["env_steps_per_s"] = result.get(
            "num_env_steps_sampled_lifetime_throughput", 0.0
        ) or ((state.env_steps - start_steps) / training if training > 0 else 0.0)
        if pool is not None:
            metrics["sim_restarts"] = pool.total_restarts
            events += [e.detail for e in pool.events[seen_events:]]
        self.tracker.log(state.iteration, metrics)
        state.save(self.dir)
        self.check_sims()
        self.rules.observe(state.env_steps - steps_before, int(metrics.get("sim_errors", 0)))
        saved: str | None = None
        if state.iteration % self.spec.checkpoint.every == 0:
            saved = save_checkpoint(self.algo, self.dir, state, self.spec.checkpoint.keep)
        state.save(self.dir)
        max_time = self.spec.stop.max_time
        time_left = max(0.0, max_time - elapsed) if max_time is not None else None
        return Progress(state.iteration, state.env_steps, state.episodes, elapsed, time_left,
                        metrics, saved, pool.total_restarts if pool else 0, events)  # fmt: skip

    def wrap_up(self, reason: str) -> None:
        """Final checkpoint, stop reason, learning curve and artifacts."""
        from launcher.tracking import plot_learning_curve

        state, spec = self.state, self.spec
        self.stage = "saving the final checkpoint"
        if not state.checkpoints or not state.checkpoints[-1].endswith(f"{state.iteration:06d}"):
            save_checkpoint(self.algo, self.dir, state, spec.checkpoint.keep)
        state.finished, state.stop_reason = True, reason
        state.save(self.dir)
        log.info(
            "stopped: %s (iteration %d, env steps %d)", reason, state.iteration, state.env_steps
        )
        png = plot_learning_curve(
            self.tracker.rows,
            self.dir / "learning_curve.png",
            f"{spec.experiment}: {spec.algorithm}",
        )
        for artifact in (png, self.dir / "metrics.csv", self.dir / "spec.resolved.yaml"):
            if artifact is not None and artifact.exists():
                self.tracker.log_artifact(artifact)
        self.tracker.close("FINISHED")
        self.tracker = None

    def final_checkpoint(self) -> str | None:
        """The last completed iteration's checkpoint, saved now if it has none; best effort."""
        state = self.state
        if self.algo is None or not state.iteration:
            return None
        if state.checkpoints and state.checkpoints[-1].endswith(f"{state.iteration:06d}"):
            return state.checkpoints[-1]
        try:
            return save_checkpoint(self.algo, self.dir, state, self.spec.checkpoint.keep)
        except Exception as exc:
            log.warning("could not save a final checkpoint: %s", first_line(exc))
            return None

    def interrupted(self) -> None:
        """Ctrl-C: a checkpoint of where it got to."""
        if self.algo is not None and self.state.iteration:
            save_checkpoint(self.algo, self.dir, self.state, self.spec.checkpoint.keep)
        log.warning("interrupted at iteration %d", self.state.iteration)

    def failure(self, exc: Exception) -> SimgymError:
        """Write ``error.txt``; the one-line error to raise for ``exc``."""
        stage = self.stage
        if isinstance(self.pool, RaySims):  # the nodes' latest news (sims that failed on one)
            self.pool.refresh()
        # A run that cannot go on still keeps what it learnt: --resume continues from it.
        checkpoint = self.final_checkpoint() if isinstance(exc, RunFault) else None
        path = write_error(
            self.dir, stage, exc, self.pool, self.sim_errors, self.sim_error_start, checkpoint
        )
        # For train.log; the terminal gets it once, as the error raised (RAISED).
        log.error("failed while %s: %s", stage, first_line(exc), extra={RAISED: True})
        if stage in _SETUP_STAGES and isinstance(exc, (SimgymError, ServerStartError)):
            # Setup problems are the user's to fix: one line (error.txt has the rest).
            return SetupError(f"{message(exc)} (details: {path})", cause=exc, error_file=path)
        if isinstance(exc, SimgymError):
            return TrainingError(f"{message(exc)} (details: {path})", error_file=path)
        headline = missing_extra(exc) or f"{stage} failed: {first_line(exc)}"
        return TrainingError(f"{headline} (details: {path})", error_file=path)

    def close(self) -> None:
        """Stop whatever is still running: tracker, env runners, algorithm, sims, the log."""
        if self.tracker is not None:
            self.tracker.close("FAILED")
        if self.algo is not None:
            # Env runners of an iteration ended mid-way may still wait on their sims:
            # algo.stop() would wait for them.
            if not self.state.finished or self.cut_short:
                kill_env_runners(self.algo, close_envs=self.pool is None)
            try:
                self.algo.stop()
            except Exception as exc:
                log.warning("stopping the algorithm: %s", exc)
        if self.pool is not None:
            self.pool.stop()
        self.log.close()
        self.quiet.__exit__(None, None, None)


def train(
    spec_path: str | os.PathLike[str],
    *,
    resume: Path | None = None,
    ray_address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[Path, list[str]], None] | None = None,
    max_time: float | None = None,
    env_runner_resources: dict[str, float] | None = None,
    sim_nodes: int = 1,
    overrides: dict[str, Any] | None = None,
    quiet_third_party: bool = False,
) -> tuple[Path, RunState]:
    """Run a training spec to a stop condition; returns the run folder and its final state.

    ``max_time`` (like ``stop.max_time``) is the wall time of this call, set-up included;
    reached mid-iteration, it ends the iteration there. ``ray_address``: join that Ray
    cluster, the sims placed by Ray next to every env runner (``launcher.raysims``).
    ``env_runner_resources``: Ray resources per env runner (``simgym node``'s ``sim_slot``);
    ``sim_nodes``: nodes the runners spread over (Bonsai copies: one node's share).
    ``overrides``: top-level spec keys replaced. ``quiet_third_party``: see ``launcher.quiet``.

    Raises:
        SpecError: The spec or its RLlib ``config`` is wrong (nothing started, no run folder).
        SetupError: The sims failed to start or the preflight failed (one line;
            ``error.txt`` in the run folder has the details).
        SimgymError: Other setup problems before the run folder exists.
        TrainingError: Training failed; ``error.txt`` in the run folder explains.
    """
    invoked = time.monotonic()
    # 1. Prepare: spec and RLlib config first (a wrong `config` key costs a second).
    spec = load_train_spec(spec_path).model_copy(update=overrides or {})
    if max_time is not None:
        spec = spec.model_copy(update={"stop": spec.stop.model_copy(update={"max_time": max_time})})
    env_spec = spec.load_env_spec()
    launch = train_plan(spec, env_spec, nodes=sim_nodes)
    config, resolved = _prepare_config(spec, env_spec, launch, env_runner_resources)
    run_dir, state = open_run(spec, spec_path, resume)
    (run_dir / "spec.resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    state.save(run_dir)
    run = _Run(spec, env_spec, run_dir, state, quiet_third_party)
    run.announce(spec_path, resume is not None)
    try:
        addresses = run.start_sims(launch, ray_address)
        run.before_algo(addresses, resume is not None, resolved)
        if on_start:
            on_start(run_dir, addresses)
        run.build_algo(config, addresses, ray_address)
        # 2. Resume: the last checkpoint's weights and counters.
        if resume is not None:
            run.restore()
        run.open_tracker(resume is not None, resolved)
        # 3. The loop, to the first stop rule reached; the watchdog ends an iteration that
        # outlives the time budget or the sims.
        run.stage = "training"
        clock, start_steps, reason = (invoked, time.monotonic()), state.env_steps, ""
        seen_events = len(run.pool.events) if run.pool is not None else 0
        with Watchdog(lambda: run.due(invoked)) as watchdog:
            while not reason:
                progress = run.iterate(clock, start_steps, seen_events, watchdog)
                if progress is None:
                    reason = watchdog.reason or run.due(invoked)
                    break
                seen_events += len(progress.events)
                reason = _stop_reason(spec.stop, progress)
                if on_progress:
                    on_progress(progress)
        run.check_sims()
        if run.cut_short:
            reason += f" (iteration {state.iteration + 1} cut short)"
        # 4. Wrap up: final checkpoint, curve, summary.
        run.wrap_up(reason)
        return run_dir, state
    except KeyboardInterrupt:
        run.interrupted()
        raise
    except Exception as exc:
        raise run.failure(exc) from None
    finally:
        run.close()
