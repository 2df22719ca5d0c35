"""``SimEnv``: one Gymnasium env for any sim server, configured by a spec."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from gymclient.codec import Codec, sample_config
from gymclient.connection import ConnectOptions, RemoteSession
from gymclient.episode import Episodes
from gymclient.episode import NonFiniteStateError as NonFiniteStateError  # its old home
from gymclient.errors import RemoteError, SimgymError
from gymclient.lane import Transition
from gymclient.spec import EnvSpec, load_spec


def pick_address(
    addresses: Sequence[str], worker_index: int = 0, vector_index: int = 0, num_workers: int = 0
) -> str:
    """Map an RLlib env slot to one server, deterministically and evenly.

    Env runner ``w`` (1-based; 0 is the local runner) and sub-env ``v`` get slot
    ``(w - 1) + v * num_workers``, so runners spread over servers first and the
    sub-envs of one runner then fill the rest.
    """
    if not addresses:
        raise SimgymError("no sim server address: give `sim.address(es)` in the spec or address=")
    w = max(worker_index - 1, 0)
    slot = w + vector_index * max(num_workers, 1)
    return addresses[slot % len(addresses)]


def connect_options(spec: EnvSpec, **overrides: Any) -> ConnectOptions:
    """Connection options from the spec's ``sim`` section, with overrides."""
    s = spec.sim
    values: dict[str, Any] = {
        "timeout": s.timeout,
        "reset_timeout": s.reset_timeout,
        "connect_timeout": s.connect_timeout,
        "token": s.resolved_token(),
        "tls": s.tls,
        "tls_ca": str(spec.path(s.tls_ca)) if s.tls_ca else None,
        "tls_server_name": s.tls_server_name,
        "packed_socket": s.packed_socket,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ConnectOptions(**values)


def _env_config(config: Mapping[str, Any] | None) -> tuple[dict[str, Any], int, int, int]:
    """Read RLlib's ``EnvContext`` (a dict with worker/vector index attributes)."""
    cfg = dict(config or {})
    worker = int(getattr(config, "worker_index", cfg.pop("worker_index", 0)) or 0)
    vector = int(getattr(config, "vector_index", cfg.pop("vector_index", 0)) or 0)
    workers = int(getattr(config, "num_workers", cfg.pop("num_workers", 0)) or 0)
    return cfg, worker, vector, workers


class SimEnv(gym.Env[np.ndarray, np.ndarray]):
    """A Gymnasium env whose dynamics run in a remote ``simserver`` session.

    Args:
        config: A dict (or RLlib ``EnvContext``) with ``spec`` (path or ``EnvSpec``),
            and optionally ``address``/``addresses`` (override the spec's),
            ``timeout``, ``reset_timeout``, ``token``, ``client``, ``packed_socket``,
            ``info_states`` (default True; False leaves ``states`` and ``clipped`` out of
            every ``info``, see ``gymclient.episode``). Keyword arguments are merged in.

    Observations are a float32 Box in [-1, 1]; actions a Box in [-1, 1], or ``Discrete``/
    ``MultiDiscrete`` indices for discrete actions (the sim receives the chosen values).
    Episodes follow the rules of ``gymclient.episode`` (failures, non-finite states,
    ``max_episode_steps``, reopening a session, what ``info`` carries), as each sub-env of
    ``SimVectorEnv`` does: this env is its one slot. Steps and resets travel over one
    lock-step stream per env: the server's packed socket when it offers one reachable from
    here (``packed_socket: False`` opts out), else a gRPC ``PackedStream``.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it so)

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__()
        cfg, worker, vector, workers = _env_config(config)
        cfg.update(kwargs)
        spec = cfg.get("spec")
        if spec is None:
            raise SimgymError("SimEnv needs a spec: SimEnv({'spec': 'path/to/spec.yaml', ...})")
        self.spec_ = spec if isinstance(spec, EnvSpec) else load_spec(spec)
        addresses = cfg.get("addresses") or ([cfg["address"]] if cfg.get("address") else None)
        addresses = addresses or self.spec_.sim.address_list()
        self.address = pick_address(addresses, worker, vector, workers)
        options = connect_options(
            self.spec_,
            timeout=cfg.get("timeout"),
            reset_timeout=cfg.get("reset_timeout"),
            token=cfg.get("token"),
            connect_timeout=cfg.get("connect_timeout"),
            packed_socket=cfg.get("packed_socket"),
        )
        client = cfg.get("client") or f"SimEnv pid {os.getpid()} worker {worker} vector {vector}"
        self._episodes = Episodes(self.spec_, [self.address], options, [str(client)])
        self._lane = self._episodes.lanes[0]
        self._state_names: list[str] = self.session.state_names
        self.codec: Codec = self._episodes.codecs[0]
        self._obs_names: list[str] = list(self.codec.obs_names)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (len(self.codec.obs_names),), np.float32)
        # Box(-1, 1), or Discrete/MultiDiscrete for discrete actions (gymclient.actions).
        self.action_space = self.codec.action_space()
        self._last_obs: np.ndarray = np.zeros(self.observation_space.shape, np.float32)
        # Python numbers: per-step updates of numpy arrays cost more than the step's maths.
        self._episode_clips: list[int] = [0] * len(self.codec.obs_names)
        self._log_idx = self._episodes.log_idx
        self._log_sums: list[float] = [0.0] * len(self._log_idx)
        self._steps: int = 0
        # Lifetime counters (gymclient.episode.COUNTERS), read by the checker and metrics.
        self.totals: dict[str, float] = self._episodes.totals
        self.take_counters = self._episodes.take_counters
        self.clip_totals: np.ndarray = np.zeros(len(self.codec.obs_names), np.int64)
        self.last_sim_seconds: float = 0.0
        self._info_states = bool(cfg.get("info_states", True))
        unranged = [n for n, r in self.spec_.observations.items() if not r.ranged]
        if unranged:
            # simgym train and simgym check estimate them first (launcher.ranges); an env
            # made directly would feed the agent raw values, clipped to [-1, 1].
            logging.getLogger("gymclient").warning(
                "%s: observations %s have no min/max: passed to the agent unscaled (clipped "
                "to [-1, 1]); give them, or run simgym check --write-ranges",
                self.spec_.source,
                ", ".join(unranged),
            )
        # The lesson resets draw from (0-based; `lessons:` as a list), and the lesson the
        # current episode was drawn from: training moves it on (set_lesson).
        self.lesson = 0
        self.episode_lesson = 0
        if cfg.get("lesson"):
            self.set_lesson(int(cfg["lesson"]))

    @property
    def session(self) -> RemoteSession:
        """The live session (for diagnostics and tests)."""
        return self._episodes.sessions[0]

    @property
    def state_names(self) -> list[str]:
        """The sim's state names."""
        return self.session.state_names

    def set_lesson(self, index: int) -> None:
        """Draw the next resets' configs from lesson ``index`` (0-based) of the spec."""
        if self.spec_.is_reference:
            return  # one lesson: its rl_lesson.yml
        self.lesson = index
        self.codec.lessons = self.spec_.lesson_config(index)

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: draw a scenario from the lessons (or ``options['config']``).

        Raises:
            RemoteError: The reset failed; the next reset starts on a new session.
        """
        super().reset(seed=seed)
        self.episode_lesson = self.lesson
        if options and "config" in options:
            config = dict(options["config"])
        else:
            config = sample_config(self.codec.lessons, self.np_random)
        # The sim's seed derives from the env's generator: `reset(seed=s)` makes the
        # whole episode (scenario and sim noise) reproducible.
        sim_seed = int(self.np_random.integers(2**31 - 1))
        if options and "sim_seed" in options:
            sim_seed = int(options["sim_seed"])
        transition = self._episodes.reset_single(config, sim_seed)
        self._steps = 0
        self._episode_clips = [0] * len(self._episode_clips)
        self._log_sums = [0.0] * len(self._log_idx)
        self.totals["episodes"] += 1
        obs, _states, info = self._observe(transition)
        info["config"] = config
        if transition.nonfinite:
            info.update(self._episodes.nonfinite({0: transition.nonfinite}, None)[0])
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply an action (scaled to the sim's ranges, or the chosen values) and step."""
        values = self.codec.decode(action)
        totals = self.totals
        started = time.perf_counter()
        try:
            transition = self._lane.run_single(values, None)
        except RemoteError as exc:
            return self._last_obs, 0.0, False, True, self._episodes.failed({0: exc})[0]
        finally:
            totals["call_seconds"] += time.perf_counter() - started
        self._steps += 1
        totals["steps"] += 1
        obs, states, info = self._observe(transition)
        if transition.nonfinite:  # the episode ends here (gymclient.episode)
            info.update(self._episodes.nonfinite({0: transition.nonfinite}, [self._steps])[0])
            return obs, 0.0, False, True, info
        reward, terminated, truncated = self._episodes.outcome(
            0,
            states,
            transition.terminated,
            transition.truncated,
            transition.reward,
            self._steps,
        )
        if self._log_idx:
            values = transition.states
            sums = self._log_sums = [
                s + values[i] for s, i in zip(self._log_sums, self._log_idx, strict=True)
            ]
            if terminated or truncated:
                means = [s / self._steps for s in sums]
                info.update(self._episodes.end_info(means, [values[i] for i in self._log_idx]))
        if self._episodes.has_goals and (terminated or truncated):
            info.update(self._episodes.goal_info(0))
        return obs, reward, terminated, truncated, info

    def _observe(
        self, transition: Transition
    ) -> tuple[np.ndarray, dict[str, float], dict[str, Any]]:
        """The observation, the named states and the ``info`` of a step's or reset's states."""
        values = transition.states
        states = dict(zip(self._state_names, values, strict=True))
        obs, clipped = self.codec.observe(states, values)
        for j in clipped:
            self._episode_clips[j] += 1
            self.clip_totals[j] += 1
        self._last_obs = obs
        info: dict[str, Any] = (
            {
                "states": states,
                "clipped": dict(zip(self._obs_names, self._episode_clips, strict=True)),
            }
            if self._info_states
            else {}
        )
        # Timing stays out of `info`: Gymnasium's determinism check compares infos.
        self.last_sim_seconds = transition.sim_seconds
        self.totals["sim_seconds"] += transition.sim_seconds
        return obs, states, info

    def close(self) -> None:
        """Close the stream, the session and the channel."""
        episodes = getattr(self, "_episodes", None)  # absent when __init__ failed
        if episodes is not None:
            episodes.close()
        super().close()

    def __del__(self) -> None:
        # Free the server's session even when the user forgets close().
        try:
            self.close()
        except Exception:
            pass
