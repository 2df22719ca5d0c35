"""simserver: host any simulator behind the ``simgym.v1`` gRPC contract.

Layers, each in its own module: ``loader`` (find the sim by target string) →
``adapters`` (reference ``SimulatorModel``, plain classes, Gymnasium envs, all
behind one ``SimInstance`` interface) → ``sessions`` (lifecycle, leases, limits,
retries) → ``servicer`` (wire ↔ calls, status codes) → ``server`` (sockets, TLS,
token auth, health, reflection) → ``cli`` (the ``simserver`` command).
"""

from simgym import PROTOCOL, __version__

__all__ = ["PROTOCOL", "__version__"]
