"""Bonsai sims: simulators that connect to simserver with Microsoft's Bonsai SDK.

A Bonsai connector (a process using ``microsoft-bonsai-api``) registers with simserver's
Bonsai endpoint (``simserver.bonsai``, the HTTP side) and then polls it: it posts its state
with ``advance`` and gets the next event back. This module is what lies behind the endpoint:

* ``RemoteSim`` is one registered sim: its events, sequence ids, the answer it owes and
  whether it is still there;
* ``BonsaiRegistry`` holds the registered sims, hands free ones to sessions, learns the state
  names, and drops sims that went silent;
* ``BonsaiSim`` is the ``SimInstance`` a simgym session gets. It has ``WorkerSim``'s split
  calls (``arm``/``submit``/``collect``/``kill``) and ``bonsai_factory`` marks it isolated, so
  the sessions and the packed engine send every slot's event before awaiting any answer: K
  Bonsai sims step in parallel.

Mapping: a reset is an ``EpisodeStart`` with the reset's config (an ``EpisodeFinish`` first if
the sim's episode is still open), a step an ``EpisodeStep`` with the action as a dict of the
session's action names; the state the sim posts next is the call's result, read by the rules
of plain class sims (``simserver.adapters.ClassSim``). ``halted`` ends the episode as
terminated (Bonsai took it as a terminal failure); ``terminated``/``truncated``/``done`` keys in
the state work as for class sims.

A sim is dead (dropped, and told ``Unregister`` if it polls again) when it deletes its
session, when its connection closes and it does not post again within ``LOST_GRACE`` seconds
(its process was killed), when it does not post for its ``SimulatorInterface.timeout``, or when
a call outlives its limit. The call fails (INTERNAL for a sim that went away, as a worker
process that died; DEADLINE_EXCEEDED past the call's limit, as a killed worker), the episode
ends, and the session's next reset takes another free sim.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc

from simgym.httpbase import Refusal
from simserver.adapters import ClassSim, Outcome, SimFactory, Variable
from simserver.errors import SimCallFailed, SimServerError, clip, log_throttled
from simserver.isolation import SimHung, SimWorkerDied

log = logging.getLogger("simserver.bonsai")

#: Seconds an ``advance`` waits for the next event before it answers ``Idle``: a long poll, so
#: that a step reaches a sim waiting for it at once.
LONG_POLL = 1.0
#: The ``callbackTime`` of an ``Idle`` event: how long the sim sleeps before it polls again.
IDLE_CALLBACK = 0.05
#: Seconds a sim whose connection closed (its process ended, or its HTTP client let the
#: connection go) may take to post again before it is taken as dead.
LOST_GRACE = 2.0
#: A sim's ``SimulatorInterface.timeout`` (seconds it may stay silent): its default, as the
#: platform's, and the range it is clamped to.
DEFAULT_TIMEOUT = 60.0
TIMEOUT_RANGE = (1.0, 3600.0)
#: Seconds a session's reset waits for a free registered sim (also bounded by the call's limit).
FREE_SIM_WAIT = 60.0
#: How often the registry looks for silent sims.
CHECK_PERIOD = 0.25
# State keys that report an episode's end rather than a state (as for class sims).
_FLAG_KEYS = ("terminated", "truncated", "done")
# Dropped sims remembered, so that their next poll gets Unregister with the reason.
_DROPPED_KEPT = 1024


class Refused(Refusal):
    """A request the endpoint answers with an HTTP error (status and a one-line detail)."""


class NoFreeSim(SimHung):
    """No registered Bonsai sim became free within the wait (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


# --------------------------------------------------------------------------- the interface


@dataclass
class Interface:
    """A sim's ``SimulatorInterface``: what it registered with.

    Attributes:
        name: The simulator's name.
        timeout: Seconds it may stay silent before it is taken as dead (clamped).
        states: State variables, if its description declares them (else None).
        actions: Action variables it declares (empty: the client's spec names them).
        config: Config keys it declares (empty: any).
        raw: The interface as posted, echoed by ``GET``.
    """

    name: str
    timeout: float
    states: list[Variable] | None
    actions: list[Variable]
    config: list[Variable]
    raw: dict[str, Any]


def parse_interface(body: Any) -> Interface:
    """Read a posted ``SimulatorInterface``.

    Raises:
        Refused: 400, naming the field at fault.
    """
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a SimulatorInterface JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Refused(400, "SimulatorInterface.name is required (a non-empty string)")
    timeout = body.get("timeout")
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or math.isnan(timeout):
        raise Refused(400, f"SimulatorInterface.timeout {clip(timeout, 40)}: give seconds")
    timeout = min(max(float(timeout), TIMEOUT_RANGE[0]), TIMEOUT_RANGE[1])
    description = body.get("description")
    if description is not None and not isinstance(description, dict):
        raise Refused(400, "SimulatorInterface.description must be an object (or absent)")
    description = description or {}
    states = _struct_fields(description.get("state"), "state")
    if states is not None:
        states = [v for v in states if v.name not in _FLAG_KEYS]
    return Interface(
        name=clip(name.strip(), 200),
        timeout=timeout,
        states=states or None,
        actions=_struct_fields(description.get("action"), "action") or [],
        config=_struct_fields(description.get("config"), "config") or [],
        raw=body,
    )


def _struct_fields(schema: Any, what: str) -> list[Variable] | None:
    """The named fields of a description's ``Struct`` schema (None when it declares none).

    Raises:
        Refused: 400, a field without a name or named twice.
    """
    if not isinstance(schema, dict) or not isinstance(schema.get("fields"), list):
        return None
    out: list[Variable] = []
    for item in schema["fields"]:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise Refused(400, f"description.{what}: every field needs a name")
        kind = item.get("type") if isinstance(item.get("type"), dict) else {}
        out.append(
            Variable(
                name, _bound(kind.get("start")), _bound(kind.get("stop")), kind.get("comment") or ""
            )
        )
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise Refused(400, f"description.{what}: a field name appears twice in {clip(names)}")
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float)  # bool is an int: a flag state is 0 or 1


def _bound(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


# --------------------------------------------------------------------------- one sim


@dataclass
class Posted:
    """What a sim posted in answer to an event: its state, ``halted`` and ``error``."""

    state: Any
    halted: bool
    error: str
    at: float = field(default_factory=time.monotonic)


class RemoteSim:
    """One registered Bonsai sim, as the endpoint and a session see it.

    Sequence ids: every event that is not ``Idle`` gets the next id; the sim posts that id
    with the state that answers it. A post repeating the id that got the last event (its
    reply was lost and the SDK sent it again) gets that same event again.

    Everything below is guarded by ``cond``; a registry lock may be taken before it, never
    after.
    """

    def __init__(self, interface: Interface, workspace: str) -> None:
        self.id = uuid.uuid4().hex
        self.interface = interface
        self.workspace = workspace
        self.cond = threading.Condition()
        self.registered = _now_iso()
        self.last_seen = time.monotonic()
        self.last_iterated = self.registered
        self.iterations = 0
        self.seq = 1  # the id the sim posts next (the sample connectors start at 1)
        self.prior = 0  # the id that was posted when the last event went out
        self.issued: dict[str, Any] | None = None  # the last event that was not Idle
        self.issued_at = 0.0
        # Events not sent yet, each with whether a session awaits the sim's answer to it.
        self.queue: collections.deque[tuple[dict[str, Any], bool]] = collections.deque()
        self.owed = False  # a session awaits the answer to the last event queued
        self.owed_seq = 0  # the sequence id of that event once it went out (0: not yet)
        self.answer: Posted | None = None
        self.episode = False  # an EpisodeStart is queued or went out, no EpisodeFinish since
        self.probed = False
        self.bound = False  # a session has it
        self.release_on_answer = False  # its session is gone: free it once it answers
        self.gone = ""  # why it was dropped ("": it is live)
        self.polling = 0  # advance requests being answered
        self.connections = 0  # connections it has posted on that are open
        self.lost_at = 0.0  # when its last connection closed on its side

    def event(self, kind: str, **body: Any) -> dict[str, Any]:
        """An ``Event`` of this sim (``sequenceId`` set when it goes out)."""
        event: dict[str, Any] = {"type": kind, "sessionId": self.id, "sequenceId": self.seq}
        if body:
            event[kind[0].lower() + kind[1:]] = body
        return event

    def send(self, *events: dict[str, Any], owed: bool) -> None:
        """Queue events for the sim; ``owed``: a session awaits the answer to the last one."""
        for i, event in enumerate(events):
            self.queue.append((event, owed and i == len(events) - 1))
            if event["type"] in ("EpisodeStart", "EpisodeFinish"):
                self.episode = event["type"] == "EpisodeStart"
        self.owed, self.owed_seq, self.answer = owed, 0, None
        self.cond.notify_all()

    def take_post(self, seq: int, posted: Posted) -> dict[str, Any] | None:
        """A post's state: the answer to the last event, a repeat, or a poll.

        Returns:
            The event to send again for a repeated post, else None.
        """
        self.last_seen = time.monotonic()
        self.lost_at = 0.0
        if self.issued is not None and seq == self.prior and seq != self.seq:
            return self.issued
        if self.owed and seq == self.owed_seq and self.answer is None:
            self.answer = posted
            self.cond.notify_all()
        return None

    def next_event(self, wait: float, peer_gone: Callable[[], bool]) -> dict[str, Any]:
        """The next event, waiting up to ``wait`` s for one (``Idle`` if none comes)."""
        end = time.monotonic() + wait
        while not self.queue and not self.gone:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.cond.wait(min(left, CHECK_PERIOD))
            if not self.queue and peer_gone():
                break  # nobody reads the reply: the post is not answered
        if self.gone:
            return self.unregister()
        if not self.queue:
            return self.event("Idle", callbackTime=IDLE_CALLBACK)
        event, owed = self.queue.popleft()
        self.prior, self.seq = self.seq, self.seq + 1
        event["sequenceId"] = self.seq
        if owed:
            self.owed_seq = self.seq
        self.issued, self.issued_at = event, time.monotonic()
        if event["type"] == "EpisodeStep":
            self.iterations += 1
            self.last_iterated = _now_iso()
        return event

    def unregister(self) -> dict[str, Any]:
        """The ``Unregister`` event of a dropped sim."""
        reason = "Finished" if self.gone.startswith("deleted") else "Error"
        return self.event("Unregister", reason=reason, details=self.gone)

    def drop(self, why: str) -> bool:
        """Take the sim as dead (True if it was live until now)."""
        if self.gone:
            return False
        self.gone = why
        self.cond.notify_all()
        return True

    def silent(self, now: float) -> str:
        """Why the sim is taken as dead now ("": it is not)."""
        if self.polling:
            return ""
        if self.lost_at and not self.connections and now - self.lost_at > LOST_GRACE:
            return (
                "closed its connection (its process ended?) and did not post again within "
                f"{LOST_GRACE:g} s"
            )
        if now - self.last_seen > self.interface.timeout:
            return (
                f"stopped polling: no advance for {self.interface.timeout:g} s (its "
                "SimulatorInterface timeout)"
            )
        return ""

    def status(self) -> str:
        """Its ``sessionStatus``: Attached while a session has it."""
        return "Deregistered" if self.gone else ("Attached" if self.bound else "Attachable")

    def response(self) -> dict[str, Any]:
        """Its ``SimulatorSessionResponse``."""
        return {
            "sessionId": self.id,
            "sessionStatus": self.status(),
            "interface": self.interface.raw,
            "registrationTime": self.registered,
            "lastSeenTime": _now_iso(),
            "lastIteratedTime": self.last_iterated,
            "iterationRate": 0.0,
            "details": self.gone,
        }

    def summary(self) -> dict[str, Any]:
        """Its ``SimulatorSessionSummary``."""
        return {
            "sessionId": self.id,
            "sessionStatus": self.status(),
            "simulatorName": self.interface.name,
        }


# --------------------------------------------------------------------------- the registry


@dataclass
class RegistryStats:
    """Counters for the log."""

    registered: int = 0
    deleted: int = 0
    dropped: int = 0
    refused: int = 0


class BonsaiRegistry:
    """The registered Bonsai sims of one server.

    Args:
        max_sims: Sims registered at once (429 beyond).
        free_sim_wait: Seconds a reset waits for a free sim.
    """

    def __init__(self, max_sims: int = 64, free_sim_wait: float = FREE_SIM_WAIT) -> None:
        self.max_sims = max_sims
        self.free_sim_wait = free_sim_wait
        self.stats = RegistryStats()
        self._cond = threading.Condition()
        self._sims: dict[str, RemoteSim] = {}
        self._free: collections.deque[RemoteSim] = collections.deque()
        self._dropped: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.ready = threading.Event()  # the state names are known
        self.state_names: list[Variable] = []
        self.first: Interface | None = None
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    # ------------------------------------------------------------------ the endpoint's calls

    def register(self, workspace: str, interface: Interface) -> RemoteSim:
        """Add a sim (free at once).

        Raises:
            Refused: 429 when ``max_sims`` are registered; 400 when its declared states
                differ from those of the sims before it.
        """
        with self._cond:
            if self._stop.is_set():
                raise Refused(503, "simserver is shutting down")
            if len(self._sims) >= self.max_sims:
                self.stats.refused += 1
                raise Refused(
                    429,
                    f"{self.max_sims} simulators are registered, this server's limit "
                    "(simserver --max-sessions); try again when one has gone",
                )
            declared = interface.states
            if declared is not None and self.ready.is_set():
                known = [v.name for v in self.state_names]
                if [v.name for v in declared] != known:
                    raise Refused(
                        400,
                        f"this simulator declares the states {clip([v.name for v in declared])}"
                        f", those registered before declare {clip(known)}: every Bonsai sim "
                        "of one simserver must be the same sim",
                    )
            sim = RemoteSim(interface, workspace)
            self._sims[sim.id] = sim
            self._free.append(sim)
            self.stats.registered += 1
            if declared is not None and not self.ready.is_set():
                self._learn(interface, declared)
            self._cond.notify_all()
        log.info(
            "Bonsai sim %r registered as session %s (%d registered)",
            interface.name,
            sim.id[:8],
            len(self._sims),
        )
        return sim

    def get(self, session_id: str) -> RemoteSim:
        """A registered sim.

        Raises:
            Refused: 404.
        """
        sim = self._sims.get(session_id)
        if sim is None:
            raise Refused(404, f"no simulator session {clip(session_id, 40)}")
        return sim

    def sims(self) -> list[RemoteSim]:
        """The registered sims."""
        with self._cond:
            return list(self._sims.values())

    def delete(self, session_id: str) -> None:
        """Unregister a sim (its ``DELETE``); a call awaiting it fails.

        Raises:
            Refused: 404.
        """
        sim = self.get(session_id)
        with self._cond, sim.cond:
            if sim.drop("deleted its session (DELETE)"):
                self.stats.deleted += 1
        self._forget(sim)

    def advance(
        self, session_id: str, seq: int, posted: Posted, peer_gone: Callable[[], bool]
    ) -> dict[str, Any]:
        """A sim's ``advance``: take its state, then answer with its next event.

        Args:
            session_id: The sim's session id.
            seq: The ``sequenceId`` it posted.
            posted: What it posted.
            peer_gone: Whether its connection has closed (checked while waiting).
        """
        sim = self._sims.get(session_id)
        if sim is None:
            reason = self._dropped.get(session_id)
            return {
                "type": "Unregister",
                "sessionId": clip(session_id, 100),
                "sequenceId": seq,
                "unregister": {
                    "reason": "Error" if reason else "NotFound",
                    "details": reason or "no such simulator session here: register again",
                },
            }
        with sim.cond:
            if sim.gone:
                return sim.unregister()
            sim.polling += 1
            try:
                again = sim.take_post(seq, posted)
            finally:
                sim.polling -= 1
            release = sim.release_on_answer and sim.answer is not None
        if again is not None:
            return again
        if not self.ready.is_set():
            self._learn_from_post(sim, posted)
        if release:
            self.release(sim, "Interrupted")
        with sim.cond:
            sim.polling += 1
            try:
                return sim.next_event(LONG_POLL, peer_gone)
            finally:
                sim.polling -= 1
                sim.last_seen = time.monotonic()

    def connected(self, session_id: str) -> None:
        """A connection posted for this sim for the first time."""
        sim = self._sims.get(session_id)
        if sim is not None:
            with sim.cond:
                sim.connections += 1

    def disconnected(self, session_ids: Sequence[str], peer_closed: bool) -> None:
        """A connection that posted for these sims closed (on the sim's side: ``peer_closed``)."""
        for session_id in session_ids:
            sim = self._sims.get(session_id)
            if sim is None:
                continue
            with sim.cond:
                sim.connections = max(0, sim.connections - 1)
                if peer_closed and not sim.connections:
                    sim.lost_at = time.monotonic()

    # ------------------------------------------------------------------ names

    def _learn(self, interface: Interface, states: list[Variable]) -> None:
        """Take the first known state names (under ``_cond``): the gRPC side can start."""
        self.state_names, self.first = states, interface
        self.ready.set()
        log.info(
            "Bonsai sim %r: states %s; sessions can start",
            interface.name,
            clip([v.name for v in states], 300),
        )

    def _learn_from_post(self, sim: RemoteSim, posted: Posted) -> None:
        """Learn the state names from a posted state; probe a sim that posts none."""
        state = posted.state
        if isinstance(state, dict) and state:
            # Numbers only: a state that is a list or a struct cannot be one value of a row.
            names = [str(k) for k, v in state.items() if k not in _FLAG_KEYS and _number(v)]
            if len(names) < len(state):
                skipped = [str(k) for k in state if str(k) not in names]
                log.info("Bonsai sim %r: not states (flags, or not numbers): %s",
                         sim.interface.name, clip(skipped))  # fmt: skip
            with self._cond:
                if not self.ready.is_set() and names:
                    self._learn(sim.interface, [Variable(n) for n in names])
            return
        with sim.cond:
            if not sim.probed and not sim.bound:
                # As class sims are probed with reset({}): its answer carries the states.
                sim.probed = True
                sim.send(sim.event("EpisodeStart", config={}), owed=False)

    # ------------------------------------------------------------------ sessions' side

    def take(self, wait: float) -> RemoteSim | None:
        """A free live sim for a session, waiting up to ``wait`` s (None if none came)."""
        end = time.monotonic() + wait
        with self._cond:
            while True:
                while self._free:
                    sim = self._free.popleft()
                    with sim.cond:
                        if not sim.gone and not sim.bound:
                            sim.bound = True
                            return sim
                left = end - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(left)

    def release(self, sim: RemoteSim, reason: str) -> None:
        """Give a session's sim back: its open episode finishes, then it is free again.

        A sim that still owes an answer is freed once it answers (or dropped if it never does).
        """
        with self._cond, sim.cond:
            if sim.gone or not sim.bound:
                return
            if sim.owed and sim.answer is None:
                sim.release_on_answer = True
                return
            sim.bound = sim.release_on_answer = False
            sim.owed, sim.answer = False, None
            if sim.episode:
                sim.send(sim.event("EpisodeFinish", reason=reason), owed=False)
            self._free.append(sim)
            self._cond.notify_all()

    def dropped(self, sim: RemoteSim) -> None:
        """Count and forget a sim a session dropped (see ``BonsaiSim``)."""
        self._forget(sim)

    def _forget(self, sim: RemoteSim) -> None:
        with self._cond:
            if self._sims.pop(sim.id, None) is None:
                return
            if sim in self._free:  # else sims that come and go would pile up there
                self._free.remove(sim)
            if not sim.gone.startswith("deleted"):
                self.stats.dropped += 1
            self._dropped[sim.id] = sim.gone
            while len(self._dropped) > _DROPPED_KEPT:
                self._dropped.popitem(last=False)
            left = len(self._sims)
        level = logging.INFO if sim.gone.startswith("deleted") else logging.WARNING
        log_throttled(
            log,
            level,
            ("bonsai sim gone", level),
            "Bonsai sim %r (session %s) %s; %d registered",
            sim.interface.name,
            sim.id[:8],
            sim.gone,
            left,
        )

    # ------------------------------------------------------------------ liveness

    def start(self) -> None:
        """Start the thread that drops silent sims."""

        def loop() -> None:
            while not self._stop.wait(CHECK_PERIOD):
                self.check()

        self._reaper = threading.Thread(target=loop, name="simserver-bonsai-reaper", daemon=True)
        self._reaper.start()

    def check(self) -> int:
        """Drop the sims that went silent; returns how many."""
        now = time.monotonic()
        gone: list[RemoteSim] = []
        for sim in self.sims():
            with sim.cond:
                why = sim.silent(now)
                if why and sim.drop(why):
                    gone.append(sim)
        for sim in gone:
            self._forget(sim)
        return len(gone)

    def stop(self) -> None:
        """Drop every sim (their polls get ``Unregister``) and stop the reaper."""
        self._stop.set()
        for sim in self.sims():
            with sim.cond:
                sim.drop("simserver is shutting down")
        with self._cond:
            self._cond.notify_all()


# --------------------------------------------------------------------------- a session's sim


class _Posted:
    """The posted state as a plain class sim, so that ``ClassSim`` reads it by its rules."""

    def __init__(self) -> None:
        self.result: Any = {}

    def reset(self, config: dict[str, Any]) -> Any:
        return self.result

    def step(self, action: dict[str, Any]) -> Any:
        return self.result


class BonsaiSim:
    """A session's sim: a registered Bonsai sim, taken at the session's first reset.

    The ``SimInstance`` methods and ``WorkerSim``'s split calls (``arm``, ``submit``,
    ``collect``, ``kill``): ``submit`` queues the event, ``collect`` awaits the sim's answer
    within the limit set by ``arm``.

    Args:
        registry: Where free sims come from.
        state_names: The states in wire order.
        action_names: The session's action names.
    """

    def __init__(
        self, registry: BonsaiRegistry, state_names: list[str], action_names: list[str]
    ) -> None:
        self._registry = registry
        self._actions = action_names
        self._posted = _Posted()
        self._rows = ClassSim(self._posted, state_names, action_names)
        self._sim: RemoteSim | None = None
        self._op = ""
        self._config: dict[str, Any] = {}
        self._action: list[float] = []
        self._error: SimServerError | None = None
        self._ended = "Interrupted"  # the EpisodeFinish reason if the episode is cut short
        self._last: Outcome | None = None
        self._killed = ""
        self._kill_at = math.inf
        self._why = ""
        self._alive: Callable[[], bool] | None = None
        self._grace = 0.0
        self._dead_since = 0.0

    def arm(
        self,
        kill_at: float,
        why: str,
        alive: Callable[[], bool] | None = None,
        grace: float = 0.0,
    ) -> None:
        """Set the next call's limit (see ``WorkerSim.arm``)."""
        self._kill_at, self._why, self._alive, self._grace = kill_at, why, alive, grace
        self._dead_since = 0.0

    def kill(self, why: str) -> None:
        """End the running call (its session was closed); safe from any thread."""
        self._killed = why
        sim = self._sim
        if sim is not None:
            with sim.cond:
                sim.cond.notify_all()

    def submit(self, op: str, arg: Any = None) -> None:
        """Send one call: a reset's or step's event goes to the sim at once."""
        self._op, self._error, self._killed = op, None, ""
        sim = self._sim
        if op == "reset":
            self._config = dict(arg[0] or {})
            if sim is not None and sim.gone:
                self._sim = sim = None
            if sim is None:
                self._sim = sim = self._registry.take(0.0)
            if sim is not None:
                self._start(sim)
        elif op == "step":
            if sim is None or not self._last_running():
                self._error = SimWorkerDied("step()", "no Bonsai sim has an episode here: reset")
                return
            self._action = list(arg)
            action = dict(zip(self._actions, self._action, strict=True))
            with sim.cond:
                sim.send(sim.event("EpisodeStep", action=action), owed=True)

    def _last_running(self) -> bool:
        last = self._last
        return last is not None and not (last.terminated or last.truncated)

    def _start(self, sim: RemoteSim) -> None:
        with sim.cond:
            events = []
            if sim.episode:
                events.append(sim.event("EpisodeFinish", reason=self._ended))
            events.append(sim.event("EpisodeStart", config=self._config))
            sim.send(*events, owed=True)
        self._ended = "Interrupted"

    def collect(self, call: str) -> Any:
        """Await the answer to the call sent last; the fields of its ``Outcome``.

        Raises:
            SimCallFailed: The sim reported an error or posted no state dict, or (as
                ``SimHung``'s kin) it went away, outlived the call's limit, or no sim was free.
        """
        if self._error is not None:
            raise self._error
        if self._op == "states":
            return self._last.states if self._last is not None else []
        if self._op == "termination":
            last = self._last
            return (last.terminated, last.truncated) if last is not None else (False, False)
        if self._op == "close":
            return None
        if self._op == "reset":
            return self._outcome(self._reset_answer(call), call)
        assert self._sim is not None
        return self._outcome(self._await(self._sim, call), call)

    def _reset_answer(self, call: str) -> Posted:
        """A reset's answer; a sim that went away before it answered is replaced.

        Nothing of an episode is lost then (it had not started), so the reset goes on with
        another free sim, within the wait for one.
        """
        end = min(time.monotonic() + self._registry.free_sim_wait, self._kill_at)
        while True:
            if self._sim is None:
                self._sim = self._wait_for_sim(call, end)
                self._start(self._sim)
            try:
                return self._await(self._sim, call)
            except SimWorkerDied as exc:  # gone (not past the limit: that is SimHung)
                if self._sim is not None:
                    raise
                log.info("%s: taking another sim", exc.message)

    def _wait_for_sim(self, call: str, end: float) -> RemoteSim:
        wait = max(0.0, end - time.monotonic())
        sim = self._registry.take(wait)
        if sim is None:
            n = len(self._registry.sims())
            raise NoFreeSim(
                call,
                f"no registered Bonsai sim became free within {wait:.3g} s ({n} registered, "
                "each serving a session): start more sim copies, or open fewer sessions",
            )
        return sim

    def _await(self, sim: RemoteSim, call: str) -> Posted:
        """The sim's answer, or the failure of a sim that went away or ran past its limit."""
        with sim.cond:
            while True:
                if sim.answer is not None:
                    posted, sim.answer, sim.owed = sim.answer, None, False
                    return posted
                if self._killed:
                    raise SimHung(
                        call,
                        f"sim {call} {self._killed}: the Bonsai sim (session {sim.id[:8]}) is "
                        "freed once it answers",
                    )
                if sim.gone:
                    self._sim = None
                    raise SimWorkerDied(
                        call,
                        f"the Bonsai sim {sim.interface.name!r} (session {sim.id[:8]}) "
                        f"{sim.gone} during {call}; the episode is over, the next reset "
                        "takes another registered sim",
                    )
                why = self._give_up(time.monotonic())
                if why:
                    break
                sim.cond.wait(max(0.001, min(self._kill_at - time.monotonic(), CHECK_PERIOD)))
            sim.drop(f"did not answer {call} in time")
        self._sim = None
        self._registry.dropped(sim)
        raise SimHung(
            call,
            f"sim {call} {why}: the Bonsai sim {sim.interface.name!r} (session {sim.id[:8]}) "
            "was dropped (told to unregister if it polls again); the episode is over, the "
            "next reset takes another registered sim",
        )

    def _give_up(self, now: float) -> str:
        """Why the running call must end now ("" to wait on), as ``WorkerSim`` decides."""
        if now >= self._kill_at:
            return self._why
        alive = self._alive
        if alive is None or alive():
            return ""
        if not self._dead_since:
            self._dead_since = now
        if now - self._dead_since >= self._grace:
            return f"ran on {self._grace:g} s after its client's stream ended"
        return ""

    def _outcome(self, posted: Posted, call: str) -> tuple[Any, ...]:
        """The answer's state read by the class-sim rules; ``halted`` is a terminal failure."""
        if posted.error:
            raise SimCallFailed(call, RuntimeError(f"the Bonsai sim posted error {posted.error!r}"))
        if not isinstance(posted.state, dict):
            raise SimCallFailed(call, TypeError("the Bonsai sim posted no state object"))
        self._posted.result = (posted.state, True) if posted.halted else posted.state
        if self._op == "reset":
            outcome = self._rows.reset({}, None)
        else:
            outcome = self._rows.step(self._action)
        sim = self._sim
        if sim is not None:
            outcome.sim_seconds = max(0.0, posted.at - sim.issued_at)
        if outcome.terminated:
            self._ended = "Terminal"
        elif outcome.truncated:
            self._ended = "EpisodeComplete"
        self._last = outcome
        return (
            outcome.states,
            outcome.terminated,
            outcome.truncated,
            outcome.reward,
            outcome.sim_seconds,
            outcome.nonfinite,
        )

    # ------------------------------------------------------------------ SimInstance

    def reset(self, config: dict[str, Any], seed: int | None) -> Outcome:
        """Start an episode: ``EpisodeStart`` with the config (Bonsai has no seed)."""
        self.submit("reset", (config, seed))
        return Outcome(*self.collect("reset()"))

    def step(self, action: Sequence[float]) -> Outcome:
        """One ``EpisodeStep``."""
        self.submit("step", list(action))
        return Outcome(*self.collect("step()"))

    def states(self) -> list[float]:
        """The states the sim posted last."""
        return list(self._last.states) if self._last is not None else []

    def termination(self) -> tuple[bool, bool]:
        """The flags of the last answer."""
        last = self._last
        return (last.terminated, last.truncated) if last is not None else (False, False)

    def close(self) -> None:
        """Give the sim back to the registry (its episode finished first)."""
        sim, self._sim = self._sim, None
        if sim is not None:
            self._registry.release(sim, self._ended)


def bonsai_factory(registry: BonsaiRegistry) -> SimFactory:
    """The ``SimFactory`` of a registry whose state names are known (``registry.ready``).

    Its sims are ``BonsaiSim``s, marked isolated: the sessions and the packed engine use
    their split calls, so a packed request's sims step in parallel.
    """
    first = registry.first
    assert first is not None and registry.ready.is_set()
    states = list(registry.state_names)
    names = [v.name for v in states]

    def create(action_names: list[str]) -> BonsaiSim:
        return BonsaiSim(registry, names, action_names)

    return SimFactory(
        sim_name=first.name,
        states=states,
        actions=list(first.actions),
        config=list(first.config),
        seedable=False,
        create=create,
        isolated=True,
    )
