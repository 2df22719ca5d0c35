"""``SimEnv``: one Gymnasium env for any sim server, configured by a spec."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from gymclient.codec import Codec, build_codec, declared_action_names, sample_config
from gymclient.connection import Connection, ConnectOptions, RemoteSession
from gymclient.errors import RemoteError, SimgymError
from gymclient.packed import PackedLane, Reset, Transition
from gymclient.spec import EnvSpec, load_spec

log = logging.getLogger("gymclient")


class NonFiniteStateError(SimgymError):
    """The sim returned NaN/inf for states the agent observes (``on_nonfinite: raise``)."""


# How SimEnv reaches its session: a lock-step PackedStream (sync grpcio, or grpc.aio on a
# private event loop), or one unary PackedBatch call per step.
TRANSPORTS = ("stream", "aio", "unary")


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
            ``timeout``, ``reset_timeout``, ``token``, ``client``, ``packed_socket``.
            Keyword arguments are merged in.

    Observations and actions are float32 Boxes in [-1, 1]. ``info`` carries the
    raw ``states`` dict, per-observation clip counts for the episode
    (``clipped``), and ``simgym_error``
    when an episode was cut short by a failure (``on_error: truncate``).

    Steps and resets travel over one lock-step ``PackedStream`` per env (no per-call
    setup, cheaper than a unary call). The config key ``transport`` picks ``stream``
    (default), ``aio`` (the same stream driven by ``grpc.aio`` on a private event loop) or
    ``unary`` (one ``PackedBatch`` call per step). All fall back to ``Batch`` on a server
    that predates the packed calls. On a unix server that offers its packed socket, ``stream``
    runs over that instead of gRPC (``gymclient.packedsocket``; ``packed_socket: False`` opts
    out).
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
        self._options = connect_options(
            self.spec_,
            timeout=cfg.get("timeout"),
            reset_timeout=cfg.get("reset_timeout"),
            token=cfg.get("token"),
            connect_timeout=cfg.get("connect_timeout"),
            packed_socket=cfg.get("packed_socket"),
        )
        self._client = str(
            cfg.get("client") or f"SimEnv pid {os.getpid()} worker {worker} vector {vector}"
        )
        transport = cfg.get("transport") or "stream"
        if transport not in TRANSPORTS:
            raise SimgymError(
                f"SimEnv transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}"
            )
        self._transport = transport
        self._action_names = declared_action_names(self.spec_)
        self._conn: Connection | None = None
        self._session: RemoteSession | None = None
        self._lane: PackedLane | None = None
        self._open()
        assert self._session is not None
        self._state_names: list[str] = self._session.state_names
        self._reset_action: list[float] = [0.0] * len(self._session.action_names)
        self.codec: Codec = build_codec(
            self.spec_, self._session.state_names, self._session.action_names
        )
        self._obs_names: list[str] = list(self.codec.obs_names)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (len(self.codec.obs_names),), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (len(self.codec.action_names),), np.float32)
        self._last_obs: np.ndarray = np.zeros(self.observation_space.shape, np.float32)
        # Python ints: per-step updates of a numpy counter cost more than the step's maths.
        self._episode_clips: list[int] = [0] * len(self.codec.obs_names)
        self._steps: int = 0
        self._needs_reopen: bool = False
        # Lifetime counters, read by the checker and training metrics.
        self.totals: dict[str, float] = {
            "steps": 0,
            "episodes": 0,
            "sim_errors": 0,
            "nonfinite": 0,
            "reopens": 0,
            "sim_seconds": 0.0,
        }
        self.last_sim_seconds: float = 0.0
        self.clip_totals: np.ndarray = np.zeros(len(self.codec.obs_names), np.int64)

    # ------------------------------------------------------------------ session

    def _open(self) -> None:
        if self._conn is None:
            self._conn = Connection(self.address, self._options)
        self._session = self._conn.open(self._action_names, client=self._client)
        if self._lane is None:
            self._lane = PackedLane(
                self._conn,
                [self._session],
                stream=self._transport != "unary",
                aio=self._transport == "aio",
            )
        else:  # a reopened session: a healthy stream carries on with the new id
            self._lane.replace(0, self._session)

    @property
    def session(self) -> RemoteSession:
        """The live session (for diagnostics and tests)."""
        assert self._session is not None
        return self._session

    @property
    def state_names(self) -> list[str]:
        """The sim's state names."""
        return self.session.state_names

    def _run(self, action: list[float], reset: Reset | None) -> Transition:
        """One step (or reset) of the session; a failure of either raises ``RemoteError``."""
        assert self._lane is not None
        return self._lane.run_single(action, reset)

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: draw a scenario from the lessons (or ``options['config']``)."""
        super().reset(seed=seed)
        if self._needs_reopen:
            self._reopen()
        if options and "config" in options:
            config = dict(options["config"])
        else:
            config = sample_config(self.codec.lessons, self.np_random)
        # The sim's seed derives from the env's generator: `reset(seed=s)` makes the
        # whole episode (scenario and sim noise) reproducible.
        sim_seed = int(self.np_random.integers(2**31 - 1))
        if options and "sim_seed" in options:
            sim_seed = int(options["sim_seed"])
        try:
            transition = self._run(self._reset_action, (config, sim_seed))
        except RemoteError:
            # The session is unusable now: a hung reset keeps it busy (ServerBusy for every
            # later call), a crashed server lost it. The next reset starts on a new one.
            self.totals["sim_errors"] += 1
            self._needs_reopen = True
            raise
        self._steps = 0
        self._episode_clips = [0] * len(self._episode_clips)
        self.totals["episodes"] += 1
        obs, info = self._observe(transition)
        info["config"] = config
        if transition.nonfinite:
            # Counted and reported like a step's, but the episode has only begun: the agent
            # sees 0 for those observations, and `info` says why.
            bad = self._on_nonfinite(transition, "at reset")
            info["simgym_error"] = f"non-finite states at reset: {', '.join(bad)}"
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply an action in [-1, 1] (scaled to the sim's ranges) and advance one step."""
        values = self.codec.decode(action)
        try:
            transition = self._run(values, None)
        except RemoteError as exc:
            return self._failed(exc)
        self._steps += 1
        self.totals["steps"] += 1
        obs, info = self._observe(transition)
        states = info["states"]
        terminated, truncated = transition.terminated, transition.truncated
        if transition.nonfinite:
            bad = self._on_nonfinite(transition, f"at step {self._steps}")
            info["simgym_error"] = f"non-finite states: {', '.join(bad)}"
            return obs, 0.0, False, True, info
        reward, terminated, truncated = self.codec.reward(
            states, terminated, truncated, transition.reward
        )
        max_steps = self.spec_.max_episode_steps
        if max_steps is not None and self._steps >= max_steps and not terminated:
            truncated = True
        return obs, reward, terminated, truncated, info

    def _observe(self, transition: Transition) -> tuple[np.ndarray, dict[str, Any]]:
        values = transition.states
        states = dict(zip(self._state_names, values, strict=True))
        obs, clipped = self.codec.observe(states, values)
        for j in clipped:
            self._episode_clips[j] += 1
            self.clip_totals[j] += 1
        self._last_obs = obs
        info: dict[str, Any] = {
            "states": states,
            "clipped": dict(zip(self._obs_names, self._episode_clips, strict=True)),
        }
        # Timing stays out of `info`: Gymnasium's determinism check compares infos.
        self.last_sim_seconds = transition.sim_seconds
        self.totals["sim_seconds"] += transition.sim_seconds
        return obs, info

    def _on_nonfinite(self, transition: Transition, when: str) -> list[str]:
        """Count a transition with NaN/inf states; raise or log per ``on_nonfinite``.

        Args:
            transition: The reset or step that returned them.
            when: ``"at reset"`` or ``"at step N"``, for the message.

        Returns:
            The names of the non-finite states.

        Raises:
            NonFiniteStateError: The spec says ``on_nonfinite: raise``.
        """
        self.totals["nonfinite"] += 1
        bad = [self.session.state_names[i] for i in transition.nonfinite]
        message = (
            f"sim {self.session.info.sim_name} at {self.address} returned non-finite "
            f"states: {', '.join(bad)} ({when})"
        )
        if self.spec_.on_nonfinite == "raise":
            raise NonFiniteStateError(message)
        # A step's NaN ends its episode; a reset's starts one whose observations show 0.
        consequence = "observed as 0" if when == "at reset" else "episode truncated"
        log.warning("%s; %s", message, consequence)
        return bad

    def _failed(self, exc: RemoteError) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.totals["sim_errors"] += 1
        if self.spec_.on_error == "raise":
            raise exc
        # Training must go on: end this episode as truncated; the next reset reopens
        # a session (the server may have been restarted by its supervisor).
        log.warning("episode truncated: %s", exc)
        self._needs_reopen = True
        return self._last_obs, 0.0, False, True, {"simgym_error": str(exc)}

    def _reopen(self) -> None:
        if self._session is not None:
            self._session.close()
        self._open()
        self.totals["reopens"] += 1
        self._needs_reopen = False

    def close(self) -> None:
        """Close the stream, the session and the channel."""
        if self._lane is not None:
            self._lane.close()
            self._lane = None
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        super().close()

    def __del__(self) -> None:
        # Free the server's session even when the user forgets close().
        try:
            self.close()
        except Exception:
            pass
