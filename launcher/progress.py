"""Terminal progress for ``simgym train``: a live table, then a summary."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from launcher.train import Progress, RunState


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class ProgressView:
    """Shows the last iterations as a table that updates in place."""

    def __init__(self, console: Console, rows: int = 12) -> None:
        self.console = console
        self.rows = rows
        self.history: list[Progress] = []
        self._live: Live | None = None

    def __enter__(self) -> ProgressView:
        self._live = Live(
            self._table(), console=self.console, refresh_per_second=2, transient=False
        )
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def started(self, run_dir: Path, addresses: list[str]) -> None:
        """Print where the run lives and which sims it uses."""
        self.console.print(f"run folder: {run_dir}")
        self.console.print(f"sim servers: {', '.join(addresses)}")

    def _table(self) -> Table:
        table = Table(title="simgym train")
        # Short headers: the table must fit an 80-column terminal.
        columns = (
            "iter",
            "env steps",
            "steps/s",
            "elapsed",
            "left",
            "reward",
            "ep len",
            "errors",
            "restarts",
        )
        for col in columns:
            table.add_column(col, justify="right")
        for p in self.history[-self.rows :]:
            m = p.metrics
            table.add_row(
                str(p.iteration),
                f"{p.env_steps:,}",
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
        """Add one iteration."""
        self.history.append(progress)
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
        for name in ("metrics.csv", "learning_curve.png", "mlflow.db"):
            if (run_dir / name).exists():
                self.console.print(f"{name}: {run_dir / name}")
