"""The server around a ``SessionManager``: gRPC and packed sockets, TLS, health, reflection."""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
import stat
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from simgym.framing import SUFFIX as PACKED_SUFFIX
from simgym.v1 import simulator_pb2 as pb
from simgym.v1 import simulator_pb2_grpc as pb_grpc
from simserver.adapters import SimFactory
from simserver.errors import clip, flush_logs, quiet_grpc_parse_errors
from simserver.handshake import TokenAuth
from simserver.isolation import DEFAULT_ISOLATION, ISOLATION_MODES, isolate
from simserver.packedsocket import PackedSocketServer
from simserver.servicer import SimulatorServicer
from simserver.sessions import SessionManager
from simserver.slots import DEFAULT_PARALLEL, PARALLEL_MODES
from simserver.streams import StreamGuard

log = logging.getLogger("simserver")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Simulator"].full_name
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Longest unix socket path (sockaddr_un.sun_path is 108 bytes with its NUL).
UNIX_PATH_MAX = 107
# Ranges of the numeric options: a value outside (NaN, inf, 0, negative) would switch a
# protection off or make the server unusable, so it is refused at start.
MESSAGE_MIB_RANGE = (1, 1024)
MAX_SESSIONS_RANGE = (1, 10_000)
MAX_WORKERS = 100_000
LEASE_RANGE = (0.1, 7 * 86_400.0)
HUNG_GRACE_RANGE = (0.0, 86_400.0)


class ConfigError(ValueError):
    """Server options that cannot work together (e.g. a public host without a token)."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServerOptions:
    """How to expose the simulator. See ``simserver --help`` for each option."""

    host: str = "127.0.0.1"
    port: int | None = 0
    unix: str | None = None
    token: str | None = None
    insecure: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    max_sessions: int = 64
    lease_seconds: float = 300.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    workers: int | None = None
    # Request streams served at once (default: max_sessions); see simserver.streams.
    max_streams: int | None = None
    hung_grace: float = 30.0
    # Where sims run: "thread" (in the server's threads) or "process" (a worker process each,
    # killed when hung, dead or over max_sim_rss_mib: simserver.isolation).
    isolate: str = DEFAULT_ISOLATION
    max_sim_rss_mib: float | None = None
    # Slots one packed request may carry (default: 4 x max_sessions, at least 1024).
    max_slots: int | None = None
    # Whether a packed request's in-thread sims step on a thread pool (simserver.slots).
    parallel_slots: str = DEFAULT_PARALLEL
    # Beside a unix socket without TLS, also serve PackedStream's messages on PATH.packed
    # (simserver.packedsocket): a tenth of a gRPC stream's cost per message.
    packed_socket: bool = True

    def validate(self) -> None:
        """Refuse unsafe or contradictory options before anything binds.

        Raises:
            ConfigError: With a message naming the options to change.
        """
        if self.port is None and self.unix is None:
            raise ConfigError("nothing to listen on: give --port and/or --unix")
        if self.port is not None and not 0 <= self.port <= 65535:
            # gRPC would silently take the port modulo 65536 and listen somewhere else.
            raise ConfigError(f"--port {self.port}: a TCP port is 0 (any free one) to 65535")
        if self.token is not None:
            check_token_text(self.token, "--token")
        if self.port is not None and not is_loopback(self.host):
            if not self.token and not self.insecure:
                raise ConfigError(
                    f"--host {self.host} exposes the sim beyond this machine: give --token "
                    "(and preferably --tls-cert/--tls-key), or --insecure to accept the risk"
                )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_cert and self.tls_key:
            load_tls_pair(self.tls_cert, self.tls_key)
        self._check_numbers()
        if self.isolate not in ISOLATION_MODES:
            raise ConfigError(f"--isolate {self.isolate}: give one of {', '.join(ISOLATION_MODES)}")
        if self.max_sim_rss_mib is not None:
            if self.isolate != "process":
                raise ConfigError("--max-sim-rss needs --isolate process (a sim's own process)")
            if not (0 < self.max_sim_rss_mib < float("inf")):
                raise ConfigError(f"--max-sim-rss {self.max_sim_rss_mib}: give a positive MiB")
        if self.max_slots is not None and self.max_slots < 1:
            raise ConfigError(f"--max-slots {self.max_slots}: give at least 1")
        if self.parallel_slots not in PARALLEL_MODES:
            raise ConfigError(
                f"--parallel-slots {clip(str(self.parallel_slots))}: give one of "
                f"{', '.join(PARALLEL_MODES)}"
            )

    @property
    def pool_workers(self) -> int:
        """Threads of the gRPC server's pool (``workers``, default ``max_sessions`` + 8)."""
        return self.workers or self.max_sessions + 8

    def _check_numbers(self) -> None:
        """Every numeric option finite and in its range, the error naming the flag."""
        check_range("--max-sessions", self.max_sessions, *MAX_SESSIONS_RANGE, whole=True)
        check_range("--lease", self.lease_seconds, *LEASE_RANGE)
        check_range("--hung-grace", self.hung_grace, *HUNG_GRACE_RANGE)
        size = self.max_message_bytes
        mib = size / 2**20 if isinstance(size, int | float) else size
        check_range("--max-message-mb", mib, *MESSAGE_MIB_RANGE)
        if self.workers is not None:
            check_range("--workers", self.workers, self.max_sessions + 1, MAX_WORKERS, whole=True)
        if self.max_streams is not None:
            # Streams never hold every thread: unary calls (health, Open) keep at least one.
            check_range("--max-streams", self.max_streams, 1, self.pool_workers - 1, whole=True)


def check_range(flag: str, value: object, low: float, high: float, *, whole: bool = False) -> None:
    """Refuse ``value`` unless it is a finite number (a whole one if ``whole``) in [low, high].

    Raises:
        ConfigError: Naming the flag, the value and the range.
    """
    ok = False
    if isinstance(value, int | float) and not isinstance(value, bool):
        ok = math.isfinite(value) and low <= value <= high
        ok = ok and (not whole or float(value).is_integer())
    if not ok:
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{flag} {value}: give {kind} from {low:g} to {high:g}")


def check_token_text(token: str, flag: str) -> None:
    """Refuse a token that protects nothing or that no gRPC client can send.

    Raises:
        ConfigError: An empty or whitespace-only token, or one with characters outside
            printable ASCII (metadata values) or spaces at its ends (trimmed in transit).
    """
    if not token.strip():
        raise ConfigError(f"{flag}: the token is empty or only whitespace; give a real secret")
    if token != token.strip() or not all(" " <= c <= "~" for c in token):
        raise ConfigError(
            f"{flag}: use printable ASCII without spaces at either end (it travels in "
            "gRPC metadata)"
        )


class SimServer:
    """A running simulator server. Use ``start()``, then ``wait()`` or ``stop()``."""

    def __init__(self, factory: SimFactory, options: ServerOptions) -> None:
        options.validate()
        self.options = options
        quiet_grpc_parse_errors()
        # A sync gRPC server holds one thread per active stream: size the pool for
        # one stream per session plus unary traffic, so streams cannot starve calls.
        workers = options.pool_workers
        if options.isolate == "process":
            factory = isolate(factory, options.max_sim_rss_mib)
        self.sessions = SessionManager(
            factory,
            max_sessions=options.max_sessions,
            lease_seconds=options.lease_seconds,
            hung_grace=options.hung_grace,
            # A hung call keeps its thread: only the spare ones may be held that way, less
            # one kept for Open/Close/health, or a freed slot would admit a session whose
            # calls wait for a thread.
            max_hung=max(0, workers - options.max_sessions - 1),
            max_slots=options.max_slots or max(1024, 4 * options.max_sessions),
            parallel_slots=options.parallel_slots,
        )
        msg_opts = [
            ("grpc.max_send_message_length", options.max_message_bytes),
            ("grpc.max_receive_message_length", options.max_message_bytes),
            # Let clients keep idle connections alive with pings (detects vanished peers).
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # Never let two servers share a port silently.
            ("grpc.so_reuseport", 0),
        ]
        # Streams never take the last threads of the pool, and end when idle past the lease
        # (their sessions have expired by then).
        self.streams = StreamGuard(
            max_streams=min(options.max_streams or options.max_sessions, workers - 1),
            idle_timeout=options.lease_seconds,
        )
        # The token first: a client without it never takes a stream slot.
        interceptors: list[grpc.ServerInterceptor] = (
            [TokenAuth(options.token)] if options.token else []
        )
        interceptors.append(self.streams)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="simserver"),
            interceptors=interceptors,
            options=msg_opts,
            maximum_concurrent_rpcs=workers * 4,
        )
        self.packed: PackedSocketServer | None = None  # set once the packed socket listens
        self.servicer = SimulatorServicer(
            self.sessions, options.max_message_bytes, lambda: self.packed is not None
        )
        pb_grpc.add_SimulatorServicer_to_server(self.servicer, self._server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self.sessions.on_serving = self._set_serving
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        self.addresses: list[str] = []
        self._stopped = threading.Event()

    def _set_serving(self, serving: bool) -> None:
        """Health says whether sessions can take work (not while hung calls hold all spares)."""
        if self._stopped.is_set():
            return
        Status = health_pb2.HealthCheckResponse
        status = Status.SERVING if serving else Status.NOT_SERVING
        self.health.set("", status)
        self.health.set(SERVICE_NAME, status)

    def _credentials(self) -> grpc.ServerCredentials | None:
        o = self.options
        if not o.tls_cert:
            return None
        assert o.tls_key is not None
        key, cert = load_tls_pair(o.tls_cert, o.tls_key)
        return grpc.ssl_server_credentials([(key, cert)])

    def _bind(self, target: str, creds: grpc.ServerCredentials | None) -> int:
        try:
            if creds is not None:
                return self._server.add_secure_port(target, creds)
            return self._server.add_insecure_port(target)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {target}: {exc}") from exc

    def start(self) -> list[str]:
        """Bind, start serving and return the bound addresses (``host:port``, ``unix:/path``).

        Raises:
            ConfigError: An address is in use or cannot be bound.
        """
        o = self.options
        creds = self._credentials()
        unix_path: Path | None = None
        if o.unix is not None:
            path = Path(o.unix).resolve()
            if not path.parent.is_dir():
                raise ConfigError(f"--unix {o.unix}: the folder {path.parent} does not exist")
            if len(os.fsencode(path)) > UNIX_PATH_MAX:
                # Checked here, not left to the bind: gRPC would log its own line first.
                raise ConfigError(
                    f"--unix {clip(str(path))}: {len(os.fsencode(path))} bytes; a unix socket "
                    f"path has at most {UNIX_PATH_MAX} (the kernel's limit): use a shorter one"
                )
            if path.exists():
                if path.is_socket():
                    # A stale socket from a dead server: a live one would still be
                    # answering, but we cannot tell cheaply, so refuse unless stale.
                    if _socket_alive(path):
                        raise ConfigError(f"unix socket {path} is in use by a running server")
                    path.unlink()
                else:
                    raise ConfigError(f"{path} exists and is not a socket")
            self._bind(f"unix:{path}", creds)
            self.addresses.append(f"unix:{path}")
            unix_path = path
        if o.port is not None:
            host = f"[{o.host}]" if ":" in o.host and not o.host.startswith("[") else o.host
            if o.port:
                _check_port_free(o.host, o.port)
            port = self._bind(f"{host}:{o.port}", creds)
            if port == 0:
                raise ConfigError(f"cannot listen on {host}:{o.port} (in use?)")
            # 0.0.0.0:port is where the server listens, not an address a client can dial:
            # announce the loopback address of the same socket (what a local launcher
            # needs); remote clients use this machine's name, logged below.
            self.addresses.append(f"{_connectable(o.host)}:{port}")
            if _connectable(o.host) != host:
                log.info(
                    "listening on all interfaces (%s:%d); remote clients connect to %s:%d",
                    host,
                    port,
                    socket.gethostname(),
                    port,
                )
            self._warn_exposure(port)
        self._server.start()
        self.streams.start()
        if unix_path is not None and o.packed_socket and creds is None:
            # Once every bind succeeded (nothing to undo on a failed start). A client that
            # opens a session before this sees packed_socket false and uses gRPC.
            self._start_packed(unix_path)
        self.sessions.start_reaper()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving %s on %s (max %d sessions, lease %.0f s, %s%s)",
            self.sessions.factory.sim_name,
            ", ".join(self.addresses),
            o.max_sessions,
            o.lease_seconds,
            "token" if o.token else "no token",
            f", packed socket {self.packed.path}" if self.packed is not None else "",
        )
        return self.addresses

    def _start_packed(self, grpc_path: Path) -> None:
        """Serve the packed socket beside the gRPC one; without it clients use gRPC."""
        path = grpc_path.with_name(grpc_path.name + PACKED_SUFFIX)
        if path.exists():
            if not path.is_socket() or _socket_alive(path):
                # Not ours to take: say so and serve gRPC only (clients fall back).
                log.warning("packed socket %s is in use or not a socket: not served", path)
                return
            path.unlink()
        packed = PackedSocketServer(
            self.sessions,
            path,
            token=self.options.token,
            max_message_bytes=self.options.max_message_bytes,
            max_connections=self.options.max_sessions,
            mode=stat.S_IMODE(grpc_path.stat().st_mode) if grpc_path.exists() else None,
            idle_timeout=self.options.lease_seconds,
        )
        try:
            packed.start()
        except OSError as exc:  # e.g. the path is too long for a unix socket
            log.warning("packed socket %s not served: %s", path, exc)
            return
        self.packed = packed  # from now on, Open tells clients it is there

    def _warn_exposure(self, port: int) -> None:
        """Say at start-up what a TCP listener off loopback exposes."""
        o = self.options
        if is_loopback(o.host):
            return
        if not o.token:
            log.warning(
                "--insecure: port %d on %s takes calls from anyone who can reach it, "
                "without a token",
                port,
                o.host,
            )
        elif not o.tls_cert:
            log.warning(
                "the token travels in plain text over TCP on %s:%d (anyone on the network "
                "path can read and reuse it): add --tls-cert/--tls-key",
                o.host,
                port,
            )

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting calls, let running ones finish for ``grace`` s, close sessions."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait(grace + 1)
        if self.packed is not None:
            self.packed.stop()
        self.streams.stop()
        self.sessions.close_all()
        if self.options.unix:
            Path(self.options.unix).unlink(missing_ok=True)
        stats = self.sessions.stats
        log.info(
            "stopped (%d sessions opened, %d expired, %d hung, %d sim errors)",
            stats.opened,
            stats.expired,
            stats.hung,
            stats.sim_errors,
        )
        flush_logs()

    def wait(self) -> None:
        """Block until ``stop()`` is called."""
        self._stopped.wait()


def load_tls_pair(cert_file: str, key_file: str) -> tuple[bytes, bytes]:
    """Read and check a PEM certificate chain and its private key, before gRPC sees them.

    gRPC only reports a bad pair when binding ("Failed to bind", plus log noise) and never
    says which file is wrong; OpenSSL, through ``ssl``, can tell.

    Returns:
        ``(key, cert)`` bytes, as ``grpc.ssl_server_credentials`` takes them.

    Raises:
        ConfigError: Naming the option and file at fault.
    """
    import ssl

    for option, file in (("--tls-cert", cert_file), ("--tls-key", key_file)):
        if not Path(file).is_file():
            raise ConfigError(f"{option} {file}: no such file")
    try:
        key, cert = Path(key_file).read_bytes(), Path(cert_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS files: {exc}") from exc
    trust = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        trust.load_verify_locations(cadata=cert.decode("ascii", "replace"))
    except ssl.SSLError:
        raise ConfigError(f"--tls-cert {cert_file}: no PEM certificate in it") from None
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password (any) stops OpenSSL from prompting on the terminal for an encrypted key.
        server.load_cert_chain(cert_file, key_file, password=b"")
    except ssl.SSLError as exc:
        if getattr(exc, "reason", "") == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"--tls-key {key_file} is not the key of the certificate in --tls-cert {cert_file}"
            ) from None
        raise ConfigError(
            f"--tls-key {key_file}: not a PEM private key (unencrypted: gRPC takes no password)"
        ) from None
    return key, cert


def _connectable(host: str) -> str:
    """The host part of an address a local client can dial for a socket bound to ``host``."""
    bare = host.strip("[]")
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return f"[{bare}]" if ":" in bare else host
    if ip.is_unspecified:
        return "127.0.0.1" if ip.version == 4 else "[::1]"
    return f"[{bare}]" if ip.version == 6 else bare


def _check_port_free(host: str, port: int) -> None:
    """Refuse a TCP port another socket listens on, in one line.

    gRPC would refuse it too, but after logging its own error line on stderr.

    Raises:
        ConfigError: No address of ``host`` can take ``port``.
    """
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: {exc.strerror}") from None
    reason = ""
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind(address)
                return  # gRPC binds what it can of the host's addresses: one is enough
            except OSError as exc:
                reason = exc.strerror or str(exc)
    raise ConfigError(f"cannot listen on {host}:{port}: {reason.lower()}")


def _socket_alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def write_address_file(path: str, address: str) -> None:
    """Write the bound address atomically, so a poller never reads half a line."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(address + "\n")
    tmp.replace(target)
