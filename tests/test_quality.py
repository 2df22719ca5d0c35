"""The codebase stays ruff-clean, formatted and type-checked (CI enforces what README promises)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_ruff_check():
    proc = _run("ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format():
    proc = _run("ruff", "format", "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow  # ~45 s of type checking: make test-slow (CI runs it; run it before a commit)
def test_mypy():
    proc = _run("mypy", "simserver", "gymclient", "launcher")
    assert proc.returncode == 0, proc.stdout + proc.stderr
