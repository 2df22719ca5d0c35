"""One throughput trial of bench/train_throughput.py, run in its own process.

``run_trial(options)`` builds the shipped CSTR recipe's RLlib config with
``launcher.rllib_setup.build_config`` (the recipe's algorithm and settings, or ``algorithm``
with simgym's defaults for it; same env runners, envs per runner, seed, fault tolerance,
callbacks), then either

* ``mode="local"``: swaps in the in-process env (``bench/_train_local.py``: the spec codec over
  ``examples/cstr/sim.py`` instances, no gRPC), or
* ``mode="bridge"``: starts sidecar sim servers with ``launcher.sims.start_sims`` and
  keeps simgym's ``SimVectorEnv`` env (over the sidecars' packed sockets; ``socket=0``: over
  the gRPC ``PackedStream``),

trains for ``warmup`` seconds, then for ``seconds`` more, and returns env steps/s from RLlib's
``num_env_steps_sampled_lifetime`` over the measured window only, plus the CPU seconds per
second each process used in that window (driver/learner, env runners, sim servers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
TRAIN_SPEC = REPO / "examples" / "cstr" / "train.yaml"


def _spec(options: dict[str, Any]) -> Any:
    from launcher.trainspec import load_train_spec

    spec = load_train_spec(options.get("train_spec") or TRAIN_SPEC)
    resources = spec.resources.model_copy(
        update={
            k: v
            for k, v in (
                ("env_runners", options.get("runners")),
                ("envs_per_runner", options.get("envs")),
            )
            if v is not None
        }
    )
    updates: dict[str, Any] = {"resources": resources}
    if options.get("servers") is not None or options.get("envs") or options.get("runners"):
        # Sidecar capacity follows the sessions the env runners open.
        launch = spec.sim.launch
        assert launch is not None, "the train spec launches no sidecars"
        servers = int(options.get("servers") or launch.servers)
        per_server = -(-resources.env_runners * resources.envs_per_runner // servers)
        launch = launch.model_copy(
            update={"servers": servers, "sessions_per_server": max(per_server, 1)}
        )
        updates["sim"] = spec.sim.model_copy(update={"launch": launch})
    config = dict(spec.config)
    if (options.get("envs") or options.get("runners")) and "rollout_fragment_length" in config:
        # The recipe pins fragment x envs x runners to its batch: keep the batch, so that a
        # trial with more sessions per message trains the same PPO batches (RLlib refuses a
        # mismatch).
        batch = int(config.get("train_batch_size_per_learner", 4000))
        config["rollout_fragment_length"] = max(
            batch // (resources.env_runners * resources.envs_per_runner), 1
        )
    if options.get("algorithm") and options["algorithm"] != spec.algorithm:
        updates["algorithm"] = options["algorithm"]
        config = {}
    if options.get("config"):
        config.update(options["config"])
    updates["config"] = config
    return spec.model_copy(update=updates)


def _roles(pids: dict[str, list[int]]) -> dict[int, str]:
    """Every process of this trial (the driver and its descendants: Ray's workers, sims) by role."""
    import psutil

    known = {pid: role for role, role_pids in pids.items() for pid in role_pids}
    out = {os.getpid(): "driver"}
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            title = " ".join(proc.cmdline()[:1])
        except psutil.Error:
            continue
        if proc.pid in known:
            out[proc.pid] = known[proc.pid]
        elif "_WrappedExecutable" in title:
            out[proc.pid] = "learner"
        else:
            out[proc.pid] = "ray_other"
    return out


def _cpu_seconds(roles: dict[int, str]) -> dict[str, float]:
    import psutil

    out: dict[str, float] = {}
    for pid, role in roles.items():
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[role] = out.get(role, 0.0) + t.user + t.system
    return out


def run_trial(options: dict[str, Any]) -> dict[str, Any]:
    """Run one trial; see the module docstring. Returns a JSON-able dict."""
    import psutil

    # Env runners are Ray worker processes: they import bench/_train_local.py by name.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))

    import ray
    from ray.tune.registry import register_env

    from launcher.rllib_setup import build_config
    from launcher.sidecars import SidecarPool
    from launcher.sims import start_sims

    mode = options["mode"]
    spec = _spec(options)
    env_spec = spec.load_env_spec()
    pool: SidecarPool | None = None
    algo: Any = None
    tmp = tempfile.TemporaryDirectory(prefix="simgym-bench-")
    started = time.monotonic()
    try:
        addresses: list[str] = []
        if mode == "bridge":
            launch = spec.launch(env_spec)
            assert launch is not None
            pool = start_sims(env_spec, launch, Path(tmp.name) / "sims")
            addresses = pool.addresses
        # address="local": always a private Ray instance, never a cluster someone else
        # started on this machine with `ray start` (ray.init() would join that one).
        ray.init(
            address="local",
            num_cpus=spec.resources.cpus,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
        if mode == "bridge" and options.get("socket") == 0:
            # The gRPC PackedStream instead of the sidecars' packed sockets (to compare).
            sim = env_spec.sim.model_copy(update={"packed_socket": False})
            env_spec = env_spec.model_copy(update={"sim": sim})
        config = build_config(spec, env_spec, addresses)
        if mode == "local":
            from _train_local import LOCAL_ENV_NAME, make_local_env

            register_env(LOCAL_ENV_NAME, make_local_env)
            local_spec = env_spec.model_copy(update={"on_error": "truncate"})
            config = config.environment(LOCAL_ENV_NAME, env_config={"spec": local_spec})
        elif mode != "bridge":
            raise ValueError(f"mode {mode!r}: expected local or bridge")
        algo = config.build_algo()
        build_s = time.monotonic() - started

        pids: dict[str, list[int]] = {}
        pids["env_runners"] = [
            int(p)
            for p in algo.env_runner_group.foreach_env_runner(
                lambda _runner: os.getpid(), local_env_runner=False
            )
        ]
        if pool is not None:
            pids["sim_servers"] = [s.proc.pid for s in pool.servers if s.proc is not None]

        if options.get("pin") is not None:
            # ``pin=CPU``: every thread of the env runners and sim servers on one core, so a
            # message between them needs no cross-core wake-up (an experiment the launcher
            # does not do: it did not pay inside training, docs/performance.md).
            cpu = int(options["pin"])
            for pid in [*pids["env_runners"], *pids.get("sim_servers", [])]:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(OSError):  # a thread that just ended
                        os.sched_setaffinity(int(tid), {cpu})

        def steps(result: dict[str, Any]) -> int:
            return int(result.get("env_runners", {}).get("num_env_steps_sampled_lifetime", 0))

        # Start-up: the first samples can take tens of seconds on a loaded machine (Ray
        # starts IMPALA's EnvRunnerStateServer actor lazily; env runners wait for it).
        result = algo.train()
        while steps(result) == 0:
            if time.monotonic() - started > 600:
                raise RuntimeError("no env steps sampled within 600 s of start")
            result = algo.train()
        first_sample_s = time.monotonic() - started
        warm_until = time.monotonic() + options["warmup"]
        while time.monotonic() < warm_until:
            result = algo.train()
        s0, t0 = steps(result), time.monotonic()
        roles = _roles(pids)
        cpu0, sys0 = _cpu_seconds(roles), psutil.cpu_times()
        iterations = 0
        while time.monotonic() - t0 < options["seconds"]:
            result = algo.train()
            iterations += 1
        s1, t1 = steps(result), time.monotonic()
        cpu1, sys1 = _cpu_seconds(roles), psutil.cpu_times()
        window = t1 - t0
        busy = (sys1.user + sys1.system + sys1.nice) - (sys0.user + sys0.system + sys0.nice)
        runners = result.get("env_runners", {})
        timers = result.get("timers", {})
        return {
            "mode": mode,
            "envs": spec.resources.envs_per_runner,
            "runners": spec.resources.env_runners,
            "servers": len(addresses) if mode == "bridge" else 0,
            "packed_socket": mode == "bridge" and options.get("socket") != 0,
            "seconds": window,
            "iterations": iterations,
            "env_steps": s1 - s0,
            "steps_per_s": (s1 - s0) / window,
            "build_s": build_s,
            "first_sample_s": first_sample_s,
            "episode_return_mean": runners.get("episode_return_mean"),
            "sim_step_ms": runners.get("sim_step_ms"),
            "bridge_step_ms": runners.get("bridge_step_ms"),
            # RLlib's smoothed per-iteration timers: where an iteration's time goes.
            "sample_s": timers.get("env_runner_sampling_timer"),
            "learn_s": timers.get("learner_update_timer"),
            "iteration_s": timers.get("training_iteration"),
            "cpu_per_s": {k: (cpu1.get(k, v) - v) / window for k, v in cpu0.items()},
            "machine_busy_cpus": busy / window,
            # CPU used by processes outside this trial (other users of the machine).
            "other_cpus": (busy - sum(cpu1.get(k, v) - v for k, v in cpu0.items())) / window,
        }
    finally:
        if algo is not None:
            algo.stop()
        if ray.is_initialized():
            ray.shutdown()
        if pool is not None:
            pool.stop()
        tmp.cleanup()
