"""The packed socket: ``PackedStream``'s messages over a plain unix socket, no HTTP/2.

A message costs a fraction on a plain unix socket of what it costs on a Python gRPC stream
(docs/performance.md), and a lock-step env waits for every message. A server listening on a
unix socket is only reachable from its own machine (or through a shared volume), where
nothing that HTTP/2 adds is needed, so beside its gRPC socket ``PATH`` it also listens on
``PATH.packed`` and runs the same packed engine (``simserver.packed``) for each framed
``PackedRequest``, after the same handshake checks (``simserver.handshake``) as gRPC. The
framing, the HELLO and the status codes are specified in ``proto/simgym/v1/simulator.proto``
(``PackedSocketKind``).

One thread per connection, as gRPC's sync server holds one per stream, and each bounded:
connections are capped; a connection may idle between frames (a client's lane between two
steps) until the session lease, but a frame it has begun must arrive whole within
``FRAME_TIMEOUT``, and a reply must be taken as fast; frames are capped by the server's
message size, and the memory read for one follows the bytes that came, not the length it
announced. A sim that hangs holds only its connection's thread (the session manager's hung
check sees the client leave).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError

from simgym.framing import FrameError, FrameReader, frame
from simgym.status import number_of
from simgym.v1 import simulator_pb2 as pb
from simserver import packed
from simserver.errors import SimServerError, log_throttled
from simserver.handshake import check_protocol, check_token
from simserver.sessions import SessionManager

log = logging.getLogger("simserver.packedsocket")

HELLO = pb.PACKED_SOCKET_KIND_HELLO
REQUEST = pb.PACKED_SOCKET_KIND_REQUEST
REPLY = pb.PACKED_SOCKET_KIND_REPLY
STATUS = pb.PACKED_SOCKET_KIND_STATUS
# How long a new connection may take to send its HELLO (a stuck peer must not hold a thread).
HELLO_TIMEOUT = 10.0
# How long a begun frame may take to arrive whole, and a reply to be taken: a lock-step
# client sends a request in one go and reads its reply at once, so only a stuck or hostile
# peer takes longer.
FRAME_TIMEOUT = 10.0
M = TypeVar("M", pb.PackedSocketHello, pb.PackedRequest)


def status_frame(code: grpc.StatusCode, message: str) -> bytes:
    """A STATUS frame with a gRPC status code."""
    status = pb.PackedSocketStatus(code=number_of(code), message=message)
    return frame(STATUS, status.SerializeToString())


def _peer_alive(sock: socket.socket) -> bool:
    """False once the client has closed its end (what a gRPC stream's ``is_active`` tells).

    Lock-step: while its request runs, a live client sends nothing, so readable means closed.
    Polled first, without waiting: the socket carries a timeout, and a Python socket with
    one waits up to it for data even with MSG_DONTWAIT.
    """
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        if not poller.poll(0):
            return True
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except (OSError, ValueError):  # ValueError: the socket is closed (fileno -1)
        return False


class PackedSocketServer:
    """Serves framed ``PackedRequest``s on ``path`` with the packed engine.

    Args:
        sessions: The sessions the requests run on (the gRPC servicer's).
        path: The socket path (the gRPC socket's path plus ``simgym.framing.SUFFIX``).
        token: Required in HELLO when set.
        max_message_bytes: Largest frame either way.
        max_connections: Connections served at once; more are refused (RESOURCE_EXHAUSTED).
        mode: File mode of the socket (the gRPC socket's, so both admit the same users).
        idle_timeout: Seconds a connection may wait between frames (the session lease:
            its sessions have expired by then).
    """

    def __init__(
        self,
        sessions: SessionManager,
        path: Path,
        *,
        token: str | None,
        max_message_bytes: int,
        max_connections: int,
        mode: int | None = None,
        idle_timeout: float = 300.0,
    ) -> None:
        self.sessions = sessions
        self.path = path
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.max_connections = max_connections
        self.mode = mode
        self.idle_timeout = idle_timeout
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and start accepting (the caller has checked the path is free or stale).

        Raises:
            OSError: The path cannot be bound (too long for a unix socket, no permission).
        """
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            if self.mode is not None:
                os.chmod(self.path, self.mode)
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._thread = threading.Thread(
            target=self._accept_loop, name="simserver-packed-accept", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, end every connection, remove the socket file."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            # Wakes the connection's thread from recv; a thread inside a sim call ends
            # when the call returns.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.path.unlink(missing_ok=True)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed by stop()
            with self._lock:
                full = len(self._conns) >= self.max_connections
                if not full:
                    self._conns.add(conn)
            if full:
                log_throttled(
                    log,
                    logging.WARNING,
                    "refused",
                    "packed socket: connection refused, %d already open",
                    self.max_connections,
                )
                with contextlib.suppress(OSError):
                    conn.sendall(
                        status_frame(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"the server's packed socket serves at most {self.max_connections} "
                            "connections at once",
                        )
                    )
                conn.close()
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name="simserver-packed", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._converse(conn)
        except (FrameError, SimServerError) as exc:  # a gRPC stream would end with its status
            log_throttled(
                log,
                logging.INFO,
                ("closed", exc.code),
                "packed socket: %s; connection closed",
                exc.message,
            )
            with contextlib.suppress(OSError):
                conn.settimeout(FRAME_TIMEOUT)
                conn.sendall(status_frame(exc.code, exc.message))
        except OSError as exc:  # the client went away mid-frame or mid-reply
            log.debug("packed socket: connection lost: %s", exc)
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _hello(self, reader: FrameReader, conn: socket.socket) -> bool:
        try:
            first = reader.read(time.monotonic() + HELLO_TIMEOUT)
        except TimeoutError:
            raise FrameError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no HELLO within {HELLO_TIMEOUT:g} s"
            ) from None
        if first is None:
            return False
        kind, payload = first
        if kind != HELLO:
            raise FrameError(
                grpc.StatusCode.INVALID_ARGUMENT, f"the first frame must be HELLO, not kind {kind}"
            )
        hello = _parse(pb.PackedSocketHello, payload, "HELLO")
        check_token(self.token, hello.token)
        check_protocol(hello.protocol)
        conn.settimeout(FRAME_TIMEOUT)
        conn.sendall(frame(STATUS, pb.PackedSocketStatus(code=0).SerializeToString()))
        return True

    def _converse(self, conn: socket.socket) -> None:
        reader = FrameReader(conn, self.max_message_bytes)
        if not self._hello(reader, conn):
            return
        sessions = self.sessions
        limit = self.max_message_bytes

        # No per-message deadline travels on the socket (as on a gRPC stream): the hung
        # check asks whether the client is still there.
        deadline = (None, functools.partial(_peer_alive, conn))
        while True:
            got = self._next_frame(reader)
            if got is None:
                return
            kind, payload = got
            if kind != REQUEST:
                raise FrameError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"expected a REQUEST frame, got kind {kind}"
                )
            request = _parse(pb.PackedRequest, payload, "REQUEST")
            body = packed.run(sessions, request, deadline).SerializeToString()
            if len(body) + 1 > limit:
                raise FrameError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"reply of {len(body) + 1} bytes exceeds the limit of {limit}",
                )
            conn.settimeout(FRAME_TIMEOUT)  # a peer that stops reading frees the thread
            conn.sendall(frame(REPLY, body))

    def _next_frame(self, reader: FrameReader) -> tuple[int, bytes] | None:
        """The next request's frame: an idle peer may wait the lease, a begun frame not."""
        try:
            return reader.read(time.monotonic() + self.idle_timeout, frame_timeout=FRAME_TIMEOUT)
        except TimeoutError:
            if reader.partial:
                raise FrameError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"a frame began but did not arrive whole within {FRAME_TIMEOUT:g} s",
                ) from None
            raise FrameError(
                grpc.StatusCode.CANCELLED,
                f"no request for {self.idle_timeout:g} s (the session lease): connection closed",
            ) from None


def _parse(cls: type[M], payload: bytes, what: str) -> M:
    msg = cls()
    try:
        msg.ParseFromString(payload)
    except DecodeError as exc:
        raise FrameError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{what} frame is not a valid message: {exc}"
        ) from None
    return msg
