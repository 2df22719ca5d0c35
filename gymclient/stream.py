"""Lock-step packed streams to one server: one ``PackedRequest`` out, one ``PackedReply`` back.

Two transports carry the same messages behind one interface (``Stream``): gRPC's
``PackedStream`` call (any address) and the server's packed socket (``gymclient.packedsocket``:
a unix socket on the same machine, without HTTP/2). ``open_stream`` picks the transport a
``Connection`` chose: the packed socket when the server offers one and the options allow it,
until it proves unreachable from here or full; gRPC otherwise.

A gRPC stream has a deadline for the whole call only, so ``PackedStream`` keeps one per
message: a watchdog thread cancels the call when a reply is late, and the caller gets
``SimTimeout`` just as from a unary call.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Protocol

import grpc

from gymclient.connection import Connection
from gymclient.errors import RemoteError, from_status
from gymclient.packedsocket import PackedSocketUnavailable, SocketPackedStream
from simgym.v1 import simulator_pb2 as pb

log = logging.getLogger("gymclient.stream")


class Stream(Protocol):
    """A lock-step conversation: each request sent is answered by one reply, in time.

    A failed ``receive`` (late reply, broken connection, refused request) raises a
    ``RemoteError`` and ends the stream (``alive`` turns False): open a new one.
    """

    alive: bool

    def send(
        self, request: pb.PackedRequest, timeout: float | None = None, margin: float = 0.0
    ) -> None:
        """Send one request; its reply is due within ``timeout`` (default: the stream's).

        ``margin``: seconds more the reply may take (a server that stops late sims answers
        just after the request's slot timeout), said in a late reply's error.
        """

    def receive(self) -> pb.PackedReply:
        """The reply to the request sent last."""

    def close(self) -> None:
        """End the conversation (idempotent); the server's sessions stay open."""


def open_stream(connection: Connection) -> Stream:
    """A new stream to ``connection``'s server, over the transport the connection chose.

    A packed socket that cannot be reached from here (e.g. a container that sees the gRPC
    socket through a volume but not its sibling) or that serves as many connections as it
    takes turns the connection to gRPC for good.
    """
    options = connection.options
    if connection.packed_socket:
        try:
            return SocketPackedStream(connection, options.timeout, options.reset_timeout)
        except PackedSocketUnavailable as exc:
            log.info("packed socket of %s not reachable (%s): using gRPC", connection.address, exc)
            connection.packed_socket = False
    return PackedStream(connection, options.timeout, options.reset_timeout)


class PackedStream:
    """A lock-step gRPC ``PackedStream`` call (a ``Stream``).

    Args:
        connection: The server's connection (channel, token).
        timeout: Seconds a reply may take by default; later, the call is cancelled and
            ``receive`` raises ``SimTimeout``. The call is then over: open a new stream.
        reset_timeout: The other allowance ``send`` will be given (for rounds with resets),
            so that the watchdog never sleeps past the shorter of the two.
    """

    def __init__(
        self, connection: Connection, timeout: float, reset_timeout: float | None = None
    ) -> None:
        self.connection = connection
        self.timeout = timeout
        # The watchdog's idle sleep: no allowance a request gets is shorter than this.
        self._idle = min(timeout, reset_timeout) if reset_timeout is not None else timeout
        self._budget = timeout  # the allowance of the reply awaited
        self._late = _late(timeout)  # what a late reply's error says
        self.alive = True
        self._requests: queue.SimpleQueue[pb.PackedRequest | None] = queue.SimpleQueue()
        # No deadline on the call itself: it lives as long as the env; messages have theirs.
        # (The call object is both the reply iterator and the handle that cancels it.)
        self._call: Any = connection._stub.PackedStream(
            iter(self._requests.get, None), metadata=connection._metadata
        )
        self._deadline = 0.0  # monotonic deadline of the reply awaited; 0: none awaited
        self._expired = False
        self._closed = threading.Event()
        self._watchdog = threading.Thread(
            target=self._watch, name="gymclient-stream-deadline", daemon=True
        )
        self._watchdog.start()

    def send(
        self, request: pb.PackedRequest, timeout: float | None = None, margin: float = 0.0
    ) -> None:
        """Send one request; its reply is due within ``timeout`` (+ ``margin``, see ``Stream``)."""
        budget = (self.timeout if timeout is None else timeout) + margin
        self._late = _late(budget - margin, margin)
        if budget < self._idle:  # keep the watchdog's idle sleep no longer than any deadline
            self._idle = budget
        self._budget = budget
        self._deadline = time.monotonic() + budget
        self._requests.put(request)

    def receive(self) -> pb.PackedReply:
        """The reply to the request sent last.

        Raises:
            RemoteError: The call failed (``SimTimeout`` when the reply was late); the stream
                is then closed.
        """
        try:
            reply = next(self._call)
        except grpc.RpcError as exc:
            self.close()
            if self._expired:
                code, details = grpc.StatusCode.DEADLINE_EXCEEDED, self._late
            else:
                code, details = exc.code(), exc.details() or ""
            raise from_status(
                code, details, address=self.connection.address, call="PackedStream"
            ) from None
        except StopIteration:
            self.close()
            raise RemoteError(
                f"PackedStream on {self.connection.address}: the server ended the stream",
                code=grpc.StatusCode.UNKNOWN,
                address=self.connection.address,
            ) from None
        self._deadline = 0.0
        return reply

    def _watch(self) -> None:
        # Sleeps until the awaited reply's deadline (or the shortest allowance when none is
        # awaited: a new request's deadline is never earlier than that), so an idle or
        # healthy stream costs one wake-up per `timeout` seconds.
        while self.alive:
            deadline = self._deadline
            now = time.monotonic()
            if deadline and now >= deadline and self._deadline == deadline:
                self._expired = True
                self._call.cancel()
                return
            if self._closed.wait(deadline - now if deadline else self._idle):
                return

    def close(self) -> None:
        """End the call (idempotent); the server's sessions are not closed."""
        if not self.alive:
            return
        self.alive = False
        self._closed.set()
        # The end marker releases gRPC's request-consuming thread, cancel the call itself.
        self._requests.put(None)
        self._call.cancel()


def _late(timeout: float, margin: float = 0.0) -> str:
    """The details of a reply later than ``timeout`` plus ``margin`` seconds."""
    extra = f" and a {margin:.3g} s margin" if margin else ""
    return f"no reply within {timeout:g} s{extra}"
