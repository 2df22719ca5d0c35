"""The ``simgym`` command. Parses arguments and calls library functions; nothing else."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from gymclient.errors import SimgymError


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"simgym: error: {message}", err=True)
    raise typer.Exit(code)


class _Commands(TyperGroup):
    """Every ``simgym`` command: a ``SimgymError`` it raises is one line on stderr, exit 2."""

    def invoke(self, ctx: Any) -> Any:  # a click.Context (typer vendors click)
        """Run the command, turning a ``SimgymError`` into its one-line message."""
        try:
            return super().invoke(ctx)
        except SimgymError as exc:
            _fail(str(exc))


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="simgym: train RL agents on simulators served over gRPC.",
)
console = Console()


@app.command()
def check(
    spec: Annotated[
        Path, typer.Argument(help="Spec YAML, or a reference-style folder (sim/, training_setup/).")
    ],
    address: Annotated[
        str | None, typer.Option(help="Check this running server instead of starting one.")
    ] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Seeded episodes to run.")] = 10,
    seed: Annotated[int, typer.Option(help="First episode seed.")] = 0,
    transport: Annotated[
        str, typer.Option(help="unix or tcp, for a server started by the check.")
    ] = "unix",
    write_ranges: Annotated[
        bool,
        typer.Option(
            "--write-ranges",
            help="Write the ranges estimated for observations without min/max into the spec.",
        ),
    ] = False,
) -> None:
    """Loopback conformance check and statistics; exit 0 only when the integration is sound."""
    from gymclient.spec import load_spec
    from launcher import ranges
    from launcher.check import render, run_check

    loaded = load_spec(spec)
    if write_ranges and not spec.is_file():
        _fail(f"--write-ranges: {spec} is not a spec file (a reference-style folder has none)")
    estimates: dict[str, ranges.Estimate] = {}
    report = run_check(
        loaded,
        address=address,
        episodes=episodes,
        seed=seed,
        transport=transport,
        ranges_out=estimates,
    )
    render(report, console)
    if estimates:
        console.print(ranges.describe(estimates, episodes))
        if write_ranges:
            ranges.write_ranges(spec, {n: e.as_dict() for n, e in estimates.items()})
            console.print(f"wrote min/max of {', '.join(estimates)} into {spec}")
        else:
            console.print("(simgym check --write-ranges writes them into the spec)")
    elif write_ranges:
        console.print(f"every observation of {spec} has min/max: nothing to write")
    raise typer.Exit(0 if report.sound else 1)


@app.command()
def train(
    spec: Annotated[
        Path,
        typer.Argument(
            help="Training spec YAML, or an env spec (trained with the defaults of "
            "docs/training.md)."
        ),
    ],
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run folder from its last checkpoint.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster instead of starting one.")
    ] = None,
    max_time: Annotated[
        str | None, typer.Option(help="Override stop.max_time (e.g. 90s, 10m, 2h).")
    ] = None,
) -> None:
    """Train with RLlib: start the sims, train to a stop condition, log metrics, checkpoint."""
    from launcher.failure import TrainingError
    from launcher.progress import ProgressView
    from launcher.train import train as run_training
    from launcher.trainspec import parse_duration

    try:
        seconds = parse_duration(max_time) if max_time else None
    except ValueError as exc:
        _fail(f"--max-time: {exc}")
    if seconds is not None and not seconds > 0:
        _fail(f"--max-time: {max_time!r} is no time at all (examples: 90, 90s, 10m, 2h)")
    # The view's live table starts with training (on_start), not before: a setup error
    # is then the only output.
    view = ProgressView(console)
    try:
        with view:
            run_dir, state = run_training(
                spec,
                resume=resume,
                ray_address=address,
                on_progress=view.update,
                on_start=view.started,
                max_time=seconds,
                quiet_third_party=True,
            )
    except SimgymError as exc:
        # 1: training failed (error.txt says why); 2: the spec or the setup is wrong.
        _fail(str(exc), 1 if isinstance(exc, TrainingError) and exc.error_file else 2)
    view.summary(run_dir, state)


@app.command()
def version() -> None:
    """Print the simgym and protocol versions."""
    from simgym import PROTOCOL, __version__

    typer.echo(f"simgym {__version__} ({PROTOCOL})")


def _register_extensions() -> None:
    """Commands that live in their own modules (Azure ML, evaluation, serving), if present."""
    import importlib

    for name in (
        "launcher.cli_aml",
        "launcher.cli_agent",
        "launcher.cli_serve",
        "launcher.cli_inkling",
    ):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


_register_extensions()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
