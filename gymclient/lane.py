"""Packed stepping: the sessions of one server stepped or reset with one message per round.

``PackedRequest``/``PackedReply`` (see the ``.proto``) carry session ids, actions, seq numbers,
states and flags as packed arrays, so the per-session protobuf work nearly vanishes.
``PackedLane`` drives a fixed list of sessions on one server over a lock-step stream
(``gymclient.stream``: one request message, one reply message per round).
``SimVectorEnv`` uses one lane per server, ``SimEnv`` a lane of one session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from gymclient.connection import Connection, RemoteSession, to_struct
from gymclient.errors import RemoteError, from_status
from gymclient.stream import Stream, open_stream
from simgym.status import code_of
from simgym.v1 import simulator_pb2 as pb

# A reset slot: (scenario config, seed).
Reset = tuple[Mapping[str, Any], int | None]

# How much longer than a request's slot timeout the lane waits for its reply: a server that
# stops a late slot's sim (simserver --isolate process) answers just after the slot timeout
# with that slot failed alone; only a server that does not answer at all fails the round.
SLOT_MARGIN = 1.0


@dataclass(slots=True)
class PackedResult:
    """One round of a lane, decoded: slot ``k`` is index ``k`` of every field.

    Attributes:
        states: ``(K, S)`` float64 states; rows of failed slots are NaN.
        terminated: Per slot (False for failed slots).
        truncated: Per slot (False for failed slots).
        steps: Steps taken in the episode, per slot.
        sim_seconds: Time inside the simulator, per slot.
        rewards: The simulator's own reward per slot, or None when it computes none.
        nonfinite: Slot → indices of its NaN/infinite states (slots with any only).
        errors: Slot → the failure of that slot (failed slots only).
    """

    states: np.ndarray
    terminated: list[bool]
    truncated: list[bool]
    steps: list[int]
    sim_seconds: list[float]
    rewards: list[float] | None
    nonfinite: dict[int, list[int]]
    errors: dict[int, RemoteError]


@dataclass(slots=True)
class Transition:
    """One session's step or reset (the fields of a ``pb.Transition`` that a client reads)."""

    states: list[float]
    terminated: bool
    truncated: bool
    nonfinite: list[int]
    reward: float | None
    sim_seconds: float


class PackedLane:
    """A fixed list of sessions on one server, stepped or reset together, one slot each.

    The lane's stream is opened at its first round and again after a failed one, over the
    transport its connection chose (``gymclient.stream.open_stream``).

    Args:
        connection: The server's connection.
        sessions: Slot ``k`` drives ``sessions[k]``; all take the same number of actions.
    """

    def __init__(self, connection: Connection, sessions: Sequence[RemoteSession]) -> None:
        self.connection = connection
        self.sessions = list(sessions)
        self._ids = [s.id for s in self.sessions]
        self._stream: Stream | None = None
        self._resets: Mapping[int, Reset] = {}  # the resets of the round in flight

    def replace(self, slot: int, session: RemoteSession) -> None:
        """Drive another session in a slot (after the old one was reopened)."""
        self.sessions[slot] = session
        self._ids[slot] = session.id

    def run(self, actions: list[float], resets: Mapping[int, Reset]) -> PackedResult:
        """One round: step every slot with its row of ``actions``, except ``resets``' slots.

        Args:
            actions: K × A values, slot-major (reset slots' rows are ignored).
            resets: Slot → (config, seed) for the slots to reset instead.

        Raises:
            RemoteError: The whole round failed (server gone, late reply, bad request);
                per-slot failures are in the result's ``errors``.
        """
        self.send(actions, resets)
        return self.receive()

    def run_single(self, action: list[float], reset: Reset | None) -> Transition:
        """``run`` for a lane of one session: its step (or reset, when given) as a transition.

        Decodes the reply straight into Python values: for one session that costs a third
        of building the arrays of a ``PackedResult``.

        Raises:
            RemoteError: The round or the session's step/reset failed.
        """
        self.send(action, {0: reset} if reset is not None else {})
        assert self._stream is not None
        reply = self._stream.receive()
        if reply.errors:
            e = reply.errors[0]
            raise from_status(
                code_of(e.code),
                e.message,
                address=self.connection.address,
                call="Reset" if reset is not None else "Step",
            )
        if len(reply.terminated) != 1 or len(reply.states) != reply.state_width:
            raise self._malformed(reply)
        return Transition(
            states=list(reply.states),
            terminated=reply.terminated[0],
            truncated=reply.truncated[0],
            nonfinite=list(reply.nonfinite),  # slot 0: flat indices are state indices
            reward=reply.rewards[0] if reply.rewards else None,
            sim_seconds=reply.sim_seconds[0] if reply.sim_seconds else 0.0,
        )

    def send(self, actions: list[float], resets: Mapping[int, Reset]) -> None:
        """Start a round (``receive`` ends it), so that the lanes of several servers overlap."""
        self._resets = resets
        options = self.connection.options
        # A round that resets any slot waits as long as a reset may take (`reset_timeout`:
        # sims often load a scenario or warm up there); pure step rounds wait `timeout`.
        timeout = options.reset_timeout if resets else options.timeout
        if self._stream is None or not self._stream.alive:
            self._stream = open_stream(self.connection)
        request = self._request(actions, resets)
        request.slot_timeout_seconds = timeout
        self._stream.send(request, timeout, SLOT_MARGIN + 0.1 * timeout)

    def receive(self) -> PackedResult:
        """End the round started by ``send`` (see ``run``)."""
        assert self._stream is not None, "receive() without send()"
        return self._decode(self._stream.receive())

    def close(self) -> None:
        """End the stream (sessions stay open: their owner closes them)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _request(self, actions: list[float], resets: Mapping[int, Reset]) -> pb.PackedRequest:
        seqs = []
        for session in self.sessions:
            session.seq += 1
            seqs.append(session.seq)
        request = pb.PackedRequest(session_ids=self._ids, actions=actions, seqs=seqs)
        for slot, (config, seed) in resets.items():
            reset = request.resets.add()
            reset.slot = slot
            reset.config.CopyFrom(to_struct(config))
            if seed is not None:
                reset.seed = int(seed)
        return request

    def _decode(self, reply: pb.PackedReply) -> PackedResult:
        count = len(self._ids)
        width = reply.state_width
        if (
            len(reply.states) != count * width
            or len(reply.terminated) != count
            or len(reply.truncated) != count
        ):
            raise self._malformed(reply)
        # np.array reads a packed repeated field several times faster than list() does.
        states = np.array(reply.states, np.float64).reshape(count, width)
        nonfinite: dict[int, list[int]] = {}
        for flat in reply.nonfinite:
            slot, index = divmod(flat, width)
            nonfinite.setdefault(slot, []).append(index)
        errors: dict[int, RemoteError] = {}
        for e in reply.errors:
            errors[e.slot] = from_status(
                code_of(e.code),
                e.message,
                address=self.connection.address,
                call="Reset" if e.slot in self._resets else "Step",
            )
        return PackedResult(
            states=states,
            terminated=list(reply.terminated),
            truncated=list(reply.truncated),
            steps=list(reply.steps) or [0] * count,
            sim_seconds=list(reply.sim_seconds) or [0.0] * count,
            rewards=list(reply.rewards) if reply.rewards else None,
            nonfinite=nonfinite,
            errors=errors,
        )

    def _malformed(self, reply: pb.PackedReply) -> RemoteError:
        return RemoteError(
            f"packed call on {self.connection.address}: malformed reply "
            f"({len(reply.states)} states, {len(reply.terminated)} flags for "
            f"{len(self._ids)} session(s) of {reply.state_width} states)",
            code=grpc.StatusCode.INTERNAL,
            address=self.connection.address,
        )
