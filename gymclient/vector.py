"""``SimVectorEnv``: N sim sessions stepped in one round trip per server.

A Python gRPC round trip costs ~0.5 ms here, many times a typical sim step, so
stepping sessions one call each would make transport the bottleneck. This env
sends one packed message per server per step over a lock-step stream
(``gymclient.packed``: actions, states and flags as packed arrays; resets of
finished sub-envs ride in the same message, Gymnasium's ``NEXT_STEP``
autoreset), and the messages to different servers are in flight together.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from gymclient.codec import Codec, build_codec, declared_action_names, sample_config
from gymclient.connection import Connection, RemoteSession
from gymclient.env import connect_options, pick_address
from gymclient.errors import RemoteError
from gymclient.packed import PackedLane, PackedResult, Reset
from gymclient.spec import EnvSpec, load_spec

log = logging.getLogger("gymclient.vector")


class SimVectorEnv(gym.vector.VectorEnv):
    """A Gymnasium ``VectorEnv`` over ``num_envs`` sessions on one or more servers.

    Args:
        spec: Spec path or ``EnvSpec``.
        num_envs: Number of sessions (sub-envs).
        addresses: Servers to spread sessions over (default: the spec's).
        worker_index: RLlib env-runner index, for the address mapping.
        num_workers: RLlib env-runner count, for the address mapping.
        transport: ``"stream"`` (default: one lock-step ``PackedStream`` per server) or
            ``"unary"`` (one ``PackedBatch`` call per server and step).
        **overrides: Connection overrides (``timeout``, ``token``, ...).
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
        transport: str = "stream",
        **overrides: Any,
    ) -> None:
        if transport not in ("stream", "unary"):
            raise ValueError(f"transport must be 'stream' or 'unary', not {transport!r}")
        self.spec_ = spec if isinstance(spec, EnvSpec) else load_spec(spec)
        self.num_envs = num_envs
        addrs = list(addresses or self.spec_.sim.address_list())
        options = connect_options(self.spec_, **overrides)
        actions = declared_action_names(self.spec_)
        self._conns: dict[str, Connection] = {}
        self._sessions: list[RemoteSession] = []
        self._env_conn: list[str] = []
        for i in range(num_envs):
            address = pick_address(addrs, worker_index, i, num_workers)
            if address not in self._conns:
                self._conns[address] = Connection(address, options)
            self._sessions.append(self._conns[address].open(actions, client=f"SimVectorEnv[{i}]"))
            self._env_conn.append(address)
        self._actions = actions
        first = self._sessions[0]
        self.codecs: list[Codec] = [
            build_codec(self.spec_, s.state_names, s.action_names) for s in self._sessions
        ]
        codec = self.codecs[0]
        self.single_observation_space = gym.spaces.Box(
            -1.0, 1.0, (len(codec.obs_names),), np.float32
        )
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (len(codec.action_names),), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.state_names = first.state_names
        # Sessions of one sim share names: then a single codec handles all rows at once.
        self._uniform = all(
            s.state_names == first.state_names and s.action_names == first.action_names
            for s in self._sessions
        )
        self._rngs = [np.random.default_rng() for _ in range(num_envs)]
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._reopen = np.zeros(num_envs, dtype=bool)
        self._obs = np.zeros((num_envs, *self.single_observation_space.shape), np.float32)
        self.on_error = self.spec_.on_error
        self.totals = {"steps": 0, "episodes": 0, "sim_errors": 0, "nonfinite": 0}
        # Per-episode accumulators of the spec's log_states (reported at episode end).
        self.log_states = [n for n in codec.log_states if n in first.state_names]
        self._log_idx = np.array([first.state_names.index(n) for n in self.log_states], np.intp)
        self._log_sum = np.zeros((num_envs, len(self.log_states)))
        self._ep_steps = np.zeros(num_envs, np.int64)
        self._max_steps = self.spec_.max_episode_steps
        self._counters = dict.fromkeys(
            ("steps", "sim_errors", "nonfinite", "sim_seconds", "call_seconds"), 0.0
        )
        # One lane per server; sub-env i is slot self._slot[i] = (lane, k) of it.
        self._lanes: list[PackedLane] = []
        self._lane_envs: list[np.ndarray] = []
        self._slot: list[tuple[int, int]] = [(0, 0)] * num_envs
        for address, conn in self._conns.items():
            envs = [i for i in range(num_envs) if self._env_conn[i] == address]
            for k, i in enumerate(envs):
                self._slot[i] = (len(self._lanes), k)
            self._lanes.append(
                PackedLane(conn, [self._sessions[i] for i in envs], stream=transport == "stream")
            )
            self._lane_envs.append(np.array(envs, np.intp))
        # One server: its slots are the sub-envs in order, nothing to regroup per step.
        self._single = len(self._lanes) == 1
        self._width = len(first.state_names)
        self._zero_actions = np.zeros((num_envs, len(first.action_names)))

    def take_counters(self) -> dict[str, float]:
        """Bridge counters since the last call (steps, errors, sim and call seconds)."""
        counters, self._counters = self._counters, dict.fromkeys(self._counters, 0.0)
        return counters

    # ------------------------------------------------------------------ plumbing

    def _exchange(self, actions: np.ndarray, resets: dict[int, Reset]) -> PackedResult:
        """One round on every server: step each sub-env with its row, reset ``resets``.

        A failure of a whole server's round becomes the error of each of its sub-envs.
        """
        if self._single:
            lane = self._lanes[0]
            try:
                return lane.run(actions.ravel().tolist(), resets)
            except RemoteError as err:
                return _failed_round(self.num_envs, self._width, err)
        # Several servers: every round in flight before any reply is awaited, so the servers
        # work concurrently.
        out = _failed_round(self.num_envs, self._width, None)
        sent: list[tuple[PackedLane, np.ndarray]] = []
        for lane, envs in zip(self._lanes, self._lane_envs, strict=True):
            lane_resets = {k: resets[i] for k, i in enumerate(envs.tolist()) if i in resets}
            try:
                lane.send(actions[envs].ravel().tolist(), lane_resets)
                sent.append((lane, envs))
            except RemoteError as err:
                out.errors.update(dict.fromkeys(envs.tolist(), err))
        for lane, envs in sent:
            try:
                result = lane.receive()
            except RemoteError as err:
                out.errors.update(dict.fromkeys(envs.tolist(), err))
                continue
            index = envs.tolist()
            out.states[envs] = result.states
            for k, i in enumerate(index):
                out.terminated[i] = result.terminated[k]
                out.truncated[i] = result.truncated[k]
                out.steps[i] = result.steps[k]
                out.sim_seconds[i] = result.sim_seconds[k]
            if result.rewards is not None:
                if out.rewards is None:
                    out.rewards = [math.nan] * self.num_envs
                for k, i in enumerate(index):
                    out.rewards[i] = result.rewards[k]
            for k, bad in result.nonfinite.items():
                out.nonfinite[index[k]] = bad
            for k, failure in result.errors.items():
                out.errors[index[k]] = failure
        return out

    def _config(self, i: int, options: Mapping[str, Any] | None) -> tuple[dict[str, Any], int]:
        rng = self._rngs[i]
        if options and "config" in options:
            config = dict(options["config"])
        else:
            config = sample_config(self.codecs[i].lessons, rng)
        return config, int(rng.integers(2**31 - 1))

    def _reopen_session(self, i: int) -> None:
        self._sessions[i].close()
        self._sessions[i] = self._conns[self._env_conn[i]].open(
            self._actions, client=f"SimVectorEnv[{i}]"
        )
        lane, slot = self._slot[i]
        self._lanes[lane].replace(slot, self._sessions[i])

    def _observe(self, values: np.ndarray, rows: list[int] | None) -> np.ndarray:
        """Observations of the given rows of ``values`` (all rows when None)."""
        if rows is not None:
            values = values[rows]
        if self._uniform:
            obs, _clipped = self.codecs[0].encode_batch(values)
        else:
            envs = rows if rows is not None else range(self.num_envs)
            obs = np.stack(
                [self.codecs[i].encode_batch(values[k : k + 1])[0][0] for k, i in enumerate(envs)]
            )
        if not np.isfinite(obs).all():
            obs = np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=-1.0)
        return obs

    # ------------------------------------------------------------------ gym API

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env (``seed`` → ``seed + i`` per sub-env, as Gymnasium does)."""
        if seed is not None:
            seeds = (
                [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            )
            for i, s in enumerate(seeds):
                if s is not None:
                    self._rngs[i] = np.random.default_rng(s)
        resets: dict[int, Reset] = {}
        for i in range(self.num_envs):
            if self._reopen[i]:
                self._reopen_session(i)
                self._reopen[i] = False
            resets[i] = self._config(i, options)
        result = self._exchange(self._zero_actions, resets)
        for i in sorted(result.errors):
            raise result.errors[i]  # a sub-env that cannot even reset is a setup problem
        self._obs[:] = self._observe(result.states, None)
        self._autoreset[:] = False
        self._log_sum[:] = 0.0
        self._ep_steps[:] = 0
        self.totals["episodes"] += self.num_envs
        return self._obs.copy(), {}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all sub-envs; those that finished last step are reset instead (NEXT_STEP)."""
        n = self.num_envs
        # Scale every action in one numpy pass (per-row calls would cost more than the wire).
        if self._uniform:
            scaled = self.codecs[0].decode_batch(np.asarray(actions).reshape(n, -1))
        else:
            scaled = np.array([self.codecs[i].decode(actions[i]) for i in range(n)])
        finished = np.flatnonzero(self._autoreset).tolist()
        resets: dict[int, Reset] = {}
        for i in finished:
            if self._reopen[i]:
                self._reopen_session(i)
                self._reopen[i] = False
            resets[i] = self._config(i, None)
        started = time.perf_counter()
        result = self._exchange(scaled, resets)
        self._counters["call_seconds"] += time.perf_counter() - started
        rewards = np.zeros(n, np.float64)
        terms = np.zeros(n, bool)
        truncs = np.zeros(n, bool)
        infos: dict[str, Any] = {}
        errors = result.errors
        for i in sorted(errors):
            err = errors[i]
            self.totals["sim_errors"] += 1
            self._counters["sim_errors"] += 1
            if self.on_error == "raise":
                raise err
            log.warning("sub-env %d truncated: %s", i, err)
            truncs[i] = True
            self._reopen[i] = True
            self._add_info(infos, {"simgym_error": str(err)}, i)
        ok = [i for i in range(n) if i not in errors] if errors else None
        if ok == []:
            self._autoreset[:] = True
            return self._obs.copy(), rewards, terms, truncs, infos
        values = result.states
        self._obs[ok if ok is not None else slice(None)] = self._observe(values, ok)
        # Sub-envs stepped (not reset, not failed): their counters move together.
        stepped = np.ones(n, bool)
        stepped[finished] = False
        if errors:
            stepped[list(errors)] = False
        self._autoreset[finished] = False
        self._autoreset[list(errors)] = True
        if finished:
            self.totals["episodes"] += len(finished) - sum(1 for i in finished if i in errors)
            self._log_sum[finished] = 0.0
            self._ep_steps[finished] = 0
        count = int(stepped.sum())
        self.totals["steps"] += count
        self._counters["steps"] += count
        self._counters["sim_seconds"] += float(np.dot(result.sim_seconds, stepped))
        self._ep_steps[stepped] += 1
        if len(self._log_idx):
            logged_rows = stepped
            if result.nonfinite:  # those episodes end now, unlogged: keep NaN out of the sums
                logged_rows = stepped.copy()
                logged_rows[list(result.nonfinite)] = False
            self._log_sum[logged_rows] += values[logged_rows][:, self._log_idx]
        # Reward and episode end need the sim's flags and the spec's reward, per sub-env.
        rows = values.tolist()
        names = self.state_names
        ep_steps = self._ep_steps.tolist()
        max_steps = self._max_steps
        sim_rewards = result.rewards
        ended: list[int] = []
        for i in np.flatnonzero(stepped).tolist():
            if i in result.nonfinite:
                self.totals["nonfinite"] += 1
                self._counters["nonfinite"] += 1
                truncs[i] = True
                self._autoreset[i] = True
                self._add_info(infos, {"simgym_error": "non-finite states"}, i)
                continue
            r, term, trunc = self.codecs[i].reward(
                dict(zip(names, rows[i], strict=True)),
                result.terminated[i],
                result.truncated[i],
                sim_rewards[i] if sim_rewards is not None else None,
            )
            if max_steps is not None and ep_steps[i] >= max_steps and not term:
                trunc = True
            rewards[i], terms[i], truncs[i] = r, term, trunc
            if term or trunc:
                self._autoreset[i] = True
                ended.append(i)
        if len(self._log_idx):
            for i in ended:
                logged = values[i, self._log_idx]
                mean = self._log_sum[i] / self._ep_steps[i]
                self._add_info(
                    infos,
                    {
                        "log_states_mean": dict(zip(self.log_states, mean.tolist(), strict=True)),
                        "log_states_final": dict(
                            zip(self.log_states, logged.tolist(), strict=True)
                        ),
                    },
                    i,
                )
        return self._obs.copy(), rewards, terms, truncs, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Close every stream, session and channel."""
        for lane in self._lanes:
            lane.close()
        for session in self._sessions:
            session.close()
        for conn in self._conns.values():
            conn.close()
        self._sessions = []


def _failed_round(count: int, width: int, err: RemoteError | None) -> PackedResult:
    """A round's result with nothing received yet (every sub-env failed with ``err``)."""
    return PackedResult(
        states=np.full((count, width), math.nan),
        terminated=[False] * count,
        truncated=[False] * count,
        steps=[0] * count,
        sim_seconds=[0.0] * count,
        rewards=None,
        nonfinite={},
        errors=dict.fromkeys(range(count), err) if err is not None else {},
    )
