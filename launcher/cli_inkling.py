"""``simgym import-inkling``: a Bonsai ``.ink`` file as simgym's env and training specs.

Parses arguments and calls launcher.inkling; errors are one line, exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add ``import-inkling`` to the ``simgym`` command."""

    @app.command("import-inkling")
    def import_inkling_command(
        ink: Annotated[Path, typer.Argument(help="The Inkling file (machine_teacher.ink).")],
        out: Annotated[
            Path | None,
            typer.Option(help="Folder for spec.yaml and train.yaml (default: the .ink's folder)."),
        ] = None,
        concept: Annotated[
            str | None, typer.Option(help="The concept to import, when the graph has several.")
        ] = None,
        sim: Annotated[
            str | None,
            typer.Option(help="sim.target for the env spec (file.py:Class, relative to --out)."),
        ] = None,
        name: Annotated[
            str | None, typer.Option(help="The spec's name (default: the concept's).")
        ] = None,
        force: Annotated[bool, typer.Option(help="Overwrite spec.yaml/train.yaml.")] = False,
    ) -> None:
        """Translate an Inkling 2.0 training definition into spec.yaml and train.yaml."""
        from launcher.inkling import import_inkling, write_specs

        imported = import_inkling(ink, concept=concept, sim=sim, name=name)
        paths = write_specs(imported, out or ink.parent, ink, force=force)
        for note in imported.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"wrote {paths[0]} and {paths[1]} (concept {imported.concept})")
