"""Parallel packed slots: the K sim calls of one packed request on a thread pool.

A sim in the server's threads (``--isolate thread``) that waits in its step (on a socket, a
sleep, an external tool, a C extension that releases the GIL) would make a packed request of
K sessions take K times one step if its slots ran one after the other. ``SlotRunner`` runs
them on a pool instead, one task per session (a session named by several slots runs them in
order), each slot's outcome or failure kept apart, and the request answers once every slot
has returned or its slot timeout has passed: a late slot fails alone (DEADLINE_EXCEEDED)
while its call runs on in its pool thread, which Python cannot stop.

Handing a call to a thread costs tens of µs, more than a fast sim's whole step, and a sim
that holds the GIL gains nothing from threads (it loses: its threads take turns), so
``--parallel-slots auto`` (the default) measures before it decides (``AutoChoice``):

* serial while the sims' step calls take under ``MIN_CALL_SECONDS`` on average (a fast sim:
  a sum and a comparison per request, nothing else);
* once they take longer in ``SLOW_STREAK`` requests in a row, a trial: ``TRIAL`` requests
  run in parallel, and parallel is kept when the median time per slot of those is under
  1 / ``MIN_GAIN`` of the last serial ones' (a sim that holds the GIL stays serial);
* then the mode in use is checked again after ``EXPLORE_EVERY`` requests, and twice as late
  each time a check confirms it (up to ``MAX_BACKOFF``): serial by another trial; parallel
  by ``PROBES`` requests that each run one session's calls alone before the others start
  (what serial costs per slot, at the price of one step's latency).

Medians of several requests, as a machine's load makes single requests scatter by tens of
per cent.

``on`` runs every request of two or more sessions in parallel, ``off`` never does.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
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
#: auto: requests a trial runs in parallel (or, while parallel, with a serial probe).
TRIAL = 5
#: auto: requests with a serial probe in a check that parallel still pays.
PROBES = 3
#: auto: parallel is kept while serial takes this many times its time per slot, or more.
MIN_GAIN = 1.5
#: auto: requests before the mode in use is checked again (twice as many after each check
#: that confirms it, up to ``MAX_BACKOFF``).
EXPLORE_EVERY = 50
MAX_BACKOFF = 1000
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


_SERIAL, _TRIAL, _PARALLEL = "serial", "trial", "parallel"


def _median(values: Any) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


class AutoChoice:
    """``--parallel-slots auto``'s measurements and decision (see the module docstring).

    Request threads of several clients may call it at once: a lock guards every change of
    state, but not the fast sim's path (a request of fast sims only reads two fields).
    """

    def __init__(self) -> None:
        self.state = _SERIAL
        self._streak = 0  # serial requests in a row whose step calls were slow
        self._countdown = 0  # requests before the next trial (0: trial at once)
        self._backoff = EXPLORE_EVERY
        self._probes = 0  # probes left in the running check of parallel
        self._serial: deque[float] = deque(maxlen=TRIAL)  # seconds per slot
        self._parallel: deque[float] = deque(maxlen=TRIAL)
        self._lock = threading.Lock()

    def choose(self, count: int, measurable: bool = True) -> int:
        """How to run a request of ``count`` slots: 0 serial, 1 parallel, 2 with a probe.

        A probe runs one session's calls alone first, so that serial's cost is measured;
        only a ``measurable`` request (steps, few resets) is probed.
        """
        if count < 2 or self._streak < SLOW_STREAK:
            return 0
        with self._lock:
            if self.state == _TRIAL or (self.state == _PARALLEL and not measurable):
                return 1
            self._countdown -= 1
            if self._countdown > 0:
                return 1 if self.state == _PARALLEL else 0
            if self.state == _SERIAL:
                self.state = _TRIAL
                self._parallel.clear()
                return 1
            if not self._probes:
                self._probes = PROBES
                self._serial.clear()
            return 2

    def record_serial(self, seconds: float, count: int) -> None:
        """``count`` step calls, run one after the other, took ``seconds`` in all."""
        per_slot = seconds / count
        if per_slot < MIN_CALL_SECONDS:
            if self._streak or self.state != _SERIAL:
                self._fast(per_slot)
            return
        with self._lock:
            self._streak += 1
            self._serial.append(per_slot)
            if self._probes:
                self._probes -= 1

    def _fast(self, per_slot: float) -> None:
        with self._lock:
            if self.state != _SERIAL:
                log.info(
                    "packed slots run one after the other again: step calls now take %.3g ms",
                    per_slot * 1e3,
                )
            self.state, self._streak, self._probes = _SERIAL, 0, 0
            self._countdown, self._backoff = 0, EXPLORE_EVERY
            self._serial.clear()

    def record_parallel(self, seconds: float, count: int) -> None:
        """``count`` slots, run on the pool, took ``seconds`` from the first sent to the last."""
        with self._lock:
            self._parallel.append(seconds / count)
            trial_over = self.state == _TRIAL and len(self._parallel) >= TRIAL
            check_over = self.state == _PARALLEL and self._countdown <= 0 and not self._probes
            if not (trial_over or check_over) or not self._serial:
                return
            serial, parallel = _median(self._serial), _median(self._parallel)
            keep = serial >= MIN_GAIN * parallel
            # The mode in use confirmed: its next check comes twice as late.
            confirmed = keep if check_over else not keep
            self._backoff = min(2 * self._backoff, MAX_BACKOFF) if confirmed else EXPLORE_EVERY
            self._countdown = self._backoff
            state = _PARALLEL if keep else _SERIAL
            if state != self.state or trial_over:
                log.info(
                    "packed slots %s: %.3g ms per slot one after the other, %.3g ms in "
                    "parallel (--parallel-slots auto)",
                    "run in parallel" if keep else "stay one after the other",
                    serial * 1e3,
                    parallel * 1e3,
                )
            self.state = state


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
        self.choice = AutoChoice()
        self.choose = self.choice.choose if self.auto else self._fixed
        self.record_serial = self.choice.record_serial

    def _fixed(self, count: int, measurable: bool = True) -> int:
        """``choose`` for ``on`` and ``off``."""
        return int(count >= 2 and self.mode == "on")

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
            measure: Record the time per slot (auto; a request of steps, few resets).

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
                self.choice.record_serial(time.perf_counter() - started, len(first.slots))
            started = time.perf_counter()
        futures = [pool.submit(chain.run, call) for chain in chains]
        if self._await(futures, chains, end, client_alive) and measure:
            count = sum(len(chain.slots) for chain in chains)
            self.choice.record_parallel(time.perf_counter() - started, count)
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
