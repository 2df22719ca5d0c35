"""``simgym serve``: an exported agent behind the HTTP JSON API of Bonsai's exported brains.

Control code written against an exported Bonsai brain (a container answering on port 5000)
keeps working when pointed at ``simgym serve agent/``. Paths, bodies and status codes follow
Bonsai's published Exported Brain API (what was checked against what: docs/serving.md):

========  ===============================  ==============================================
GET       /v1/status                       health: 200 and a JSON summary (also /health)
GET|POST  /v1/prediction                   the state object in, the action object out
DELETE    /v1                              forget the brain's memory: 204 (none to forget)
POST      /v2/clients/{clientId}/predict   ``{"state": {...}}`` in, ``{"clientId": ...,
                                           "concepts": {CONCEPT: {"action": {...}}}}`` out
DELETE    /v2/clients/{clientId}           forget that client's memory: 204
========  ===============================  ==============================================

A state may also be given without names, as a list of numbers in the agent's state order
(``GET /v1/status`` lists it), as Bonsai's API allowed; nested objects are flattened to
dotted names (``{"a": {"b": 1}}`` is state ``a.b``). Errors are ``ProblemDetails`` JSON
(``type``, ``title``, ``status``, ``detail``, and ``errors``: {state: [problem]} for a bad
state), never a traceback.

Why the standard library's ``ThreadingHTTPServer``: an exported agent must serve where only
simgym's core and the ``infer`` extra (onnxruntime) are installed. FastAPI/uvicorn, aiohttp
and Flask are in this venv only because the ``train`` extra (Ray, MLflow) pulls them in;
depending on them would put a web stack into every inference install for a handful of JSON
routes. ``http.server`` adds no dependency and is what ``simserver.bonsai`` also runs for
the Bonsai simulator API; both stand on ``simgym.httpbase`` (a thread per keep-alive
connection, a bounded connection count, one write per reply, ``TCP_NODELAY``, a lingering
close after a refused body, the request line and headers read by a plain parser instead of
the ``email`` package). A prediction costs 0.14-0.31 ms on loopback
against ~20 µs for the action in process (``bench/serve.py``, docs/performance.md).
``Agent.act`` is thread-safe (onnxruntime sessions are), so connections predict in parallel
where onnxruntime releases the GIL. Safe by default: loopback only; any other host needs
``token`` (the ``Authorization`` header, bare or ``Bearer``) or an explicit ``insecure``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from gymclient.errors import SimgymError
from simgym.httpbase import JSONHandler, Refusal, SlotServer, cannot_listen, problem_body

if TYPE_CHECKING:
    from gymclient.agent import Agent

log = logging.getLogger("simgym.serve")

DEFAULT_PORT = 5000  # the exported brain container's port
DEFAULT_CONCEPT = "Concept"
#: A client id's length limits (Bonsai's v2 API: 1 to 64 characters).
CLIENT_ID_MAX = 64
#: Seconds a connection may stay silent (between requests, or inside one) before it closes.
IDLE_TIMEOUT = 60.0
# A refused body still in flight is read and dropped for at most this long / this much.
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 2**20
_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    type(None): "null",
    int: "a number",
    float: "a number",
}
PATHS = (
    "GET /v1/status, GET|POST /v1/prediction, DELETE /v1, "
    "POST /v2/clients/{clientId}/predict, DELETE /v2/clients/{clientId}, GET /health"
)


class ServeError(SimgymError):
    """``simgym serve`` cannot start: unsafe or impossible options, or the address is taken."""


class BadRequest(Refusal):
    """A request the API refuses (``status``), with what was wrong (``detail``)."""

    def __init__(
        self, status: int, detail: str, errors: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(status, detail)
        self.errors = errors


@dataclass
class ServeOptions:
    """Where and how ``simgym serve`` listens.

    Attributes:
        host: Interface to listen on; anything but loopback needs ``token`` or ``insecure``.
        port: TCP port (Bonsai's brains answered on 5000); 0 picks a free one.
        token: The ``Authorization`` header every request must carry (bare or ``Bearer``).
        insecure: Allow a non-loopback host without a token (the risk is the caller's).
        concept: The concept name v2 replies use (``concepts.<name>.action``); None: the
            manifest's ``concept`` or ``name``, else ``Concept``.
        max_connections: Connections served at once (503 beyond).
        max_body_bytes: Largest request body (413 beyond).
        idle_timeout: Seconds a connection may stay silent before it is closed.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    insecure: bool = False
    concept: str | None = None
    max_connections: int = 64
    max_body_bytes: int = 2**20
    idle_timeout: float = IDLE_TIMEOUT

    def validate(self) -> None:
        """Refuse unsafe or impossible options.

        Raises:
            ServeError: Naming the option.
        """
        whole = (int,)
        if not isinstance(self.port, whole) or not 0 <= self.port <= 65535:
            raise ServeError(f"--port {self.port}: give a port from 0 to 65535 (0: any free)")
        if not isinstance(self.max_connections, whole) or not 1 <= self.max_connections <= 4096:
            raise ServeError(f"--max-connections {self.max_connections}: give 1 to 4096")
        if not isinstance(self.max_body_bytes, whole) or not 1024 <= self.max_body_bytes <= 2**30:
            raise ServeError(
                f"--max-body-kb {self.max_body_bytes // 1024}: give 1 to {2**20} (KiB)"
            )
        if not (isinstance(self.idle_timeout, int | float) and 0 < self.idle_timeout < 86_400):
            raise ServeError(f"idle_timeout {self.idle_timeout}: give 0 to 86400 seconds")
        if self.token is not None:
            if not self.token.strip():
                raise ServeError("--token: the token is empty or only whitespace")
            if self.token != self.token.strip() or not all(" " <= c <= "~" for c in self.token):
                raise ServeError(
                    "--token: use printable ASCII without spaces at either end (it travels "
                    "in the Authorization header)"
                )
        if self.concept is not None and not self.concept.strip():
            raise ServeError("--concept: give a name (what v2 replies call the concept)")
        if not is_loopback(self.host) and not self.token and not self.insecure:
            raise ServeError(
                f"--host {self.host} lets anyone who can reach it query the agent: give "
                "--token (clients send it as the Authorization header), or --insecure to "
                "accept the risk"
            )


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``.

    The rule of ``simserver.server.is_loopback``, not imported from there: serving an agent
    loads none of the sim server's modules.
    """
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _flatten(states: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted names: ``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in states.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _plain(value: Any) -> Any:
    """A JSON-able number for an action value (numpy scalars included)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


@dataclass
class _Stats:
    """What health reports: counts since start (under ``lock``: handlers run in threads)."""

    started: float = field(default_factory=time.time)
    predictions: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, ok: bool) -> None:
        with self.lock:
            if ok:
                self.predictions += 1
            else:
                self.refused += 1


@dataclass(frozen=True)
class Reply:
    """One HTTP reply: status, JSON payload (None: no body), extra headers."""

    status: int
    payload: Any = None
    headers: tuple[tuple[str, str], ...] = ()


def problem(status: int, detail: str, errors: dict[str, list[str]] | None = None) -> Reply:
    """A ``ProblemDetails`` error reply (``errors``: per state, as ASP.NET's validation)."""
    body = problem_body(status, detail)
    if errors:
        body["errors"] = errors
    return Reply(status, body)


class PredictionAPI:
    """The routes without HTTP: ``handle(method, path, body)`` → ``Reply``.

    Args:
        agent: The loaded agent (``gymclient.agent.Agent``).
        concept: The concept name of v2 replies.
    """

    def __init__(self, agent: Agent, concept: str) -> None:
        self.agent = agent
        self.concept = concept
        self.states = list(agent.state_names)
        self.stats = _Stats()
        example = ", ".join(f'"{n}": 0.0' for n in self.states[:3])
        self._example = "{" + example + (", ..." if len(self.states) > 3 else "") + "}"

    def handle(self, method: str, path: str, body: bytes | None) -> Reply:
        """Answer one request (``body``: its bytes, None when it had none)."""
        parts = [unquote(p) for p in urlsplit(path).path.strip("/").split("/")]
        try:
            reply = self._route(method, parts, body)
        except BadRequest as exc:
            reply = problem(exc.status, exc.detail, exc.errors)
        if parts[-1:] == ["predict"] or parts == ["v1", "prediction"]:
            self.stats.count(reply.status == 200)
        return reply

    def _route(self, method: str, parts: list[str], body: bytes | None) -> Reply:
        if parts in (["v1", "status"], ["health"]):
            return self._allow(method, ("GET",)) or Reply(200, self.health())
        if parts == ["v1", "prediction"]:
            return self._allow(method, ("GET", "POST")) or self._predict_v1(body)
        if parts == ["v1"]:
            return self._allow(method, ("DELETE",)) or Reply(204)
        if len(parts) in (3, 4) and parts[:2] == ["v2", "clients"]:
            client = _client_id(parts[2])
            if len(parts) == 3:
                # Forget the client's memory: the exported policies have none (feed-forward
                # networks), and a fresh id must answer 204 too (clients probe v2 this way).
                return self._allow(method, ("DELETE",)) or Reply(204)
            if parts[3] == "predict":
                return self._allow(method, ("POST",)) or self._predict_v2(client, body)
        raise BadRequest(404, f"no such path /{'/'.join(parts)}; this server answers {PATHS}")

    @staticmethod
    def _allow(method: str, allowed: tuple[str, ...]) -> Reply | None:
        if method in allowed:
            return None
        reply = problem(405, f"{method} is not served on this path (allowed: {', '.join(allowed)})")
        return Reply(reply.status, reply.payload, (("Allow", ", ".join(allowed)),))

    def health(self) -> dict[str, Any]:
        """What ``GET /v1/status`` answers: the agent's names and counts since start."""
        manifest = self.agent.manifest
        stats = self.stats
        return {
            "status": "ok",
            "agent": str(self.agent.folder),
            "states": self.states,
            "actions": list(self.agent.action_names),
            "concept": self.concept,
            "spec_hash": manifest.get("spec_hash"),
            "simgym_version": manifest.get("simgym_version"),
            "uptime_s": round(time.time() - stats.started, 3),
            "predictions": stats.predictions,
            "refused": stats.refused,
        }

    def _predict_v1(self, body: bytes | None) -> Reply:
        return Reply(200, self._act(self._states(_parse(body, self._example), "the body")))

    def _predict_v2(self, client: str, body: bytes | None) -> Reply:
        request = _parse(body, '{"state": ' + self._example + "}")
        if not isinstance(request, dict) or "state" not in request:
            raise BadRequest(
                400,
                f'the body must be {{"state": {self._example}}}, got {_json_type(request)}'
                + (f" with keys {sorted(request)[:5]}" if isinstance(request, dict) else ""),
            )
        action = self._act(self._states(request["state"], "state"))
        return Reply(200, {"clientId": client, "concepts": {self.concept: {"action": action}}})

    def _states(self, value: Any, where: str) -> dict[str, Any]:
        """The named states of a request's state value (an object, [object], or numbers)."""
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            value = value[0]  # v2's documented template wraps the state object in a list
        if isinstance(value, list):
            if len(value) != len(self.states):
                raise BadRequest(
                    400,
                    f"{where}: {len(value)} values without names; give {len(self.states)} in "
                    f"this order: {', '.join(self.states)} (or an object of name: number)",
                )
            return dict(zip(self.states, value, strict=True))
        if not isinstance(value, dict):
            raise BadRequest(
                400, f"{where}: expected an object of state name: number, got {_json_type(value)}"
            )
        return _flatten(value) if any(isinstance(v, dict) for v in value.values()) else value

    def _act(self, states: dict[str, Any]) -> dict[str, Any]:
        from gymclient.agent import AgentInputError

        try:
            actions = self.agent.act(states)
        except AgentInputError as exc:
            raise BadRequest(400, str(exc), {exc.field: [str(exc).split(": ", 1)[-1]]}) from None
        return {name: _plain(value) for name, value in actions.items()}


def _client_id(raw: str) -> str:
    if not 1 <= len(raw) <= CLIENT_ID_MAX:
        raise BadRequest(
            400, f"clientId must be 1 to {CLIENT_ID_MAX} characters (URL-encoded), got {len(raw)}"
        )
    return raw


def _parse(body: bytes | None, example: str) -> Any:
    if not body or not body.strip():
        raise BadRequest(400, f"the body is empty: send JSON such as {example}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the limit
        raise BadRequest(400, f"the body is not JSON: {str(exc)[:80]}") from None


class _HTTPServer(SlotServer):
    """The shared connection-slot server, with ``simgym serve``'s app and backlog."""

    request_queue_size = 128  # the listen backlog (the default 5 drops bursts of clients)

    def __init__(self, address: tuple[str, int], app: AgentServer) -> None:
        self.app = app
        super().__init__(address, _Handler, app.options.max_connections)


class _Handler(JSONHandler):
    """One connection: requests in turn (keep-alive), each answered by the API."""

    server_version = "simgym-serve"
    log = log
    linger_bytes = LINGER_BYTES
    linger_seconds = LINGER_SECONDS
    # allow_nan stays False: a non-finite action would be invalid JSON for every client;
    # the agent clips its actions, so this only guards against a broken export.
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.app.options.idle_timeout)

    def dispatch(self, method: str) -> None:
        self.server.app.serve_request(self, method)

    def send(self, reply: Reply, *, close: bool = False) -> None:
        """Write one reply (JSON, or no body for 204) in one write."""
        self.send_json(reply.status, reply.payload, close=close, headers=reply.headers)


class AgentServer:
    """``simgym serve`` in Python: ``start()`` → URL, ``stop()``.

    Args:
        agent_dir: An agent folder written by ``simgym export``.
        options: Where and how to listen.

    Raises:
        ServeError: Unsafe or impossible options.
        AgentError: Not an agent folder, or onnxruntime missing.
    """

    def __init__(self, agent_dir: str | Path, options: ServeOptions | None = None) -> None:
        from gymclient.agent import load_agent

        self.options = options or ServeOptions()
        self.options.validate()
        agent = load_agent(agent_dir)
        manifest = agent.manifest
        concept = self.options.concept or manifest.get("concept") or manifest.get("name")
        self.api = PredictionAPI(agent, str(concept or DEFAULT_CONCEPT))
        self._http: _HTTPServer | None = None
        self.url = ""

    def start(self) -> str:
        """Listen and serve in a thread; returns the base URL.

        Raises:
            ServeError: The address cannot be bound.
        """
        host = self.options.host.strip("[]")
        try:
            self._http = _HTTPServer((host, self.options.port), self)
        except OSError as exc:
            raise ServeError(cannot_listen("--host/--port", host, self.options.port, exc)) from None
        port = self._http.serve_in_thread("simgym-serve", 0.1)
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
        if not is_loopback(host):
            log.warning(
                "serving beyond loopback on %s:%d over plain HTTP: %s",
                host,
                port,
                "the token travels in clear text (put a TLS proxy in front on an untrusted network)"
                if self.options.token
                else "no token (--insecure): anyone who reaches the port can query the agent",
            )
        return self.url

    def stop(self) -> None:
        """Stop listening (replies in flight finish on their threads)."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def serve_request(self, req: _Handler, method: str) -> None:
        """Answer one HTTP request: the token, the body's size, then the API."""
        if not req.authorized(
            self.options.token,
            "no Authorization header: send the server's --token",
            "wrong token in the Authorization header",
        ):
            return
        try:
            size = req.body_size(self.options.max_body_bytes)
            body = req.rfile.read(size) if size else None
        except Refusal as exc:
            req.send(problem(exc.status, exc.detail), close=True)
            self.api.stats.count(False)
            return
        try:
            reply = self.api.handle(method, req.path, body)
        except Exception as exc:  # a bug must not leave the client without an answer
            log.exception("simgym serve: %s %s failed", method, req.path[:80])
            reply = problem(500, f"the server failed: {type(exc).__name__}")
        req.send(reply)


def serve_until_stopped(
    server: AgentServer, on_ready: Callable[[str], None], stop: threading.Event
) -> None:
    """Start ``server``, call ``on_ready(url)``, serve until ``stop`` is set, then stop."""
    url = server.start()
    try:
        on_ready(url)
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()


def describe(server: AgentServer) -> str:
    """One line for the terminal: what is served where."""
    api = server.api
    agent = api.agent
    return (
        f"serving {agent.folder} ({', '.join(api.states)} -> {', '.join(agent.action_names)}) "
        f"at {server.url}: POST /v1/prediction, POST /v2/clients/{{clientId}}/predict "
        f"(concept {api.concept!r}), GET /v1/status"
    )


__all__ = [
    "AgentServer",
    "BadRequest",
    "PredictionAPI",
    "Reply",
    "ServeError",
    "ServeOptions",
    "describe",
    "is_loopback",
    "problem",
    "serve_until_stopped",
]
