"""``simgym check``: start or reach a spec's sim server, run the conformance kit, show a report."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gymclient.conformance import Report, check_integration
from gymclient.errors import SimgymError
from gymclient.spec import EnvSpec
from launcher.sidecars import SidecarStartError
from launcher.sims import spec_launch, start_sims
from simserver.process import TRANSPORTS


def run_check(
    spec: EnvSpec,
    *,
    address: str | None = None,
    episodes: int = 10,
    seed: int = 0,
    transport: str = "unix",
) -> Report:
    """Check against ``address``, the spec's address, or a server started for the check.

    Raises:
        SimgymError: The server cannot be started or reached, or ``transport`` is unknown.
    """
    if transport not in TRANSPORTS:
        raise SimgymError(f"--transport {transport!r}: use one of {', '.join(TRANSPORTS)}")
    address = address or next(iter(spec.sim.address_list()), None)
    if address:
        return check_integration(spec, address, episodes=episodes, seed=seed)
    # No restarts: a sim that dies during the check is a finding, not something to hide.
    launch = spec_launch(spec, transport=transport, max_restarts=0)
    log_dir = Path(tempfile.mkdtemp(prefix="simgym-check-"))
    keep_log = False
    try:
        try:
            pool = start_sims(spec, launch, log_dir)
        except SidecarStartError as exc:
            error, keep_log = _start_failure(launch.target or "", exc)
            raise error from None
        try:
            return check_integration(spec, pool.addresses[0], episodes=episodes, seed=seed)
        finally:
            pool.stop()
    finally:
        if not keep_log:
            shutil.rmtree(log_dir, ignore_errors=True)


def _start_failure(target: str, exc: SidecarStartError) -> tuple[SimgymError, bool]:
    """One line saying why the server did not start, and whether its log is kept.

    The reason is quoted (the log's error line, else its last line, typically the sim's
    exception); a log with more than that is kept and cited.
    """
    try:
        text = exc.log_file.read_text(errors="replace")
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = exc.error_line or (lines[-1] if lines else "(it logged nothing)")
    message = f"simserver {target} {exc.status}: {reason}"
    if len(lines) > 1:
        message += f" (server log kept at {exc.log_file})"
    return SimgymError(message), len(lines) > 1


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
