"""In-process CSTR vector env for bench/train_throughput.py: the spec codec, no gRPC.

``LocalSimVectorEnv`` does what ``gymclient.vector.SimVectorEnv`` plus a simserver session do
per step, minus the transport: scale the actions with the spec's ``DeclarativeCodec``
(``decode_batch``), call ``sim.step({name: value})``, ``termination()`` and ``truncation()``
(as ``simserver.adapters.ClassSim`` does), gather the states in the sim's order, encode them with
``encode_batch``, compute the spec's reward with ``codec.reward``, draw lesson configs with
``sample_config`` at every reset, autoreset finished sub-envs on the next step (Gymnasium
``NEXT_STEP``, as ``SimVectorEnv``) and report the spec's ``log_states`` per episode in the same
info keys, so RLlib and the simgym callbacks do the same work on both sides.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from gymclient.codec import DeclarativeCodec, sample_config
from gymclient.spec import EnvSpec, load_spec

LOCAL_ENV_NAME = "simgym_local"


def load_sim_class(spec: EnvSpec) -> type:
    """The class named by the spec's ``sim.target`` (``file.py:Class``, relative to the spec)."""
    target = spec.sim.target or ""
    file_part, _, name = target.rpartition(":")
    path = Path(spec.path(file_part)).resolve()
    mod_spec = importlib.util.spec_from_file_location(f"_bench_sim_{path.stem}", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return getattr(module, name)


class LocalSimVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` in-process sim instances behind the spec's codec (see the module doc)."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}  # noqa: RUF012

    def __init__(self, spec: str | EnvSpec, num_envs: int) -> None:
        self.spec_ = spec if isinstance(spec, EnvSpec) else load_spec(spec)
        self.num_envs = num_envs
        cls = load_sim_class(self.spec_)
        self._sims = [cls() for _ in range(num_envs)]
        self.state_names = list(cls.state_names)
        self.action_names = list(cls.action_names)
        self.codec = DeclarativeCodec(self.spec_, self.state_names, self.action_names)
        self.single_observation_space = gym.spaces.Box(
            -1.0, 1.0, (len(self.codec.obs_names),), np.float32
        )
        self.single_action_space = gym.spaces.Box(
            -1.0, 1.0, (len(self.codec.action_names),), np.float32
        )
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs = [np.random.default_rng() for _ in range(num_envs)]
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._obs = np.zeros((num_envs, *self.single_observation_space.shape), np.float32)
        self.log_states = [n for n in self.codec.log_states if n in self.state_names]
        self._log_idx = np.array([self.state_names.index(n) for n in self.log_states], np.intp)
        self._log_sum = np.zeros((num_envs, len(self.log_states)))
        self._ep_steps = np.zeros(num_envs, np.int64)
        self._max_steps = self.spec_.max_episode_steps
        self._counters = dict.fromkeys(
            ("steps", "sim_errors", "nonfinite", "sim_seconds", "call_seconds"), 0.0
        )

    def take_counters(self) -> dict[str, float]:
        """Counters since the last call (the simgym callbacks log them, as for SimVectorEnv)."""
        counters, self._counters = self._counters, dict.fromkeys(self._counters, 0.0)
        return counters

    def _reset_one(self, i: int, options: dict[str, Any] | None) -> list[float]:
        rng = self._rngs[i]
        if options and "config" in options:
            config = dict(options["config"])
        else:
            config = sample_config(self.codec.lessons, rng)
        sim_seed = int(rng.integers(2**31 - 1))
        states = self._sims[i].reset(config, seed=sim_seed)
        return [float(states[n]) for n in self.state_names]

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env (``seed`` → ``seed + i`` per sub-env)."""
        if seed is not None:
            seeds = (
                [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            )
            for i, s in enumerate(seeds):
                if s is not None:
                    self._rngs[i] = np.random.default_rng(s)
        values = np.array(
            [self._reset_one(i, options) for i in range(self.num_envs)], dtype=np.float64
        )
        obs, _ = self.codec.encode_batch(values)
        self._obs[:] = np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=-1.0)
        self._autoreset[:] = False
        self._log_sum[:] = 0.0
        self._ep_steps[:] = 0
        return self._obs.copy(), {}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all sub-envs; those that finished last step are reset instead (NEXT_STEP)."""
        n = self.num_envs
        scaled = self.codec.decode_batch(np.asarray(actions).reshape(n, -1)).tolist()
        names, action_names = self.state_names, self.action_names
        rows: list[list[float]] = []
        flags: list[tuple[bool, bool]] = []
        for i in range(n):
            if self._autoreset[i]:
                rows.append(self._reset_one(i, None))
                flags.append((False, False))
                continue
            sim = self._sims[i]
            states = sim.step(dict(zip(action_names, scaled[i], strict=True)))
            flags.append((bool(sim.termination()), bool(sim.truncation())))
            rows.append([float(states[s]) for s in names])
        values = np.array(rows, dtype=np.float64)
        obs, _clipped = self.codec.encode_batch(values)
        if not np.all(np.isfinite(obs)):
            obs = np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=-1.0)
        self._obs[:] = obs
        rewards = np.zeros(n, np.float64)
        terms = np.zeros(n, bool)
        truncs = np.zeros(n, bool)
        infos: dict[str, Any] = {}
        for i in range(n):
            if self._autoreset[i]:  # this row was the reset of a finished episode
                self._autoreset[i] = False
                self._log_sum[i] = 0.0
                self._ep_steps[i] = 0
                continue
            self._counters["steps"] += 1
            self._ep_steps[i] += 1
            row = values[i]
            if not all(math.isfinite(v) for v in rows[i]):
                self._counters["nonfinite"] += 1
                truncs[i] = True
                self._autoreset[i] = True
                self._add_info(infos, {"simgym_error": "non-finite states"}, i)
                continue
            term, trunc = flags[i]
            r, term, trunc = self.codec.reward(
                dict(zip(names, rows[i], strict=True)), term, trunc, None
            )
            if self._max_steps is not None and self._ep_steps[i] >= self._max_steps and not term:
                trunc = True
            rewards[i], terms[i], truncs[i] = r, term, trunc
            if len(self._log_idx):
                logged = row[self._log_idx]
                self._log_sum[i] += logged
                if term or trunc:
                    mean = self._log_sum[i] / self._ep_steps[i]
                    self._add_info(
                        infos,
                        {
                            "log_states_mean": dict(
                                zip(self.log_states, mean.tolist(), strict=True)
                            ),
                            "log_states_final": dict(
                                zip(self.log_states, logged.tolist(), strict=True)
                            ),
                        },
                        i,
                    )
            self._autoreset[i] = bool(term or trunc)
        return self._obs.copy(), rewards, terms, truncs, infos


def make_local_env(ctx: Any) -> Any:
    """RLlib env creator for ``LocalSimVectorEnv`` (vector entry point: ``num_envs`` given)."""
    cfg = dict(ctx)
    num_envs = int(cfg.pop("num_envs", 1))
    return LocalSimVectorEnv(cfg["spec"], num_envs)
