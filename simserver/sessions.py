"""Session lifecycle: one sim instance per session, leases, limits and retries.

Kept free of gRPC message types so it can be tested directly; the servicer and the packed
engine translate. Every method raises a ``SimServerError`` subclass on failure.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from simserver.adapters import Outcome, SimFactory, SimInstance
from simserver.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    SessionBusy,
    SessionNotFound,
    SimCallFailed,
    SimServerError,
    clip,
)
from simserver.slots import DEFAULT_PARALLEL, SlotRunner

log = logging.getLogger("simserver.sessions")

#: A call's client deadline: (seconds remaining at the call's start, or None when the
#: call has none; for such a call, whether its RPC is still live, if that can be asked).
Deadline = tuple[float | None, Callable[[], bool] | None]
NO_DEADLINE: Deadline = (None, None)


@dataclass(slots=True)
class Result:
    """A transition as the transports put it on the wire."""

    outcome: Outcome
    step: int


@dataclass(slots=True)
class Call:
    """A sim call started by ``SessionManager.start_step``/``start_reset``, awaiting ``finish``."""

    session: Session
    call: str  # "step()" or "reset()"
    seq: int
    ready: Result | None  # a retry's stored reply: no sim call was made


@dataclass
class Session:
    """One client's simulator instance and its bookkeeping."""

    id: str
    sim: SimInstance
    action_names: list[str]
    lease: float
    client: str
    # Indices of the actions the client sends as integers (OpenRequest.integer_actions).
    integer: tuple[int, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    # Episode state: a step is only valid while an episode is running.
    running: bool = False
    steps: int = 0
    # Retry protection: the last applied sequence number and its reply.
    seq: int = 0
    last_result: Result | None = None
    # What the session is doing now, for "busy" messages about hung sims.
    busy_call: str = ""
    busy_since: float = 0.0
    # When the running call counts as hung (monotonic): its client's deadline plus the
    # grace, or the no-deadline limit. Only read while busy_call is set.
    hung_at: float = math.inf
    # For a call without a deadline (a stream's): is its RPC still live? A client that
    # cancelled or vanished no longer waits for it. None: nothing to ask.
    call_alive: Callable[[], bool] | None = None
    # When the reaper first saw that RPC ended (0: not seen).
    dead_since: float = 0.0
    # Set when the session left the table while a call still ran in it (hung, or closed
    # by its client): it is disposed of once that call returns.
    abandoned: bool = False
    # Set for a hung session: its returning call gives its spare thread back.
    counted_hung: bool = False
    # Set once the reaper said this hung session stays for want of spare threads.
    hung_kept: bool = False


@dataclass
class Stats:
    """Counters for logs and health reporting."""

    opened: int = 0
    closed: int = 0
    expired: int = 0
    hung: int = 0
    sim_errors: int = 0
    steps: int = 0


class SessionManager:
    """Creates, serves and reaps sessions for one ``SimFactory``.

    A session whose sim call has outlived its client's deadline by ``hung_grace`` seconds
    is taken as hung: nobody waits for the result any more. (A slow call still inside its
    deadline is healthy, however long it takes.) A call without a deadline (one message
    of a stream) is hung once its RPC has ended (the client cancelled or vanished) for
    ``hung_grace`` seconds, or after ``no_deadline_limit`` seconds in any case. The reaper
    takes a hung session out of the table, so it no longer counts against
    ``max_sessions`` (its id gets NOT_FOUND), and closes it when the call returns.

    A hung call still holds its server thread until then, and the pool has only
    ``max_hung`` threads beyond one per session: at most that many hung sessions are let
    go of at once (more stay in the table, and ``open`` gets RESOURCE_EXHAUSTED as usual),
    so that a freed slot never admits a session that would wait for a thread.

    Args:
        factory: The simulator description.
        max_sessions: Open sessions allowed at once (RESOURCE_EXHAUSTED beyond).
        lease_seconds: Default idle lease; a session unused this long is closed.
        max_lease_seconds: Upper bound on a lease a client may ask for (default:
            ``lease_seconds``, so that no client holds capacity longer than the
            operator's ``--lease``; a client may ask for less).
        hung_grace: Seconds past its client's deadline before a call is taken as hung.
        no_deadline_limit: Seconds a call without a deadline may run while its RPC is
            live before it is taken as hung.
        max_hung: Hung sessions let go of at once (the server's spare threads).
        max_slots: Slots one packed request may carry (``simserver.packed``).
        parallel_slots: Whether a packed request's in-thread sims step on a pool:
            ``auto``, ``on`` or ``off`` (``simserver.slots``). The pool has a thread per
            session plus ``max_hung``: a hung call in it is counted as one in a server thread.

    With an isolated factory (``simserver.isolation``, each sim in a worker process) a call
    past its limit has its worker killed by the thread that awaits it, so it never holds a
    thread for good: the reaper leaves such calls alone, and closing a session whose call
    runs kills that call's worker at once.

    Attributes:
        on_serving: Called with False when every spare thread is held by a hung call (the
            server can take no new session: it says NOT_SERVING on health), with True once
            one is back.
    """

    def __init__(
        self,
        factory: SimFactory,
        *,
        max_sessions: int = 64,
        lease_seconds: float = 300.0,
        max_lease_seconds: float | None = None,
        hung_grace: float = 30.0,
        no_deadline_limit: float = 3600.0,
        max_hung: int = 8,
        max_slots: int = 1024,
        parallel_slots: str = DEFAULT_PARALLEL,
    ) -> None:
        self.factory = factory
        self.max_sessions = max_sessions
        self.lease_seconds = lease_seconds
        self.max_lease_seconds = (
            lease_seconds if max_lease_seconds is None else max(max_lease_seconds, lease_seconds)
        )
        self.hung_grace = hung_grace
        self.no_deadline_limit = no_deadline_limit
        self.max_hung = max_hung
        self.max_slots = max_slots
        self.isolated = factory.isolated
        # Isolated sims step in parallel in their workers: the pool is for in-thread ones.
        self.slots = SlotRunner(parallel_slots, max_sessions + max_hung)
        self.on_serving: Callable[[bool], None] | None = None
        self.wedged = False  # every spare thread is held by a hung call
        # Hung sessions let go of whose call has not returned yet (each holds a thread).
        self._hung_running = 0
        self.stats = Stats()
        self._sessions: dict[str, Session] = {}
        self._reserved = 0
        self._lock = threading.Lock()
        self._declared_actions = [v.name for v in factory.actions]
        self._config_keys = {v.name for v in factory.config}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start_reaper(self, interval: float | None = None) -> None:
        """Start the background thread that closes sessions past their lease."""
        period = interval or max(0.05, min(5.0, self.lease_seconds / 4))

        def loop() -> None:
            while not self._stop.wait(period):
                self.reap()

        self._reaper = threading.Thread(target=loop, name="simserver-reaper", daemon=True)
        self._reaper.start()

    def open(
        self,
        action_names: Sequence[str],
        lease: float,
        client: str,
        integer_actions: Sequence[str] = (),
    ) -> Session:
        """Create a session; the sim is built outside the global lock (it may be slow).

        ``integer_actions``: action names whose whole-number values the sim receives as
        ints (a client's discrete actions); names the session does not have are ignored.
        """
        actions = self._resolve_actions(list(action_names))
        wanted = set(integer_actions)
        integer = tuple(i for i, name in enumerate(actions) if name in wanted)
        # NaN would compare false with every bound and make a session that never expires;
        # a negative lease means nothing. +inf asks for "as long as allowed": capped below,
        # like any lease over the server's maximum.
        if math.isnan(lease) or lease < 0:
            raise InvalidArgument(
                f"lease_seconds is {lease}: give a positive number of seconds, or 0 for the "
                "server's default"
            )
        with self._lock:
            if self.wedged:
                raise ResourceExhausted(
                    f"all {self.max_hung} spare server threads are held by hung sim calls: "
                    "no new session until one returns (restart the server, or run it with "
                    "--isolate process so that hung sims can be killed)"
                )
            if len(self._sessions) + self._reserved >= self.max_sessions:
                raise ResourceExhausted(
                    f"session limit reached ({self.max_sessions} open); close sessions or "
                    "start the server with a larger --max-sessions"
                )
            self._reserved += 1
        try:
            try:
                sim = self.factory.create(actions)
            except SimCallFailed:  # an isolated sim's, already naming its constructor
                raise
            except Exception as exc:
                raise SimCallFailed("constructor", exc) from exc
            granted = self.lease_seconds if lease == 0 else min(lease, self.max_lease_seconds)
            session = Session(uuid.uuid4().hex, sim, actions, granted, client, integer)
            with self._lock:
                self._sessions[session.id] = session
                self.stats.opened += 1
        finally:
            with self._lock:
                self._reserved -= 1
        log.info(
            "opened session %s for %s (%d open)", session.id[:8], client or "?", len(self._sessions)
        )
        return session

    def _resolve_actions(self, requested: list[str]) -> list[str]:
        declared = self._declared_actions
        if declared:
            if requested and requested != declared:
                if sorted(requested) == sorted(declared):
                    # Same names, another order: the reply tells the client the wire order.
                    return declared
                raise InvalidArgument(
                    f"client actions {clip(requested)} do not match the sim's actions "
                    f"{clip(declared)}"
                )
            return declared
        if not requested:
            raise InvalidArgument(
                "the sim does not declare its action names: send them in Open.action_names "
                "(gymclient does this from the spec) or start simserver with --actions"
            )
        if len(set(requested)) != len(requested):
            raise InvalidArgument(f"duplicate action names in {clip(requested)}")
        return requested

    def get(self, session_id: str) -> Session:
        """Return a live session or raise NOT_FOUND."""
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFound(
                f"unknown session {session_id[:8] or '<empty>'}: it was closed, expired "
                "after its lease (or its sim hung for longer), or the server restarted; "
                "open a new one"
            )
        return session

    def close(self, session_id: str) -> None:
        """Close a session (idempotent).

        A call still running in it (e.g. the reset its client gave up on and then closed
        the session after) keeps the sim until it returns: closing a sim from a second
        thread while its own code runs is not safe, so the returning call disposes of it.
        A call still running in a thread (not isolated) holds a server thread that no
        session owns any more: it counts against ``max_hung`` as a hung call the reaper let
        go of does, and when no spare thread is left the session keeps its slot until the
        call returns. An isolated call's worker is killed instead.
        """
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.abandoned:
                return
            self.stats.closed += 1
            session.abandoned = True
            kept = False
            if not session.lock.locked() or self.isolated or session.counted_hung:
                del self._sessions[session_id]
            elif self._hung_running < self.max_hung:
                del self._sessions[session_id]
                session.counted_hung = True
                self._hung_running += 1
            else:
                kept = True  # `_leave` takes it out of the table when its call returns
        if session.lock.acquire(blocking=False):
            if kept:
                with self._lock:
                    self._sessions.pop(session_id, None)
            self._dispose(session)  # keeps the lock: nothing enters a closed session
            return
        # No race with the call's return: `abandoned` was set before the lock was tried,
        # and `_leave` checks it after releasing the lock, so one of the two disposes.
        if self.isolated:
            session.sim.kill("was still running when its session was closed")  # type: ignore[attr-defined]
        log.info(
            "session %s closed while sim %s runs; its sim is closed when the call returns%s",
            session.id[:8],
            session.busy_call or "call",
            " (it keeps its --max-sessions slot: all spare threads are held by hung calls)"
            if kept
            else "",
        )
        self._refresh_wedged(kept)

    def close_all(self) -> None:
        """Close every session (server shutdown)."""
        self._stop.set()
        self.slots.shutdown()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            if self.isolated and session.lock.locked():
                # Its worker is ended from here; the thread awaiting it cleans up.
                session.sim.kill("was still running at server shutdown")  # type: ignore[attr-defined]
                continue
            self._dispose(session)

    def _dispose(self, session: Session) -> None:
        # Called with session.lock held (or at shutdown), never while a sim call runs.
        try:
            session.sim.close()
        except Exception as exc:  # a failing close must not take the server down
            log.warning("closing session %s: %s", session.id[:8], exc)

    def reap(self) -> int:
        """Close sessions idle past their lease, and let go of hung ones.

        Whether a call is hung may ask its RPC whether it is live (a foreign callback that
        may take a while): that is asked outside the table's lock, which every call's end
        takes.

        Returns:
            How many sessions left the table (expired or hung).
        """
        now = time.monotonic()
        expired: list[Session] = []
        running: list[Session] = []
        closed_kept = 0
        with self._lock:
            for sid, session in list(self._sessions.items()):
                if session.lock.locked():
                    if session.abandoned:  # closed while its call runs, kept (see close)
                        closed_kept += 1
                    # An isolated call past its limit is killed by the thread awaiting it.
                    # `_enter` sets hung_at and call_alive before busy_call: a set
                    # busy_call has current ones.
                    elif session.busy_call and not self.isolated:
                        running.append(session)
                elif now - session.last_used > session.lease:
                    expired.append(self._sessions.pop(sid))
            self.stats.expired += len(expired)
        suspects = [(x, x.busy_since) for x in running if self._is_hung(x, now)]
        hung, kept = self._let_go(suspects)
        self._refresh_wedged(kept + closed_kept > 0)
        for session in expired:
            log.info("session %s expired after %.0f s idle", session.id[:8], session.lease)
            self._dispose(session)
        for session in hung:
            # The call cannot be interrupted (it is the sim's own code in a thread); its
            # client gave up long ago. Free the slot now, close the sim when it returns.
            log.warning(
                "session %s: sim %s has been running for %.0f s, past its client's deadline "
                "(or its RPC ended) by over %g s: taken as hung and no longer counted "
                "against --max-sessions; it is closed when the call returns",
                session.id[:8],
                session.busy_call,
                now - session.busy_since,
                self.hung_grace,
            )
            session.abandoned = True
            self._dispose_abandoned(session)
        return len(expired) + len(hung)

    def _let_go(self, suspects: list[tuple[Session, float]]) -> tuple[list[Session], int]:
        """Take hung calls' sessions out of the table while spare threads last.

        Args:
            suspects: Sessions found hung, with the start of the call found hung.

        Returns:
            The sessions let go of, and how many hung ones had to stay.
        """
        hung: list[Session] = []
        kept = 0
        with self._lock:
            for session, since in suspects:
                if (
                    self._sessions.get(session.id) is not session
                    or not session.lock.locked()
                    or session.busy_since != since
                ):
                    continue  # returned (or closed) since it was found hung
                if self._hung_running < self.max_hung:
                    hung.append(self._sessions.pop(session.id))
                    session.counted_hung = True
                    self._hung_running += 1
                    continue
                kept += 1
                if not session.hung_kept:
                    session.hung_kept = True  # said once per session
                    log.warning(
                        "session %s: sim %s is hung, but all %d spare threads are held "
                        "by hung calls: it keeps its --max-sessions slot until one "
                        "returns (a freed slot would admit a session with no thread)",
                        session.id[:8],
                        session.busy_call,
                        self.max_hung,
                    )
            self.stats.hung += len(hung)
        return hung, kept

    def _is_hung(self, session: Session, now: float) -> bool:
        """Has nobody waited for this session's running call for ``hung_grace`` s?"""
        if now > session.hung_at:
            return True
        alive = session.call_alive
        if alive is None or alive():
            return False
        if not session.dead_since:
            session.dead_since = now
        return now - session.dead_since > self.hung_grace

    def _dispose_abandoned(self, session: Session) -> None:
        """Close an abandoned session's sim unless a call still runs in it.

        Called by the reaper or ``close`` and by the returning call, in either order: whoever takes
        the session's lock disposes of it, and keeps the lock so nothing enters it again.
        """
        if session.lock.acquire(blocking=False):
            with self._lock:  # a closed session kept for want of spare threads leaves now
                kept = self._sessions.get(session.id) is session
                if kept:
                    del self._sessions[session.id]
            if kept and self.wedged:
                self._refresh_wedged()  # the reaper's next round says if others are kept
            log.info("session %s: its running call returned; sim closed", session.id[:8])
            self._dispose(session)

    def _refresh_wedged(self, kept: bool = False) -> None:
        """Say whether every spare thread is held by a hung call (``kept``: one waits)."""
        with self._lock:
            wedged = self._hung_running >= self.max_hung and (self._hung_running > 0 or kept)
            if wedged == self.wedged:
                return
            self.wedged = wedged
        if wedged:
            log.error(
                "all %d spare server threads are held by hung sim calls: NOT_SERVING, and "
                "no new session until one returns (--isolate process lets the server kill "
                "hung sims)",
                self.max_hung,
            )
        else:
            log.warning("a hung sim call returned: SERVING again")
        if self.on_serving is not None:
            self.on_serving(not wedged)

    # ------------------------------------------------------------------ calls

    def _enter(
        self, session: Session, call: str, deadline: Deadline, slot_timeout: float | None = None
    ) -> None:
        if not session.lock.acquire(blocking=False):
            running = time.monotonic() - session.busy_since
            raise SessionBusy(
                f"session {session.id[:8]} is busy: sim {session.busy_call} has been running "
                f"for {running:.1f} s (a hung sim?); open a new session"
            )
        now = time.monotonic()
        # Everything the reaper reads first: it reads them only when busy_call is set.
        session.busy_since = now
        remaining, alive = deadline
        if remaining is not None:
            session.hung_at, session.call_alive = now + remaining + self.hung_grace, None
        else:
            session.hung_at, session.call_alive = now + self.no_deadline_limit, alive
        session.dead_since = 0.0
        session.busy_call = call
        if self.isolated:
            self._arm(session, now, remaining is not None, slot_timeout)

    def _arm(
        self, session: Session, now: float, has_deadline: bool, slot_timeout: float | None
    ) -> None:
        """Tell an isolated sim when its call is to be killed, and what that will mean."""
        if has_deadline:
            why = f"ran past its client's deadline by over {self.hung_grace:g} s"
        else:
            why = f"ran over {self.no_deadline_limit:g} s (the limit of a call without deadline)"
        kill_at = session.hung_at
        if slot_timeout is not None and now + slot_timeout < kill_at:
            kill_at = now + slot_timeout
            why = f"did not return within the request's slot timeout of {slot_timeout:g} s"
        session.sim.arm(kill_at, why, session.call_alive, self.hung_grace)  # type: ignore[attr-defined]

    def _leave(self, session: Session) -> None:
        session.busy_call = ""
        session.last_used = time.monotonic()
        # Under the table's lock: `close` and the reaper count a running call as hung under
        # it, so a call that returns is either counted (and gives its thread back) or not.
        with self._lock:
            counted, session.counted_hung = session.counted_hung, False
            if counted:  # its thread is back in the pool
                self._hung_running -= 1
            session.lock.release()
        if counted:
            self._refresh_wedged()
        if session.abandoned:  # the session left the table while the call ran
            self._dispose_abandoned(session)

    def reset(
        self,
        session_id: str,
        config: dict[str, Any],
        seed: int | None,
        seq: int,
        deadline: Deadline = NO_DEADLINE,
    ) -> Result:
        """Start an episode in a session.

        Args:
            session_id: The session.
            config: The episode's scenario.
            seed: The sim's seed, if any.
            seq: The request's sequence number (a retry of the last one gets its reply).
            deadline: The client's deadline, for telling a slow call from a hung one.
        """
        session = self._reset_session(session_id, config)
        self._enter(session, "reset()", deadline)
        try:
            if seq and seq == session.seq and session.last_result is not None:
                return session.last_result
            session.running = False
            try:
                outcome = session.sim.reset(config, seed)
            except SimCallFailed:
                self.stats.sim_errors += 1
                raise
            session.steps = 0
            session.running = not (outcome.terminated or outcome.truncated)
            result = Result(outcome, 0)
            session.seq, session.last_result = seq, result
            return result
        finally:
            self._leave(session)

    def _reset_session(self, session_id: str, config: dict[str, Any]) -> Session:
        """The session of a reset, once its config is known to be acceptable."""
        session = self.get(session_id)
        if self._config_keys:
            unknown = sorted(set(config) - self._config_keys)
            if unknown:
                raise InvalidArgument(
                    f"unknown config key(s) {clip(unknown)}; the sim accepts "
                    f"{clip(sorted(self._config_keys))}"
                )
        bad = _nonfinite_key(config)
        if bad:
            raise InvalidArgument(f"config {clip(bad, 80)} is not finite; config values must be")
        return session

    def _step_session(
        self, session_id: str, action: Sequence[float]
    ) -> tuple[Session, list[float]]:
        """The session of a step and its action as a list, once the action is acceptable."""
        session = self._sessions.get(session_id) or self.get(session_id)
        # A protobuf repeated field costs on every len/iteration/index: copy it once.
        action = list(action)
        names = session.action_names
        if len(action) != len(names):
            raise InvalidArgument(
                f"action has {len(action)} value(s); this session expects {len(names)}: "
                f"{clip(names)}"
            )
        # One sum proves all values finite; only a non-finite sum (or an overflow of finite
        # values) needs the per-name scan that says which value is bad.
        if not math.isfinite(sum(action)):
            for name, value in zip(names, action, strict=True):
                if not math.isfinite(value):
                    raise InvalidArgument(f"action {name!r} is {value}; actions must be finite")
        return session, action

    def step(
        self, session_id: str, action: Sequence[float], seq: int, deadline: Deadline = NO_DEADLINE
    ) -> Result:
        """Advance a session by one step (``deadline``: see ``reset``)."""
        session, action = self._step_session(session_id, action)
        for i in session.integer:
            # A discrete action's value as the int it is (a sim may index with it).
            if action[i].is_integer():
                action[i] = int(action[i])
        self._enter(session, "step()", deadline)
        try:
            if seq and seq == session.seq and session.last_result is not None:
                return session.last_result
            if not session.running:
                raise FailedPrecondition(
                    "no episode is running in this session: call Reset first "
                    "(after a terminated/truncated step or a sim error, reset again)"
                )
            try:
                outcome = session.sim.step(action)
            except SimCallFailed:
                # The sim's state is unknown after it raised: the episode is over.
                session.running = False
                self.stats.sim_errors += 1
                raise
            session.steps += 1
            self.stats.steps += 1
            if outcome.terminated or outcome.truncated:
                session.running = False
            result = Result(outcome, session.steps)
            session.seq, session.last_result = seq, result
            return result
        finally:
            self._leave(session)

    def states(self, session_id: str, deadline: Deadline = NO_DEADLINE) -> list[float]:
        """Current states of a session."""
        session = self.get(session_id)
        self._enter(session, "states()", deadline)
        try:
            if session.last_result is None:
                raise FailedPrecondition("no states yet: call Reset first")
            return session.sim.states()
        finally:
            self._leave(session)

    def termination(self, session_id: str, deadline: Deadline = NO_DEADLINE) -> tuple[bool, bool]:
        """Current terminated/truncated flags of a session."""
        session = self.get(session_id)
        self._enter(session, "termination()", deadline)
        try:
            return session.sim.termination()
        finally:
            self._leave(session)

    # ------------------------------------------------------------------ calls in two halves

    def start_step(
        self,
        session_id: str,
        action: Sequence[float],
        seq: int,
        deadline: Deadline = NO_DEADLINE,
        slot_timeout: float | None = None,
    ) -> Call:
        """Send a step to an isolated sim without awaiting it; ``finish`` awaits it.

        So a packed request starts every slot's call before it awaits any, and its sims step
        in parallel. ``slot_timeout``: the call is killed past it (see ``simserver.isolation``).
        """
        session, action = self._step_session(session_id, action)
        self._enter(session, "step()", deadline, slot_timeout)
        try:
            if seq and seq == session.seq and session.last_result is not None:
                return Call(session, "step()", seq, session.last_result)
            if not session.running:
                raise FailedPrecondition(
                    "no episode is running in this session: call Reset first "
                    "(after a terminated/truncated step or a sim error, reset again)"
                )
            session.sim.submit("step", action)  # type: ignore[attr-defined]
        except BaseException:
            self._leave(session)
            raise
        return Call(session, "step()", seq, None)

    def start_reset(
        self,
        session_id: str,
        config: dict[str, Any],
        seed: int | None,
        seq: int,
        deadline: Deadline = NO_DEADLINE,
        slot_timeout: float | None = None,
    ) -> Call:
        """``start_step`` for a reset (see ``reset``)."""
        session = self._reset_session(session_id, config)
        self._enter(session, "reset()", deadline, slot_timeout)
        try:
            if seq and seq == session.seq and session.last_result is not None:
                return Call(session, "reset()", seq, session.last_result)
            session.running = False
            session.sim.submit("reset", (config, seed))  # type: ignore[attr-defined]
        except BaseException:
            self._leave(session)
            raise
        return Call(session, "reset()", seq, None)

    def finish(self, call: Call) -> Result:
        """Await a call started by ``start_step``/``start_reset``: what ``step``/``reset`` return.

        Raises:
            SimServerError: As ``step``/``reset``; a sim that failed ends its episode.
        """
        session = call.session
        try:
            if call.ready is not None:
                return call.ready
            try:
                outcome = Outcome(*session.sim.collect(call.call))  # type: ignore[attr-defined]
            except InvalidArgument:
                raise
            except SimServerError:
                session.running = False
                self.stats.sim_errors += 1
                raise
            if call.call == "reset()":
                session.steps = 0
            else:
                session.steps += 1
                self.stats.steps += 1
            session.running = not (outcome.terminated or outcome.truncated)
            result = Result(outcome, session.steps)
            session.seq, session.last_result = call.seq, result
            return result
        finally:
            self._leave(session)


def _nonfinite_key(value: Any, path: str = "") -> str:
    """The path of the first NaN or infinite number in a config ("" if none)."""
    if isinstance(value, float):
        return "" if math.isfinite(value) else (path or "value")
    if isinstance(value, dict):
        for key, item in value.items():
            bad = _nonfinite_key(item, f"{path}.{key}" if path else str(key))
            if bad:
                return bad
    elif isinstance(value, list):
        for i, item in enumerate(value):
            bad = _nonfinite_key(item, f"{path}[{i}]")
            if bad:
                return bad
    return ""
