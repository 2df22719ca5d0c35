"""simgym: train RL agents on any simulator served over gRPC.

The distribution's Python packages are ``simserver`` (host a simulator),
``gymclient`` (a Gymnasium env talking to it) and ``launcher`` (training and the
``simgym`` CLI). This package only holds the generated wire code (``simgym.v1``),
whose import path mirrors the protobuf package ``simgym.v1``.
"""

__version__ = "0.1.0"
PROTOCOL = "simgym.v1"
