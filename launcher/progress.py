"""Terminal progress for ``simgym train``: a live table, then a summary."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from launcher.runfolder import RunState
from launcher.train import NOTICE, RAISED, Progress


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def _count(value: int) -> str:
    """``1,234,567``; past ten million ``12.3M``, so the column stays narrow."""
    return f"{value / 1e6:.1f}M" if value >= 10_000_000 else f"{value:,}"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class _ConsoleLogHandler(logging.Handler):
    """Prints simgym's warnings and notices above the live table (through the same console)."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        # Sidecar events reach the terminal as the view's own event lines (see update()),
        # and the failure train() raises as the CLI's one error line on stderr.
        if record.name.startswith("simgym.sidecars") or getattr(record, RAISED, False):
            return
        if record.levelno < logging.WARNING:
            if getattr(record, NOTICE, False):  # what simgym chose for the user: one line
                self.console.print(record.getMessage())
            return
        try:
            self.console.print(f"[yellow]{record.levelname.lower()}[/]: {record.getMessage()}")
        except Exception:
            self.handleError(record)


class ProgressView:
    """Shows the last iterations as a table that updates in place.

    The live table starts only once training does (``started``): a setup error before that
    is the only thing the user sees, not an empty table above it. While the view is open,
    simgym's log records go to the run's ``train.log`` and, from warnings up, above the
    table — not through the process's own handlers, which would print into it.
    """

    def __init__(self, console: Console, rows: int = 12) -> None:
        self.console = console
        self.rows = rows
        self.history: list[Progress] = []
        self._live: Live | None = None
        self._handler = _ConsoleLogHandler(console)
        self._logger = logging.getLogger("simgym")
        self._propagate = self._logger.propagate

    def __enter__(self) -> ProgressView:
        self._logger.addHandler(self._handler)
        self._logger.propagate = False
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
        self._logger.removeHandler(self._handler)
        self._logger.propagate = self._propagate

    def started(self, run_dir: Path, addresses: list[str]) -> None:
        """Print where the run lives and which sims it uses, then start the live table."""
        self.console.print(f"run folder: {run_dir}")
        self.console.print(f"sim servers: {', '.join(addresses)}")
        if self._live is None:
            self._live = Live(
                self._table(), console=self.console, refresh_per_second=2, transient=False
            )
            self._live.__enter__()

    # (header, min width): the widest value each column shows, so nothing is ever cut to
    # "0:00:…". No vertical rules, one space between columns: 78 characters, which fits
    # an 80-column terminal.
    COLUMNS = (
        ("iter", 5),
        ("env steps", 9),
        ("steps/s", 7),
        ("elapsed", 9),
        ("left", 9),
        ("reward", 10),
        ("ep len", 7),
        ("errors", 6),
        ("restarts", 8),
    )

    def _table(self) -> Table:
        table = Table(title="simgym train", box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
        for header, width in self.COLUMNS:
            table.add_column(header, justify="right", no_wrap=True, min_width=width)
        for p in self.history[-self.rows :]:
            m = p.metrics
            table.add_row(
                str(p.iteration),
                _count(p.env_steps),
                _fmt(m.get("env_steps_per_s"), ",.0f"),
                _clock(p.elapsed),
                _clock(p.time_left),
                _fmt(m.get("episode_reward_mean")),
                _fmt(m.get("episode_len_mean"), ".1f"),
                _fmt(m.get("sim_errors"), ".0f"),
                str(p.restarts),
            )
        return table

    def update(self, progress: Progress) -> None:
        """Add one iteration; print its sidecar events (restarts) above the table."""
        self.history.append(progress)
        for event in progress.events:
            self.console.print(f"[yellow]iteration {progress.iteration}[/]: {event}")
        if self._live is not None:
            self._live.update(self._table())

    def summary(self, run_dir: Path, state: RunState) -> None:
        """What happened and where the results are."""
        best = max(
            (p.metrics.get("episode_reward_mean", -math.inf) for p in self.history),
            default=-math.inf,
        )
        self.console.print("reward = episode_reward_mean (MLflow name); ep len = episode_len_mean")
        self.console.print(f"[bold]stopped[/]: {state.stop_reason}")
        self.console.print(
            f"iterations {state.iteration}, env steps {state.env_steps:,}, "
            f"episodes {state.episodes:,}, "
            f"best episode_reward_mean {_fmt(best)}"
        )
        self.console.print(f"checkpoint: {state.checkpoints[-1] if state.checkpoints else '—'}")
        for name in ("metrics.csv", "learning_curve.png", "mlflow.db", "train.log"):
            if (run_dir / name).exists():
                self.console.print(f"{name}: {run_dir / name}")
