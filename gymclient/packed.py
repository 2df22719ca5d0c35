"""Old home of the packed lane and the gRPC stream; removed once every import moved.

Import ``PackedLane``, ``PackedResult``, ``Transition``, ``Reset`` from ``gymclient.lane`` and
the streams from ``gymclient.stream``.
"""

from gymclient.lane import PackedLane, PackedResult, Reset, Transition
from gymclient.stream import PackedStream

__all__ = ["PackedLane", "PackedResult", "PackedStream", "Reset", "Transition"]
