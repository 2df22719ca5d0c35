"""The HTTP scaffolding of simgym's two JSON servers, written once.

``simserver.bonsai`` (the Bonsai v2 simulator endpoint) and ``launcher.serve`` (``simgym
serve``, Bonsai's prediction API) both answer JSON over HTTP/1.1 with the standard library's
``http.server``: no web framework goes into a sim container or an inference install. What
they share lives here; routes, bodies and their checks stay in each.

- ``SlotServer``: a thread per keep-alive connection, at most ``max_connections`` at once; one
  more gets a ``503`` ProblemDetails (``Retry-After: 1``) and is closed.
- ``JSONHandler``: one connection's requests in turn. ``do_GET`` .. ``do_PATCH`` call
  ``dispatch(method)``; the request line and headers are read by a plain parser
  (``parse_request``: ``http.server``'s goes through the ``email`` package, ~55 µs a
  request); a reply leaves in one write (``send_json``); http.server's own errors and every
  refusal are ``ProblemDetails`` JSON (RFC 7807, as ASP.NET answered for Bonsai); a refused
  body still in flight gets a lingering close (``simgym.lingering``).
- ``Refusal``: a request answered with an HTTP error (each server's error types derive from it).
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from simgym.lingering import linger

#: ProblemDetails titles by status (RFC 9110's reason phrases).
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
#: At most this many header lines, each at most this long (http.server's own bounds).
MAX_HEADERS = 100
MAX_LINE = 65536


class Refusal(Exception):
    """A request answered with an HTTP error: ``status`` and a one-line ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def problem_body(status: int, detail: str) -> dict[str, Any]:
    """A ``ProblemDetails`` object (``type``, ``title``, ``status``, ``detail``)."""
    return {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} chars)"


def cannot_listen(flags: str, host: str, port: int, exc: OSError) -> str:
    """The one-line error for an address that cannot be bound, naming the flags."""
    return f"{flags}: cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}"


class Headers(dict[str, str]):
    """A request's headers by lower-case name; ``get`` takes any case (as ``Message.get``)."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        """The header's value (the last one sent), or ``default``."""
        return dict.get(self, name.lower(), default)


class _Date:
    """The ``Date`` header's value, formatted once per second (not per reply)."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:  # a benign race: two threads format the same second
            self.text, self.second = formatdate(second, usegmt=True), second
        return self.text


_DATE = _Date()
_BUSY = json.dumps(problem_body(503, "connection limit reached; retry later")).encode()


class SlotServer(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` at once (503 beyond).

    Args:
        address: (host, port); a host with ``:`` listens on IPv6.
        handler: The ``JSONHandler`` subclass serving each connection.
        max_connections: Connections served at once.
    """

    daemon_threads = True
    # A restarted server takes its port back despite connections in TIME_WAIT (on Linux this
    # never lets two servers listen on one port).
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[JSONHandler], max_connections: int
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def serve_in_thread(self, name: str, poll_interval: float = 0.5) -> int:
        """Serve on a daemon thread named ``name``; returns the port listened on."""
        threading.Thread(
            target=self.serve_forever, args=(poll_interval,), name=name, daemon=True
        ).start()
        return int(self.server_address[1])

    def close(self) -> None:
        """Stop serving and listening (replies in flight finish on their threads)."""
        self.shutdown()
        self.server_close()

    def refused(self) -> None:
        """Called when a connection is refused for the limit (a subclass may log it)."""

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection on a thread of its own, or answer 503 and close it."""
        if not self._slots.acquire(blocking=False):
            self.refused()
            try:
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/"
                    b"problem+json\r\nContent-Length: %d\r\nConnection: close\r\n"
                    b"Retry-After: 1\r\n\r\n%s" % (len(_BUSY), _BUSY)
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve the connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class JSONHandler(BaseHTTPRequestHandler):
    """One connection: requests in turn (keep-alive), each passed to ``dispatch(method)``.

    A subclass sets ``log`` and ``linger_bytes`` and implements ``dispatch``; it reads
    ``self.path``, ``self.headers`` (a ``Headers``) and ``self.rfile``, and answers with
    ``send_json`` or ``send_problem``.
    """

    protocol_version = "HTTP/1.1"
    # A buffered writer, flushed once per reply: headers and body leave in one segment (in
    # two, Nagle's algorithm and the client's delayed ACK would hold the body ~40 ms).
    wbufsize = 64 * 1024
    log: ClassVar[logging.Logger] = logging.getLogger("simgym.http")
    #: A refused body still in flight is read and dropped for at most this much / this long.
    linger_bytes: ClassVar[int] = 16 * 2**20
    linger_seconds: ClassVar[float] = 2.0
    #: Whether a reply may carry NaN or infinities (invalid JSON that Python's json reads).
    allow_nan: ClassVar[bool] = False
    raw_requestline: bytes  # set by BaseHTTPRequestHandler.handle_one_request

    def setup(self) -> None:
        """Ready the connection: its idle timeout, ``TCP_NODELAY``, no refusal yet."""
        super().setup()  # applies the class's ``timeout`` (the idle limit) to the socket
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer_closed = False
        self.unread_body = False  # a refused request's body is still on its way

    def handle(self) -> None:
        """Serve the requests in turn until the connection closes."""
        try:
            super().handle()
        except OSError:  # reset by the peer: its process ended
            self.peer_closed = True

    def finish(self) -> None:
        """Flush, then linger when a refused body may still be on its way."""
        super().finish()  # flushes the last reply
        if self.close_connection and self.unread_body:
            linger(self.connection, self.linger_bytes, self.linger_seconds)

    def log_message(self, format: str, *args: Any) -> None:
        """Access lines at debug level, in the server's own logger."""
        self.log.debug("%s: " + format, self.address_string(), *args)

    def dispatch(self, method: str) -> None:
        """Answer the request just parsed (a subclass's routes)."""
        raise NotImplementedError

    def do_GET(self) -> None:
        """Route a GET request."""
        self.dispatch("GET")

    def do_POST(self) -> None:
        """Route a POST request."""
        self.dispatch("POST")

    def do_DELETE(self) -> None:
        """Route a DELETE request."""
        self.dispatch("DELETE")

    def do_PUT(self) -> None:
        """Route a PUT request."""
        self.dispatch("PUT")

    def do_PATCH(self) -> None:
        """Route a PATCH request."""
        self.dispatch("PATCH")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a request it cannot parse) as ``ProblemDetails`` too."""
        self.send_problem(code, _short(message or TITLES.get(code, "Error"), 200), close=True)

    def parse_request(self) -> bool:
        """The request line and headers, as ``http.server`` parses them, with a plain parser.

        The standard library reads headers through the ``email`` package: ~55 µs of the
        ~200 µs a prediction took in ``simgym serve`` (timed with ``perf_counter`` around
        each part, docs/performance.md); here a dict of lower-case names. Same bounds (100
        lines of 64 KiB), same keep-alive and ``Expect: 100-continue`` rules; a body length
        sent twice with two values is refused (it is how requests are smuggled past proxies).
        """
        self.command = ""
        self.headers = Headers()  # type: ignore[assignment]  # none yet (not the last request's)
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            if len(words) == 3 and words[2].startswith("HTTP/"):
                self.send_error(505, f"HTTP version not supported: {words[2][:20]}")
            else:
                self.send_error(400, f"bad request line {self.requestline[:80]!r}")
            return False
        self.command, self.path, self.request_version = words
        headers = self._read_headers()
        if headers is None:
            return False
        self.headers = headers  # type: ignore[assignment]  # read only through .get
        connection = headers.get("connection", "").lower()
        self.close_connection = self.request_version == "HTTP/1.0" or connection == "close"
        if connection == "keep-alive":
            self.close_connection = False
        if (
            headers.get("expect", "").lower() == "100-continue"
            and self.request_version != "HTTP/1.0"
        ):
            return self.handle_expect_100()
        return True

    def _read_headers(self) -> Headers | None:
        """The header lines up to the blank line (None: refused, the error sent)."""
        headers = Headers()
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                self.send_error(431, "a header line is too long")
                return None
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, colon, value = line.decode("iso-8859-1").partition(":")
            key = name.lower()
            if not colon or not name or name != name.strip():
                self.send_error(400, f"bad header line {line[:40]!r}")
                return None
            value = value.strip()
            if key == "content-length" and headers.get(key, value) != value:
                self.send_error(400, "two different Content-Length headers")
                return None
            headers[key] = value
        self.send_error(431, f"more than {MAX_HEADERS} headers")
        return None

    def send_json(
        self,
        status: int,
        payload: Any = None,
        *,
        close: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Write one reply, JSON (no body when ``payload`` is None), in one write."""
        data = b"" if payload is None else self.encode(payload)
        lines = [
            f"{self.protocol_version} {status} {self.responses.get(status, ('Error',))[0]}",
            f"Server: {self.server_version}",
            f"Date: {_DATE.now()}",
        ]
        if payload is not None:
            kind = "application/problem+json" if status >= 400 else "application/json"
            lines.append(f"Content-Type: {kind}; charset=utf-8")
        lines.append(f"Content-Length: {len(data)}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        if close:
            lines.append("Connection: close")
            self.close_connection = True
            self.unread_body = self.body_unread()
        lines.append("\r\n")
        self.log_request(status, len(data))
        self.wfile.write("\r\n".join(lines).encode("latin-1") + data)

    def send_problem(
        self,
        status: int,
        detail: str,
        *,
        close: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Write a ``ProblemDetails`` error reply."""
        self.send_json(status, problem_body(status, detail), close=close, headers=headers)

    def encode(self, payload: Any) -> bytes:
        """A reply's JSON bytes, compact (``allow_nan``: the class's choice)."""
        return json.dumps(payload, allow_nan=self.allow_nan, separators=(",", ":")).encode()

    def body_unread(self) -> bool:
        """Whether the request's body may be left unread (its connection must then close)."""
        headers = getattr(self, "headers", None)  # None when the request line itself was bad
        if headers is None:
            return False
        return bool(headers.get("Transfer-Encoding")) or headers.get("Content-Length", "0") not in (
            "",
            "0",
        )

    def authorized(self, token: str | None, missing: str, wrong: str) -> bool:
        """Check the ``Authorization`` header (bare or ``Bearer``) against ``token``.

        A refused request is answered (401 ``missing``, 403 ``wrong``) and its connection
        closed. No token: every request passes.
        """
        if not token:
            return True
        given = self.headers.get("Authorization")
        if given is None:
            self.send_problem(401, missing, close=True)
            return False
        key = given[7:] if given.startswith("Bearer ") else given
        if not hmac.compare_digest(key.encode(), token.encode()):
            self.send_problem(403, wrong, close=True)
            return False
        return True

    def body_size(self, limit: int, hint: str = "") -> int:
        """The request body's length from its ``Content-Length`` (0 without one).

        Raises:
            Refusal: 411 (chunked), 413 (over ``limit``; ``hint`` says how to raise it),
                400 (not a number, or negative).
        """
        if self.headers.get("Transfer-Encoding"):
            raise Refusal(411, "send the body with a Content-Length (chunked is not served)")
        length = self.headers.get("Content-Length") or "0"
        try:
            size = int(length)
        except ValueError:
            raise Refusal(400, f"Content-Length {length[:20]!r} is not a number") from None
        if size < 0:
            raise Refusal(400, f"Content-Length {size} is negative")
        if size > limit:
            raise Refusal(
                413, f"the body has {size:,} bytes; this server takes at most {limit:,}{hint}"
            )
        return size


__all__ = [
    "MAX_HEADERS",
    "MAX_LINE",
    "TITLES",
    "Headers",
    "JSONHandler",
    "Refusal",
    "SlotServer",
    "cannot_listen",
    "problem_body",
]
