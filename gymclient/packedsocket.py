"""The client of a server's packed socket: ``PackedStream`` without HTTP/2, on one machine.

A server that listens on a unix socket ``PATH`` and says ``packed_socket`` in its ``OpenReply``
also takes packed requests on ``PATH.packed``, framed as ``proto/simgym/v1/simulator.proto``
specifies (``PackedSocketKind``). ``SocketPackedStream`` is a ``gymclient.stream.Stream`` with
the gRPC stream's error semantics (a late reply raises ``SimTimeout`` and ends the stream; a
whole-request failure raises the status the server sends; a vanished server
``ServerUnavailable``) at a fraction of its cost per message. ``gymclient.stream.open_stream``
picks it when it can and the gRPC stream otherwise (a TCP address, TLS, a server that does
not offer it, a path this client cannot reach).
"""

from __future__ import annotations

import contextlib
import socket
import time

import grpc
from google.protobuf.message import DecodeError

from gymclient.connection import Connection
from gymclient.errors import RemoteError, from_status
from simgym import PROTOCOL
from simgym.framing import SUFFIX, FrameError, FrameReader, frame
from simgym.status import code_of, number_of
from simgym.v1 import simulator_pb2 as pb


class PackedSocketUnavailable(Exception):
    """The packed socket cannot be reached here: use the gRPC stream instead."""


def packed_socket_path(connection: Connection) -> str | None:
    """Where ``connection``'s server would serve its packed socket, or None (not unix, TLS)."""
    address = connection.address
    if connection.options.tls or not address.startswith("unix:"):
        return None
    path = address[len("unix:") :]
    if path.startswith("//"):  # unix:///abs/path
        path = path[2:]
    return path + SUFFIX


class SocketPackedStream:
    """A lock-step conversation on a packed socket (see the module docstring).

    Args:
        connection: The server's connection (address, token, message size).
        timeout: Seconds a reply may take by default (``send`` may give another).
        reset_timeout: Seconds the connection and HELLO may take.

    Raises:
        PackedSocketUnavailable: Nothing listens at the path (as seen from here), or the
            server serves as many packed connections as it takes.
        RemoteError: The server refused the HELLO (token, protocol).
    """

    def __init__(
        self, connection: Connection, timeout: float, reset_timeout: float | None = None
    ) -> None:
        self.connection = connection
        self.timeout = timeout
        self._budget = timeout
        self._late = f"no reply within {timeout:g} s"  # what a late reply's error says
        self.alive = False
        self._max = connection.options.max_message_bytes
        path = packed_socket_path(connection)
        if path is None:
            raise PackedSocketUnavailable("not a unix socket without TLS")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(reset_timeout or timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise PackedSocketUnavailable(f"{path}: {exc}") from None
        self._sock = sock
        self._reader = FrameReader(sock, self._max)
        self.alive = True
        hello = pb.PackedSocketHello(protocol=PROTOCOL, token=connection.options.token or "")
        self._budget = reset_timeout or timeout
        self._late = f"no reply within {self._budget:g} s"
        try:
            sock.sendall(frame(pb.PACKED_SOCKET_KIND_HELLO, hello.SerializeToString()))
        except OSError:
            # A server with all its connections taken answers at once and closes, maybe
            # before our HELLO arrives (EPIPE): its STATUS is still there to read below.
            pass
        kind, payload = self._read("HELLO")
        if kind != pb.PACKED_SOCKET_KIND_STATUS:
            self.close()
            raise self._error(grpc.StatusCode.INTERNAL, f"HELLO answered by frame kind {kind}")
        status = self._status(payload)
        if status.code == number_of(grpc.StatusCode.RESOURCE_EXHAUSTED):
            # All its connections are taken (e.g. by hung calls): gRPC has its own limits.
            self.close()
            raise PackedSocketUnavailable(status.message)
        if status.code != 0:
            self.close()
            raise self._error(code_of(status.code), status.message)
        self._budget = timeout

    # ------------------------------------------------------------------ the Stream interface

    def send(
        self, request: pb.PackedRequest, timeout: float | None = None, margin: float = 0.0
    ) -> None:
        """Send one request; its reply is due within ``timeout`` (+ ``margin``: see ``Stream``)."""
        due = self.timeout if timeout is None else timeout
        self._budget = due + margin
        self._late = f"no reply within {due:g} s" + (
            f" and a {margin:.3g} s margin" if margin else ""
        )
        self._write(pb.PACKED_SOCKET_KIND_REQUEST, request.SerializeToString())

    def receive(self) -> pb.PackedReply:
        """The reply to the request sent last.

        Raises:
            RemoteError: The request or the connection failed (``SimTimeout`` when the reply
                was late); the stream is then closed.
        """
        kind, payload = self._read("PackedStream")
        if kind == pb.PACKED_SOCKET_KIND_REPLY:
            reply = pb.PackedReply()
            try:
                reply.ParseFromString(payload)
            except DecodeError as exc:
                self.close()
                raise self._error(grpc.StatusCode.INTERNAL, f"malformed reply: {exc}") from None
            return reply
        self.close()
        if kind == pb.PACKED_SOCKET_KIND_STATUS:
            status = self._status(payload)
            raise self._error(code_of(status.code), status.message)
        raise self._error(grpc.StatusCode.INTERNAL, f"unexpected frame kind {kind}")

    def close(self) -> None:
        """End the conversation (idempotent); the server's sessions stay open."""
        if not self.alive:
            return
        self.alive = False
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    # ------------------------------------------------------------------ framing

    def _error(self, code: grpc.StatusCode, details: str) -> RemoteError:
        return from_status(code, details, address=self.connection.address, call="PackedStream")

    def _write(self, kind: int, body: bytes) -> None:
        if not self.alive:
            raise self._error(grpc.StatusCode.UNAVAILABLE, "the packed socket is closed")
        if len(body) + 1 > self._max:
            raise self._error(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request of {len(body) + 1} bytes exceeds the limit of {self._max}",
            )
        try:
            # The reader left the timeout of the last reply's remaining budget: give the
            # write the whole budget (a large request may not fit the socket's buffer at once).
            self._sock.settimeout(self._budget)
            self._sock.sendall(frame(kind, body))
        except OSError as exc:
            self.close()
            raise self._error(
                grpc.StatusCode.UNAVAILABLE, f"the packed socket broke ({exc})"
            ) from None

    def _read(self, call: str) -> tuple[int, bytes]:
        """One frame, within the current budget; closes the stream and raises on failure."""
        try:
            got = self._reader.read(time.monotonic() + self._budget)
        except TimeoutError:
            self.close()
            raise self._error(grpc.StatusCode.DEADLINE_EXCEEDED, self._late) from None
        except FrameError as exc:
            self.close()
            # A truncated frame is a server that died mid-reply; a bad length is its fault.
            code = (
                exc.code
                if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                else grpc.StatusCode.UNAVAILABLE
            )
            raise self._error(code, f"{call}: {exc.message}") from None
        except OSError as exc:
            self.close()
            raise self._error(grpc.StatusCode.UNAVAILABLE, f"{call}: {exc}") from None
        if got is None:
            self.close()
            raise self._error(grpc.StatusCode.UNAVAILABLE, "the server closed the packed socket")
        return got

    @staticmethod
    def _status(payload: bytes) -> pb.PackedSocketStatus:
        status = pb.PackedSocketStatus()
        try:
            status.ParseFromString(payload)
        except DecodeError:
            status.code, status.message = number_of(grpc.StatusCode.INTERNAL), "malformed status"
        return status
