"""gymclient: one Gymnasium env for any simgym sim server.

Modules: ``spec`` (load/validate specs), ``codec`` (spec ↔ arrays, reward,
lessons), ``connection`` (channel, deadlines, retries), ``env`` (``SimEnv``),
``vector`` (``SimVectorEnv``, batched stepping), ``conformance`` (checks a sim
integration end to end; also a pytest kit), ``errors``.
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
