"""simgym: train RL agents on any simulator served over gRPC.

The distribution's Python packages are ``simserver`` (host a simulator),
``gymclient`` (a Gymnasium env talking to it) and ``launcher`` (training and the
``simgym`` CLI). This package holds what both sides of the wire share, so that
the client never imports the server:

- ``simgym.v1``: the generated wire code (``make proto``), whose import path
  mirrors the protobuf package ``simgym.v1``.
- ``framing``: the packed socket's frames, read and written by its server and client.
- ``status``: gRPC status codes and their numbers, for messages that carry a number.
- ``targets``: ``path/to/file.py:Name`` and ``module:Name`` resolved to a class or callable.
"""

__version__ = "0.1.0"
PROTOCOL = "simgym.v1"
