"""Render a conformance ``Report`` as terminal tables."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from gymclient.conformance import Report


def _fmt(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.4g}"


def render(report: Report, console: Console) -> None:
    """Print checks, episode statistics and per-observation ranges."""
    console.print(
        f"[bold]{report.sim_name or '?'}[/] at {report.address}: "
        f"{len(report.state_names)} states, actions {', '.join(report.action_names) or '?'}"
    )
    checks = Table(title="Checks", show_lines=False)
    checks.add_column("check")
    checks.add_column("result")
    checks.add_column("detail", overflow="fold")
    for c in report.checks:
        mark = "[green]ok[/]" if c.ok else ("[yellow]warn[/]" if c.warning else "[red]FAIL[/]")
        checks.add_row(c.name, mark, c.detail)
    console.print(checks)
    if report.episodes:
        lengths = report.lengths or [0]
        stats = Table(title=f"{report.episodes} seeded episodes, random actions")
        stats.add_column("metric")
        stats.add_column("value", justify="right")
        stats.add_row("env steps", str(report.steps))
        stats.add_row("steps/s (through the wire)", f"{report.steps_per_second:,.0f}")
        sim_share = report.sim_seconds / report.seconds if report.seconds else 0.0
        stats.add_row("share of time in the sim", f"{sim_share:.0%}")
        stats.add_row(
            "episode length min/mean/max",
            f"{min(lengths)} / {sum(lengths) / len(lengths):.1f} / {max(lengths)}",
        )
        stats.add_row("terminated", f"{report.terminated / report.episodes:.0%}")
        stats.add_row("truncated", f"{report.truncated / report.episodes:.0%}")
        if report.returns:
            stats.add_row("episode return mean", f"{sum(report.returns) / len(report.returns):.4g}")
        stats.add_row("non-finite states", str(report.nonfinite))
        stats.add_row("sim errors", str(len(report.sim_errors)))
        console.print(stats)
        obs = Table(title="Observations: declared range vs seen (raw state values)")
        for col in (
            "observation",
            "declared min",
            "declared max",
            "seen min",
            "seen max",
            "% clipped",
        ):
            obs.add_column(col, justify="right" if col != "observation" else "left")
        for o in report.observations:
            lo, hi = o.declared if o.declared else (math.nan, math.nan)
            share = o.clipped / report.steps if report.steps else 0.0
            colour = "yellow" if share > 0.05 else ""
            obs.add_row(
                o.name,
                _fmt(lo),
                _fmt(hi),
                _fmt(o.seen_min),
                _fmt(o.seen_max),
                f"[{colour}]{share:.1%}[/]" if colour else f"{share:.1%}",
            )
        console.print(obs)
    for err in report.sim_errors[:5]:
        console.print(f"[red]sim error[/] {err}")
    if len(report.sim_errors) > 5:
        console.print(f"... and {len(report.sim_errors) - 5} more sim errors")
    verdict = (
        "[green]SOUND[/]: ready to train"
        if report.sound
        else "[red]NOT SOUND[/]: fix the failures above"
    )
    console.print(verdict)
