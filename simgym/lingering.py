"""A lingering close: what a client still sends after a refusal is read and dropped first.

Both HTTP servers (simserver's Bonsai endpoint, ``simgym serve``) refuse a body they will not
read (413, 411) and close. A client still sending that body would then be reset by the close
before it reads the reply, and see a broken pipe instead of the reason. Web servers call the
remedy a lingering close; it is bounded in bytes and time.
"""

from __future__ import annotations

import socket
import time


def linger(connection: socket.socket, max_bytes: int, seconds: float = 2.0) -> None:
    """Stop writing, then read and drop at most ``max_bytes`` for at most ``seconds``."""
    try:
        connection.shutdown(socket.SHUT_WR)
        connection.settimeout(0.5)
        deadline, budget = time.monotonic() + seconds, max_bytes
        while budget > 0 and time.monotonic() < deadline:
            chunk = connection.recv(min(budget, 65536))
            if not chunk:
                break
            budget -= len(chunk)
    except OSError:
        pass
