"""gymclient: one Gymnasium env for any simgym sim server.

Modules, from the wire up:

- ``errors``: the exception hierarchy (one type per failure a caller handles).
- ``connection``: the channel to one server, deadlines, connect retries, unary calls.
- ``packedsocket``: the packed socket's client (lock-step packed messages on one machine).
- ``stream``: the lock-step stream interface, gRPC's ``PackedStream``, the transport choice.
- ``lane``: the sessions of one server stepped or reset with one message per round.
- ``spec``: load and validate specs; ``expr``: derived observations; ``codec``: the spec
  applied to a session's names (arrays, reward, lessons).
- ``env``: ``SimEnv``; ``vector``: ``SimVectorEnv`` (batched stepping).
- ``conformance``: checks a sim integration end to end (also a pytest kit).
- ``agent``: use an exported agent from plain Python.
"""

from gymclient.env import NonFiniteStateError, SimEnv, pick_address
from gymclient.errors import SimgymError, SpecError
from gymclient.spec import EnvSpec, load_spec

__all__ = [
    "EnvSpec",
    "NonFiniteStateError",
    "SimEnv",
    "SimgymError",
    "SpecError",
    "load_spec",
    "pick_address",
]
