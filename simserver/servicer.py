"""The gRPC servicer: translates ``simgym.v1`` messages to session calls and back.

Thin by design, as in gRPC's own examples: the unary calls go to ``SessionManager``,
``PackedStream`` to the packed engine (``simserver.packed``), the protocol check to
``simserver.handshake``; this module only maps messages and turns ``SimServerError`` into
status codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NoReturn

import grpc

from simgym import PROTOCOL, __version__
from simgym.v1 import simulator_pb2 as pb
from simgym.v1 import simulator_pb2_grpc as pb_grpc
from simserver import packed
from simserver.adapters import Variable
from simserver.errors import SimServerError, clip, log_failure
from simserver.handshake import check_protocol
from simserver.sessions import Deadline, Result, SessionManager


def _variable(v: Variable) -> pb.Variable:
    return pb.Variable(
        name=v.name, low=v.low, high=v.high, description=v.description, values=v.values
    )


def _transition(result: Result) -> pb.Transition:
    out = result.outcome
    return pb.Transition(
        states=out.states,
        terminated=out.terminated,
        truncated=out.truncated,
        nonfinite=out.nonfinite,
        reward=out.reward,
        step=result.step,
        sim_seconds=out.sim_seconds,
    )


def _deadline(context: grpc.ServicerContext) -> Deadline:
    """The call's client deadline, read now (at the call's start), for the hung check.

    A stream has none per message (gymclient keeps its own and cancels a late stream): for
    it, whether the RPC is still live tells whether anyone waits.
    """
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e9:  # gRPC reports "no deadline" as huge, too
        return None, context.is_active
    return remaining, None


def _abort(context: grpc.ServicerContext, exc: SimServerError) -> NoReturn:
    context.abort(exc.code, exc.message)
    raise exc  # unreachable: abort raises


class SimulatorServicer(pb_grpc.SimulatorServicer):
    """Implements ``simgym.v1.Simulator`` over a ``SessionManager``.

    Args:
        sessions: The sessions every call works on.
        max_message_bytes: The server's message limit, told to clients in ``Open``.
        packed_socket: Whether the server's packed socket listens now (told in ``Open``).
    """

    def __init__(
        self,
        sessions: SessionManager,
        max_message_bytes: int,
        packed_socket: Callable[[], bool] = lambda: False,
    ) -> None:
        self.sessions = sessions
        self.max_message_bytes = max_message_bytes
        self.packed_socket = packed_socket
        factory = sessions.factory
        self._states = [_variable(v) for v in factory.states]
        self._config = [_variable(v) for v in factory.config]
        self._actions_declared = {v.name: v for v in factory.actions}

    def Open(self, request: pb.OpenRequest, context: grpc.ServicerContext) -> pb.OpenReply:
        """Handshake and create a session."""
        try:
            check_protocol(request.protocol)
            session = self.sessions.open(
                # The client's name goes to the log: a short one.
                request.action_names,
                request.lease_seconds,
                clip(request.client or context.peer(), 80),
                request.integer_actions,
            )
        except SimServerError as exc:
            _abort(context, exc)
        actions = [
            _variable(self._actions_declared.get(name, Variable(name)))
            for name in session.action_names
        ]
        return pb.OpenReply(
            session_id=session.id,
            protocol=PROTOCOL,
            server=f"simserver {__version__}",
            sim_name=self.sessions.factory.sim_name,
            states=self._states,
            actions=actions,
            config=self._config,
            lease_seconds=session.lease,
            seedable=self.sessions.factory.seedable,
            max_message_bytes=self.max_message_bytes,
            packed_socket=self.packed_socket(),
        )

    def Reset(self, request: pb.ResetRequest, context: grpc.ServicerContext) -> pb.TransitionReply:
        """Start an episode."""
        seed = request.seed if request.HasField("seed") else None
        config = packed.config_of(request.config)
        try:
            result = self.sessions.reset(
                request.session_id, config, seed, request.seq, _deadline(context)
            )
        except SimServerError as exc:
            log_failure("reset", request.session_id, exc)
            _abort(context, exc)
        return pb.TransitionReply(transition=_transition(result))

    def Step(self, request: pb.StepRequest, context: grpc.ServicerContext) -> pb.TransitionReply:
        """Advance one step."""
        try:
            result = self.sessions.step(
                request.session_id, request.action, request.seq, _deadline(context)
            )
        except SimServerError as exc:
            log_failure("step", request.session_id, exc)
            _abort(context, exc)
        return pb.TransitionReply(transition=_transition(result))

    def States(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.StatesReply:
        """Current states."""
        try:
            states = self.sessions.states(request.session_id, _deadline(context))
        except SimServerError as exc:
            _abort(context, exc)
        return pb.StatesReply(states=states)

    def Termination(
        self, request: pb.SessionRef, context: grpc.ServicerContext
    ) -> pb.TerminationReply:
        """Current episode-end flags."""
        try:
            term, trunc = self.sessions.termination(request.session_id, _deadline(context))
        except SimServerError as exc:
            _abort(context, exc)
        return pb.TerminationReply(terminated=term, truncated=trunc)

    def Close(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.CloseReply:
        """Close a session (idempotent)."""
        self.sessions.close(request.session_id)
        return pb.CloseReply()

    def PackedStream(
        self, request_iterator: Iterator[pb.PackedRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.PackedReply]:
        """Lock-step stream of packed requests; a malformed one ends it."""
        for request in request_iterator:
            try:
                reply = packed.run(self.sessions, request, _deadline(context))
            except SimServerError as exc:
                _abort(context, exc)
            yield reply
