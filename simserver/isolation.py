"""Sims the server can stop: each session's sim in a worker process (``--isolate process``).

Python cannot interrupt a thread, so a sim that hangs in the server's own process holds its
thread until it returns, and one that leaks memory grows the server. ``WorkerSim`` is a
``SimInstance`` that forwards every call over a pipe to a process of its own, built from the
factory's picklable ``SimRecipe``; the server can kill that process:

* a call that outlives its limit (its client's deadline plus ``--hung-grace``, a packed
  request's slot timeout, the no-deadline limit, or a stream that ended ``--hung-grace``
  ago) gets its worker SIGKILLed and fails with DEADLINE_EXCEEDED (``SimHung``), the code a
  client's own late call gets: ``gymclient`` counts it as a timeout;
* a worker that dies (``os._exit``, a segfault) fails the call with INTERNAL
  (``SimWorkerDied``, naming the exit code or signal), as a sim that raised does;
* a worker over ``--max-sim-rss`` fails the call with RESOURCE_EXHAUSTED (``SimOverMemory``).

Each ends the session's episode; the session stays, and its next reset starts a fresh worker.
Workers come from a ``multiprocessing`` fork server (started on first use, a fresh process,
so gRPC's threads are never forked) that has imported this module and the sim's module
already, so a new worker costs a fork and the sim's constructor.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import math
import multiprocessing
import os
import pickle
import select
import signal
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import grpc

from simserver.adapters import Outcome, SimFactory, SimInstance, SimRecipe
from simserver.errors import InvalidArgument, LoadError, SimCallFailed, SimServerError

#: How sims run unless ``--isolate`` says otherwise: "thread" (in the server's threads) or
#: "process" (``WorkerSim``). One constant, so the default is one edit away.
DEFAULT_ISOLATION = "thread"
ISOLATION_MODES = ("thread", "process")

#: Seconds a new worker may take to import and build its sim outside any call's deadline
#: (at ``Open``): a constructor that takes longer is taken as hung.
START_TIMEOUT = 300.0

# The longest a waiting call sleeps between checks of its stream's liveness.
_CHECK_PERIOD = 0.5
_PAGE = os.sysconf("SC_PAGE_SIZE")

# Calls and replies are plain tuples of numbers, strings and lists: pickled directly, without
# the pickler multiprocessing builds per message for objects that may carry fds.
_dumps = functools.partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL)
_loads = pickle.loads


# Every worker's process, so that an interpreter that exits normally (a test, a benchmark)
# kills them: multiprocessing would otherwise wait at exit for workers that wait for calls.
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _kill_workers() -> None:
    for proc in list(_LIVE):
        if proc.exitcode is None:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGKILL)


class SimHung(SimCallFailed):
    """A sim call outlived its limit; its worker was killed (DEADLINE_EXCEEDED)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED

    def __init__(self, call: str, message: str) -> None:
        SimServerError.__init__(self, message)
        self.call, self.exc = call, RuntimeError(message)


class SimWorkerDied(SimHung):
    """The sim's worker process exited or was killed during a call (INTERNAL)."""

    code = grpc.StatusCode.INTERNAL


class SimOverMemory(SimHung):
    """The sim's worker grew past ``--max-sim-rss`` (RESOURCE_EXHAUSTED)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def isolate(factory: SimFactory, max_rss_mib: float | None = None) -> SimFactory:
    """The same factory, building ``WorkerSim``s: each session's sim in its own process.

    Args:
        factory: A factory from ``simserver.loader.load_factory`` (it carries the recipe).
        max_rss_mib: A worker's memory limit (resident set, MiB), or None for none.

    Raises:
        LoadError: The factory has no recipe (it was not loaded from a target).
    """
    recipe = factory.recipe
    if recipe is None:
        raise LoadError("--isolate process needs a sim loaded from a target string")
    preload = ["simserver.isolation", "simserver.loader"]
    if recipe.module and not recipe.module.startswith("_simgym_target_"):
        preload.append(recipe.module)  # a file outside the cwd has no importable name
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload)
    limit = None if max_rss_mib is None else int(max_rss_mib * 2**20)

    def create(action_names: list[str]) -> SimInstance:
        return WorkerSim(recipe, action_names, context=context, max_rss_bytes=limit)

    return replace(factory, create=create, isolated=True)


class WorkerSim:
    """A ``SimInstance`` whose sim runs in a worker process (see the module docstring).

    Calls are in two halves, so that a packed request can start every slot's call before it
    awaits any: ``submit`` sends one, ``collect`` awaits its reply. The ``SimInstance``
    methods do both. Before each call its owner says, with ``arm``, how long it may take.

    Args:
        recipe: How to build the sim.
        action_names: The session's action names.
        context: The multiprocessing context that starts workers.
        max_rss_bytes: The worker's memory limit, or None.

    Raises:
        SimCallFailed: The sim's constructor raised, or took over ``START_TIMEOUT``.
    """

    def __init__(
        self,
        recipe: SimRecipe,
        action_names: list[str],
        *,
        context: Any,
        max_rss_bytes: int | None = None,
    ) -> None:
        self._recipe = recipe
        self._actions = action_names
        self._context = context
        self._max_rss = max_rss_bytes
        self._conn: Connection | None = None
        # One poll object per worker: Connection.poll builds a selector on every call,
        # which would cost more than the rest of a step's round trip.
        self._poller = select.poll()
        self._proc: Any = None
        self._statm = -1
        self._starting = False
        self._recycle = ""  # why the worker must be replaced at the next reset ("": it need not)
        self._killed = ""  # why this side killed the worker, for the failed call's message
        self._kill_at = math.inf
        self._why = ""
        self._alive: Callable[[], bool] | None = None
        self._grace = 0.0
        self._dead_since = 0.0
        self._start()
        self.arm(time.monotonic() + START_TIMEOUT, f"took over {START_TIMEOUT:g} s to start")
        self.collect("constructor")

    # ------------------------------------------------------------------ limits

    def arm(
        self,
        kill_at: float,
        why: str,
        alive: Callable[[], bool] | None = None,
        grace: float = 0.0,
    ) -> None:
        """Set the next call's limit.

        Args:
            kill_at: Monotonic time past which the call is killed.
            why: What passing ``kill_at`` means, for the error message.
            alive: Whether the call's RPC is still live, when it has no deadline: once it
                has been dead for ``grace`` seconds, the call is killed too.
            grace: See ``alive``.
        """
        self._kill_at, self._why, self._alive, self._grace = kill_at, why, alive, grace
        self._dead_since = 0.0

    def _give_up(self, now: float) -> str:
        """Why the running call must be killed now ("" to wait on)."""
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

    # ------------------------------------------------------------------ the worker

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        proc = self._context.Process(
            target=_serve,
            args=(child, self._recipe, self._actions),
            name="simserver-sim",
            daemon=False,  # a daemonic process could not start processes of its own
        )
        proc.start()
        _LIVE.add(proc)
        child.close()
        self._conn, self._proc = parent, proc
        self._poller = select.poll()
        self._poller.register(parent.fileno(), select.POLLIN)
        self._starting = True
        self._recycle = self._killed = ""
        with contextlib.suppress(OSError):
            self._statm = os.open(f"/proc/{proc.pid}/statm", os.O_RDONLY)

    def kill(self, why: str) -> None:
        """SIGKILL the worker (a call awaiting it fails, saying ``why``); safe from any thread."""
        proc = self._proc
        if proc is not None and proc.exitcode is None:
            self._killed = why
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGKILL)

    def _drop(self) -> None:
        """Forget a dead or killed worker (reaped, its pipe and statm closed)."""
        proc, self._proc = self._proc, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._statm >= 0:
            os.close(self._statm)
            self._statm = -1
        if proc is not None:
            if proc.exitcode is None:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGKILL)
            proc.join(5.0)

    def _ended(self, call: str) -> SimHung:
        """The error of a call whose worker is gone (killed here, or died on its own)."""
        proc = self._proc
        pid = proc.pid if proc is not None else 0
        if proc is not None:
            proc.join(5.0)
        code = proc.exitcode if proc is not None else None
        killed = self._killed
        self._drop()
        if killed:
            return SimHung(
                call,
                f"sim {call} {killed}: its worker process (pid {pid}) was killed; the episode "
                "is over, the next reset starts a fresh one",
            )
        how = (
            f"was killed by signal {-code}"
            if code is not None and code < 0
            else (f"exited with code {code}")
        )
        return SimWorkerDied(
            call,
            f"sim worker process (pid {pid}) {how} during {call}; the episode is over, the "
            "next reset starts a fresh one",
        )

    # ------------------------------------------------------------------ calls

    def submit(self, op: str, arg: Any = None) -> None:
        """Send one call to the worker (a reset starts a new one first if need be)."""
        if op == "reset" and (self._proc is None or self._recycle):
            self._drop()
            self._start()
        if self._conn is None:
            raise SimWorkerDied(
                f"{op}()", f"the sim's worker process is gone: reset to start a fresh one ({op}())"
            )
        try:
            self._conn.send_bytes(_dumps((op, arg)))
        except OSError:
            pass  # a dead worker: collect says how it died

    def collect(self, call: str) -> Any:
        """Await the reply of the call sent last, within its limit (see ``arm``).

        Raises:
            SimCallFailed: The sim raised (or ``SimHung`` and its kin, see the module).
            InvalidArgument: The sim refused the call's arguments.
        """
        conn = self._conn
        if conn is None:
            raise SimWorkerDied(call, f"the sim's worker process is gone: reset first ({call})")
        if self._starting:  # the worker's first reply says whether it built its sim
            reply = self._receive(conn, "constructor")
            self._starting = False
            if reply[0] != "ok":
                self._drop()
                raise _error_of(reply)
            if call == "constructor":
                return None
        reply = self._receive(conn, call)
        self._check_rss(call)
        if reply[0] != "ok":
            raise _error_of(reply)
        return reply[1]

    def _receive(self, conn: Connection, call: str) -> Any:
        while True:
            now = time.monotonic()
            wait = min(self._kill_at - now, _CHECK_PERIOD if self._alive else math.inf)
            if self._poller.poll(max(0, int(min(wait, 3600.0) * 1000) + 1)):
                break
            why = self._give_up(time.monotonic())
            if why:
                self.kill(why)
                raise self._ended(call)
        try:
            return _loads(conn.recv_bytes())
        except (EOFError, OSError):
            raise self._ended(call) from None

    def _check_rss(self, call: str) -> None:
        if self._max_rss is None or self._statm < 0:
            return
        try:
            rss = int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            return
        if rss > self._max_rss:
            mib, limit = rss / 2**20, self._max_rss / 2**20
            self._recycle = f"{mib:.0f} MiB"
            raise SimOverMemory(
                call,
                f"sim worker grew to {mib:.0f} MiB resident after {call}, over --max-sim-rss "
                f"{limit:g} MiB: the episode is over, the next reset starts a fresh worker",
            )

    # ------------------------------------------------------------------ SimInstance

    def reset(self, config: dict[str, Any], seed: int | None) -> Outcome:
        """Start an episode (see ``SimInstance``), in a fresh worker if the last one is gone."""
        self.submit("reset", (config, seed))
        return Outcome(*self.collect("reset()"))

    def step(self, action: Sequence[float]) -> Outcome:
        """Advance one step (see ``SimInstance``)."""
        self.submit("step", list(action))
        return Outcome(*self.collect("step()"))

    def states(self) -> list[float]:
        """Current states (see ``SimInstance``)."""
        self.submit("states")
        return list(self.collect("states()"))

    def termination(self) -> tuple[bool, bool]:
        """Current flags (see ``SimInstance``)."""
        self.submit("termination")
        term, trunc = self.collect("termination()")
        return bool(term), bool(trunc)

    def close(self) -> None:
        """Close the sim and end its worker (killed if it does not end within a second)."""
        if self._conn is not None and not self._starting:
            self.arm(time.monotonic() + 1.0, "took over 1 s to close")
            try:
                self.submit("close")
                self.collect("close()")
            except SimServerError:
                pass
        self._drop()


# --------------------------------------------------------------------------- worker side


def _serve(conn: Connection, recipe: SimRecipe, action_names: list[str]) -> None:
    """A worker's life: build the sim, then answer calls until ``close`` or the pipe's end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when its sims end
    _die_with_parent()
    from simserver.loader import build_instance

    try:
        sim = build_instance(recipe, action_names)
    except BaseException as exc:
        conn.send_bytes(_dumps(_reply_of(SimCallFailed("constructor", exc))))
        return
    conn.send_bytes(_dumps(("ok", None)))
    while True:
        try:
            op, arg = _loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            if op == "step":
                result: Any = _fields(sim.step(arg))
            elif op == "reset":
                result = _fields(sim.reset(*arg))
            elif op == "states":
                result = sim.states()
            elif op == "termination":
                result = sim.termination()
            else:
                sim.close()
                conn.send_bytes(_dumps(("ok", None)))
                return
        except SimServerError as exc:
            conn.send_bytes(_dumps(_reply_of(exc)))
        except Exception as exc:
            conn.send_bytes(_dumps(_reply_of(SimCallFailed(f"{op}()", exc))))
        else:
            conn.send_bytes(_dumps(("ok", result)))


def _fields(o: Outcome) -> tuple[Any, ...]:
    """An outcome as a plain tuple (``Outcome(*fields)`` rebuilds it): the cheapest to pickle."""
    return (o.states, o.terminated, o.truncated, o.reward, o.sim_seconds, o.nonfinite)


def _die_with_parent() -> None:
    """Have the kernel kill this worker when its parent (the fork server) ends."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _reply_of(exc: SimServerError) -> tuple[str, str, str, str, str]:
    """A failure as plain strings: (kind, call, exception type, text, message)."""
    if isinstance(exc, SimCallFailed):
        return ("failed", exc.call, type(exc.exc).__name__, str(exc.exc), exc.message)
    if isinstance(exc, InvalidArgument):
        return ("invalid", "", "", "", exc.message)
    return ("error", "", "", "", exc.message)


def _error_of(reply: tuple[str, ...]) -> SimServerError:
    """The server-side error of a worker's failure reply (see ``_reply_of``)."""
    kind, call, type_name, text, message = reply
    if kind == "failed":
        # The sim's exception type by name: the message reads as the in-thread one.
        return SimCallFailed(call, type(type_name, (Exception,), {})(text))
    if kind == "invalid":
        return InvalidArgument(message)
    return SimServerError(message)
