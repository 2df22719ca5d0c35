"""A channel to one sim server, with deadlines, connect retries and typed errors.

``Connection`` wraps a gRPC channel; ``RemoteSession`` is one session on it with
its names and sequence numbers. Every call carries a deadline, so a dead or hung
server raises ``SimTimeout``/``ServerUnavailable`` instead of hanging. Only the
first contact waits, and only while the server is unreachable: ``open`` waits for the
channel to be connected (gRPC reconnects with backoff) within ``connect_timeout``, and
only then sends ``Open``, so its deadline never runs out on a connection still being set
up. Nothing else is retried
blindly: a step may already have been applied, and an ``Open`` that timed out may
still be building a sim (a retry would leave a second session holding a slot).
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gymclient.errors import (
    RemoteError,
    ServerUnavailable,
    SimgymError,
    SimTimeout,
    from_status,
)
from simgym import PROTOCOL, __version__
from simgym.v1 import simulator_pb2 as pb
from simgym.v1 import simulator_pb2_grpc as pb_grpc

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach a server and how long to wait for it.

    Attributes:
        timeout: Deadline of a step call or packed round, in seconds.
        reset_timeout: Deadline of reset/open/close calls (resets may be slow), and of
            a packed round that resets any session.
        connect_timeout: How long the first contact waits for a connection to an
            unreachable server (it may still be starting). ``Open`` is sent once
            connected, and may then take ``reset_timeout`` (a sim constructor can be slow).
        token: Bearer token sent as ``authorization`` metadata.
        tls: Use TLS. ``tls_ca`` is the PEM file of the CA to trust (default:
            the system roots).
        tls_server_name: Override the name checked against the certificate.
        max_message_bytes: Largest message sent or received.
        lease_seconds: Idle lease asked for each session (0: server default).
        packed_socket: Step packed lanes over the server's packed socket when it offers one
            (a unix socket without TLS; ``gymclient.packedsocket``); False keeps them on gRPC.
    """

    timeout: float = 10.0
    reset_timeout: float = 30.0
    connect_timeout: float = 30.0
    token: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_server_name: str | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    lease_seconds: float = 0.0
    packed_socket: bool = True


def normalize_address(address: str) -> str:
    """Accept ``host:port``, ``unix:/path``, ``unix:///path`` or a socket path.

    Raises:
        SimgymError: A TCP address whose port is not a number in 1-65535 (gRPC would
            wrap 70000 to another port, and wait for ``abc`` until the connect timeout).
    """
    address = address.strip()
    if address.startswith(("unix:", "unix-abstract:")):
        return address
    if address.startswith(("/", "./", "../")) or address.endswith(".sock"):
        return f"unix:{Path(address).resolve()}"
    check_port(address)
    return address


def check_port(address: str) -> None:
    """Refuse a TCP address whose port is not a number in 1-65535.

    ``host:port``, ``[v6]:port`` and the ``dns:``/``ipv4:``/``ipv6:`` forms are checked; unix
    sockets and an address without a port pass.

    Raises:
        SimgymError: Naming the address and its port.
    """
    address = address.strip()
    if address.startswith(("unix:", "unix-abstract:", "/", "./", "../")) or address.endswith(
        ".sock"
    ):
        return
    rest = re.sub(r"^(dns:(//[^/]*/)?|ipv4:|ipv6:)", "", address)
    if rest.startswith("["):  # [::1]:50051
        port = rest.partition("]")[2].removeprefix(":") if "]:" in rest else None
    elif rest.count(":") == 1:  # host:port (more colons: a bare IPv6 address, no port)
        port = rest.rpartition(":")[2]
    else:
        port = None
    if port is None:
        return
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        shown = address if len(address) <= 80 else address[:80] + "..."
        what = f"{port[:20]!r} is not a number in" if not port.isdigit() else f"{port} is outside"
        raise SimgymError(f"sim address {shown!r}: port {what} 1-65535")


class Connection:
    """A gRPC channel to one simulator server."""

    def __init__(self, address: str, options: ConnectOptions | None = None) -> None:
        self.address = normalize_address(address)
        self.options = options or ConnectOptions()
        o = self.options
        channel_options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", o.max_message_bytes),
            ("grpc.max_receive_message_length", o.max_message_bytes),
            # Notice a vanished server on an idle connection instead of hanging.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            # Reconnect quickly to a sidecar that is (re)starting.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
            # Our own seq-based protocol decides what is safe to retry.
            ("grpc.enable_retries", 0),
        ]
        if o.tls_server_name:
            channel_options.append(("grpc.ssl_target_name_override", o.tls_server_name))
        if o.tls:
            root = Path(o.tls_ca).read_bytes() if o.tls_ca else None
            credentials = grpc.ssl_channel_credentials(root_certificates=root)
            self._channel = grpc.secure_channel(self.address, credentials, options=channel_options)
        else:
            self._channel = grpc.insecure_channel(self.address, options=channel_options)
        self._stub = pb_grpc.SimulatorStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] | None = (
            (("authorization", f"Bearer {o.token}"),) if o.token else None
        )
        # The transport of packed streams (``gymclient.stream``), chosen at the first ``open``:
        # the packed socket when the server offers one and ``options.packed_socket`` allows
        # it; ``open_stream`` turns it off for good when the socket proves unreachable.
        self.packed_socket: bool | None = None

    # ------------------------------------------------------------------ plumbing

    def _call(self, name: str, request: Any, timeout: float) -> Any:
        method = getattr(self._stub, name)
        try:
            return method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_status(
                exc.code(), exc.details() or "", address=self.address, call=name
            ) from None

    def open(
        self,
        action_names: Sequence[str] = (),
        client: str = "",
        integer_actions: Sequence[str] = (),
    ) -> RemoteSession:
        """Open a session, retrying while the server is unreachable.

        ``integer_actions``: the spec's discrete actions with integer values (the server
        hands them to the sim as ints; ``gymclient.codec.declared_integer_actions``).

        Raises:
            ServerUnavailable: Still unreachable after ``connect_timeout``.
            SimTimeout: The server took longer than ``reset_timeout`` (a slow sim
                constructor, an unresponsive host); not retried, since Open is not
                idempotent.
            RemoteError: Any other refusal (bad token, session limit, ...), at once.
        """
        o = self.options
        request = pb.OpenRequest(
            protocol=PROTOCOL,
            client=client or f"gymclient {__version__} pid {os.getpid()}",
            action_names=list(action_names),
            lease_seconds=o.lease_seconds,
            integer_actions=list(integer_actions),
        )
        deadline = time.monotonic() + o.connect_timeout
        delay = 0.05
        while True:
            # Connected first: an Open sent on a connection still being set up could spend
            # its deadline there and end in DEADLINE_EXCEEDED, indistinguishable from a
            # slow constructor, and it is not retried.
            self._wait_ready(deadline)
            try:
                # The whole reset_timeout for the call: a short one would time out a slow
                # constructor and leave its session behind on the server.
                reply = self._call("Open", request, o.reset_timeout)
                if self.packed_socket is None:
                    self.packed_socket = o.packed_socket and reply.packed_socket
                return RemoteSession(self, reply)
            except ServerUnavailable as exc:
                # The connection dropped before the request went out (it never reached
                # the server): safe to send again once connected.
                if time.monotonic() + delay >= deadline:
                    raise self._unreachable(str(exc)) from None
            except SimTimeout as exc:
                raise SimTimeout(
                    f"{exc} (Open is not retried: the server may still be building this "
                    "session's sim; raise sim.reset_timeout for a slow constructor)",
                    code=exc.code,
                    address=self.address,
                ) from None
            # Jittered exponential backoff: many workers starting at once must not
            # hammer a server that is still starting in lock-step.
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    def _wait_ready(self, deadline: float) -> None:
        """Wait until the channel is connected, at the latest until ``deadline``.

        Waits with a health check marked ``wait_for_ready``: gRPC holds it until the
        connection is up (reconnecting with backoff meanwhile), and unlike an Open it is
        harmless to lose to a deadline. (``grpc.channel_ready_future`` would do the same
        with a polling thread that outlives it and complains once the channel is closed.)

        Raises:
            ServerUnavailable: Not connected by then, naming the address.
        """
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            stub.Check(
                health_pb2.HealthCheckRequest(),
                timeout=max(0.0, deadline - time.monotonic()),
                metadata=self._metadata,
                wait_for_ready=True,
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                raise self._unreachable(self._why_unreachable()) from None
            # Any other answer (e.g. a server without health checks) came over a connection.

    def _why_unreachable(self) -> str:
        """The transport's reason for the failed connection (refused, TLS handshake, ...).

        Asked with a health check that fails at once on a channel in failure, with the
        transport's own message.
        """
        try:
            health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1.0, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            return exc.details() or exc.code().name
        return "no connection"

    def _unreachable(self, why: str) -> ServerUnavailable:
        return ServerUnavailable(
            f"cannot reach sim server at {self.address} within "
            f"{self.options.connect_timeout:g} s: {why}. Is simserver running there?",
            code=grpc.StatusCode.UNAVAILABLE,
            address=self.address,
        )

    def close(self) -> None:
        """Close the channel (sessions on it should be closed first)."""
        self._channel.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_struct(config: Mapping[str, Any]) -> struct_pb2.Struct:
    """Config dict → ``google.protobuf.Struct`` (numpy scalars become Python numbers)."""
    struct = struct_pb2.Struct()
    clean = {k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()}
    struct.update(clean)
    return struct


@dataclass
class RemoteSession:
    """One session on a server: its handshake data and a sequence counter."""

    connection: Connection
    info: pb.OpenReply
    seq: int = 0
    state_names: list[str] = field(init=False)
    action_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.state_names = [v.name for v in self.info.states]
        self.action_names = [v.name for v in self.info.actions]

    @property
    def id(self) -> str:
        """The server's session id."""
        return self.info.session_id

    def step_request(self, action: Sequence[float]) -> pb.StepRequest:
        """Build the next step request (advances the sequence number)."""
        self.seq += 1
        return pb.StepRequest(session_id=self.id, action=action, seq=self.seq)

    def reset(self, config: Mapping[str, Any], seed: int | None = None) -> pb.Transition:
        """Start an episode (advances the sequence number)."""
        self.seq += 1
        request = pb.ResetRequest(session_id=self.id, config=to_struct(config), seq=self.seq)
        if seed is not None:
            request.seed = int(seed)
        conn = self.connection
        return conn._call("Reset", request, conn.options.reset_timeout).transition

    def step(self, action: Sequence[float]) -> pb.Transition:
        """Advance one step."""
        conn = self.connection
        return conn._call("Step", self.step_request(action), conn.options.timeout).transition

    def states(self) -> list[float]:
        """Current states, in ``state_names`` order."""
        conn = self.connection
        return list(
            conn._call("States", pb.SessionRef(session_id=self.id), conn.options.timeout).states
        )

    def termination(self) -> tuple[bool, bool]:
        """Current (terminated, truncated)."""
        conn = self.connection
        reply = conn._call("Termination", pb.SessionRef(session_id=self.id), conn.options.timeout)
        return reply.terminated, reply.truncated

    def close(self) -> None:
        """Close the session on the server; errors are ignored (it may be gone already)."""
        conn = self.connection
        try:
            conn._call(
                "Close", pb.SessionRef(session_id=self.id), min(5.0, conn.options.reset_timeout)
            )
        except RemoteError:
            pass
