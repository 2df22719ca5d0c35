"""``simserver``'s options: values that would switch a protection off, and start-up failures,
each refused in one readable line on stderr with exit code 2 (issue 14, findings 6 and 9)."""

from __future__ import annotations

import math
import socket
import subprocess
import sys

import pytest

from simserver.server import ConfigError, ServerOptions

from .conftest import SIMS


def _simserver(*args: str, cwd=SIMS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simserver", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert lines[0].startswith("simserver: error:"), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lease", "nan"], "--lease nan"),
        (["--lease", "inf"], "--lease inf"),
        (["--lease", "0"], "--lease 0"),
        (["--hung-grace", "nan"], "--hung-grace nan"),
        (["--hung-grace", "-1"], "--hung-grace -1"),
        (["--max-message-mb", "nan"], "--max-message-mb nan"),
        (["--max-message-mb", "-1"], "--max-message-mb -1"),
        (["--max-message-mb", "0"], "--max-message-mb 0"),
        (["--max-message-mb", "4096"], "--max-message-mb 4096"),
        (["--max-sessions", "0"], "--max-sessions 0"),
        (["--max-sessions", "1", "--workers", "1"], "--workers 1"),
        (["--max-sessions", "2", "--max-streams", "0"], "--max-streams 0"),
        (["--max-sessions", "2", "--max-streams", "10"], "--max-streams 10"),  # > workers - 1
        (["--port", "70000"], "--port 70000"),
        (["--parent-pid", "-1"], "--parent-pid -1"),
        (["--log-level", "chatty"], "--log-level chatty"),
        (["--token", "   "], "--token: the token is empty or only whitespace"),
        (["--token", ""], "--token: the token is empty or only whitespace"),
        (["--host", "0.0.0.0", "--token", " \t "], "--token: the token is empty"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_bad_value_is_refused_naming_its_flag(args, message):
    line = _one_line(_simserver("toy.py:Toy", "--port", "0", *args))
    assert message in line, line


def test_an_empty_token_file_is_refused(tmp_path):
    empty = tmp_path / "token"
    empty.write_text("  \n")
    line = _one_line(_simserver("toy.py:Toy", "--host", "0.0.0.0", "--token-file", str(empty)))
    assert f"--token-file {empty}: the file is empty" in line


def test_the_python_api_checks_the_same_values():
    for options in (
        ServerOptions(lease_seconds=math.nan),
        ServerOptions(hung_grace=math.nan),
        ServerOptions(max_message_bytes=-1),
        ServerOptions(max_message_bytes=0),
        ServerOptions(host="0.0.0.0", token="  "),
    ):
        with pytest.raises(ConfigError):
            options.validate()
    ServerOptions(max_message_bytes=2**20, lease_seconds=0.5, hung_grace=0).validate()


@pytest.mark.parametrize("flag", ["--log-file", "--address-file", "--unix"])
def test_a_file_in_a_missing_folder_is_one_line(tmp_path, flag):
    target = tmp_path / "no" / "such" / "file"
    line = _one_line(_simserver("toy.py:Toy", flag, str(target)))
    assert flag in line and "does not exist" in line


def test_a_port_in_use_is_exactly_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_line(_simserver("toy.py:Toy", "--port", str(port)))
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in line


def test_a_unix_path_past_the_kernels_limit_is_one_line(tmp_path):
    # gRPC's bind logged its own line before ours for a path the kernel cannot take.
    path = tmp_path / ("s" * 120)
    line = _one_line(_simserver("toy.py:Toy", "--unix", str(path)))
    assert "--unix" in line and "at most 107" in line


def test_a_kwargs_file_that_is_not_utf8_is_one_line(tmp_path):
    bad = tmp_path / "kwargs.yaml"
    bad.write_bytes(b"gain: \xff\xfe\n")
    line = _one_line(_simserver("toy.py:Toy", "--kwargs-file", str(bad)))
    assert "--kwargs-file" in line and "not UTF-8" in line
