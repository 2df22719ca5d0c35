"""``simgym serve``: an exported agent behind Bonsai's exported-brain HTTP API.

Registered into the ``simgym`` command by ``launcher.cli``. Parses arguments and calls
``launcher.serve``; nothing else. Needs the ``infer`` extra only (onnxruntime): neither Ray
nor torch is imported.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer


def serve_cmd(
    agent: Annotated[Path, typer.Argument(help="Agent folder written by `simgym export`.")],
    host: Annotated[
        str, typer.Option(help="Interface to listen on; beyond loopback --token is required.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (Bonsai brains used 5000); 0: any free.")] = (
        5000
    ),
    token: Annotated[
        str | None,
        typer.Option(
            envvar="SIMGYM_SERVE_TOKEN",
            help="Required Authorization header value (also $SIMGYM_SERVE_TOKEN).",
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback --host without a token.")
    ] = False,
    concept: Annotated[
        str | None,
        typer.Option(help="Concept name of v2 replies (concepts.<name>.action)."),
    ] = None,
    max_connections: Annotated[int, typer.Option(help="Connections at once (503 beyond).")] = 64,
    max_body_kb: Annotated[int, typer.Option(help="Largest request body, KiB (413 beyond).")] = (
        1024
    ),
) -> None:
    """Answer Bonsai exported-brain prediction calls (v1 and v2) with an exported agent."""
    from launcher.serve import AgentServer, ServeOptions, describe, serve_until_stopped

    options = ServeOptions(
        host=host,
        port=port,
        token=token,
        insecure=insecure,
        concept=concept,
        max_connections=max_connections,
        max_body_bytes=max_body_kb * 1024,
    )
    server = AgentServer(agent, options)
    stop = threading.Event()

    def leave(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
    serve_until_stopped(server, lambda _url: typer.echo(describe(server)), stop)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``simgym`` command."""
    app.command("serve")(serve_cmd)
