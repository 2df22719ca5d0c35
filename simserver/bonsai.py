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
with another. HTTP/1.1 with keep-alive, from the standard library (``http.server``, through
``simgym.httpbase``, shared with ``simgym serve``): simserver never imports the SDK. What
lies behind the paths: ``simserver.bonsai_sims``.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from simgym.httpbase import JSONHandler, Refusal, SlotServer, cannot_listen
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


class _HTTPServer(SlotServer):
    """The shared connection-slot server: two connections a sim and a few spare."""

    def __init__(self, address: tuple[str, int], endpoint: BonsaiEndpoint) -> None:
        self.endpoint = endpoint
        super().__init__(address, _Handler, 2 * endpoint.options.max_sims + 8)

    def refused(self) -> None:
        log_throttled(log, logging.WARNING, "bonsai connections", "Bonsai endpoint: "
                      "connection limit reached, one refused")  # fmt: skip


class _Handler(JSONHandler):
    """One connection: requests in turn (keep-alive), each routed to the endpoint."""

    server_version = "simserver-bonsai"
    timeout = IDLE_TIMEOUT
    log = log
    linger_bytes = LINGER_BYTES
    linger_seconds = LINGER_SECONDS
    # The events carry what the trainer sent; a NaN there reaches the sim as Python's json
    # writes it (NaN), as it always did, instead of failing the reply.
    allow_nan = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.sims: list[str] = []  # the sims that posted on this connection

    def handle(self) -> None:
        try:
            super().handle()  # a reset by the peer sets peer_closed
        finally:
            self.server.endpoint.registry.disconnected(self.sims, self.peer_closed)

    def handle_one_request(self) -> None:
        self.raw_requestline = b"?"  # what a timeout leaves; EOF sets b""
        super().handle_one_request()
        if not self.raw_requestline:
            self.peer_closed = True

    def dispatch(self, method: str) -> None:
        self.server.endpoint.route(self, method)

    def peer_gone(self) -> bool:
        """Whether the client closed the connection while its request waits (no data due)."""
        try:
            ready, _, _ = select.select([self.connection], [], [], 0)
            return bool(ready) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def reply(self, status: int, payload: Any = None) -> None:
        """Send a JSON reply (no body for 204)."""
        self.send_json(status, payload)

    def problem(self, status: int, detail: str, *, close: bool = False) -> None:
        """Send a ``ProblemDetails`` error (429 says when to try again: the SDK then retries)."""
        retry = (("Retry-After", str(RETRY_AFTER)),) if status == 429 else ()
        self.send_problem(status, detail, close=close, headers=retry)


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
            flags = "--bonsai-host/--bonsai-port"
            raise ConfigError(cannot_listen(flags, host, self.options.port, exc)) from None
        port = self._http.serve_in_thread("simserver-bonsai")
        self.url = f"http://{connectable_host(self.options.host)}:{port}"
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
            self._http.close()
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
            req.problem(404, f"no such path {clip(req.path, 80)}", close=req.body_unread())
            return
        if not req.authorized(
            self.options.token,
            "no Authorization header: set SIM_ACCESS_KEY to simserver's --token",
            "wrong access key: SIM_ACCESS_KEY must be simserver's --token",
        ):
            return
        try:
            body = self._body(req)
            self._dispatch(req, method, parts[2], parts[4:], body)
        except Refusal as exc:
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

    def _body(self, req: _Handler) -> Any:
        """The request's JSON body (None when it has none).

        Raises:
            Refused: 411 (chunked), 413 (over the limit) or 400 (not JSON).
        """
        size = req.body_size(self.options.max_body_bytes, " (simserver --max-message-mb)")
        if not size:
            return None
        data = req.rfile.read(size)
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested past the limit
            raise Refused(400, f"the body is not JSON: {clip(exc, 80)}") from None


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
