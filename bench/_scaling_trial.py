"""One trial of bench/scaling.py, run in its own process: train, count env steps, time roles.

``run_trial(options)`` writes an env spec and a training spec for one of
``bench/_scaling_sims.py``'s sims, builds simgym's RLlib config from them
(``launcher.rllib_setup.build_config``: the same env runner, callbacks, fault tolerance as
``simgym train``), then trains in one of three ways:

* ``mode="local"``: the sims in the env runner's own process (``bench/_train_local.py``'s
  vector env: the spec's codec, no transport): RLlib's env directly, the baseline;
* ``mode="bridge"``: ``servers`` sidecar simservers (``launcher.sims.start_sims``, unix
  sockets, packed socket), ``SimVectorEnv`` in the env runners;
* ``mode="nodes"``: two Ray nodes on this machine (``launcher.node.RayNode``, ``cpus_per_node``
  CPUs each), the sims placed by Ray as ``simgym train --address`` places them
  (``launcher.raysims.RaySims``: one supervising actor per node starts that node's
  sidecars; every env runner steps its own node's sims); Ray spreads the env runners one
  per node (one CPU each).

It trains ``warmup`` seconds unmeasured, then ``seconds`` more, and returns env steps/s over
the measured window (RLlib's ``num_env_steps_sampled_lifetime``), the CPU seconds per second
of each role (driver = learner, env runners, sim servers) and RLlib's timers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

ENV_SPEC = """\
name: scaling
sim:
  target: {target}
  timeout: 120
  reset_timeout: 120
observations:
  x: {{min: -5, max: 5}}
  target: {{min: -2, max: 2}}
  error: {{min: -5, max: 5}}
actions:
  u: {{min: -1, max: 1}}
reward: score
"""


def write_specs(options: dict[str, Any], folder: Path) -> Path:
    """The env spec and training spec of a trial; returns the training spec's path."""
    target = f"{BENCH / '_scaling_sims.py'}:{options['sim']}"
    (folder / "env.yaml").write_text(ENV_SPEC.format(target=target))
    runners = int(options.get("runners", 1))
    envs = int(options.get("envs", 16))
    servers = int(options.get("servers", 1))
    nodes = int(options.get("nodes", 1))
    # Sessions per server: this node's share of the env runners' sessions.
    per_server = -(-max(runners, 1) * envs // (nodes * servers))
    train = {
        "env": "env.yaml",
        "sim": {"launch": {"servers": servers, "sessions_per_server": max(per_server, 1)}},
        "algorithm": options.get("algorithm", "PPO"),
        "config": dict(options.get("config") or {}),
        # Ray's CPUs are a count, not cores: IMPALA/APPO's learner is an actor of its own
        # (num_learners=1) and must fit beside the env runners, or it never starts.
        "resources": {
            "env_runners": runners,
            "envs_per_runner": envs,
            "cpus": max(os.cpu_count() or 1, runners + 1),
        },
        "stop": {"max_time": "2h"},
        "seed": 0,
    }
    path = folder / "train.yaml"
    path.write_text(json.dumps(train))
    return path


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    import psutil

    out: dict[str, float] = {}
    for role, role_pids in pids.items():
        for pid in role_pids:
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            out[role] = out.get(role, 0.0) + t.user + t.system
    return out


def _start_nodes(options: dict[str, Any], folder: Path) -> list[Any]:
    """Ray nodes on this machine (``cpus_per_node`` CPUs each), only Ray: no sims yet."""
    from launcher.node import NodeInfo, RayNode, ray_auth_env

    count = int(options.get("nodes", 2))
    port = 20000 + os.getpid() % 20000
    os.environ.update(ray_auth_env(os.environ))
    nodes = []
    for rank in range(count):
        info = NodeInfo(rank, count, "127.0.0.1", "default", f"127.0.0.{2 + rank}", "127.0.0.2")
        node = RayNode(
            info,
            port=port,
            resources={},
            env=dict(os.environ),
            cpus=int(options.get("cpus_per_node", 1)),
            log_file=folder / f"ray-{rank}.log",
        )
        nodes.append(node)
        node.start()
    return nodes


def _sim_server_pids() -> list[int]:
    """The simservers hosting this bench's sims (on Ray's nodes they are no child of ours)."""
    import psutil

    marker = str(BENCH / "_scaling_sims.py")
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(marker in part for part in cmdline) and "simserver" in " ".join(cmdline):
            pids.append(proc.pid)
    return pids


def _node_and_sims() -> str:
    """In an env runner: its Ray node's IP and the sims its env steps (for the report)."""
    import ray

    ctx = ray.get_runtime_context()
    ip = ray.util.get_node_ip_address()
    return f"{ip} ({ctx.get_node_id()[:8]})"


def run_trials(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several ``local``/``bridge`` trials on one private Ray instance (``--quick``)."""
    import ray

    results = []
    try:
        for options in cases:
            results.append(run_trial(options, keep_ray=True))
    finally:
        if ray.is_initialized():
            ray.shutdown()
    return results


def run_trial(options: dict[str, Any], keep_ray: bool = False) -> dict[str, Any]:
    """Run one trial; see the module docstring. Returns a JSON-able dict.

    ``keep_ray``: leave Ray running for the next trial (not with ``mode="nodes"``).
    """
    import psutil

    # Env runners are Ray worker processes: they import bench/_train_local.py by name.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    for p in (str(BENCH), str(REPO)):
        if p not in sys.path:
            sys.path.insert(0, p)

    import ray
    from ray.tune.registry import register_env

    from launcher.rllib_setup import build_config
    from launcher.sims import start_sims
    from launcher.trainspec import load_train_spec

    mode = options["mode"]
    tmp = tempfile.TemporaryDirectory(prefix="sgscale-")
    folder = Path(tmp.name)
    spec = load_train_spec(write_specs(options, folder))
    env_spec = spec.load_env_spec()
    pools: list[Any] = []
    nodes: list[Any] = []
    algo: Any = None
    started = time.monotonic()
    try:
        addresses: list[str] = []
        if mode == "bridge":
            launch = spec.launch(env_spec)
            assert launch is not None
            pools.append(start_sims(env_spec, launch, folder / "sims"))
            addresses = pools[0].addresses
        if mode == "nodes":
            nodes = _start_nodes(options, folder)
            ray.init(
                address=nodes[0].head_address,
                _node_ip_address="127.0.0.2",
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
        elif not ray.is_initialized():
            # A private Ray instance, never a cluster someone else started on this machine.
            ray.init(
                address="local",
                num_cpus=spec.resources.cpus,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
        if mode == "nodes":
            from launcher.raysims import RaySims

            launch = spec.launch(env_spec)
            assert launch is not None
            ray_sims = RaySims(env_spec, launch, folder / "run", spec.seed)
            pools.append(ray_sims)
            addresses = ray_sims.start()
        config = build_config(spec, env_spec, addresses)
        if mode == "nodes":
            settings = {**config.env_config, "ray_sims": ray_sims.locator}
            config = config.environment(env_config=settings)
        if mode == "local":
            from _train_local import LOCAL_ENV_NAME, make_local_env

            register_env(LOCAL_ENV_NAME, make_local_env)
            local_spec = env_spec.model_copy(update={"on_error": "truncate"})
            config = config.environment(LOCAL_ENV_NAME, env_config={"spec": local_spec})
        if options.get("learner_threads"):
            import torch

            torch.set_num_threads(int(options["learner_threads"]))
        algo = config.build_algo()
        build_s = time.monotonic() - started

        pids: dict[str, list[int]] = {"driver": [os.getpid()]}
        pids["env_runners"] = [
            int(p)
            for p in algo.env_runner_group.foreach_env_runner(
                lambda _runner: os.getpid(), local_env_runner=False
            )
        ]
        if not algo.learner_group.is_local:  # IMPALA/APPO: a learner actor of its own
            pids["learner"] = [
                int(r.get())
                for r in algo.learner_group.foreach_learner(lambda _learner: os.getpid())
            ]
        pids["sim_servers"] = _sim_server_pids()
        where: list[str] = []
        if mode == "nodes":
            where = [
                str(w)
                for w in algo.env_runner_group.foreach_env_runner(
                    lambda _runner: _node_and_sims(),
                    local_env_runner=False,
                )
            ]

        def steps(result: dict[str, Any]) -> int:
            return int(result.get("env_runners", {}).get("num_env_steps_sampled_lifetime", 0))

        result = algo.train()
        while steps(result) == 0:
            if time.monotonic() - started > 240:
                raise RuntimeError(
                    "no env steps sampled within 240 s of start (a failing env runner?)"
                )
            result = algo.train()
        warm_until = time.monotonic() + options["warmup"]
        while time.monotonic() < warm_until:
            result = algo.train()
        s0, t0 = steps(result), time.monotonic()
        cpu0, sys0 = _cpu(pids), psutil.cpu_times()
        iterations = 0
        while time.monotonic() - t0 < options["seconds"]:
            result = algo.train()
            iterations += 1
        s1, t1 = steps(result), time.monotonic()
        cpu1, sys1 = _cpu(pids), psutil.cpu_times()
        window = t1 - t0
        busy = (sys1.user + sys1.system + sys1.nice) - (sys0.user + sys0.system + sys0.nice)
        runners = result.get("env_runners", {})
        timers = result.get("timers", {})
        rate = (s1 - s0) / window
        cpu_per_s = {k: (cpu1.get(k, v) - v) / window for k, v in cpu0.items()}
        return {
            **{k: v for k, v in options.items() if k != "config"},
            "config": options.get("config") or {},
            "servers_started": len(pids["sim_servers"]),
            "runner_nodes": where,
            "seconds": window,
            "iterations": iterations,
            "env_steps": s1 - s0,
            "steps_per_s": rate,
            "build_s": build_s,
            "episode_return_mean": runners.get("episode_return_mean"),
            "sim_step_ms": runners.get("sim_step_ms"),
            "bridge_step_ms": runners.get("bridge_step_ms"),
            "sample_s": timers.get("env_runner_sampling_timer"),
            "learn_s": timers.get("learner_update_timer"),
            "iteration_s": timers.get("training_iteration"),
            "cpu_per_s": cpu_per_s,
            # CPU milliseconds per env step, by role: the capacity model's inputs.
            "cpu_ms_per_step": {k: 1e3 * v / rate for k, v in cpu_per_s.items()} if rate else {},
            "machine_busy_cpus": busy / window,
            "other_cpus": (busy - sum(cpu1.get(k, v) - v for k, v in cpu0.items())) / window,
            "load": os.getloadavg()[0],
        }
    finally:
        if algo is not None:
            algo.stop()
        for pool in pools:  # RaySims asks its Ray actors: before Ray goes
            pool.stop()
        if ray.is_initialized() and not (keep_ray and mode != "nodes"):
            ray.shutdown()
        for node in reversed(nodes):
            node.stop()
        tmp.cleanup()
