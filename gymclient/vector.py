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
        info_states: Put ``states`` and ``clipped`` in every ``info`` (False leaves them
            out, see ``gymclient.episode``).
        **overrides: Connection overrides (``timeout``, ``token``, ``packed_socket``, ...).

    ``info`` follows Gymnasium's vector convention (a dict of arrays, each with a ``_key``
    mask of the sub-envs that have it), with what ``gymclient.episode`` puts in a ``SimEnv``'s
    ``info``. ``states`` and ``clipped`` are object arrays of the very dicts ``SimEnv`` gives
    (name → value), not nested dicts of arrays as ``_add_info`` would make them: one array
    per state and per observation would cost Gymnasium's ``DictInfoToList`` (RLlib's path)
    several times a sub-env's share of the step.
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
        info_states: bool = True,
        **overrides: Any,
    ) -> None:
        self.spec_ = spec if isinstance(spec, EnvSpec) else load_spec(spec)
        self.num_envs = num_envs
        self._info_states = info_states
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
        self.single_action_space = codec.action_space()  # Box, or Discrete/MultiDiscrete
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
        # Lifetime counters (gymclient.episode.COUNTERS), read by the checker and metrics.
        self.totals = episodes.totals
        self.take_counters = episodes.take_counters
        # Per-episode accumulators: steps, clip counts, sums of the spec's log_states.
        self.log_states = episodes.log_states
        self._log_idx = np.array(episodes.log_idx, np.intp)
        self._log_sum = np.zeros((num_envs, len(self.log_states)))
        self._ep_steps = np.zeros(num_envs, np.int64)
        self._clips = np.zeros((num_envs, len(codec.obs_names)), np.int64)
        self._obs_names = list(codec.obs_names)
        # Each sub-env's `clipped` info, rebuilt only when its counts change (rarely).
        self._clip_dicts = [dict.fromkeys(self._obs_names, 0) for _ in range(num_envs)]
        self._zero_actions = np.zeros((num_envs, len(first.action_names)))
        # The lesson resets draw from (0-based), and each sub-env's episode's (set_lesson).
        self.lesson = 0
        self.episode_lessons = [0] * num_envs

    def set_lesson(self, index: int) -> None:
        """Draw the next resets' configs from lesson ``index`` (0-based) of the spec."""
        if self.spec_.is_reference:
            return  # one lesson: its rl_lesson.yml
        self.lesson = index
        for codec in self.codecs:
            codec.lessons = self.spec_.lesson_config(index)

    # ------------------------------------------------------------------ plumbing

    def _config(self, i: int, options: Mapping[str, Any] | None) -> Reset:
        rng = self._rngs[i]
        if options and "config" in options:
            config = dict(options["config"])
        else:
            config = sample_config(self.codecs[i].lessons, rng)
        self.episode_lessons[i] = self.lesson
        return config, int(rng.integers(2**31 - 1))

    def _start(self, rows: list[int]) -> None:
        """Sub-envs ``rows`` start an episode (reset this round)."""
        self._log_sum[rows] = 0.0
        self._ep_steps[rows] = 0
        self._clips[rows] = 0
        self.totals["episodes"] += len(rows)

    def _observe(self, values: np.ndarray, rows: list[int] | None, started: list[int]) -> None:
        """Observe the given rows of ``values`` (all rows when None); count their clips.

        ``started``: the sub-envs among them that were reset this round.
        """
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
        changed = np.flatnonzero(clipped.any(axis=1))
        changed_envs = (changed if rows is None else np.asarray(rows)[changed]).tolist()
        for i in {*changed_envs, *started}:
            self._clip_dicts[i] = dict(zip(self._obs_names, self._clips[i].tolist(), strict=True))

    def _add_round_info(
        self, infos: dict[str, Any], result: PackedResult, resets: Mapping[int, Reset]
    ) -> list[dict[str, float]]:
        """Add every sub-env's ``states`` and ``clipped`` (failed ones masked), resets' ``config``.

        Returns:
            The ``states`` dict of each sub-env (the reward functions read them too).
        """
        names = self.state_names
        states = [dict(zip(names, row, strict=True)) for row in result.states.tolist()]
        if self._info_states:
            ok = np.ones(self.num_envs, bool)
            ok[list(result.errors)] = False
            clipped = np.array(self._clip_dicts, object)
            infos.update(states=np.array(states, object), _states=ok, clipped=clipped, _clipped=ok)
        started = [i for i in resets if i not in result.errors]
        bad = {i: result.nonfinite[i] for i in started if i in result.nonfinite}
        extra = self._episodes.nonfinite(bad, None) if bad else {}
        for i in started:
            self._add_info(infos, {"config": resets[i][0], **extra.get(i, {})}, i)
        return states

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
        everyone = list(range(self.num_envs))
        self._start(everyone)
        self._observe(result.states, None, everyone)
        self.totals["sim_seconds"] += sum(result.sim_seconds)
        infos: dict[str, Any] = {}
        self._add_round_info(infos, result, resets)
        return self._obs.copy(), infos

    def _decode(self, actions: Any) -> np.ndarray:
        """The agent's actions as the sims' values, a (sub-envs × actions) array."""
        n = self.num_envs
        # Scale every action in one numpy pass (per-row calls would cost more than the wire).
        if isinstance(actions, tuple):  # a Tuple space: (continuous rows, discrete rows)
            if self._uniform:
                return self.codecs[0].decode_batch(actions)  # type: ignore[arg-type]
            rows = [tuple(part[i] for part in actions) for i in range(n)]
            return np.array([self.codecs[i].decode(rows[i]) for i in range(n)])
        if self._uniform:
            return self.codecs[0].decode_batch(np.asarray(actions).reshape(n, -1))
        return np.array([self.codecs[i].decode(actions[i]) for i in range(n)])

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all sub-envs; those that finished last step are reset instead (NEXT_STEP)."""
        n, episodes, totals = self.num_envs, self._episodes, self.totals
        scaled = self._decode(actions)
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
        if errors:
            for i, info in sorted(episodes.failed(errors).items()):  # raises under on_error
                self._add_info(infos, info, i)
                truncs[i] = True
        # Sub-envs reset this round start their episode; those stepped move on together.
        started_ok = [i for i in finished if i not in errors] if errors else finished
        stepped = np.ones(n, bool)
        if finished:
            self._autoreset[finished] = stepped[finished] = False
            self._start(started_ok)
        if errors:
            self._autoreset[list(errors)], stepped[list(errors)] = True, False
            if len(errors) == n:
                return self._obs.copy(), rewards, terms, truncs, infos
        values = result.states
        ok_rows = [i for i in range(n) if i not in errors] if errors else None
        self._observe(values, ok_rows, started_ok)
        count = int(stepped.sum())
        totals["steps"] += count
        self._ep_steps[stepped] += 1
        if len(self._log_idx):
            logged = stepped
            if result.nonfinite:  # those episodes end now, unlogged: keep NaN out of the sums
                logged = stepped.copy()
                logged[list(result.nonfinite)] = False
            self._log_sum[logged] += values[logged][:, self._log_idx]
        states = self._add_round_info(infos, result, resets)
        # Reward and episode end need the sim's flags and the spec's reward, per sub-env.
        ep_steps, sim_rewards = self._ep_steps.tolist(), result.rewards
        bad = {i: b for i, b in result.nonfinite.items() if stepped[i]}
        ended = episodes.nonfinite(bad, ep_steps) if bad else {}
        for i, info in ended.items():  # these episodes end here (gymclient.episode)
            truncs[i] = self._autoreset[i] = True
            self._add_info(infos, info, i)
        for i in np.flatnonzero(stepped).tolist():
            if i in ended:
                continue
            r, term, trunc = episodes.outcome(
                i,
                states[i],
                result.terminated[i],
                result.truncated[i],
                sim_rewards[i] if sim_rewards is not None else None,
                ep_steps[i],
            )
            rewards[i], terms[i], truncs[i] = r, term, trunc
            if term or trunc:
                self._autoreset[i] = True
                if len(self._log_idx):
                    mean = (self._log_sum[i] / ep_steps[i]).tolist()
                    end = episodes.end_info(mean, values[i, self._log_idx].tolist())
                    self._add_info(infos, end, i)
                if episodes.has_goals:
                    self._add_info(infos, episodes.goal_info(i), i)
        return self._obs.copy(), rewards, terms, truncs, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Close every stream, session and channel."""
        # A constructor that failed (a server down, a spec mismatch) has no episodes: the
        # garbage collector's close must not fail on top of the error already raised.
        episodes = getattr(self, "_episodes", None)
        if episodes is not None:
            episodes.close()
