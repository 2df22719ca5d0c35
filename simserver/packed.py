"""The packed engine: runs one ``PackedRequest`` on the sessions, for both transports.

The gRPC servicer's ``PackedStream`` and the packed socket hand each request here and only
translate what comes back: a ``PackedReply`` (per-slot failures inside it), or a
``SimServerError`` for a malformed request, which ends the stream or the connection.
No gRPC here, so tests and benchmarks can call it directly.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format

from simgym.status import number_of
from simgym.v1 import simulator_pb2 as pb
from simserver.adapters import Outcome
from simserver.errors import InvalidArgument, SimServerError, log_failure
from simserver.sessions import Deadline, Result, SessionManager


def config_of(struct: Any) -> dict[str, Any]:
    """A reset's ``Struct`` config as the dict a sim takes."""
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


def _slots(request: pb.PackedRequest) -> tuple[int, list[int], dict[int, pb.PackedReset]]:
    """Check a request's arrays against its K sessions: (actions per slot, seqs, resets).

    Raises:
        InvalidArgument: The arrays do not fit the sessions (the whole request fails).
    """
    count = len(request.session_ids)
    seqs = list(request.seqs) or [0] * count
    if len(seqs) != count:
        raise InvalidArgument(
            f"seqs has {len(seqs)} value(s) for {count} session(s); send one per session (or none)"
        )
    if count == 0:
        if request.actions or request.resets:
            raise InvalidArgument("actions or resets given for no session_ids")
        return 0, seqs, {}
    width, extra = divmod(len(request.actions), count)
    if extra:
        raise InvalidArgument(
            f"actions has {len(request.actions)} value(s) for {count} session(s): not a whole "
            "number of values per session"
        )
    resets: dict[int, pb.PackedReset] = {}
    for r in request.resets:
        if r.slot >= count:
            raise InvalidArgument(f"resets names slot {r.slot}; the request has {count} session(s)")
        if r.slot in resets:
            raise InvalidArgument(f"resets names slot {r.slot} twice")
        resets[r.slot] = r
    return width, seqs, resets


def run(sessions: SessionManager, request: pb.PackedRequest, deadline: Deadline) -> pb.PackedReply:
    """Run the slots of a packed request in order; a failing slot becomes a ``PackedError``.

    Built as plain lists and one reply message at the end: per-slot protobuf work is what
    the packed messages exist to avoid.

    Raises:
        InvalidArgument: The request's arrays do not fit its sessions (nothing is run).
    """
    width, seqs, resets = _slots(request)
    ids = list(request.session_ids)
    actions = list(request.actions)
    state_width = len(sessions.factory.states)  # every session of the server's sim
    states: list[float] = []
    terminated: list[bool] = []
    truncated: list[bool] = []
    steps: list[int] = []
    sim_seconds: list[float] = []
    rewards: list[float] | None = None
    nonfinite: list[int] = []
    errors: list[pb.PackedError] = []
    step = sessions.step
    for k in range(len(ids)):
        try:
            if k in resets:
                r = resets[k]
                seed = r.seed if r.HasField("seed") else None
                result = sessions.reset(ids[k], config_of(r.config), seed, seqs[k], deadline)
            elif width == 1:
                result = step(ids[k], actions[k : k + 1], seqs[k], deadline)
            else:
                result = step(ids[k], actions[k * width : (k + 1) * width], seqs[k], deadline)
        except SimServerError as exc:
            log_failure("reset" if k in resets else "step", ids[k], exc)
            errors.append(pb.PackedError(slot=k, code=number_of(exc.code), message=exc.message))
            # A failed slot's row: NaN states (not listed as nonfinite), false flags, no reward.
            # Built here, not per request: most requests have no failed slot.
            result = Result(Outcome([math.nan] * state_width, terminated=False, truncated=False), 0)
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
    return pb.PackedReply(
        state_width=state_width,
        states=states,
        terminated=terminated,
        truncated=truncated,
        steps=steps,
        sim_seconds=sim_seconds,
        rewards=rewards,
        nonfinite=nonfinite,
        errors=errors,
    )
