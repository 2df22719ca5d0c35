"""``SimVectorEnv``: N sim sessions stepped in one round trip per server.

A Python gRPC round trip costs many times a typical sim step, so stepping sessions one call
each would make transport the bottleneck. This env sends one packed message per server per
step over a lock-step stream (``gymclient.lane``: actions, states and flags as packed arrays;
resets of finished sub-envs ride in the same message, Gymnasium's ``NEXT_STEP`` autoreset),
and the messages to different servers are in flight together. Its episodes follow the rules
of ``gymclient.episode``, as ``SimEnv``'s do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from gymclient.codec import sample_config
from gymclient.env import connect_options, pick_address
from gymclient.episode import Episodes
from gymclient.lane import PackedResult, Reset
from gymclient.spec import EnvSpec, load_spec


class SimVectorEnv(gym.vector.VectorEnv):
    """A Gymnasium ``VectorEnv`` over ``num_envs`` sessions on one or more servers.

    Args:
        spec: Spec path or ``EnvSpec``.
        num_envs: Number of sessions (sub-envs).
        addresses: Servers to spread sessions over (default: the spec's).
        worker_index: RLlib env-runner index, for the address mapping.
        num_workers: RLlib env-runner count, for the address mapping.
        **overrides: Connection overrides (``timeout``, ``token``, ``packed_socket``, ...).

    ``info`` follows Gymnasium's vector convention (a dict of arrays, each with a ``_key``
    mask of the sub-envs that have it): ``states`` and ``clipped`` (per state and observation
    name), ``config`` for sub-envs that were reset, and ``simgym_error``/``simgym_error_type``
    and ``log_states_mean``/``log_states_final`` where ``gymclient.episode`` puts them.
    ``reset`` raises when a sub-env cannot reset (the first one's error); its session is
    reopened by the next ``reset``, which resets every sub-env again.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}  # noqa: RUF012

    def __init__(
        self,
        spec: str | EnvSpec,
        num_envs: int,
        addresses: Sequence[str] | None = None,
        *,
        worker_index: int = 0,
        num_workers: int = 0,
        **overrides: Any,
    ) -> None:
        self.spec_ = spec if isinstance(spec, EnvSpec) else load_spec(spec)
        self.num_envs = num_envs
        addrs = list(addresses or self.spec_.sim.address_list())
        self._episodes = Episodes(
            self.spec_,
            [pick_address(addrs, worker_index, i, num_workers) for i in range(num_envs)],
            connect_options(self.spec_, **overrides),
            [f"SimVectorEnv[{i}]" for i in range(num_envs)],
        )
        episodes = self._episodes
        self.codecs = episodes.codecs
        codec = self.codecs[0]
        self.single_observation_space = gym.spaces.Box(
            -1.0, 1.0, (len(codec.obs_names),), np.float32
        )
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (len(codec.action_names),), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        first = episodes.sessions[0]
        self.state_names = first.state_names
        # Sessions of one sim share names: then a single codec handles all rows at once.
        self._uniform = all(
            s.state_names == first.state_names and s.action_names == first.action_names
            for s in episodes.sessions
        )
        self._rngs = [np.random.default_rng() for _ in range(num_envs)]
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._obs = np.zeros((num_envs, *self.single_observation_space.shape), np.float32)
        self.on_error = self.spec_.on_error
        # Lifetime counters (gymclient.episode.COUNTERS), read by the checker and metrics.
        self.totals = episodes.totals
        self.take_counters = episodes.take_counters
        self.clip_totals = episodes.clip_totals
        # Per-episode accumulators: steps, clip counts, sums of the spec's log_states.
        self.log_states = episodes.log_states
        self._log_idx = np.array(episodes.log_idx, np.intp)
        self._log_sum = np.zeros((num_envs, len(self.log_states)))
        self._ep_steps = np.zeros(num_envs, np.int64)
        self._clips = np.zeros((num_envs, len(codec.obs_names)), np.int64)
        self._obs_names = list(codec.obs_names)
        self._masks = {k: f"_{k}" for k in [*self.state_names, *self._obs_names]}
        self._zero_actions = np.zeros((num_envs, len(first.action_names)))

    # ------------------------------------------------------------------ plumbing

    def _config(self, i: int, options: Mapping[str, Any] | None) -> Reset:
        rng = self._rngs[i]
        if options and "config" in options:
            config = dict(options["config"])
        else:
            config = sample_config(self.codecs[i].lessons, rng)
        return config, int(rng.integers(2**31 - 1))

    def _observe(self, values: np.ndarray, rows: list[int] | None) -> None:
        """Observe the given rows of ``values`` (all rows when None); count their clips."""
        if rows is not None:
            values = values[rows]
        if self._uniform:
            obs, clipped = self.codecs[0].encode_batch(values)
        else:
            envs = rows if rows is not None else range(self.num_envs)
            pairs = [self.codecs[i].encode_batch(values[k : k + 1]) for k, i in enumerate(envs)]
            obs = np.concatenate([p[0] for p in pairs])
            clipped = np.concatenate([p[1] for p in pairs])
        if not np.isfinite(obs).all():
            obs = np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=-1.0)
        where = rows if rows is not None else slice(None)
        self._obs[where] = obs
        self._clips[where] += clipped
        self.clip_totals += clipped.sum(axis=0)

    def _add_rounds_info(
        self, infos: dict[str, Any], result: PackedResult, resets: Mapping[int, Reset]
    ) -> None:
        """``states`` and ``clipped`` of every sub-env that did not fail; resets' ``config``."""
        episodes, masks = self._episodes, self._masks
        ok = np.ones(self.num_envs, bool)
        ok[list(result.errors)] = False
        states = dict(zip(self.state_names, result.states.T, strict=True))
        clipped = dict(zip(self._obs_names, self._clips.T.copy(), strict=True))
        for names in (states, clipped):
            names.update({masks[k]: ok for k in list(names)})
        infos.update(states=states, _states=ok, clipped=clipped, _clipped=ok)
        for i, (config, _seed) in resets.items():
            if i not in result.errors:
                info = {"config": config}
                if i in result.nonfinite:
                    info.update(episodes.nonfinite(i, result.nonfinite[i], None))
                self._add_info(infos, info, i)

    # ------------------------------------------------------------------ gym API

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env (``seed`` → ``seed + i`` per sub-env, as Gymnasium does).

        Raises:
            RemoteError: A sub-env could not reset (see the class docstring).
        """
        if seed is not None:
            seeds = (
                [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            )
            for i, s in enumerate(seeds):
                if s is not None:
                    self._rngs[i] = np.random.default_rng(s)
        resets = {i: self._config(i, options) for i in range(self.num_envs)}
        result = self._episodes.exchange(self._zero_actions, resets)
        if result.errors:
            self._episodes.reset_failed(result.errors)
        self._autoreset[:] = False
        self._log_sum[:] = 0.0
        self._ep_steps[:] = 0
        self._clips[:] = 0
        self._observe(result.states, None)
        self.totals["episodes"] += self.num_envs
        self.totals["sim_seconds"] += sum(result.sim_seconds)
        infos: dict[str, Any] = {}
        self._add_rounds_info(infos, result, resets)
        return self._obs.copy(), infos

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all sub-envs; those that finished last step are reset instead (NEXT_STEP)."""
        n, episodes, totals = self.num_envs, self._episodes, self.totals
        # Scale every action in one numpy pass (per-row calls would cost more than the wire).
        if self._uniform:
            scaled = self.codecs[0].decode_batch(np.asarray(actions).reshape(n, -1))
        else:
            scaled = np.array([self.codecs[i].decode(actions[i]) for i in range(n)])
        finished = np.flatnonzero(self._autoreset).tolist()
        resets = {i: self._config(i, None) for i in finished}
        started = time.perf_counter()
        result = episodes.exchange(scaled, resets)
        totals["call_seconds"] += time.perf_counter() - started
        totals["sim_seconds"] += sum(result.sim_seconds)
        rewards = np.zeros(n, np.float64)
        terms = np.zeros(n, bool)
        truncs = np.zeros(n, bool)
        infos: dict[str, Any] = {}
        errors = result.errors
        for i in sorted(errors):
            self._add_info(infos, episodes.failed(i, errors[i]), i)  # raises under on_error
            truncs[i] = True
        # Sub-envs reset this round start their episode; those stepped move on together.
        started_ok = [i for i in finished if i not in errors]
        self._autoreset[finished] = False
        self._autoreset[list(errors)] = True
        self._log_sum[started_ok] = 0.0
        self._ep_steps[started_ok] = 0
        self._clips[started_ok] = 0
        totals["episodes"] += len(started_ok)
        if len(errors) == n:
            return self._obs.copy(), rewards, terms, truncs, infos
        values = result.states
        self._observe(values, [i for i in range(n) if i not in errors] if errors else None)
        stepped = np.ones(n, bool)
        stepped[finished] = False
        stepped[list(errors)] = False
        count = int(stepped.sum())
        totals["steps"] += count
        self._ep_steps[stepped] += 1
        if len(self._log_idx):
            logged = stepped
            if result.nonfinite:  # those episodes end now, unlogged: keep NaN out of the sums
                logged = stepped.copy()
                logged[list(result.nonfinite)] = False
            self._log_sum[logged] += values[logged][:, self._log_idx]
        self._add_rounds_info(infos, result, resets)
        # Reward and episode end need the sim's flags and the spec's reward, per sub-env.
        rows, names, ep_steps = values.tolist(), self.state_names, self._ep_steps.tolist()
        sim_rewards = result.rewards
        for i in np.flatnonzero(stepped).tolist():
            r, term, trunc, extra = episodes.outcome(
                i,
                dict(zip(names, rows[i], strict=True)),
                result.terminated[i],
                result.truncated[i],
                sim_rewards[i] if sim_rewards is not None else None,
                result.nonfinite.get(i),
                ep_steps[i],
            )
            rewards[i], terms[i], truncs[i] = r, term, trunc
            if term or trunc:
                self._autoreset[i] = True
                if extra is None and len(self._log_idx):
                    mean = self._log_sum[i] / ep_steps[i]
                    extra = episodes.end_info(mean.tolist(), values[i, self._log_idx].tolist())
            if extra is not None:
                self._add_info(infos, extra, i)
        return self._obs.copy(), rewards, terms, truncs, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Close every stream, session and channel."""
        self._episodes.close()
