"""``simgym evaluate | export | predict``: the commands on a trained agent (and its baselines).

Parses arguments and calls library functions; errors are one line, exit code 2.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from gymclient.errors import SimgymError


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    return str(value)


def _render(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output (CI logs, files) gets a wide table instead of rich's 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    kpis = [f"final_{s}" for s in report.log_states]
    for level, title in (
        ("scenario", "Per scenario"),
        ("group", "Per group"),
        ("overall", "Overall"),
    ):
        rows = [r for r in report.summary if r["level"] == level]
        if not rows:
            continue
        table = Table(title=f"{title} (means over episodes)")
        for col in (
            "scenario" if level != "overall" else None,
            "controller",
            "episodes",
            "return",
            "length",
            "terminated",
            *[k.removeprefix("final_") for k in kpis],
        ):
            if col:
                table.add_column(
                    col, justify="left" if col in ("scenario", "controller") else "right"
                )
        for r in rows:
            cells = [r["name"]] if level != "overall" else []
            cells += [
                r["controller"],
                str(r["episodes"]),
                _fmt(r["return_mean"]),
                _fmt(r["length_mean"]),
                f"{r['terminated']}/{r['episodes']}",
                *[_fmt(r[k]) for k in kpis],
            ]
            table.add_row(*cells)
        console.print(table)
    errors = sum(1 for r in report.results if r.error)
    if errors:
        console.print(f"[yellow]{errors} episode(s) cut short by sim errors (see episodes.csv)")
    console.print(
        f"{len(report.results)} episodes ({', '.join(report.controllers)}) in "
        f"{report.seconds:.1f} s → {report.out}/summary.csv, episodes.csv, trajectories.csv, "
        f"plots/ ({len(report.plots)} PNG)"
    )


def evaluate_cmd(
    run: Annotated[
        Path | None, typer.Argument(help="Run folder (its last checkpoint is the agent).")
    ] = None,
    scenarios: Annotated[
        Path, typer.Option(help="Scenario file (YAML): reset configs and seeds.")
    ] = Path("scenarios.yaml"),
    checkpoint: Annotated[
        Path | None, typer.Option(help="Evaluate this checkpoint instead of the last one.")
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(help="A baseline: file.py:Name (class or function) or an agent folder."),
    ] = None,
    spec: Annotated[
        Path | None, typer.Option(help="Env spec (default: the run's); baselines need no run.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: <run>/eval-<time>).")
    ] = None,
    parallel: Annotated[
        int | None, typer.Option(min=1, help="Sim sessions at once (default: the file's, or 4).")
    ] = None,
    servers: Annotated[
        int | None, typer.Option(min=1, help="Sim servers to start (default: 2).")
    ] = None,
    plots: Annotated[bool, typer.Option(help="Write trajectory plots.")] = True,
) -> None:
    """Agent vs baselines on fixed seeded scenarios: tables, CSV, trajectory plots."""
    from launcher.evaluate import evaluate

    if run is not None and not run.is_dir():
        raise SimgymError(f"{run}: no such run folder")
    report = evaluate(
        run,
        scenarios,
        checkpoint=checkpoint,
        baselines=baseline or [],
        spec_path=spec,
        out=out,
        parallel=parallel,
        servers=servers,
        plots=plots,
    )
    _render(report)


def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder to export (its last checkpoint).")],
    out: Annotated[Path, typer.Option(help="Agent folder to write.")] = Path("agent"),
    checkpoint: Annotated[
        Path | None, typer.Option(help="Export this checkpoint instead of the last one.")
    ] = None,
    samples: Annotated[
        int, typer.Option(min=1, help="Random states the graph is verified on.")
    ] = 2000,
) -> None:
    """The deterministic policy as ONNX (normalisation inside) + manifest, verified vs RLlib."""
    if not run.is_dir():
        raise SimgymError(f"{run}: no such run folder")
    try:
        from launcher.export import export_run

        result = export_run(run, out, checkpoint=checkpoint, samples=samples)
    except ModuleNotFoundError as exc:
        raise SimgymError(
            f"export needs the train and infer extras ({exc.name} is missing): "
            "pip install 'simgym[train,infer]'"
        ) from None
    m = result.manifest
    typer.echo(
        f"exported {', '.join(i['name'] for i in m['inputs'])} -> "
        f"{', '.join(o['name'] for o in m['outputs'])} to {result.model} "
        f"(verified on {m['verified']['samples']} random states: max diff "
        f"{result.max_abs_diff:.2g} vs the RLlib module)"
    )


def predict_cmd(
    agent: Annotated[Path, typer.Argument(help="Agent folder written by `simgym export`.")],
    state: Annotated[
        str,
        typer.Option(help="States as JSON, e.g. '{\"Tr\": 311.3, ...}'; @file.json; - (stdin)."),
    ],
) -> None:
    """The agent's action for one set of states (onnxruntime only), printed as JSON."""
    from gymclient.agent import load_agent

    text = state
    try:
        if state == "-":
            text = sys.stdin.read()
        elif state.startswith("@"):
            text = Path(state[1:]).read_text()
    except OSError as exc:
        raise SimgymError(f"--state {state}: cannot read: {exc.strerror or exc}") from None
    try:
        states = json.loads(text)
    except ValueError as exc:
        raise SimgymError(f"--state: not valid JSON: {exc}") from None
    if not isinstance(states, dict):
        raise SimgymError(
            f"--state: expected a JSON object of state name → number, got {type(states).__name__}"
        )
    typer.echo(json.dumps(load_agent(agent).act(states)))


def register(app: typer.Typer) -> None:
    """Add ``evaluate``, ``export`` and ``predict`` to the ``simgym`` command."""
    app.command("evaluate")(evaluate_cmd)
    app.command("export")(export_cmd)
    app.command("predict")(predict_cmd)
