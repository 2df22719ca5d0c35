"""Shared fixtures: real simserver processes on real sockets."""

from __future__ import annotations

import os
import sys
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
