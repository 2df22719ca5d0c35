"""``SimVectorEnv``: N sim sessions stepped in one round trip per server.

A Python gRPC round trip costs ~0.4 ms here, several times a typical sim step,
so stepping sessions one call each would make transport the bottleneck. This
env sends one ``Batch`` per server per step (resets of finished sub-envs ride
in the same message, Gymnasium's ``NEXT_STEP`` autoreset), and calls on
different servers go out concurrently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from gymclient.codec import Codec, build_codec, declared_action_names, sample_config
from gymclient.connection import Connection, RemoteSession
from gymclient.env import connect_options, pick_address
from gymclient.errors import RemoteError, from_status
from gymclient.spec import EnvSpec, load_spec
from simgym.v1 import simulator_pb2 as pb

log = logging.getLogger("gymclient.vector")


class SimVectorEnv(gym.vector.VectorEnv):
    """A Gymnasium ``VectorEnv`` over ``num_envs`` sessions on one or more servers.

    Args:
        spec: Spec path or ``EnvSpec``.
        num_envs: Number of sessions (sub-envs).
        addresses: Servers to spread sessions over (default: the spec's).
        worker_index: RLlib env-runner index, for the address mapping.
        num_workers: RLlib env-runner count, for the address mapping.
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
        **overrides: Any,
    ) -> None:
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

    def take_counters(self) -> dict[str, float]:
        """Bridge counters since the last call (steps, errors, sim and call seconds)."""
        counters, self._counters = self._counters, dict.fromkeys(self._counters, 0.0)
        return counters

    # ------------------------------------------------------------------ plumbing

    def _run(
        self, items: list[pb.BatchItem], owners: list[int]
    ) -> list[pb.BatchResult | RemoteError]:
        """Send items grouped by server, concurrently; results in item order."""
        by_conn: dict[str, list[int]] = {}
        for k, env_i in enumerate(owners):
            by_conn.setdefault(self._env_conn[env_i], []).append(k)
        results: list[pb.BatchResult | RemoteError] = [None] * len(items)  # type: ignore[list-item]

        def deliver(address: str, ks: list[int], get: Callable[[], pb.BatchReply]) -> None:
            try:
                for k, result in zip(ks, get().results, strict=True):
                    results[k] = result
            except grpc.RpcError as exc:
                err = from_status(exc.code(), exc.details() or "", address=address, call="Batch")
                for k in ks:
                    results[k] = err

        groups = [
            (a, ks, pb.BatchRequest(items=[items[k] for k in ks])) for a, ks in by_conn.items()
        ]
        if len(groups) == 1:
            # One server: a blocking call (a future costs ~100 µs more per call).
            address, ks, request = groups[0]
            conn = self._conns[address]
            deliver(
                address,
                ks,
                lambda: conn._stub.Batch(
                    request, timeout=conn.options.timeout, metadata=conn._metadata
                ),
            )
            return results
        # Several servers: all calls in flight at once, so the servers work concurrently.
        pending = []
        for address, ks, request in groups:
            conn = self._conns[address]
            pending.append(
                (
                    address,
                    ks,
                    conn._stub.Batch.future(
                        request, timeout=conn.options.timeout, metadata=conn._metadata
                    ),
                )
            )
        for address, ks, future in pending:
            deliver(address, ks, future.result)
        return results

    def _item_error(self, result: pb.BatchResult | RemoteError, address: str) -> RemoteError | None:
        if isinstance(result, RemoteError):
            return result
        if result.WhichOneof("outcome") == "error":
            code = _CODES.get(result.error.code, grpc.StatusCode.UNKNOWN)
            return from_status(code, result.error.message, address=address, call="Batch item")
        return None

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
        items, owners = [], []
        for i in range(self.num_envs):
            if self._reopen[i]:
                self._reopen_session(i)
                self._reopen[i] = False
            config, sim_seed = self._config(i, options)
            items.append(pb.BatchItem(reset=self._sessions[i].reset_request(config, sim_seed)))
            owners.append(i)
        results = self._run(items, owners)
        infos: dict[str, Any] = {}
        for i, result in enumerate(results):
            err = self._item_error(result, self._env_conn[i])
            if err is not None:
                raise err  # a sub-env that cannot even reset is a setup problem, not noise
            assert not isinstance(result, RemoteError)
            t = result.transition
            self._obs[i] = self._encode(i, t)
        self._autoreset[:] = False
        self.totals["episodes"] += self.num_envs
        return self._obs.copy(), infos

    def _encode(self, i: int, t: pb.Transition) -> np.ndarray:
        states = dict(zip(self._sessions[i].state_names, t.states, strict=True))
        obs, _clipped = self.codecs[i].encode(states, t.states)
        if t.nonfinite:
            obs = np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=-1.0)
        return obs

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all sub-envs; those that finished last step are reset instead (NEXT_STEP)."""
        n = self.num_envs
        # Scale every action in one numpy pass (per-row calls would cost more than the wire).
        if self._uniform:
            scaled = self.codecs[0].decode_batch(np.asarray(actions).reshape(n, -1)).tolist()
        else:
            scaled = [self.codecs[i].decode(actions[i]) for i in range(n)]
        items = []
        for i in range(n):
            if self._autoreset[i]:
                if self._reopen[i]:
                    self._reopen_session(i)
                    self._reopen[i] = False
                config, sim_seed = self._config(i, None)
                items.append(pb.BatchItem(reset=self._sessions[i].reset_request(config, sim_seed)))
            else:
                items.append(pb.BatchItem(step=self._sessions[i].step_request(scaled[i])))
        started = time.perf_counter()
        results = self._run(items, list(range(n)))
        self._counters["call_seconds"] += time.perf_counter() - started
        rewards = np.zeros(n, np.float64)
        terms = np.zeros(n, bool)
        truncs = np.zeros(n, bool)
        infos: dict[str, Any] = {}
        ok: list[int] = []
        transitions: list[pb.Transition] = []
        for i, result in enumerate(results):
            err = self._item_error(result, self._env_conn[i])
            if err is None:
                assert not isinstance(result, RemoteError)
                ok.append(i)
                transitions.append(result.transition)
                continue
            self.totals["sim_errors"] += 1
            self._counters["sim_errors"] += 1
            if self.on_error == "raise":
                raise err
            log.warning("sub-env %d truncated: %s", i, err)
            truncs[i] = True
            self._reopen[i] = True
            self._autoreset[i] = True
            self._add_info(infos, {"simgym_error": str(err)}, i)
        if not ok:
            return self._obs.copy(), rewards, terms, truncs, infos
        values = np.array([t.states for t in transitions], dtype=np.float64)
        if self._uniform:
            obs, _clipped = self.codecs[0].encode_batch(values)
        else:
            obs = np.stack(
                [self.codecs[i].encode_batch(values[k : k + 1])[0][0] for k, i in enumerate(ok)]
            )
        if not np.all(np.isfinite(obs)):
            obs = np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=-1.0)
        self._obs[ok] = obs
        names = self.state_names
        for k, i in enumerate(ok):
            t = transitions[k]
            if self._autoreset[i]:  # this item was the reset of a finished episode
                self._autoreset[i] = False
                self.totals["episodes"] += 1
                self._log_sum[i] = 0.0
                self._ep_steps[i] = 0
                continue
            self.totals["steps"] += 1
            self._counters["steps"] += 1
            self._counters["sim_seconds"] += t.sim_seconds
            self._ep_steps[i] += 1
            if t.nonfinite:
                self.totals["nonfinite"] += 1
                self._counters["nonfinite"] += 1
                truncs[i] = True
                self._autoreset[i] = True
                self._add_info(infos, {"simgym_error": "non-finite states"}, i)
                continue
            row = values[k]
            r, term, trunc = self.codecs[i].reward(
                dict(zip(names, row.tolist(), strict=True)),
                t.terminated,
                t.truncated,
                t.reward if t.HasField("reward") else None,
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

    def close_extras(self, **kwargs: Any) -> None:
        """Close every session and channel."""
        for session in self._sessions:
            session.close()
        for conn in self._conns.values():
            conn.close()
        self._sessions = []


_CODES = {code.value[0]: code for code in grpc.StatusCode}
