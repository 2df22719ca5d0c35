"""The episode rules of ``SimEnv`` and ``SimVectorEnv``: one rulebook for both envs.

An env is a list of slots (``SimEnv`` one, ``SimVectorEnv`` one per sub-env), each driving
a session; the sessions of one server share a ``PackedLane``. ``Episodes`` opens them and
applies the rules; each env keeps its own data layout (``SimEnv``: Python values, the fast
path of one session; ``SimVectorEnv``: numpy arrays over all sub-envs). The rules, per slot
(docs/spec.md says them to users):

* **A failed call** (the sim raised, the deadline passed, the server went away) counts in
  ``totals["sim_errors"]`` (once per slot it failed: a server that stops a late sim fails
  that slot alone, one that does not answer fails every slot of its round) and the session
  is reopened before the slot's next reset (a hung call keeps it busy, a restarted server has
  lost it; a server still down makes that reset raise). A failed step
  raises under ``on_error: raise``, else ends the episode truncated with reward 0, the last
  observation and an ``info`` of only ``simgym_error`` and ``simgym_error_type`` (the
  error's class name). A failed reset always raises, the first
  failing slot's error; a ``SimVectorEnv`` autoreset that fails is a failed step.
* **Non-finite states** count in ``totals["nonfinite"]`` and raise ``NonFiniteStateError``
  under ``on_nonfinite: raise``; else a step's end its episode truncated with reward 0, a
  reset's start one that observes 0 for them, ``simgym_error_type`` ``"nonfinite"``.
* **max_episode_steps** truncates an episode at that step unless it terminated.
* **Reward, terminal, truncate, goals** written as expressions in the spec apply after the
  sim's flags (``gymclient.goals``); an episode's end carries ``goals`` and
  ``goal_success`` when the spec has goals.
* **info** carries ``states`` and ``clipped`` (except after a failed call, or when the env
  was made with ``info_states`` False), ``config`` after a reset,
  ``log_states_mean``/``log_states_final`` at an episode's end (not by a failure).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import numpy as np

from gymclient.codec import (
    Codec,
    declared_action_names,
    declared_integer_actions,
    session_codec,
)
from gymclient.connection import Connection, ConnectOptions, RemoteSession
from gymclient.errors import RemoteError, SimgymError
from gymclient.goals import StepRules, uses_rules
from gymclient.lane import PackedLane, PackedResult, Reset, Transition
from gymclient.spec import EnvSpec

log = logging.getLogger("gymclient")

# Lifetime counters of an env (`totals`), read by the checker and the training metrics.
COUNTERS = "steps episodes sim_errors nonfinite reopens sim_seconds call_seconds".split()

# `info["simgym_error_type"]` of an episode ended by non-finite states.
NONFINITE = "nonfinite"


class NonFiniteStateError(SimgymError):
    """The sim returned NaN/inf for states the agent observes (``on_nonfinite: raise``)."""


class Episodes:
    """The sessions behind an env's slots, and the rules their episodes follow.

    Args:
        spec: The env spec (its ``on_error``, ``on_nonfinite``, ``max_episode_steps``,
            reward and ``log_states``).
        addresses: The server of each slot.
        options: Connection options.
        clients: Each slot's client name (shown by the server).
    """

    def __init__(
        self,
        spec: EnvSpec,
        addresses: Sequence[str],
        options: ConnectOptions,
        clients: Sequence[str],
    ) -> None:
        self.addresses = list(addresses)
        self._clients = list(clients)
        self._actions = declared_action_names(spec)
        self._integer = declared_integer_actions(spec)
        self.conns: dict[str, Connection] = {}
        self.sessions: list[RemoteSession] = []
        self.lanes: list[PackedLane] = []
        try:
            for address, client in zip(self.addresses, self._clients, strict=True):
                if address not in self.conns:
                    self.conns[address] = Connection(address, options)
                self.sessions.append(self.conns[address].open(self._actions, client, self._integer))
            self.codecs: list[Codec] = [session_codec(spec, s) for s in self.sessions]
            # The spec's reward/terminal/truncate expressions and goals, per slot.
            self.rules: list[StepRules] | None = (
                [
                    StepRules(spec, s.state_names, c.lessons, c.reward)
                    for s, c in zip(self.sessions, self.codecs, strict=True)
                ]
                if uses_rules(spec)
                else None
            )
            self.has_goals = bool(spec.goals)
        except BaseException:
            self.close()  # the sessions opened so far: nobody else will close them
            raise
        first = self.sessions[0]
        self.state_names: list[str] = first.state_names
        self.log_states = [n for n in self.codecs[0].log_states if n in self.state_names]
        self.log_idx = [self.state_names.index(n) for n in self.log_states]
        # One lane per server; slot i is slot k of lane j, with (j, k) = self._place[i].
        self.lane_slots: list[np.ndarray] = []
        self._place: list[tuple[int, int]] = [(0, 0)] * len(self.sessions)
        for address, conn in self.conns.items():
            slots = [i for i, a in enumerate(self.addresses) if a == address]
            for k, i in enumerate(slots):
                self._place[i] = (len(self.lanes), k)
            self.lanes.append(PackedLane(conn, [self.sessions[i] for i in slots]))
            self.lane_slots.append(np.array(slots, np.intp))
        self._width = len(first.state_names)
        self._raise_errors = spec.on_error == "raise"
        self._raise_nonfinite = spec.on_nonfinite == "raise"
        self.max_steps = spec.max_episode_steps
        self.reopen = [False] * len(self.sessions)  # slots to reopen before their next reset
        self.totals: dict[str, float] = dict.fromkeys(COUNTERS, 0)
        self._taken = dict(self.totals)

    def take_counters(self) -> dict[str, float]:
        """``totals`` gained since the last call (for per-sample training metrics)."""
        now = dict(self.totals)
        taken = {k: v - self._taken[k] for k, v in now.items()}
        self._taken = now
        return taken

    # ------------------------------------------------------------------ calls

    def reset_single(self, config: Mapping[str, Any], seed: int) -> Transition:
        """Reset slot 0 of a one-slot env (on a new session if its last call failed)."""
        if self.rules is not None:
            self.rules[0].reset(config)
        self._reopen_flagged([0])
        try:
            action = [0.0] * len(self.sessions[0].action_names)
            return self.lanes[0].run_single(action, (config, seed))
        except RemoteError as exc:
            self.reset_failed({0: exc})

    def exchange(self, actions: np.ndarray, resets: Mapping[int, Reset]) -> PackedResult:
        """One round on every server: step each slot with its row, reset ``resets``.

        A failure of a whole server's round becomes the error of each of its slots; every
        round is in flight before any reply is awaited, so the servers work concurrently.
        """
        self._reopen_flagged(resets)
        if self.rules is not None:
            for i, (config, _seed) in resets.items():
                self.rules[i].reset(config)
        if len(self.lanes) == 1:  # its slots are the env's in order: nothing to regroup
            try:
                return self.lanes[0].run(actions.ravel().tolist(), resets)
            except RemoteError as err:
                return _failed_round(len(self.sessions), self._width, err)
        out = _failed_round(len(self.sessions), self._width, None)
        sent: list[tuple[PackedLane, np.ndarray]] = []
        for lane, slots in zip(self.lanes, self.lane_slots, strict=True):
            lane_resets = {k: resets[i] for k, i in enumerate(slots.tolist()) if i in resets}
            try:
                lane.send(actions[slots].ravel().tolist(), lane_resets)
                sent.append((lane, slots))
            except RemoteError as err:
                out.errors.update(dict.fromkeys(slots.tolist(), err))
        for lane, slots in sent:
            try:
                result = lane.receive()
            except RemoteError as err:
                out.errors.update(dict.fromkeys(slots.tolist(), err))
                continue
            _scatter(out, result, slots.tolist())
        return out

    def _reopen_flagged(self, slots: Any) -> None:
        for i in slots:
            if self.reopen[i]:
                self.sessions[i].close()
                conn = self.conns[self.addresses[i]]
                self.sessions[i] = conn.open(self._actions, self._clients[i], self._integer)
                lane, k = self._place[i]
                self.lanes[lane].replace(k, self.sessions[i])
                self.reopen[i] = False
                self.totals["reopens"] += 1

    # ------------------------------------------------------------------ rules

    def reset_failed(self, errors: Mapping[int, RemoteError]) -> NoReturn:
        """Failed resets of slots: counted, reopened at the next reset; the first one raises."""
        self._count(errors)
        raise errors[min(errors)]

    def failed(self, errors: Mapping[int, RemoteError]) -> dict[int, dict[str, Any]]:
        """Failed steps of slots: counted, reopened at the next reset.

        Returns:
            Each slot's ``info`` of its truncated end (``on_error: truncate``).

        Raises:
            RemoteError: The first slot's error, under ``on_error: raise``.
        """
        self._count(errors)
        if self._raise_errors:
            raise errors[min(errors)]
        # Training must go on: the episodes end as truncated; the next reset opens a new
        # session (the server may have been restarted by its supervisor).
        for err in errors.values():
            log.warning("episode truncated: %s", err)
        return {
            i: {"simgym_error": str(err), "simgym_error_type": type(err).__name__}
            for i, err in errors.items()
        }

    def _count(self, errors: Mapping[int, RemoteError]) -> None:
        self.totals["sim_errors"] += len(errors)
        for i in errors:
            self.reopen[i] = True

    def nonfinite(
        self, bad: Mapping[int, Sequence[int]], steps: Sequence[int] | None
    ) -> dict[int, dict[str, Any]]:
        """Non-finite states of slots at a reset (``steps`` None) or a step: count, raise or log.

        Args:
            bad: Slot → indices of its non-finite states.
            steps: Each slot's step in its episode (indexed by slot); None at a reset.

        Returns:
            Each slot's ``info`` entries that say so.

        Raises:
            NonFiniteStateError: The first slot's, under ``on_nonfinite: raise``.
        """
        self.totals["nonfinite"] += len(bad)
        messages, infos = {}, {}
        for i, indices in bad.items():
            names = ", ".join(self.sessions[i].state_names[j] for j in indices)
            when = "at reset" if steps is None else f"at step {steps[i]}"
            messages[i] = (
                f"sim {self.sessions[i].info.sim_name} at {self.addresses[i]} returned "
                f"non-finite states: {names} ({when})"
            )
            where = " at reset" if steps is None else ""
            infos[i] = {
                "simgym_error": f"non-finite states{where}: {names}",
                "simgym_error_type": NONFINITE,
            }
        if self._raise_nonfinite:
            raise NonFiniteStateError(messages[min(bad)])
        # A step's NaN ends its episode; a reset's starts one whose observations show 0.
        consequence = "observed as 0" if steps is None else "episode truncated"
        for message in messages.values():
            log.warning("%s; %s", message, consequence)
        return infos

    def outcome(
        self,
        slot: int,
        states: dict[str, float],
        terminated: bool,
        truncated: bool,
        sim_reward: float | None,
        steps: int,
    ) -> tuple[float, bool, bool]:
        """Reward, terminated and truncated of step ``steps`` of ``slot`` (finite states)."""
        if self.rules is not None:  # expressions and goals (gymclient.goals)
            reward, terminated, truncated = self.rules[slot].step(
                states, terminated, truncated, sim_reward, steps
            )
        else:
            reward, terminated, truncated = self.codecs[slot].reward(
                states, terminated, truncated, sim_reward
            )
        if self.max_steps is not None and steps >= self.max_steps and not terminated:
            truncated = True
        return reward, terminated, truncated

    def end_info(self, means: Sequence[float], finals: Sequence[float]) -> dict[str, Any]:
        """The ``info`` of an episode's end: the mean and final value of each log state."""
        return {
            "log_states_mean": dict(zip(self.log_states, means, strict=True)),
            "log_states_final": dict(zip(self.log_states, finals, strict=True)),
        }

    def goal_info(self, slot: int) -> dict[str, Any]:
        """``goals`` {name: satisfied} and ``goal_success`` of ``slot``'s episode that ended.

        Only for a spec with goals (``has_goals``) and an episode that ended by the sim, a
        condition, a goal or ``max_episode_steps``, not by a failure.
        """
        assert self.rules is not None
        return self.rules[slot].end_info()

    def close(self) -> None:
        """Close every stream, session and connection (idempotent)."""
        for lane in self.lanes:
            lane.close()
        for session in self.sessions:
            session.close()
        for conn in self.conns.values():
            conn.close()
        self.lanes, self.sessions, self.conns = [], [], {}


def _failed_round(count: int, width: int, err: RemoteError | None) -> PackedResult:
    """A round's result with nothing received yet (every slot failed with ``err``)."""
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


def _scatter(out: PackedResult, result: PackedResult, slots: list[int]) -> None:
    """Copy one lane's result into the env's: lane slot ``k`` is env slot ``slots[k]``."""
    out.states[slots] = result.states
    for k, i in enumerate(slots):
        out.terminated[i] = result.terminated[k]
        out.truncated[i] = result.truncated[k]
        out.steps[i] = result.steps[k]
        out.sim_seconds[i] = result.sim_seconds[k]
    if result.rewards is not None:
        if out.rewards is None:
            out.rewards = [math.nan] * len(out.terminated)
        for k, i in enumerate(slots):
            out.rewards[i] = result.rewards[k]
    for k, bad in result.nonfinite.items():
        out.nonfinite[slots[k]] = bad
    for k, failure in result.errors.items():
        out.errors[slots[k]] = failure
