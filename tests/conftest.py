"""Shared fixtures: real simserver processes on real sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simserver.process import ServerProcess

HERE = Path(__file__).resolve().parent
SIMS = HERE / "sims"
REPO = HERE.parent


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
