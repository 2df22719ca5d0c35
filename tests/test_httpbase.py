"""simgym.httpbase on its own: a minimal JSON handler on a real loopback socket.

``tests/test_serve.py`` and ``tests/test_bonsai_endpoint.py`` drive the two servers built on
it, but they need the ``train``/``infer`` and ``bonsai`` extras; these tests need nothing
beyond simgym's core, so the shared layer is checked in every install.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from simgym.httpbase import JSONHandler, Refusal, SlotServer

TOKEN = "t0ken"


class _Echo(JSONHandler):
    """Answers what it was asked: the method, the path, the body's size (at most 64 bytes)."""

    server_version = "httpbase-test"
    timeout = 10

    def dispatch(self, method: str) -> None:
        if not self.authorized(TOKEN, "no key", "wrong key"):
            return
        try:
            size = self.body_size(64, " (the test's limit)")
        except Refusal as exc:
            self.send_problem(exc.status, exc.detail, close=True)
            return
        self.rfile.read(size)
        self.send_json(200, {"method": method, "path": self.path, "size": size})


@pytest.fixture
def echo() -> Iterator[SlotServer]:
    server = SlotServer(("127.0.0.1", 0), _Echo, max_connections=1)
    server.serve_in_thread("httpbase-test", 0.05)
    try:
        yield server
    finally:
        server.close()


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request, read one reply by its Content-Length: status, headers, body."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["Content-Length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _request(method: str, path: str = "/p", body: bytes = b"", key: str = TOKEN) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_every_method_reaches_dispatch_on_one_kept_alive_connection(echo):
    with socket.create_connection(echo.server_address[:2], timeout=10) as sock:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            status, headers, body = _exchange(sock, _request(method, "/a/b", b"12345"))
            assert status == 200 and headers["Content-Type"].startswith("application/json")
            assert json.loads(body) == {"method": method, "path": "/a/b", "size": 5}
            assert headers["Server"] == "httpbase-test" and headers["Date"].endswith(" GMT")


@pytest.mark.parametrize(
    ("request_bytes", "status", "words"),
    [
        (_request("GET", key="other"), 403, "wrong key"),
        (b"GET /p HTTP/1.1\r\nHost: t\r\n\r\n", 401, "no key"),
        (_request("POST", body=b"x" * 65), 413, "at most 64 (the test's limit)"),
        (_request("POST").replace(b"Content-Length: 0", b"Content-Length: -1"), 400, "negative"),
        (
            _request("POST").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked"),
            411,
            "chunked",
        ),
        (b"BREW /p HTTP/1.1\r\n\r\n", 501, "Unsupported method"),
    ],
)
def test_refusals_are_problem_details_and_close(echo, request_bytes, status, words):
    with socket.create_connection(echo.server_address[:2], timeout=10) as sock:
        got, headers, body = _exchange(sock, request_bytes)
        problem = json.loads(body)
        assert (got, problem["status"]) == (status, status), problem
        assert words in problem["detail"] and problem["type"] == "about:blank", problem
        assert headers["Content-Type"].startswith("application/problem+json")
        assert headers["Connection"] == "close" and sock.recv(1) == b""  # then closed


def test_a_connection_past_the_limit_gets_a_503_problem(echo):
    with socket.create_connection(echo.server_address[:2], timeout=10) as held:
        assert _exchange(held, _request("GET"))[0] == 200  # the one slot is taken
        with socket.create_connection(echo.server_address[:2], timeout=10) as extra:
            status, headers, body = _exchange(extra, _request("GET"))
        assert (status, headers["Retry-After"]) == (503, "1")
        assert json.loads(body)["detail"] == "connection limit reached; retry later"
    for _ in range(100):  # the slot frees once the server sees the held connection close
        with socket.create_connection(echo.server_address[:2], timeout=10) as again:
            if _exchange(again, _request("GET"))[0] == 200:
                return
        time.sleep(0.05)
    raise AssertionError("the slot never came free")
