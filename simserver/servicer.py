"""The gRPC servicer: translates ``simgym.v1`` messages to session calls and back.

Thin by design: all logic lives in ``SessionManager``; this module only maps
messages and turns ``SimServerError`` into status codes (unary calls) or
per-item ``Error`` results (batches).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import json_format

from simgym import PROTOCOL, __version__
from simgym.v1 import simulator_pb2 as pb
from simgym.v1 import simulator_pb2_grpc as pb_grpc
from simserver.adapters import Variable
from simserver.errors import FailedPrecondition, InvalidArgument, SimServerError
from simserver.sessions import Deadline, Result, SessionManager

log = logging.getLogger("simserver.servicer")


def _variable(v: Variable) -> pb.Variable:
    msg = pb.Variable(name=v.name, description=v.description)
    if v.low is not None:
        msg.low = v.low
    if v.high is not None:
        msg.high = v.high
    return msg


def _fill(msg: pb.Transition, result: Result) -> pb.Transition:
    """Write a result into a (possibly nested) message in place.

    No copy: that matters when a batch carries many transitions.
    """
    out = result.outcome
    msg.states.extend(out.states)
    msg.terminated = out.terminated
    msg.truncated = out.truncated
    if out.nonfinite:
        msg.nonfinite.extend(out.nonfinite)
    msg.step = result.step
    msg.sim_seconds = out.sim_seconds
    if out.reward is not None:
        msg.reward = out.reward
    return msg


def _config(struct: Any) -> dict[str, Any]:
    config = json_format.MessageToDict(struct) if struct.fields else {}
    # JSON numbers arrive as floats; give integral values back their int type, since
    # sims commonly compare config values such as a signal id with ints.
    return {k: _intify(v) for k, v in config.items()}


def _intify(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_intify(v) for v in value]
    return value


def _deadline(context: grpc.ServicerContext) -> Deadline:
    """The call's client deadline, read now (at the call's start), for the hung check.

    A stream has none per message (gymclient keeps its own and cancels a late stream): for
    it, whether the RPC is still live tells whether anyone waits.
    """
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e9:  # gRPC reports "no deadline" as huge, too
        return None, context.is_active
    return remaining, None


class SimulatorServicer(pb_grpc.SimulatorServicer):
    """Implements ``simgym.v1.Simulator`` over a ``SessionManager``."""

    def __init__(self, sessions: SessionManager, max_message_bytes: int) -> None:
        self.sessions = sessions
        self.max_message_bytes = max_message_bytes
        factory = sessions.factory
        self._states = [_variable(v) for v in factory.states]
        self._config = [_variable(v) for v in factory.config]
        self._actions_declared = {v.name: v for v in factory.actions}
        # Every session of this server's sim returns these states: the packed row width.
        self._state_width = len(factory.states)
        # Set by SimServer once its packed socket listens (told to clients in OpenReply).
        self.packed_socket = False

    @staticmethod
    def _abort(context: grpc.ServicerContext, exc: SimServerError) -> None:
        context.abort(exc.code, exc.message)

    def Open(self, request: pb.OpenRequest, context: grpc.ServicerContext) -> pb.OpenReply:
        """Handshake and create a session."""
        try:
            if request.protocol and request.protocol != PROTOCOL:
                raise FailedPrecondition(
                    f"protocol mismatch: client speaks {request.protocol}, this server "
                    f"speaks {PROTOCOL}; upgrade the older side"
                )
            session = self.sessions.open(
                request.action_names, request.lease_seconds, request.client or context.peer()
            )
        except SimServerError as exc:
            self._abort(context, exc)
            raise  # unreachable: abort raises
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
            packed_socket=self.packed_socket,
        )

    def _reset(
        self, request: pb.ResetRequest, into: pb.Transition, deadline: Deadline
    ) -> pb.Transition:
        seed = request.seed if request.HasField("seed") else None
        result = self.sessions.reset(
            request.session_id, _config(request.config), seed, request.seq, deadline
        )
        return _fill(into, result)

    def _step(
        self, request: pb.StepRequest, into: pb.Transition, deadline: Deadline
    ) -> pb.Transition:
        return _fill(
            into, self.sessions.step(request.session_id, request.action, request.seq, deadline)
        )

    def Reset(self, request: pb.ResetRequest, context: grpc.ServicerContext) -> pb.TransitionReply:
        """Start an episode."""
        try:
            reply = pb.TransitionReply()
            self._reset(request, reply.transition, _deadline(context))
            return reply
        except SimServerError as exc:
            self._log_failure("reset", request.session_id, exc)
            self._abort(context, exc)
            raise

    def Step(self, request: pb.StepRequest, context: grpc.ServicerContext) -> pb.TransitionReply:
        """Advance one step."""
        try:
            reply = pb.TransitionReply()
            self._step(request, reply.transition, _deadline(context))
            return reply
        except SimServerError as exc:
            self._log_failure("step", request.session_id, exc)
            self._abort(context, exc)
            raise

    def States(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.StatesReply:
        """Current states."""
        try:
            return pb.StatesReply(
                states=self.sessions.states(request.session_id, _deadline(context))
            )
        except SimServerError as exc:
            self._abort(context, exc)
            raise

    def Termination(
        self, request: pb.SessionRef, context: grpc.ServicerContext
    ) -> pb.TerminationReply:
        """Current episode-end flags."""
        try:
            term, trunc = self.sessions.termination(request.session_id, _deadline(context))
            return pb.TerminationReply(terminated=term, truncated=trunc)
        except SimServerError as exc:
            self._abort(context, exc)
            raise

    def Close(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.CloseReply:
        """Close a session (idempotent)."""
        self.sessions.close(request.session_id)
        return pb.CloseReply()

    def _batch(self, request: pb.BatchRequest, deadline: Deadline) -> pb.BatchReply:
        reply = pb.BatchReply()
        # Bound once: attribute lookups are a visible share of a 64-item batch.
        add = reply.results.add
        step = self.sessions.step
        for item in request.items:
            which = item.WhichOneof("op")
            try:
                if which == "step":
                    st = item.step
                    result = step(st.session_id, st.action, st.seq, deadline)
                elif which == "reset":
                    r = item.reset
                    seed = r.seed if r.HasField("seed") else None
                    result = self.sessions.reset(
                        r.session_id, _config(r.config), seed, r.seq, deadline
                    )
                else:
                    error = add().error
                    error.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
                    error.message = "empty batch item"
                    continue
                # Only a successful call adds a result: a failed one adds its error below.
                _fill(add().transition, result)
            except SimServerError as exc:
                sid = item.step.session_id if which == "step" else item.reset.session_id
                self._log_failure(which or "?", sid, exc)
                error = add().error
                error.code = exc.code.value[0]
                error.message = exc.message
        return reply

    def _packed(self, request: pb.PackedRequest, deadline: Deadline) -> pb.PackedReply:
        """Run the slots of a packed request; per-slot failures become ``PackedError``s.

        Raises:
            InvalidArgument: The request's arrays do not fit its sessions (whole request).
        """
        ids = list(request.session_ids)
        count = len(ids)
        actions = list(request.actions)
        seqs = list(request.seqs) or [0] * count
        if len(seqs) != count:
            raise InvalidArgument(
                f"seqs has {len(seqs)} value(s) for {count} session(s); send one per session "
                "(or none)"
            )
        if count == 0:
            if actions or request.resets:
                raise InvalidArgument("actions or resets given for no session_ids")
            return pb.PackedReply(state_width=self._state_width)
        width, extra = divmod(len(actions), count)
        if extra:
            raise InvalidArgument(
                f"actions has {len(actions)} value(s) for {count} session(s): not a whole "
                "number of values per session"
            )
        resets: dict[int, pb.PackedReset] = {}
        for r in request.resets:
            if r.slot >= count:
                raise InvalidArgument(
                    f"resets names slot {r.slot}; the request has {count} session(s)"
                )
            if r.slot in resets:
                raise InvalidArgument(f"resets names slot {r.slot} twice")
            resets[r.slot] = r
        state_width = self._state_width
        failed_row = [math.nan] * state_width
        states: list[float] = []
        terminated: list[bool] = []
        truncated: list[bool] = []
        steps: list[int] = []
        sim_seconds: list[float] = []
        rewards: list[float] | None = None
        nonfinite: list[int] = []
        errors: list[tuple[int, SimServerError]] = []
        step = self.sessions.step
        for k in range(count):
            try:
                if k in resets:
                    r = resets[k]
                    seed = r.seed if r.HasField("seed") else None
                    result = self.sessions.reset(ids[k], _config(r.config), seed, seqs[k], deadline)
                elif width == 1:
                    result = step(ids[k], actions[k : k + 1], seqs[k], deadline)
                else:
                    result = step(ids[k], actions[k * width : (k + 1) * width], seqs[k], deadline)
            except SimServerError as exc:
                self._log_failure("reset" if k in resets else "step", ids[k], exc)
                errors.append((k, exc))
                states += failed_row
                terminated.append(False)
                truncated.append(False)
                steps.append(0)
                sim_seconds.append(0.0)
                if rewards is not None:
                    rewards.append(math.nan)
                continue
            out = result.outcome
            if out.nonfinite:
                base = k * state_width
                nonfinite += [base + i for i in out.nonfinite]
            states += out.states
            terminated.append(out.terminated)
            truncated.append(out.truncated)
            steps.append(result.step)
            sim_seconds.append(out.sim_seconds)
            if out.reward is not None:
                if rewards is None:  # the first slot with a sim reward: earlier ones had none
                    rewards = [math.nan] * k
                rewards.append(out.reward)
            elif rewards is not None:
                rewards.append(math.nan)
        reply = pb.PackedReply(
            state_width=state_width,
            states=states,
            terminated=terminated,
            truncated=truncated,
            steps=steps,
            sim_seconds=sim_seconds,
            rewards=rewards,
            nonfinite=nonfinite,
        )
        if errors:
            add = reply.errors.add
            for k, failure in errors:
                add(slot=k, code=failure.code.value[0], message=failure.message)
        return reply

    def PackedBatch(
        self, request: pb.PackedRequest, context: grpc.ServicerContext
    ) -> pb.PackedReply:
        """Reset/step many sessions in one call, numbers packed."""
        try:
            return self._packed(request, _deadline(context))
        except SimServerError as exc:
            self._abort(context, exc)
            raise

    def PackedStream(
        self, request_iterator: Iterator[pb.PackedRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.PackedReply]:
        """Lock-step stream of packed requests."""
        for request in request_iterator:
            try:
                reply = self._packed(request, _deadline(context))
            except SimServerError as exc:
                self._abort(context, exc)
                raise
            yield reply

    def Batch(self, request: pb.BatchRequest, context: grpc.ServicerContext) -> pb.BatchReply:
        """Reset/step many sessions in one call."""
        return self._batch(request, _deadline(context))

    def Stream(
        self, request_iterator: Iterator[pb.BatchRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.BatchReply]:
        """Lock-step stream of batches."""
        for request in request_iterator:
            yield self._batch(request, _deadline(context))

    def _log_failure(self, call: str, session_id: str, exc: SimServerError) -> None:
        level = logging.WARNING if exc.code == grpc.StatusCode.INTERNAL else logging.INFO
        log.log(level, "%s on session %s: %s", call, session_id[:8], exc.message)
