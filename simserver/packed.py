"""The packed engine: runs one ``PackedRequest`` on the sessions, for both transports.

The gRPC servicer's ``PackedStream`` and the packed socket hand each request here and only
translate what comes back: a ``PackedReply`` (per-slot failures inside it), or a
``SimServerError`` for a malformed request, which ends the stream or the connection.
No gRPC here, so tests and benchmarks can call it directly.

With isolated sims (``simserver.isolation``) every slot's call is sent before any reply is
awaited, so the K sims of a request step in parallel, each within the request's slot
timeout. In-thread sims run one after the other, or on a thread pool when that pays
(``simserver.slots``: sims that wait in their calls), where a slot past the request's slot
timeout fails alone while its call runs on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from simgym.status import number_of
from simgym.v1 import simulator_pb2 as pb
from simserver.adapters import Outcome
from simserver.errors import InvalidArgument, ResourceExhausted, SimServerError, log_failure
from simserver.isolation import SimHung
from simserver.sessions import Call, Deadline, Result, SessionManager
from simserver.slots import LATE


def config_of(struct: Any) -> dict[str, Any]:
    """A reset's ``Struct`` config as the dict a sim takes.

    Never raises: a NaN or infinite number stays a float (``json_format`` would raise on
    it, outside any status), and the session manager refuses it naming its key.
    """
    return {k: _value(v) for k, v in struct.fields.items()} if struct.fields else {}


def _value(value: Any, intify: bool = True) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        # JSON numbers arrive as floats; give integral values back their int type, since
        # sims commonly compare config values such as a signal id with ints (top-level
        # values and lists of them, as ever; numbers inside nested mappings stay floats).
        return int(number) if intify and number.is_integer() else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: _value(v, False) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_value(v, intify) for v in value.list_value.values]
    return None


def _slots(
    request: pb.PackedRequest, max_slots: int
) -> tuple[int, list[int], dict[int, pb.PackedReset]]:
    """Check a request's arrays against its K sessions: (actions per slot, seqs, resets).

    Raises:
        ResourceExhausted: More than ``max_slots`` slots (checked before anything else).
        InvalidArgument: The arrays do not fit the sessions (the whole request fails).
    """
    count = len(request.session_ids)
    if count > max_slots:
        raise ResourceExhausted(
            f"the request has {count} slots; this server takes at most {max_slots} per "
            "request (simserver --max-slots): send fewer sessions per request"
        )
    timeout = request.slot_timeout_seconds
    if not (timeout >= 0 and math.isfinite(timeout)):
        raise InvalidArgument(
            f"slot_timeout_seconds is {timeout}: give a positive number of seconds, or 0 for none"
        )
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
    """Run the slots of a packed request; a failing slot becomes a ``PackedError``.

    In-thread sims run in slot order, or on the slot pool when ``simserver.slots`` says so;
    isolated ones in parallel, each in its worker.

    Built as plain lists and one reply message at the end: per-slot protobuf work is what
    the packed messages exist to avoid.

    Raises:
        InvalidArgument: The request's arrays do not fit its sessions (nothing is run).
    """
    width, seqs, resets = _slots(request, sessions.max_slots)
    ids = list(request.session_ids)
    done = _run_apart(sessions, request, deadline, width, seqs, resets)
    # auto measures the sims of requests that could run in parallel, to tell when they should.
    timed = done is None and len(ids) > 1 and sessions.slots.auto
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
            if done is not None:
                result = done[k]
                if isinstance(result, SimServerError):
                    raise result
            elif k in resets:
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
    if timed and len(ids) - len(resets) > 1:  # the steps' time: resets may be slower
        spent = sum(sim_seconds) - (sum(sim_seconds[k] for k in resets) if resets else 0.0)
        sessions.slots.record_serial(spent, len(ids) - len(resets))
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


def _run_apart(
    sessions: SessionManager,
    request: pb.PackedRequest,
    deadline: Deadline,
    width: int,
    seqs: list[int],
    resets: dict[int, pb.PackedReset],
) -> list[Result | SimServerError] | None:
    """Every slot's outcome when the slots run apart (in workers or on the slot pool).

    Returns:
        None when they are to run one after the other, in the request's thread.
    """
    if sessions.isolated:
        return _run_isolated(sessions, request, deadline, width, seqs, resets)
    count = len(request.session_ids)
    # A round of many resets says little about steps (a reset may take far longer).
    measurable = len(resets) * 8 <= count
    how = sessions.slots.choose(count, measurable)
    if how:
        return _run_parallel(sessions, request, deadline, width, seqs, resets, how == 2, measurable)
    return None


def _run_parallel(
    sessions: SessionManager,
    request: pb.PackedRequest,
    deadline: Deadline,
    width: int,
    seqs: list[int],
    resets: dict[int, pb.PackedReset],
    probe: bool,
    measure: bool,
) -> list[Result | SimServerError]:
    """Every slot's outcome (or failure), in-thread sims stepped on the slot pool.

    A slot still running at the request's slot timeout fails with DEADLINE_EXCEEDED; its
    call runs on in its thread, taken as hung ``hung_grace`` seconds later (nobody waits
    for it), as a call whose client left is.
    """
    ids = list(request.session_ids)
    actions = list(request.actions)
    remaining, client_alive = deadline

    def call(k: int, alive: Callable[[], bool]) -> Result:
        # Without a client deadline, the reaper asks the slot's own liveness: the request's
        # client is there, and the request has not given up on this slot.
        slot_deadline: Deadline = deadline if remaining is not None else (None, alive)
        if k in resets:
            r = resets[k]
            seed = r.seed if r.HasField("seed") else None
            return sessions.reset(ids[k], config_of(r.config), seed, seqs[k], slot_deadline)
        return sessions.step(ids[k], actions[k * width : (k + 1) * width], seqs[k], slot_deadline)

    timeout = request.slot_timeout_seconds or remaining
    results = sessions.slots.run(ids, call, timeout, client_alive, probe=probe, measure=measure)
    done: list[Result | SimServerError] = []
    for k, result in enumerate(results):
        if result is LATE:
            done.append(_late(sessions, "reset()" if k in resets else "step()", timeout))
        elif isinstance(result, Result | SimServerError):
            done.append(result)
        else:  # what the serial loop would have let through: the request fails
            raise result
    return done


def _late(sessions: SessionManager, call: str, timeout: float | None) -> SimHung:
    """The failure of a parallel slot given up on (see ``_run_parallel``)."""
    sessions.stats.sim_errors += 1
    why = (
        f"did not return within the request's slot timeout of {timeout:g} s"
        if timeout
        else "was given up: its client stopped waiting"
    )
    return SimHung(
        call,
        f"sim {call} {why}; Python cannot stop it: it runs on in a server thread and its "
        "session is busy until it returns (simserver --isolate process kills such calls)",
    )


def _run_isolated(
    sessions: SessionManager,
    request: pb.PackedRequest,
    deadline: Deadline,
    width: int,
    seqs: list[int],
    resets: dict[int, pb.PackedReset],
) -> list[Result | SimServerError]:
    """Every slot's outcome (or failure), its call sent before any reply is awaited.

    A session named by several slots runs them in order: the calls in flight are awaited
    before its next one is sent.
    """
    ids = request.session_ids
    actions = list(request.actions)
    slot_timeout = request.slot_timeout_seconds or None
    done: list[Result | SimServerError] = []
    pending: list[tuple[int, Call]] = []
    busy: set[str] = set()

    def await_pending() -> None:
        for k, call in pending:
            try:
                done[k] = sessions.finish(call)
            except SimServerError as exc:
                done[k] = exc
        pending.clear()
        busy.clear()

    for k, session_id in enumerate(ids):
        done.append(_NOT_RUN)
        if session_id in busy:
            await_pending()
        try:
            if k in resets:
                r = resets[k]
                seed = r.seed if r.HasField("seed") else None
                config = config_of(r.config)
                call = sessions.start_reset(
                    session_id, config, seed, seqs[k], deadline, slot_timeout
                )
            else:
                row = actions[k * width : (k + 1) * width]
                call = sessions.start_step(session_id, row, seqs[k], deadline, slot_timeout)
        except SimServerError as exc:
            done[k] = exc
            continue
        pending.append((k, call))
        busy.add(session_id)
    await_pending()
    return done


_NOT_RUN = SimServerError("slot not run")
