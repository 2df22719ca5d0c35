"""Training keeps moving: wedged sidecars are restarted, runs that cannot go on end clearly."""

from __future__ import annotations

import os
import signal
import time

import pytest

from gymclient.connection import Connection, ConnectOptions
from gymclient.errors import ServerBusy, SimTimeout
from launcher.sidecars import SidecarPool
from launcher.trainspec import Launch

from .conftest import SIMS


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.2)


def test_a_sidecar_that_stops_answering_is_killed_and_restarted(tmp_path):
    # A wedged server keeps running: SIGSTOP freezes every thread, as a sim holding the GIL
    # or the last worker thread would. The default health checks (every 2 s, 2 s deadline,
    # 3 in a row) find it; the restart counts against the same budget as an exit.
    launch = Launch(target=f"{SIMS / 'toy.py'}:Toy", servers=2, restart_backoff=0.1)
    pool = SidecarPool(launch, SIMS, tmp_path / "sims")
    pool.start()
    try:
        wedged = pool.servers[0]
        old_pid = wedged.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGSTOP)
        _wait_for(lambda: any(e.kind == "restarted" for e in pool.events), 90, "restart")
        (event,) = pool.events
        assert event.server == 0 and "stopped answering health checks" in event.detail, event
        assert "3 in a row" in event.detail and "(restart 1 of 5)" in event.detail
        assert pool.restarts == [1, 0] and wedged.pid != old_pid
        # The old process is gone (SIGKILL works on a stopped process); the new one serves
        # on the same address.
        assert not os.path.exists(f"/proc/{old_pid}") or _zombie(old_pid)
        with Connection(pool.addresses[0]) as conn:
            assert conn.open(["u"]).state_names
    finally:
        pool.stop()


def test_a_sidecar_that_says_not_serving_is_restarted(tmp_path):
    # Up and answering, but unable to serve: hung calls (their sessions closed by their
    # clients) hold every spare thread, so health says NOT_SERVING. The supervisor restarts
    # such a server as it does a silent one (the fresh one has all its threads back).
    launch = Launch(
        target=f"{SIMS / 'faults.py'}:SlowReset",
        servers=1,
        sessions_per_server=1,
        restart_backoff=0.1,
    )
    pool = SidecarPool(launch, SIMS, tmp_path / "sims")
    pool.start()
    try:
        old_pid = pool.servers[0].pid
        options = ConnectOptions(timeout=0.5, reset_timeout=0.5)
        with Connection(pool.addresses[0], options) as conn:
            for _ in range(32):  # the pool's spare threads, and a few more
                try:
                    session = conn.open()
                except ServerBusy:  # every spare thread is held: NOT_SERVING from now on
                    break
                with pytest.raises(SimTimeout):
                    session.reset({"delay": 3600.0})
                session.close()
            else:
                raise AssertionError("hung calls never held every spare thread")
        _wait_for(lambda: any(e.kind == "restarted" for e in pool.events), 90, "restart")
        (event,) = pool.events
        assert "said NOT_SERVING" in event.detail, event
        assert pool.restarts == [1] and pool.servers[0].pid != old_pid
        with Connection(pool.addresses[0]) as conn:
            conn.open(["u"]).reset({})
    finally:
        pool.stop()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_fault_rules_count_empty_iterations_and_the_sim_error_rate():

    from launcher.watchdog import ERROR_RATE_WINDOW, FaultRules, RunFault

    rules = FaultRules(max_empty=3, max_error_rate=0.5)
    for steps in (0, 0, 400, 0, 0):  # a sampling iteration resets the count
        rules.observe(steps, 0)
    with pytest.raises(RunFault, match="3 iterations in a row collected no env steps"):
        rules.observe(0, 0)
    # The error rate is judged over the last ERROR_RATE_WINDOW steps, not before.
    rules = FaultRules(max_empty=3, max_error_rate=0.5)
    rules.observe(ERROR_RATE_WINDOW // 2, ERROR_RATE_WINDOW // 2)  # 100 %, but too few steps
    rules.observe(ERROR_RATE_WINDOW // 2, 0)  # 50 % of the window: not more than the budget
    with pytest.raises(RunFault, match=r"failed on 90% of the last 1000 env steps"):
        rules.observe(ERROR_RATE_WINDOW, int(0.9 * ERROR_RATE_WINDOW))
    # Old failures leave the window.
    rules = FaultRules(max_empty=3, max_error_rate=0.5)
    rules.observe(ERROR_RATE_WINDOW // 2, ERROR_RATE_WINDOW // 2)
    for _ in range(3):
        rules.observe(ERROR_RATE_WINDOW // 2, 0)
    rules = FaultRules(max_empty=3, max_error_rate=None)  # no budget: never
    rules.observe(ERROR_RATE_WINDOW, ERROR_RATE_WINDOW)


def test_the_watchdog_ends_a_call_in_the_main_thread_and_leaves_ctrl_c_alone():

    from launcher.watchdog import Watchdog

    due = {"reason": ""}
    with Watchdog(lambda: due["reason"], poll=0.05) as watchdog:
        assert watchdog.iteration(lambda: 42) == 42
        threading_timer(0.3, lambda: due.update(reason="max_time 1 s reached"))
        # A wait that would outlive any test ends at once: as RLlib's ray.get would.
        assert watchdog.iteration(lambda: time.sleep(600)) is None
        assert watchdog.reason == "max_time 1 s reached"
    with Watchdog(lambda: "", poll=0.05) as watchdog:

        def ctrl_c() -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            watchdog.iteration(ctrl_c)


def threading_timer(delay: float, fn) -> None:
    import threading

    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
