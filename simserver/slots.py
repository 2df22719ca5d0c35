"""Parallel packed slots: the K sim calls of one packed request on a thread pool.

A sim in the server's threads (``--isolate thread``) that waits in its step (on a socket, a
sleep, an external tool, a C extension that releases the GIL) would make a packed request of
K sessions take K times one step if its slots ran one after the other. ``SlotRunner`` runs
them on a pool instead, one task per session (a session named by several slots runs them in
order), each slot's outcome or failure kept apart, and the request answers once every slot
has returned or its slot timeout has passed: a late slot fails alone (DEADLINE_EXCEEDED)
while its call runs on in its pool thread, which Python cannot stop.

Handing a call to a thread costs tens of µs, more than a fast sim's whole step, and a sim
that holds the GIL gains nothing from threads, so ``--parallel-slots auto`` (the default)
measures before it decides:

* serial while the sims' step calls take under ``MIN_CALL_SECONDS`` on average (a fast sim:
  a sum and a comparison per request, nothing else);
* once they take longer in ``SLOW_STREAK`` requests in a row, it runs one request in
  parallel and keeps doing so while parallel takes under 1 / ``MIN_GAIN`` of serial's time
  per slot; a sim that holds the GIL stays serial;
* every ``EXPLORE_EVERY`` requests of a slow sim it measures the other way again: parallel
  for a sim that runs serially; for one that runs in parallel, one session's calls alone
  before the others start (what serial would cost per slot, at the price of one step's
  latency).

``on`` runs every request of two or more sessions in parallel, ``off`` never does.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("simserver.slots")

PARALLEL_MODES = ("auto", "on", "off")
DEFAULT_PARALLEL = "auto"

#: auto: the seconds per slot (serial) from which running slots in parallel is considered.
MIN_CALL_SECONDS = 1e-3
#: auto: step requests in a row over ``MIN_CALL_SECONDS`` per slot before parallel is tried
#: (one request slowed by the machine does not switch the mode).
SLOW_STREAK = 3
#: auto: parallel is kept while serial takes this many times its time per slot, or more.
MIN_GAIN = 1.25
#: auto: requests between measurements of the mode not in use.
EXPLORE_EVERY = 50
# Weight of a new measurement in the moving averages.
_ALPHA = 0.3
# The longest the request waits between checks that its client still listens.
_CHECK_PERIOD = 0.5

#: What a slot that did not return in time gets in ``SlotRunner.run``'s results.
LATE = object()

# A slot's call: (slot, alive) -> its result. ``alive`` says whether the request still waits
# for it (False once the request answered without it, or its client left).
SlotCall = Callable[[int, Callable[[], bool]], Any]


class _Chain:
    """The slots of one session, run in order by one pool task."""

    __slots__ = ("abandoned", "client_alive", "lock", "out", "slots")

    def __init__(
        self, slots: list[int], out: list[Any], client_alive: Callable[[], bool] | None
    ) -> None:
        self.slots = slots
        self.out = out
        self.client_alive = client_alive
        self.abandoned = False
        self.lock = threading.Lock()

    def alive(self) -> bool:
        """Whether the request still waits for this chain's calls (the reaper's question)."""
        if self.abandoned:
            return False
        return self.client_alive is None or self.client_alive()

    def run(self, call: SlotCall) -> None:
        for k in self.slots:
            with self.lock:
                if self.abandoned:
                    return
            try:
                result = call(k, self.alive)
            except BaseException as exc:  # handed to the request's thread, raised there
                result = exc
            with self.lock:
                if self.abandoned:  # the request answered without it
                    return
                self.out[k] = result

    def abandon(self) -> None:
        with self.lock:
            self.abandoned = True


class SlotRunner:
    """Runs a packed request's slots serially or on a pool, and decides which (module docstring).

    Args:
        mode: ``auto``, ``on`` or ``off`` (``PARALLEL_MODES``).
        max_threads: The pool's size: one thread per session plus the spare threads that
            hung calls may hold (``SessionManager``'s ``max_sessions + max_hung``), so a
            call never waits for a thread. Threads start when first needed.
    """

    def __init__(self, mode: str = DEFAULT_PARALLEL, max_threads: int = 72) -> None:
        if mode not in PARALLEL_MODES:
            raise ValueError(f"parallel slots {mode!r}: give one of {', '.join(PARALLEL_MODES)}")
        self.mode = mode
        self.auto = mode == "auto"
        self.max_threads = max(1, max_threads)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # auto's measurements (seconds per slot; 0: not measured). Several request threads
        # update them without a lock: a lost update only delays a decision.
        self.serial_cost = 0.0
        self.parallel_cost = 0.0
        self._streak = 0
        self._countdown = EXPLORE_EVERY
        self._preferred = 0  # what the log last said (1: parallel)

    # ------------------------------------------------------------------ the decision

    def choose(self, count: int) -> int:
        """How to run a request of ``count`` slots: 0 serial, 1 parallel, 2 parallel with a probe.

        A probe runs one session's calls alone first, so that serial's cost is measured.
        """
        if count < 2 or not self.auto:
            return int(count >= 2 and self.mode == "on")
        if self._streak < SLOW_STREAK:
            return 0
        parallel = self.parallel_cost
        prefer = 1 if not parallel or parallel * MIN_GAIN < self.serial_cost else 0
        if parallel and prefer != self._preferred:
            self._preferred = prefer
            log.info(
                "packed slots now run %s: %.3g ms per slot serially, %.3g ms in parallel "
                "(--parallel-slots auto)",
                "in parallel" if prefer else "one after the other",
                self.serial_cost * 1e3,
                parallel * 1e3,
            )
        self._countdown -= 1
        if self._countdown <= 0:
            self._countdown = EXPLORE_EVERY
            return 2 if prefer else 1
        return prefer

    def record_serial(self, seconds: float, count: int) -> None:
        """``count`` step calls of a request, run serially, took ``seconds`` (auto only)."""
        per_slot = seconds / count
        if per_slot < MIN_CALL_SECONDS:
            self._streak = 0
            self.parallel_cost = 0.0  # measured again if the sim turns slow again
            if self._preferred:
                self._preferred = 0
                log.info(
                    "packed slots run one after the other again: step calls now take %.3g ms",
                    per_slot * 1e3,
                )
        else:
            self._streak += 1
        cost = self.serial_cost
        self.serial_cost = per_slot if not cost else cost + _ALPHA * (per_slot - cost)

    def _record_parallel(self, seconds: float, count: int) -> None:
        per_slot = seconds / count
        cost = self.parallel_cost
        self.parallel_cost = per_slot if not cost else cost + _ALPHA * (per_slot - cost)

    # ------------------------------------------------------------------ running

    def run(
        self,
        keys: Sequence[str],
        call: SlotCall,
        timeout: float | None,
        client_alive: Callable[[], bool] | None,
        *,
        probe: bool = False,
        measure: bool = False,
    ) -> list[Any]:
        """Run slot ``k`` as ``call(k, alive)`` for every slot, on the pool.

        Args:
            keys: Each slot's session: slots of one session run in order, in one task.
            call: Runs one slot; what it returns or raises is that slot's result.
            timeout: Seconds from now after which slots still running are given up (their
                result is ``LATE``); None waits for all.
            client_alive: Whether the request's client still listens (None: not known);
                once it does not, the request stops waiting, as at its timeout.
            probe: Run the first slot's session alone first (auto's measure of serial).
            measure: Record the time per slot (auto; a step request).

        Returns:
            Per slot: its call's result, the exception it raised, or ``LATE``.
        """
        out: list[Any] = [LATE] * len(keys)
        by_key: dict[str, _Chain] = {}
        for k, key in enumerate(keys):
            chain = by_key.get(key)
            if chain is None:
                by_key[key] = chain = _Chain([], out, client_alive)
            chain.slots.append(k)
        chains = list(by_key.values())
        pool = self._executor()
        end = None if timeout is None else time.monotonic() + timeout
        started = time.perf_counter()
        if probe and len(chains) > 1:
            first, chains = chains[0], chains[1:]
            on_time = self._await([pool.submit(first.run, call)], [first], end, client_alive)
            if on_time and measure:
                self.record_serial(time.perf_counter() - started, len(first.slots))
            started = time.perf_counter()
        futures = [pool.submit(chain.run, call) for chain in chains]
        if self._await(futures, chains, end, client_alive) and measure:
            count = sum(len(chain.slots) for chain in chains)
            self._record_parallel(time.perf_counter() - started, count)
        return out

    @staticmethod
    def _await(
        futures: list[concurrent.futures.Future[None]],
        chains: list[_Chain],
        end: float | None,
        client_alive: Callable[[], bool] | None,
    ) -> bool:
        """Wait for the chains' tasks until ``end`` or the client leaves; False if any is late."""
        pending: set[concurrent.futures.Future[None]] = set(futures)
        while pending:
            wait = None if end is None else max(0.0, end - time.monotonic())
            if client_alive is not None:
                wait = _CHECK_PERIOD if wait is None else min(wait, _CHECK_PERIOD)
            _, pending = concurrent.futures.wait(pending, timeout=wait)
            if not pending:
                break
            if (end is not None and time.monotonic() >= end) or (
                client_alive is not None and not client_alive()
            ):
                for chain in chains:
                    chain.abandon()  # those done meanwhile keep their results
                return False
        return True

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self.max_threads, thread_name_prefix="simserver-slot"
                    )
                pool = self._pool
        return pool

    def shutdown(self) -> None:
        """Stop the pool (server shutdown); calls still running keep their threads."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
