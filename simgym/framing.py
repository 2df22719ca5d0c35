"""Frames of the packed socket, shared by its server and client.

Each frame, both ways, is a 4-byte little-endian length N, then N bytes: one ``PackedSocketKind``
byte and the serialized message of that kind (``proto/simgym/v1/simulator.proto``).
"""

from __future__ import annotations

import socket
import struct
import time

import grpc

# The packed socket of a server's gRPC unix socket PATH is PATH + SUFFIX.
SUFFIX = ".packed"
LENGTH = struct.Struct("<I")
# A reader's buffer to begin with: most frames fit, so most are one recv.
INITIAL_BUFFER = 64 * 1024
# A buffer grown past this for one frame is dropped after it; smaller ones are kept.
KEEP_BUFFER = 1024 * 1024


class FrameError(Exception):
    """A frame that breaks the framing; ``code`` is the gRPC status it earns."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def frame(kind: int, payload: bytes) -> bytes:
    """One frame: length, kind byte, payload."""
    return LENGTH.pack(len(payload) + 1) + bytes((kind,)) + payload


class FrameReader:
    """Reads frames from a stream socket, with one ``recv`` for most of them.

    Memory follows the bytes that arrived, not the length a frame announces: the buffer
    grows (at most doubling) only once full, so a peer that announces a large frame and
    sends little costs little.

    Args:
        sock: The connected socket.
        max_bytes: Largest frame accepted; a longer one raises ``FrameError``
            (RESOURCE_EXHAUSTED) before its body is read.
    """

    def __init__(self, sock: socket.socket, max_bytes: int) -> None:
        self.sock = sock
        self.max_bytes = max_bytes
        self._buf = bytearray(INITIAL_BUFFER)
        self._start = 0  # unread bytes are _buf[_start:_end]
        self._end = 0
        self._started: float | None = None  # when the frame being read began to arrive

    @property
    def partial(self) -> bool:
        """True when part of a frame has arrived and the rest has not."""
        return self._end > self._start

    def read(
        self, deadline: float | None = None, *, frame_timeout: float | None = None
    ) -> tuple[int, bytes] | None:
        """The next frame as (kind, payload), or None when the peer closed between frames.

        Args:
            deadline: ``time.monotonic()`` by which the frame must be whole; None blocks.
            frame_timeout: Once a frame's first byte is here, seconds its other bytes may
                take; replaces ``deadline`` from then on (a peer may idle between frames
                until ``deadline``, but a frame it has begun must come quickly).

        Raises:
            FrameError: An oversized, empty or truncated frame.
            TimeoutError: The deadline passed first (``partial`` tells whether a frame began).
            OSError: The connection failed.
        """
        self._started = time.monotonic() if self.partial else None
        if not self._fill(LENGTH.size, deadline, frame_timeout):
            if self.partial:
                raise FrameError(grpc.StatusCode.INVALID_ARGUMENT, "truncated frame header")
            return None
        (length,) = LENGTH.unpack_from(self._buf, self._start)
        if length > self.max_bytes:
            raise FrameError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"frame of {length} bytes exceeds the limit of {self.max_bytes}",
            )
        if length == 0:
            raise FrameError(grpc.StatusCode.INVALID_ARGUMENT, "empty frame (no kind byte)")
        if not self._fill(LENGTH.size + length, deadline, frame_timeout):
            raise FrameError(grpc.StatusCode.INVALID_ARGUMENT, "truncated frame")
        begin = self._start + LENGTH.size
        kind = self._buf[begin]
        payload = bytes(memoryview(self._buf)[begin + 1 : begin + length])
        self._start = begin + length
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._buf) > KEEP_BUFFER:  # a rare huge frame's buffer is not kept idle
                self._buf = bytearray(INITIAL_BUFFER)
        return kind, payload

    def _fill(self, need: int, deadline: float | None, frame_timeout: float | None) -> bool:
        """Have at least ``need`` unread bytes; False when the peer closed first."""
        if self._end - self._start >= need:
            return True
        if self._start:  # move the unread tail to the front
            tail = self._end - self._start
            self._buf[:tail] = self._buf[self._start : self._end]
            self._start, self._end = 0, tail
        view = memoryview(self._buf)
        try:
            while self._end < need:
                if self._end == len(self._buf):
                    view.release()  # a bytearray with a live view cannot grow
                    self._buf.extend(bytes(min(need, 2 * len(self._buf)) - len(self._buf)))
                    view = memoryview(self._buf)
                limit = deadline
                if frame_timeout is not None and self._started is not None:
                    limit = self._started + frame_timeout
                if limit is not None:
                    remaining = limit - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    self.sock.settimeout(remaining)
                elif self.sock.gettimeout() is not None:
                    self.sock.settimeout(None)
                got = self.sock.recv_into(view[self._end :])
                if got == 0:
                    return False
                if self._started is None:
                    self._started = time.monotonic()
                self._end += got
        finally:
            view.release()
        return True
