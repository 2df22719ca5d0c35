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

    Args:
        sock: The connected socket.
        max_bytes: Largest frame accepted; a longer one raises ``FrameError``
            (RESOURCE_EXHAUSTED) before its body is read.
    """

    def __init__(self, sock: socket.socket, max_bytes: int) -> None:
        self.sock = sock
        self.max_bytes = max_bytes
        self._buf = bytearray(64 * 1024)
        self._start = 0  # unread bytes are _buf[_start:_end]
        self._end = 0

    def read(self, deadline: float | None = None) -> tuple[int, bytes] | None:
        """The next frame as (kind, payload), or None when the peer closed between frames.

        Args:
            deadline: ``time.monotonic()`` by which the frame must be whole; None blocks.

        Raises:
            FrameError: An oversized, empty or truncated frame.
            TimeoutError: The deadline passed first.
            OSError: The connection failed.
        """
        if not self._fill(LENGTH.size, deadline):
            if self._end != self._start:
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
        if not self._fill(LENGTH.size + length, deadline):
            raise FrameError(grpc.StatusCode.INVALID_ARGUMENT, "truncated frame")
        begin = self._start + LENGTH.size
        kind = self._buf[begin]
        payload = bytes(memoryview(self._buf)[begin + 1 : begin + length])
        self._start = begin + length
        if self._start == self._end:
            self._start = self._end = 0
        return kind, payload

    def _fill(self, need: int, deadline: float | None) -> bool:
        """Have at least ``need`` unread bytes; False when the peer closed first."""
        if self._end - self._start >= need:
            return True
        if self._start:  # move the unread tail to the front
            tail = self._end - self._start
            self._buf[:tail] = self._buf[self._start : self._end]
            self._start, self._end = 0, tail
        if len(self._buf) < need:
            self._buf.extend(bytes(need - len(self._buf)))
        view = memoryview(self._buf)
        try:
            while self._end < need:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    self.sock.settimeout(remaining)
                got = self.sock.recv_into(view[self._end :])
                if got == 0:
                    return False
                self._end += got
        finally:
            view.release()  # a bytearray with a live view cannot grow next time
        return True
