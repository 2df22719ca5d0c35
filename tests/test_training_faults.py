"""Training keeps moving: wedged sidecars are restarted, runs that cannot go on end clearly."""

from __future__ import annotations

import os
import signal
import time

from gymclient.connection import Connection
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


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
