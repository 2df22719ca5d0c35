"""The Bonsai endpoint: the simulator-session part of the Bonsai v2 REST API, over plain HTTP.

Sims written against Microsoft's Bonsai simulator SDK (``microsoft-bonsai-api``, and its C#,
TypeScript and Java siblings) connect to it as they connected to the platform, with
``SIM_API_HOST=http://HOST:PORT``, ``SIM_WORKSPACE`` (any name) and ``SIM_ACCESS_KEY`` (the
server's ``--token``). Paths, fields and status codes are those of the SDK's generated client:

=======  =====================================================  ==============================
POST     /v2/workspaces/{w}/simulatorSessions                   register: 201, session
GET      /v2/workspaces/{w}/simulatorSessions                   the registered sims: 200
GET      /v2/workspaces/{w}/simulatorSessions/{id}              one sim: 200
DELETE   /v2/workspaces/{w}/simulatorSessions/{id}              unregister: 204
POST     /v2/workspaces/{w}/simulatorSessions/{id}/advance      state in, next event out: 200
GET      /v2/workspaces/{w}/simulatorSessions/{id}/action       the last event sent: 200
=======  =====================================================  ==============================

Errors are ``ProblemDetails`` JSON bodies. With a token, the ``Authorization`` header must be
it (as the SDK sends the access key; ``Bearer <token>`` is taken too): 401 without one, 403
with another. HTTP/1.1 with keep-alive, from the standard library (``http.server``): simserver
never imports the SDK. What lies behind the paths: ``simserver.bonsai_sims``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import select
import signal
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from simgym.lingering import linger
from simserver.adapters import SimFactory
from simserver.bonsai_sims import (
    FREE_SIM_WAIT,
    BonsaiRegistry,
    Posted,
    Refused,
    bonsai_factory,
    parse_interface,
)
from simserver.errors import clip, log_throttled
from simserver.server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_SESSIONS_RANGE,
    ConfigError,
    ServerOptions,
    SimServer,
    check_range,
    check_token_text,
    is_loopback,
    write_address_file,
)
from simserver.server import _connectable as connectable_host  # the gRPC side's rule

log = logging.getLogger("simserver.bonsai")

#: Seconds a connection may stay silent (between requests, or inside one) before it is closed.
IDLE_TIMEOUT = 120.0
# A refused body still in flight is read and dropped for at most this long / this much.
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 2**20
#: Seconds a sim refused for the registration limit is told to wait (``Retry-After``).
RETRY_AFTER = 5
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class BonsaiOptions:
    """How to expose the Bonsai endpoint (``simserver --bonsai-port`` and its kin).

    Attributes:
        host: Interface to listen on; anything but loopback needs ``token`` or ``insecure``.
        port: TCP port; 0 picks a free one.
        token: The access key sims must send (simserver's ``--token``).
        insecure: Allow a non-loopback host without a token.
        max_sims: Sims registered at once (429 beyond).
        max_body_bytes: Largest request body (413 beyond).
        free_sim_wait: Seconds a session's reset waits for a free sim.
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    insecure: bool = False
    max_sims: int = 64
    max_body_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    free_sim_wait: float = FREE_SIM_WAIT

    def validate(self) -> None:
        """Refuse unsafe or impossible options.

        Raises:
            ConfigError: Naming the flag.
        """
        check_range("--bonsai-port", self.port, 0, 65535, whole=True)
        check_range("--max-sessions", self.max_sims, *MAX_SESSIONS_RANGE, whole=True)
        check_range("free_sim_wait", self.free_sim_wait, 0.0, 86_400.0)
        if self.token is not None:
            check_token_text(self.token, "--token")
        if not is_loopback(self.host) and not self.token and not self.insecure:
            raise ConfigError(
                f"--bonsai-host {self.host} lets sims beyond this machine drive training: give "
                "--token (their SIM_ACCESS_KEY), or --insecure to accept the risk"
            )


class _HTTPServer(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` at once."""

    daemon_threads = True
    # A restarted server takes its port back despite connections in TIME_WAIT (on Linux this
    # never lets two servers listen on one port).
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], endpoint: BonsaiEndpoint) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.endpoint = endpoint
        self._slots = threading.BoundedSemaphore(2 * endpoint.options.max_sims + 8)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log_throttled(log, logging.WARNING, "bonsai connections", "Bonsai endpoint: "
                          "connection limit reached, one refused")  # fmt: skip
            try:
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    """One connection: requests in turn (keep-alive), each routed to the endpoint."""

    protocol_version = "HTTP/1.1"
    server_version = "simserver-bonsai"
    timeout = IDLE_TIMEOUT
    # A buffered writer, flushed once per reply: headers and body leave in one segment (in
    # two, Nagle's algorithm and the client's delayed ACK would hold the body ~40 ms).
    wbufsize = 64 * 1024
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sims: list[str] = []  # the sims that posted on this connection
        self.peer_closed = False
        self.unread_body = False  # a refused request's body is still on its way

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # reset by the peer: its process ended
            self.peer_closed = True
        finally:
            self.server.endpoint.registry.disconnected(self.sims, self.peer_closed)

    def handle_one_request(self) -> None:
        self.raw_requestline = b"?"  # what a timeout leaves; EOF sets b""
        super().handle_one_request()
        if not self.raw_requestline:
            self.peer_closed = True

    def finish(self) -> None:
        super().finish()  # flushes the last reply
        if self.close_connection and self.unread_body:
            linger(self.connection, LINGER_BYTES, LINGER_SECONDS)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self.server.endpoint.route(self, "GET")

    def do_POST(self) -> None:
        self.server.endpoint.route(self, "POST")

    def do_DELETE(self) -> None:
        self.server.endpoint.route(self, "DELETE")

    def do_PUT(self) -> None:
        self.server.endpoint.route(self, "PUT")

    def do_PATCH(self) -> None:
        self.server.endpoint.route(self, "PATCH")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a request it cannot parse) as ``ProblemDetails`` too."""
        self.problem(code, clip(message or _TITLES.get(code, "Error"), 200), close=True)

    def peer_gone(self) -> bool:
        """Whether the client closed the connection while its request waits (no data due)."""
        try:
            ready, _, _ = select.select([self.connection], [], [], 0)
            return bool(ready) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def reply(
        self, status: int, payload: Any = None, *, close: bool = False, retry_after: int = 0
    ) -> None:
        """Send a JSON reply (no body for 204)."""
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if retry_after:
            self.send_header("Retry-After", str(retry_after))
        if payload is not None:
            kind = "application/problem+json" if status >= 400 else "application/json"
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
            self.unread_body = _unread(self)
        self.end_headers()
        self.wfile.write(data)

    def problem(self, status: int, detail: str, *, close: bool = False) -> None:
        """Send a ``ProblemDetails`` error (429 says when to try again: the SDK then retries)."""
        title = _TITLES.get(status, "Error")
        body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
        self.reply(status, body, close=close, retry_after=RETRY_AFTER if status == 429 else 0)


class BonsaiEndpoint:
    """The Bonsai endpoint: an HTTP server over a ``BonsaiRegistry``.

    Use ``start()``, ``wait_ready()``, ``factory()``, then ``stop()``.

    Args:
        options: Where and how to listen.
    """

    def __init__(self, options: BonsaiOptions) -> None:
        options.validate()
        self.options = options
        self.registry = BonsaiRegistry(options.max_sims, options.free_sim_wait)
        self._http: _HTTPServer | None = None
        self.url = ""

    def start(self) -> str:
        """Listen and serve in a thread; returns the URL sims use (their ``SIM_API_HOST``).

        Raises:
            ConfigError: The address cannot be bound.
        """
        host = self.options.host.strip("[]")
        try:
            self._http = _HTTPServer((host, self.options.port), self)
        except OSError as exc:
            raise ConfigError(
                f"--bonsai-host/--bonsai-port: cannot listen on {host}:{self.options.port}: "
                f"{(exc.strerror or str(exc)).lower()}"
            ) from None
        port = self._http.server_address[1]
        self.url = f"http://{connectable_host(self.options.host)}:{port}"
        threading.Thread(
            target=self._http.serve_forever, name="simserver-bonsai", daemon=True
        ).start()
        self.registry.start()
        where = "" if is_loopback(self.options.host) else f" (listening on {host}:{port})"
        log.info(
            "Bonsai endpoint at %s%s (%s): SIM_API_HOST for the sims",
            self.url,
            where,
            "access key = --token" if self.options.token else "no access key",
        )
        if not is_loopback(self.options.host) and self.options.token:
            log.warning(
                "the access key travels in plain text over HTTP on %s:%d (anyone on the "
                "network path can read and reuse it)",
                host,
                port,
            )
        return self.url

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the first sim's state names are known (False on timeout or stop)."""
        return self.registry.ready.wait(timeout)

    def factory(self) -> SimFactory:
        """The sims' ``SimFactory`` (once ready)."""
        return bonsai_factory(self.registry)

    def stop(self) -> None:
        """Unregister every sim at its next poll and stop listening."""
        self.registry.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        s = self.registry.stats
        log.info(
            "Bonsai endpoint stopped (%d sims registered, %d deleted their session, %d dropped "
            "as dead, %d refused)",
            s.registered,
            s.deleted,
            s.dropped,
            s.refused,
        )

    # ------------------------------------------------------------------ requests

    def route(self, req: _Handler, method: str) -> None:
        """Answer one request (any failure becomes a ``ProblemDetails`` reply)."""
        parts = [unquote(p) for p in urlsplit(req.path).path.strip("/").split("/")]
        if len(parts) < 4 or parts[:2] != ["v2", "workspaces"] or parts[3] != "simulatorSessions":
            req.problem(404, f"no such path {clip(req.path, 80)}", close=_unread(req))
            return
        if not self._authorized(req):
            return
        try:
            body = self._body(req)
            self._dispatch(req, method, parts[2], parts[4:], body)
        except Refused as exc:
            self.registry.stats.refused += exc.status == 429
            req.problem(exc.status, exc.detail, close=exc.status in (411, 413))
        except OSError:
            raise  # the connection broke: nothing to answer
        except Exception as exc:  # a bug here must not leave the sim without an answer
            log_throttled(log, logging.ERROR, ("bonsai error", type(exc).__name__),
                          "Bonsai endpoint: %s %s failed: %s: %s", method, clip(req.path, 80),
                          type(exc).__name__, clip(exc))  # fmt: skip
            req.problem(500, f"the endpoint failed: {type(exc).__name__}", close=True)

    def _dispatch(
        self, req: _Handler, method: str, workspace: str, rest: list[str], body: Any
    ) -> None:
        registry = self.registry
        if not rest and method == "POST":
            sim = registry.register(workspace, parse_interface(body))
            req.reply(201, sim.response())
        elif not rest and method == "GET":
            req.reply(200, [s.summary() for s in registry.sims()])
        elif len(rest) == 1 and method == "GET":
            req.reply(200, registry.get(rest[0]).response())
        elif len(rest) == 1 and method == "DELETE":
            registry.delete(rest[0])
            req.reply(204)
        elif len(rest) == 2 and rest[1] == "advance" and method == "POST":
            self._advance(req, rest[0], body)
        elif len(rest) == 2 and rest[1] == "action" and method == "GET":
            sim = registry.get(rest[0])
            req.reply(200, sim.issued or sim.event("Idle", callbackTime=0.0))
        elif len(rest) == 1 or (len(rest) == 2 and rest[1] in ("advance", "action")) or not rest:
            raise Refused(405, f"{method} is not served on this path")
        else:
            raise Refused(404, f"no such path {clip(req.path, 80)}")

    def _advance(self, req: _Handler, session_id: str, body: Any) -> None:
        if not isinstance(body, dict):
            raise Refused(400, "the body must be a SimulatorState JSON object")
        seq = body.get("sequenceId")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise Refused(400, "SimulatorState.sequenceId is required (an integer)")
        state, halted, error = body.get("state"), body.get("halted"), body.get("error")
        if halted is not None and not isinstance(halted, bool):
            raise Refused(400, "SimulatorState.halted must be true or false")
        if session_id not in req.sims and session_id in {s.id for s in self.registry.sims()}:
            req.sims.append(session_id)
            self.registry.connected(session_id)
        posted = Posted(state, bool(halted), str(error) if error else "")
        req.reply(200, self.registry.advance(session_id, seq, posted, req.peer_gone))

    def _authorized(self, req: _Handler) -> bool:
        """Check the access key; a refused request is answered (and its connection closed)."""
        token = self.options.token
        if not token:
            return True
        given = req.headers.get("Authorization")
        if given is None:
            req.problem(401, "no Authorization header: set SIM_ACCESS_KEY to simserver's "
                        "--token", close=True)  # fmt: skip
            return False
        key = given[7:] if given.startswith("Bearer ") else given
        if not hmac.compare_digest(key.encode(), token.encode()):
            req.problem(403, "wrong access key: SIM_ACCESS_KEY must be simserver's --token",
                        close=True)  # fmt: skip
            return False
        return True

    def _body(self, req: _Handler) -> Any:
        """The request's JSON body (None when it has none).

        Raises:
            Refused: 411 (chunked), 413 (over the limit) or 400 (not JSON).
        """
        if req.headers.get("Transfer-Encoding"):
            raise Refused(411, "send the body with a Content-Length (chunked is not served)")
        length = req.headers.get("Content-Length") or "0"
        try:
            size = int(length)
        except ValueError:
            raise Refused(400, f"Content-Length {clip(length, 20)} is not a number") from None
        if size < 0:
            raise Refused(400, f"Content-Length {size} is negative")
        if size > self.options.max_body_bytes:
            raise Refused(
                413,
                f"the body has {size:,} bytes; this endpoint takes at most "
                f"{self.options.max_body_bytes:,} (simserver --max-message-mb)",
            )
        if not size:
            return None
        data = req.rfile.read(size)
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested past the limit
            raise Refused(400, f"the body is not JSON: {clip(exc, 80)}") from None


def _unread(req: _Handler) -> bool:
    """Whether a request's body may be left unread (its connection must then close)."""
    headers = getattr(req, "headers", None)  # None when the request line itself was bad
    if headers is None:
        return False
    return bool(headers.get("Transfer-Encoding")) or headers.get("Content-Length", "0") not in (
        "",
        "0",
    )


def serve(
    options: ServerOptions, bonsai: BonsaiOptions, ready_timeout: float | None = None
) -> tuple[BonsaiEndpoint, SimServer | None]:
    """Start a Bonsai endpoint, wait for its first sim, then serve its sims over gRPC.

    The Python form of ``simserver --bonsai-port``: the endpoint listens at once
    (``endpoint.url``); the gRPC server starts once the state names are known.

    Args:
        options: The gRPC server's options.
        bonsai: The endpoint's options.
        ready_timeout: Seconds to wait for the first sim (None: for ever).

    Returns:
        The endpoint and the started server (None if no sim came in time; the endpoint
        still runs).
    """
    endpoint = BonsaiEndpoint(bonsai)
    endpoint.start()
    if not endpoint.wait_ready(ready_timeout):
        return endpoint, None
    server = SimServer(endpoint.factory(), options)
    server.start()
    return endpoint, server


def wait_for_bonsai_sims(
    bonsai: BonsaiOptions, address_file: Path | None, parent_pid: int | None
) -> tuple[BonsaiEndpoint, SimFactory]:
    """``simserver --bonsai-port``'s start: listen, say where, wait for the first sim.

    The endpoint's URL goes to ``address_file`` as soon as it listens (the launcher starts
    the sims with it). Until the first sim's state names are known, SIGTERM/SIGINT (or the
    end of ``parent_pid``) end the process with code 0.

    Raises:
        ConfigError: The options, the address or the address file.
    """
    endpoint = BonsaiEndpoint(bonsai)
    url = endpoint.start()
    if address_file is not None:
        try:
            write_address_file(str(address_file), url)
        except OSError as exc:
            endpoint.stop()
            raise ConfigError(f"--bonsai-address-file {address_file}: {exc.strerror}") from None

    def leave(signum: int = 0, _frame: Any = None) -> None:
        log.info("%s before any Bonsai sim registered: exiting", f"signal {signum}" if signum
                 else f"parent {parent_pid} is gone")  # fmt: skip
        endpoint.stop()
        logging.shutdown()
        os._exit(0)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, leave)
        signal.signal(signal.SIGINT, leave)
    log.info("waiting for a Bonsai sim to register at %s", url)
    while not endpoint.wait_ready(1.0):
        if parent_pid is not None and not _alive(parent_pid):
            leave()
    return endpoint, endpoint.factory()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    return True
