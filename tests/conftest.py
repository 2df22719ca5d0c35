"""Shared fixtures: real simserver processes on real sockets."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simserver.process import ServerProcess

HERE = Path(__file__).resolve().parent
SIMS = HERE / "sims"
REPO = HERE.parent


def unix_simserver_cmd(sock: Path, target: str = "toy.py:Toy") -> list[str]:
    """The command line of a bare ``simserver`` on a unix socket, its sims from tests/sims.

    For tests that start (and kill, and restart) the process themselves, outside
    ``ServerProcess``.
    """
    return [sys.executable, "-m", "simserver", target, "--unix", str(sock), "--chdir", str(SIMS)]


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start simserver child processes; all are stopped at teardown."""
    started: list[ServerProcess] = []

    def start(
        target: str, *, transport: str = "unix", workdir: Path | str = SIMS, **kw: Any
    ) -> ServerProcess:
        server = ServerProcess(target, workdir=workdir, transport=transport, **kw)
        started.append(server)
        server.start(timeout=60)
        return server

    yield start
    for server in started:
        server.cleanup()


def served(target: str, **kwargs: Any) -> Iterator[str]:
    """A simserver child on a unix socket for a fixture's life: yields its address.

    For module-scoped fixtures (``yield from served("toy.py:Toy")``): one server for the
    module's tests, stopped after the last (``start_server`` is per test).
    """
    server = ServerProcess(target, workdir=SIMS, transport="unix", **kwargs)
    server.start(timeout=60)
    try:
        yield server.address
    finally:
        server.cleanup()


@pytest.fixture(params=["unix", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


# ----------------------------------------------------------------------------- CI: no skips

# In CI a skipped test is a missing install step (an extra, mpirun, iproute2, root), never a
# pass: turn every skip into a failure there so it cannot hide in one machine's state.
_IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _fail_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped in CI (CI is set): {reason}; install what it needs (make ci-setup)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if _IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if _IN_CI and report.skipped:
        _fail_skip(report)


# ----------------------------------------------------------------------------- in-process Ray

# Ray gives a new GCS server RAY_gcs_server_port_wait_time_s (30 s unless its backend is
# RocksDB) to publish its port file (ray/_private/node.py, Node.start_gcs_server); on a loaded
# 2-core CI machine that has run out. 120 s is Ray's own budget for a slow GCS.
_GCS_PORT_WAIT_S = 120


@contextlib.contextmanager
def private_ray(**kwargs: Any) -> Iterator[None]:
    """An in-process ``ray.init(**kwargs)`` of the test's own, shut down on exit.

    Set the environment its workers must inherit before entering. Its Ray is isolated from
    any other on the machine and from stale sessions: a private, short ``_temp_dir`` (unix
    socket paths live under it and must stay < 108 bytes, so not ``tmp_path``) instead of
    the shared ``/tmp/ray``, and no ``RAY_ADDRESS`` (``ray.init()`` would join that cluster).
    Its processes carry a marker, so a start that fails anyway (Ray's start-up timeouts) is
    retried once after they are stopped, and nothing outlives the block.
    """
    import ray

    from launcher.node import OWNER_VAR, kill_owned

    marker = uuid.uuid4().hex
    temp_dir = tempfile.mkdtemp(prefix="sgt-", dir="/tmp")
    kwargs = {"include_dashboard": False, "logging_level": "ERROR", **kwargs}

    def stop() -> None:
        ray.shutdown()
        kill_owned(marker, grace=3)  # what shutdown does not know of (a failed start's)

    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAY_ADDRESS", raising=False)
        env.setenv("RAY_gcs_server_port_wait_time_s", str(_GCS_PORT_WAIT_S))
        env.setenv(OWNER_VAR, marker)  # Ray's processes inherit it
        try:
            try:
                ray.init(_temp_dir=temp_dir, **kwargs)
            except Exception as exc:
                stop()
                warnings.warn(f"ray.init failed ({exc}); retrying once", stacklevel=3)
                ray.init(_temp_dir=temp_dir, **kwargs)
            yield
        finally:
            stop()
            shutil.rmtree(temp_dir, ignore_errors=True)
