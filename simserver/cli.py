"""The ``simserver`` command: host a simulator class or Gymnasium env over gRPC."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from simserver.errors import LoadError, clip
from simserver.isolation import DEFAULT_ISOLATION
from simserver.server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MESSAGE_MIB_RANGE,
    ConfigError,
    ServerOptions,
    SimServer,
    check_range,
    write_address_file,
)
from simserver.slots import DEFAULT_PARALLEL
from simserver.stdio import redirect_sim_output

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _check_cli_only(
    log_level: str, parent_pid: int | None, max_message_mb: float, paths: dict[str, Path | None]
) -> None:
    """The options ``ServerOptions`` does not hold, checked before anything is written.

    Raises:
        ConfigError: Naming the option.
    """
    if log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"--log-level {log_level}: give one of {', '.join(LOG_LEVELS)}")
    if parent_pid is not None and parent_pid < 1:  # 0 and -1 name process groups
        raise ConfigError(f"--parent-pid {parent_pid}: give a process id (1 or more)")
    check_range("--max-message-mb", max_message_mb, *MESSAGE_MIB_RANGE)
    for flag, path in paths.items():
        if path is None:
            continue
        if flag == "--chdir":
            if not path.is_dir():
                raise ConfigError(f"--chdir {path}: no such folder")
        elif not path.resolve().parent.is_dir():
            raise ConfigError(f"{flag} {path}: the folder {path.parent} does not exist")


def _read_token_file(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"--token-file {path}: {reason}") from None
    if not token:
        raise ConfigError(f"--token-file {path}: the file is empty")
    return token


def _check_target(target: str | None, bonsai_port: int | None, isolate: str) -> None:
    """A sim TARGET, or --bonsai-port (Bonsai sims connect to it): one of the two.

    Raises:
        ConfigError: Both, neither, or --isolate process with Bonsai sims.
    """
    if bonsai_port is None and not target:
        raise ConfigError("give a sim TARGET (file.py:Class, module:Class, gymnasium:Id)")
    if bonsai_port is not None and target:
        raise ConfigError(
            f"give a sim TARGET ({clip(target, 60)}) or --bonsai-port (Bonsai SDK sims "
            "connect to it), not both"
        )
    if bonsai_port is not None and isolate == "process":
        raise ConfigError(
            "--isolate process does not apply to Bonsai sims: each runs in its own process"
        )


def _write_address(server: SimServer, path: Path, address: str) -> None:
    """Write the address file; a server whose launcher cannot learn its address stops."""
    try:
        write_address_file(str(path), address)
    except OSError as exc:
        server.stop(grace=0)
        typer.echo(f"simserver: error: --address-file {path}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None


def _parse_kwargs(pairs: list[str], kwargs_file: Path | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if kwargs_file is not None:
        try:
            loaded = yaml.safe_load(kwargs_file.read_text()) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"--kwargs-file {kwargs_file}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
            ) from exc
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--kwargs-file {kwargs_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"--kwargs-file {kwargs_file}: expected a mapping of keyword arguments"
            )
        kwargs.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--kwarg {pair!r}: expected name=value")
        # YAML scalars: 3 → int, 0.5 → float, true → bool, [1, 2] → list, else a string.
        kwargs[key] = yaml.safe_load(value) if value else ""
    return kwargs


@app.command(help="Serve a simulator over gRPC (simgym.v1), printing the bound address on stdout.")
def serve(
    target: Annotated[
        str | None,
        typer.Argument(
            help="path/to/file.py:Class, package.module:Class or gymnasium:EnvId (none with "
            "--bonsai-port)"
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(help="Interface for TCP; anything but loopback needs --token or --insecure."),
    ] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            help="TCP port; 0 picks a free one (printed). Default: 0 unless --unix is given."
        ),
    ] = None,
    unix: Annotated[str | None, typer.Option(help="Listen on this unix socket path.")] = None,
    address_file: Annotated[
        Path | None, typer.Option(help="Also write the bound address to this file.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="SIMGYM_TOKEN", help="Require 'authorization: Bearer TOKEN' metadata."),
    ] = None,
    token_file: Annotated[Path | None, typer.Option(help="Read the token from this file.")] = None,
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback --host without a token.")
    ] = False,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain for TLS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for TLS.")] = None,
    max_sessions: Annotated[
        int, typer.Option(help="Sessions open at once; more get RESOURCE_EXHAUSTED.")
    ] = 64,
    lease: Annotated[
        float, typer.Option(help="Seconds an idle session lives before it is closed.")
    ] = 300.0,
    workers: Annotated[
        int | None,
        typer.Option(help="Server threads (default: --max-sessions + 8)."),
    ] = None,
    max_streams: Annotated[
        int | None,
        typer.Option(
            help="gRPC request streams served at once (default: --max-sessions, fewer than "
            "--workers); more get RESOURCE_EXHAUSTED. A stream idle past --lease is ended."
        ),
    ] = None,
    hung_grace: Annotated[
        float,
        typer.Option(help="Seconds past its client's deadline before a sim call is taken as hung."),
    ] = 30.0,
    isolate: Annotated[
        str,
        typer.Option(
            help="Where sims run: 'thread' (in the server process) or 'process' (one worker "
            "process per session, killed when its call hangs past its deadline, when it dies "
            "or grows past --max-sim-rss; its session's next reset starts a fresh one)."
        ),
    ] = DEFAULT_ISOLATION,
    max_sim_rss: Annotated[
        float | None,
        typer.Option(
            help="MiB of resident memory a sim's worker may use (needs --isolate process); "
            "past it, the call fails and the next reset starts a fresh worker."
        ),
    ] = None,
    max_slots: Annotated[
        int | None,
        typer.Option(
            help="Slots one packed request may carry (default: 4 x --max-sessions, at least 1024)."
        ),
    ] = None,
    parallel_slots: Annotated[
        str,
        typer.Option(
            help="Whether the sessions of one packed request step in parallel on a thread "
            "pool (in-thread sims): 'auto' when their calls wait (measured), 'on' or 'off'."
        ),
    ] = DEFAULT_PARALLEL,
    packed_socket: Annotated[
        bool,
        typer.Option(
            help="With --unix (no TLS), also serve packed steps on PATH.packed, a plain "
            "unix socket much cheaper per message than gRPC (same token)."
        ),
    ] = True,
    max_message_mb: Annotated[
        float, typer.Option(help="Largest message, in MiB.")
    ] = DEFAULT_MAX_MESSAGE_BYTES / 2**20,
    kwarg: Annotated[
        list[str] | None,
        typer.Option(
            "--kwarg", "-k", help="Constructor argument name=value (YAML value); repeatable."
        ),
    ] = None,
    kwargs_file: Annotated[
        Path | None, typer.Option(help="YAML/JSON file of constructor arguments.")
    ] = None,
    actions: Annotated[
        str | None,
        typer.Option(help="Comma-separated action names, for sims that do not declare them."),
    ] = None,
    shape: Annotated[
        str | None,
        typer.Option(
            help="How to drive a sim class where it cannot be detected: reset=method|constructor, "
            "config=dict|kwargs, step=dict|scalar, comma-separated (docs/simserver.md)."
        ),
    ] = None,
    chdir: Annotated[
        Path | None,
        typer.Option(help="Run from this folder (a sim's imports are often relative to it)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    log_file: Annotated[Path | None, typer.Option(help="Log here instead of stderr.")] = None,
    parent_pid: Annotated[
        int | None, typer.Option(help="Exit when this process is gone (sidecar mode).")
    ] = None,
    bonsai_port: Annotated[
        int | None,
        typer.Option(
            help="Instead of a TARGET, serve sims written with the Bonsai SDK: they connect to "
            "this HTTP port (0 picks one) with SIM_API_HOST; gRPC serves once one registered."
        ),
    ] = None,
    bonsai_host: Annotated[
        str,
        typer.Option(help="Interface of --bonsai-port; not loopback: needs --token or --insecure."),
    ] = "127.0.0.1",
    bonsai_address_file: Annotated[
        Path | None,
        typer.Option(help="Write the Bonsai endpoint's URL (http://HOST:PORT) when it listens."),
    ] = None,
) -> None:
    """The ``simserver`` command (its help is the decorator's).

    One piece: typer reads each command-line option from a parameter of this signature; the
    body only turns them into ``ServerOptions``, starts the server and hands over to ``_run``.
    """
    try:
        paths = {"--log-file": log_file, "--address-file": address_file, "--chdir": chdir}
        paths["--bonsai-address-file"] = bonsai_address_file
        _check_cli_only(log_level, parent_pid, max_message_mb, paths)
        _check_target(target, bonsai_port, isolate)
        logging.basicConfig(
            level=getattr(logging, log_level.upper()),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            filename=str(log_file) if log_file else None,
        )
        # Before the sim is imported, built and probed: anything it prints then (at import,
        # in its constructor, in the probing reset) must land in the log, never on stdout
        # before the address a launcher reads as the first line.
        announce = redirect_sim_output(log_file)
        if token_file is not None:
            token = _read_token_file(token_file)
        if chdir is not None:
            os.chdir(chdir)
        kwargs = _parse_kwargs(kwarg or [], kwargs_file)
        options = ServerOptions(
            host=host,
            port=port if port is not None else (None if unix else 0),
            unix=unix,
            token=token,  # an empty or blank one is refused, not taken as none
            insecure=insecure,
            tls_cert=str(tls_cert) if tls_cert else None,
            tls_key=str(tls_key) if tls_key else None,
            max_sessions=max_sessions,
            lease_seconds=lease,
            workers=workers,
            max_streams=max_streams,
            hung_grace=hung_grace,
            isolate=isolate,
            max_sim_rss_mib=max_sim_rss,
            max_slots=max_slots,
            parallel_slots=parallel_slots,
            max_message_bytes=int(max_message_mb * 2**20),
            packed_socket=packed_socket,
        )
        options.validate()
        from simserver.loader import load_factory

        action_names = [a.strip() for a in actions.split(",") if a.strip()] if actions else []
        endpoint = None
        if bonsai_port is not None:
            from simserver.bonsai import BonsaiOptions, wait_for_bonsai_sims

            bonsai = BonsaiOptions(bonsai_host, bonsai_port, token, insecure, max_sessions,
                                   options.max_message_bytes)  # fmt: skip
            endpoint, factory = wait_for_bonsai_sims(bonsai, bonsai_address_file, parent_pid)
        else:
            assert target is not None
            factory = load_factory(target, kwargs, action_names=action_names, shape=shape or None)
        server = SimServer(factory, options)
        addresses = server.start()
    except (ConfigError, LoadError, OSError) as exc:
        typer.echo(f"simserver: error: {exc}", err=True)
        raise typer.Exit(2) from None
    announce(addresses)
    if address_file is not None:
        _write_address(server, address_file, addresses[0])
    _run(server, parent_pid, endpoint.stop if endpoint is not None else None)


def _run(
    server: SimServer, parent_pid: int | None, on_exit: Callable[[], None] | None = None
) -> None:
    """Serve until a signal (or the parent's exit) stops the server, then exit the process.

    ``on_exit`` runs once the server has stopped (the Bonsai endpoint's stop).
    """

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger("simserver").info("signal %d: shutting down", signum)
        server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if parent_pid is not None:
        _watch_parent(parent_pid, server)
    server.wait()
    if on_exit is not None:
        on_exit()
    # Sessions are closed and the socket removed; what may remain are worker threads
    # stuck in a hung sim, which would block a normal interpreter exit forever.
    logging.shutdown()
    os._exit(0)


def _watch_parent(pid: int, server: SimServer) -> None:
    """A sidecar must not outlive its trainer, even one killed with SIGKILL."""
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                logging.getLogger("simserver").warning("parent %d is gone: shutting down", pid)
                server.stop(grace=1.0)
                return
            except PermissionError:  # alive, owned by someone else
                pass

    threading.Thread(target=watch, name="simserver-parent-watch", daemon=True).start()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]
