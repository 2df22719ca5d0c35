"""Bounds on gRPC request streams: how many hold a server thread, and how long one may idle.

gRPC's sync server runs every call on a thread of its pool for the call's whole life, and a
request stream (``PackedStream``, reflection) that sends nothing keeps its thread while it
waits. Unbounded, a few idle streams take the whole pool and health and ``Open`` time out.
``StreamGuard`` admits at most ``max_streams`` request streams at once (RESOURCE_EXHAUSTED
beyond, so the rest of the pool stays for unary calls whatever streams do), and ends a stream
that sends no first message within ``first_message_timeout`` s or idles longer than
``idle_timeout`` s between messages (its sessions have expired by then anyway when it is the
lease). A stream busy in a sim call is never ended here: the session manager's hung check
looks after those.

Response-only streams (health's ``Watch``) are left alone: grpc_health serves them without
holding a thread.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from simserver.errors import log_throttled

log = logging.getLogger("simserver.streams")

# A client opens a stream to send on it: gymclient sends its first request at once.
FIRST_MESSAGE_TIMEOUT = 10.0
IDLE_CODE = grpc.StatusCode.CANCELLED


@dataclass
class _Watch:
    """One admitted stream, as the watchdog sees it."""

    context: grpc.ServicerContext
    # monotonic time since which the handler waits for a message; None while it works.
    waiting_since: float | None = field(default_factory=time.monotonic)
    received: bool = False
    ended: bool = False


class _Watched:
    """A stream's request iterator that tells its ``_Watch`` when the handler waits on it."""

    def __init__(self, requests: Iterator[Any], watch: _Watch) -> None:
        self._requests = requests
        self._watch = watch

    def __iter__(self) -> _Watched:
        return self

    def __next__(self) -> Any:
        watch = self._watch
        if watch.waiting_since is None:
            watch.waiting_since = time.monotonic()
        request = next(self._requests)
        watch.received = True
        watch.waiting_since = None
        return request


def end_call(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    """End a call from outside its handler's thread, with ``code`` and ``message`` if possible.

    ``ServicerContext.cancel`` gives the client a bare CANCELLED; the core call under it can
    cancel with a status and a message, which tells the client why. It is not public API, so
    without it the bare cancel still ends the call.
    """
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    if call is not None:
        with contextlib.suppress(Exception):
            call.cancel(code.value[0], message)
            return
    context.cancel()


class StreamGuard(grpc.ServerInterceptor):
    """Caps concurrent request streams and ends idle ones (see the module's docstring).

    Args:
        max_streams: Request streams served at once; more get RESOURCE_EXHAUSTED.
        idle_timeout: Seconds a stream may wait between two messages.
        first_message_timeout: Seconds a new stream may wait for its first message.
    """

    def __init__(
        self,
        max_streams: int,
        idle_timeout: float,
        first_message_timeout: float = FIRST_MESSAGE_TIMEOUT,
    ) -> None:
        self.max_streams = max_streams
        self.idle_timeout = idle_timeout
        self.first_message_timeout = first_message_timeout
        self._live: dict[int, _Watch] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def live(self) -> int:
        """Request streams admitted and not yet ended."""
        return len(self._live)

    def start(self) -> None:
        """Start the watchdog thread that ends idle streams."""
        self._thread = threading.Thread(
            target=self._watch_loop, name="simserver-streams", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the watchdog (streams still live end with the server)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Wrap request-streaming handlers; pass the others on untouched."""
        handler = continuation(handler_call_details)
        if handler is None or not handler.request_streaming:
            return handler
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._guard_stream(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_unary_rpc_method_handler(
            self._guard_unary(handler.stream_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _guard_stream(self, behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def guarded(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            key = self._admit(context)
            try:
                yield from behavior(_Watched(requests, self._live[key]), context)
            finally:
                self._release(key)

        return guarded

    def _guard_unary(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            key = self._admit(context)
            try:
                return behavior(_Watched(requests, self._live[key]), context)
            finally:
                self._release(key)

        return guarded

    def _admit(self, context: grpc.ServicerContext) -> int:
        """Register a stream, or end it with RESOURCE_EXHAUSTED when all slots are taken."""
        with self._lock:
            if len(self._live) < self.max_streams:
                key = next(self._ids)
                self._live[key] = _Watch(context)
                return key
        log_throttled(
            log,
            logging.WARNING,
            "stream refused",
            "stream refused: %d streams already open",
            self.max_streams,
        )
        context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the server serves at most {self.max_streams} streams at once "
            "(simserver --max-streams); close idle ones or retry later",
        )
        raise AssertionError("unreachable: abort raises")

    def _release(self, key: int) -> None:
        with self._lock:
            self._live.pop(key, None)

    def _watch_loop(self) -> None:
        period = max(0.05, min(1.0, self.first_message_timeout / 4, self.idle_timeout / 4))
        while not self._stop.wait(period):
            self.end_idle(time.monotonic())

    def end_idle(self, now: float) -> int:
        """End the streams that have waited too long for a message; how many were ended."""
        with self._lock:
            watches = list(self._live.values())
        ended = 0
        for watch in watches:
            since = watch.waiting_since
            if since is None or watch.ended:
                continue
            if watch.received:
                limit, what = self.idle_timeout, "no message"
            else:
                limit, what = self.first_message_timeout, "no first message"
            if now - since <= limit:
                continue
            watch.ended = True
            ended += 1
            message = (
                f"stream ended by the server: {what} for {limit:g} s (streams idle longer "
                "than the session lease, or silent after opening, free their thread)"
            )
            log_throttled(log, logging.INFO, f"stream idle: {what}", "%s", message)
            end_call(watch.context, IDLE_CODE, message)
        return ended
