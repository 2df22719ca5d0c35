"""The capacity model of docs/performance.md ("Scaling"), fitted to bench/scaling.py's runs.

Per env step, from the measured trials (CPU time per role over env steps, RLlib's timers):

* ``r_bridge + a / E``: an env runner's CPU through the bridge (RLlib's sampling, gymclient,
  the packed socket's client side) with E envs: ``a`` per vector step (the policy's forward
  pass, connectors), ``r_bridge`` per env; ``r_local``: per env in-process, beyond the sim;
* ``s``: a sim server's CPU beyond the sim's own (simserver, the packed socket's server side);
* ``learn``: PPO's learning time (wall) per env step of its batch (sync: sampling waits);
  ``learner_cpu``: IMPALA/APPO's learner CPU per env step (async: beside sampling).

A case (R env runners of E envs, S sim processes per node, N nodes of C cores, a sim of X ms)
then trains at

    T = min(R * E / t_v, N * S / (X + s), N * C / c)
    then  sync: 1 / (1/T + learn), async: min(T, 1/learner_cpu)

with ``t_v = E * r + W`` the lock-step time of one runner's vector step (the runner computes
while its sims wait, then its sims step while it waits): ``W = ceil(E / min(S, E)) * (X + s)``
for sims that compute (each server steps its sessions one after the other), ``W = X + w * E``
for sims that wait (the server's slots wait together; ``w`` from the 64-session case), and
``W = E * X`` in-process (the runner steps them itself, ``r = r_local``). ``c`` is all CPU per
env step: ``r + X + s`` for computing sims (``r + s`` for waiting ones), plus the learner's
when it learns beside sampling.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

# Azure ML compute sizes: vCPUs, GPU (learner only). Per-vCPU speed assumed as measured here
# (a 2-vCPU AMD EPYC VM); Dsv3/Fsv2 vCPUs are hyperthreads, so two busy vCPUs of one core
# give less than two of this machine's: the table is an upper estimate (see the doc).
SIZES = {
    "Standard_D4s_v3": (4, None),
    "Standard_D8s_v3": (8, None),
    "Standard_D16s_v3": (16, None),
    "Standard_F16s_v2": (16, None),
    "Standard_NC6s_v3": (6, "V100"),
    "Standard_NC4as_T4_v3": (4, "T4"),
}


def _cost_ms(sim: str) -> float:
    return {"Cpu0": 0.0, "Cpu01": 0.1, "Cpu1": 1.0, "Cpu5": 5.0, "Io20": 20.0}[sim]


def _waits(sim: str) -> bool:
    return sim.startswith("Io")


def fit(trials: list[dict[str, Any]]) -> dict[str, float]:
    """The per-step costs (ms) from measured trials (medians over the trials that show each)."""
    r_bridge, r_local, s, learn, learner_cpu, w = [], [], [], [], [], []
    per_vector: list[tuple[float, float]] = []  # (1 / envs, env runner CPU per env step)
    for t in trials:
        cpu, x = t["cpu_ms_per_step"], _cost_ms(t["sim"])
        runners = cpu.get("env_runners")
        if runners is None:
            continue
        if t["mode"] == "local":
            if not _waits(t["sim"]):
                r_local.append(runners - x)
        else:
            r_bridge.append(runners)
            per_vector.append((1.0 / t.get("envs", 16), runners))
            server = cpu.get("sim_servers", 0.0)
            if not _waits(t["sim"]):
                s.append(server - x)
            elif t.get("envs", 16) >= 32 and t.get("bridge_step_ms"):
                w.append((t["bridge_step_ms"] * t["envs"] - x) / t["envs"])
        if t.get("algorithm", "PPO") == "PPO" and t.get("learn_s") is not None:
            learn.append(1e3 * t["learn_s"] / t["config"]["train_batch_size_per_learner"])
        if "learner" in cpu:
            learner_cpu.append(cpu["learner"])

    def med(xs: list[float], default: float) -> float:
        return statistics.median(xs) if xs else default

    # An env runner's CPU per env step = a / envs + b: RLlib's work per vector step (the
    # policy's forward pass, connectors) spread over its envs, plus the work per env.
    a = 0.0
    if len({x for x, _ in per_vector}) > 1:
        xs, ys = [x for x, _ in per_vector], [y for _, y in per_vector]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        a = max(
            sum((x - mx) * (y - my) for x, y in per_vector) / sum((x - mx) ** 2 for x in xs), 0.0
        )
        r_bridge = [y - a * x for x, y in per_vector]
        r_local = [v - a / 16 for v in r_local]  # the in-process cases step 8-16 envs
    return {
        "a": a,
        "r_bridge": med(r_bridge, 0.35),
        "r_local": med(r_local, 0.30),
        "s": max(med(s, 0.10), 0.0),
        "learn": med(learn, 0.20),
        # The learner's CPU per env step falls as more steps come in (it idles and polls
        # between batches): its busiest trial is the closest to its cost at full load.
        "learner_cpu": min(learner_cpu) if learner_cpu else 0.10,
        "w": max(med(w, 0.05), 0.0),
    }


def predict(
    costs: dict[str, float],
    *,
    sim_ms: float,
    waits: bool,
    mode: str,
    runners: int,
    envs: int,
    servers: int,
    nodes: int,
    cores: float,
    sync: bool,
    learners: int = 1,
    why: bool = False,
) -> Any:
    """Env steps/s the model expects (see the module docstring); ``why``: what binds."""
    runners = max(runners, 1)
    per_vector = costs.get("a", 0.0) / envs
    if mode == "local":
        r = costs["r_local"] + per_vector
        vector = envs * (r + sim_ms)
        cpu = r + (0.0 if waits else sim_ms)
    else:
        r = costs["r_bridge"] + per_vector
        if waits:
            wall = sim_ms + costs["w"] * envs
            cpu = r + costs["s"]
        else:
            per_server = math.ceil(envs / max(min(servers, envs), 1))
            wall = per_server * (sim_ms + costs["s"])
            cpu = r + sim_ms + costs["s"]
        vector = envs * r + wall
    if not sync:
        cpu += costs["learner_cpu"]
    runner_cap = runners * envs / vector
    if mode == "bridge" and not waits:
        # A sim process steps one session at a time, whichever runner it serves.
        runner_cap = min(runner_cap, servers * nodes / (sim_ms + costs["s"]))
    rate, binds = _rates(costs, runner_cap, nodes * cores / cpu, sync, learners)
    return binds if why else rate


def _rates(
    costs: dict[str, float], runner_cap: float, cpu_cap: float, sync: bool, learners: int
) -> tuple[float, str]:
    """Steps/s and what binds: ``runners`` (lock-step), ``cpu`` (cores) or ``learner``."""
    runner_cap, cpu_cap = 1e3 * runner_cap, 1e3 * cpu_cap
    rate, binds = (runner_cap, "runners") if runner_cap < cpu_cap else (cpu_cap, "cpu")
    if sync:
        # PPO: sampling stops while the learner learns; it binds once it takes the most time.
        learn = costs["learn"] / 1e3 / learners
        out = 1.0 / (1.0 / rate + learn)
        return out, ("learner" if learn > 1.0 / rate else binds)
    learner_cap = 1e3 * learners / max(costs["learner_cpu"], 1e-9)
    return (learner_cap, "learner") if learner_cap < rate else (rate, binds)


def bottleneck(costs: dict[str, float], **case: Any) -> str:
    """What limits ``predict(costs, **case)``: ``runners`` (lock-step or sim processes), ``cpu``
    or ``learner``."""
    return str(predict(costs, why=True, **case))


def predict_trial(costs: dict[str, float], t: dict[str, Any], cores: float) -> float:
    """The model's figure for one measured trial (this machine: ``cores`` in all)."""
    nodes = int(t.get("nodes", 2)) if t["mode"] == "nodes" else 1
    return predict(
        costs,
        sim_ms=_cost_ms(t["sim"]),
        waits=_waits(t["sim"]),
        mode=t["mode"],
        runners=int(t.get("runners", 1)),
        envs=int(t.get("envs", 16)),
        servers=int(t.get("servers", 1)),
        nodes=nodes,
        cores=cores / nodes,
        sync=t.get("algorithm", "PPO") == "PPO",
    )


def best_settings(
    costs: dict[str, float], sim_ms: float, waits: bool, nodes: int, cores: int, sync: bool
) -> tuple[float, dict[str, int]]:
    """The settings the model rates best on ``nodes`` x ``cores`` (and its figure)."""
    best: tuple[float, dict[str, int]] = (0.0, {})
    per_node = range(1, cores + 1)
    # An env runner is a process of its own (~0.5 GB with torch): at most half the cores.
    for runners_per_node in range(1, max(cores // 2, 1) + 1):
        for envs in (8, 16, 32, 64):  # the range measured (the fit is linear in 1 / envs)
            for servers in (1,) if waits else per_node:
                rate = predict(
                    costs, sim_ms=sim_ms, waits=waits, mode="bridge",
                    runners=runners_per_node * nodes, envs=envs, servers=servers,
                    nodes=nodes, cores=cores, sync=sync,
                )  # fmt: skip
                # Prefer fewer processes for (almost) the same figure.
                if rate > best[0] * 1.02:
                    best = (rate, {"runners": runners_per_node * nodes, "envs": envs,
                                   "servers_per_node": servers})  # fmt: skip
    return best
