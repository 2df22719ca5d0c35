"""What ends a training early, and the watchdog that ends an iteration mid-way for it.

Four rules, none of which waits for a stalled iteration to return by itself:

* the invocation's time budget (``stop.max_time``, set-up included) — a stop, not a failure;
* sim servers down for good (the sidecar pool gave up on one) — a failure;
* iterations that collect nothing (``stop.max_empty_iterations`` in a row) — a failure: the
  sims are hung or unreachable;
* the sim error budget (``stop.max_sim_error_rate``): more failed sim calls per env step than
  that over the last ``ERROR_RATE_WINDOW`` env steps — a failure: training on garbage.

The first two can come due while ``algo.train()`` waits on sims that no longer answer, so a
``Watchdog`` thread interrupts the main thread's iteration (as a Ctrl-C would: RLlib's
waits wake up for it) and the loop stops there; the iteration's partial work is dropped,
the last completed one is what the final checkpoint holds.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from gymclient.errors import SimgymError

# The sim error budget is judged over at least this many env steps (the most recent
# iterations that add up to it), so a burst at the start of a run is not a verdict.
ERROR_RATE_WINDOW = 1000


class RunFault(SimgymError):
    """The run cannot go on (sims down for good, nothing collected, too many sim errors)."""


class FaultRules:
    """Empty iterations and the sim error budget, judged after each iteration.

    Args:
        max_empty: Iterations in a row with no env step sampled before the run ends.
        max_error_rate: Failed sim calls per env step over the window that end the run
            (None: no budget).
    """

    def __init__(self, max_empty: int, max_error_rate: float | None) -> None:
        self.max_empty, self.max_error_rate = max_empty, max_error_rate
        self.empty = 0
        self._window: collections.deque[tuple[int, int]] = collections.deque()

    def observe(self, steps: int, sim_errors: int) -> None:
        """One iteration's env steps and failed sim calls.

        Raises:
            RunFault: A rule is broken; the message names the likely cause.
        """
        self.empty = self.empty + 1 if steps <= 0 else 0
        if self.empty >= self.max_empty:
            raise RunFault(
                f"{self.empty} iterations in a row collected no env steps "
                f"(stop.max_empty_iterations {self.max_empty}): the sims are hung or "
                "unreachable"
            )
        if self.max_error_rate is None or steps <= 0:
            return
        self._window.append((steps, sim_errors))
        while sum(s for s, _ in self._window) - self._window[0][0] >= ERROR_RATE_WINDOW:
            self._window.popleft()
        total = sum(s for s, _ in self._window)
        errors = sum(e for _, e in self._window)
        if total >= ERROR_RATE_WINDOW and errors / total > self.max_error_rate:
            raise RunFault(
                f"the sims failed on {errors / total:.0%} of the last {total} env steps "
                f"({errors} failed sim calls; stop.max_sim_error_rate "
                f"{self.max_error_rate:g}): see sim_errors.log"
            )


class Watchdog:
    """Interrupts ``algo.train()`` in the main thread once the run must stop now.

    Every ``poll`` seconds it asks ``due()`` why the run must stop ("" to go on); the first
    answer is kept in ``reason`` and, while an iteration runs (``iteration()``), interrupts
    it with ``KeyboardInterrupt``, which ``iteration()`` turns into a return. Outside the
    main thread (no signals there) it only records the reason, for the loop to see between
    iterations.

    Args:
        due: Why the run must stop now, or "".
        poll: Seconds between two questions.
    """

    def __init__(self, due: Callable[[], str], poll: float = 0.5) -> None:
        self.due, self.poll = due, poll
        self.reason = ""
        self._armed = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._main = threading.current_thread() is threading.main_thread()
        self._previous: Any = None

    def __enter__(self) -> Watchdog:
        if self._main:
            # Our own signal, not SIGINT: a user's Ctrl-C stays a Ctrl-C.
            self._previous = signal.signal(signal.SIGUSR1, self._interrupt)
        self._thread = threading.Thread(target=self._watch, name="simgym-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._main:
            # None: a handler installed outside Python, which cannot be put back; the default.
            previous = signal.SIG_DFL if self._previous is None else self._previous
            signal.signal(signal.SIGUSR1, previous)

    def _watch(self) -> None:
        while not self._done.wait(self.poll):
            if self.reason:
                continue
            try:
                self.reason = self.due()
            except Exception:  # a question that fails is no reason to stop
                continue
            if self.reason and self._main:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    def _interrupt(self, signum: int, frame: Any) -> None:
        # Runs in the main thread: only an iteration is interrupted, never the checkpoint
        # or the metrics written between two of them.
        if self._armed:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def _arm(self) -> Iterator[None]:
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def iteration(self, train: Callable[[], Any]) -> Any:
        """``train()``, or None when the watchdog ended it (``reason`` says why).

        Raises:
            KeyboardInterrupt: The user's own Ctrl-C.
        """
        try:
            with self._arm():
                # Asked once armed: a reason found from here on interrupts the call.
                if self.reason:
                    return None
                return train()
        except KeyboardInterrupt:
            if not self.reason:
                raise
            return None
