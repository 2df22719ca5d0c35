"""simserver: host any simulator behind the ``simgym.v1`` contract.

Layers, each in its own module: ``loader`` (find the sim by target string) →
``adapters`` (reference ``SimulatorModel``, plain classes, Gymnasium envs, all
behind one ``SimInstance`` interface) → ``sessions`` (lifecycle, leases, limits,
retries) → ``packed`` (the packed engine) and ``handshake`` (token, protocol) →
the two transports, ``servicer`` (gRPC) and ``packedsocket`` (the packed socket) →
``server`` (sockets, TLS, health, reflection) → ``cli`` (the ``simserver`` command).
``process`` starts a server as a child process; ``stdio`` keeps a sim's prints off stdout.
"""

from simgym import PROTOCOL, __version__

__all__ = ["PROTOCOL", "__version__"]
