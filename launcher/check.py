"""``simgym check``: start or reach a spec's sim server, run the conformance kit, show a report.

A server the check starts is watched between episodes: one that exited ends the episodes
there (a failed ``server stays up`` check quoting its exit code and log), and one whose
memory grows episode after episode is a failed ``server memory stays bounded`` check.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from gymclient.conformance import Check, Report, check_integration
from gymclient.errors import SimgymError
from gymclient.spec import EnvSpec
from launcher import ranges
from launcher.bonsai_sims import BonsaiPlan
from launcher.ranges import Estimate
from launcher.sidecars import QUIET_RECORD, SidecarPool, SidecarStartError, log_error_line
from launcher.sims import spec_launch, start_sims
from launcher.trainspec import Launch
from simserver.process import TRANSPORTS

# A leak: the server's memory (its process tree's RSS) grew at every episode after the
# first (which may warm caches up), by more than both of these in all. A sim that keeps
# memory per step or episode runs out of it in a long training; a cache that fills once
# grows by less, or stops growing.
LEAK_MIB = 32.0
LEAK_SHARE = 0.25
_MIB = 2**20


class ServerWatch:
    """Asked by the conformance kit before each episode: is the check's server still up?

    It samples the server's memory each time, for ``leak()``.
    """

    def __init__(self, pool: SidecarPool) -> None:
        self.pool, self.server = pool, pool.servers[0]
        self.rss: list[tuple[int, int]] = []  # (episode about to start, bytes)
        self._channel: grpc.Channel | None = None

    def __call__(self, episode: int) -> str:
        """Empty while the server runs; else what happened to it, with its log's last lines."""
        if self.server.alive and not self._answers():
            # An exiting server stops answering a moment before its process ends.
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.server.proc is not None:
                    self.server.proc.wait(5)
        if self.server.alive:
            rss = self.server.rss_bytes()
            if rss is not None:
                self.rss.append((episode, rss))
            return ""
        return self.ended(episode)

    def _answers(self) -> bool:
        """True when the server answers a health check within 2 s."""
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.server.address or "")
        try:
            health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2.0
            )
        except grpc.RpcError:
            return False
        return True

    def close(self) -> None:
        """Close the health channel."""
        if self._channel is not None:
            self._channel.close()

    def ended(self, episode: int | None = None) -> str:
        """``the server exited with code 3 during episode 2: <its error>``, then its log."""
        wedged = [e for e in self.pool.events if "health checks" in e.detail]
        how = (
            "the server failed its health checks and was killed"
            if wedged
            else f"the server exited with code {self.server.returncode}"
        )
        when = (
            ""
            if episode is None
            else (f" during episode {episode - 1}" if episode else " before the episodes")
        )
        # The log's last lines, without the server's own INFO records (sessions opened,
        # calls refused on purpose by the protocol checks): what the sim said as it died.
        tail = [
            line
            for line in self.server.log_tail(40).splitlines()
            if line.strip() and not QUIET_RECORD.match(line)
        ][-8:]
        line = log_error_line("\n".join(tail))
        said = f": {line}" if line else ""
        rest = [t for t in tail if t.strip() != line]
        return f"{how}{when}{said}" + ("; its log ends:\n" + "\n".join(rest) if rest else "")

    def leak(self) -> Check | None:
        """A failed check when the memory grew at every episode after the first, by a lot."""
        samples = [(ep, rss) for ep, rss in self.rss if ep >= 1]
        if len(samples) < 3:
            return None
        first, last = samples[0][1], samples[-1][1]
        growing = all(b >= a - _MIB for (_, a), (_, b) in itertools.pairwise(samples))
        grown = last - first
        if not (growing and grown > LEAK_MIB * _MIB and grown > LEAK_SHARE * first):
            return None
        episodes = samples[-1][0] - samples[0][0]
        return Check(
            "server memory stays bounded",
            False,
            f"the server's memory (with its child processes) grew at every episode, from "
            f"{first / _MIB:.0f} to {last / _MIB:.0f} MiB over {episodes} episodes "
            f"({grown / _MIB / episodes:.1f} MiB per episode): the sim keeps memory it "
            "no longer needs, and a long training would run out of it",
        )


def run_check(
    spec: EnvSpec,
    *,
    address: str | None = None,
    episodes: int = 10,
    seed: int = 0,
    transport: str = "unix",
    ranges_out: dict[str, Estimate] | None = None,
) -> Report:
    """Check against ``address``, the spec's address, or a server started for the check.

    Observations without ``min``/``max`` get ranges estimated from ``episodes`` seeded
    episodes first (``launcher.ranges``, as ``simgym train`` does); the check runs with them,
    and ``ranges_out`` receives them.

    Raises:
        SimgymError: The server cannot be started or reached, or ``transport`` is unknown.
    """
    if transport not in TRANSPORTS:
        raise SimgymError(f"--transport {transport!r}: use one of {', '.join(TRANSPORTS)}")
    address = address or next(iter(spec.sim.address_list()), None)
    if address:
        spec = _estimated(spec, address, episodes, seed, ranges_out)
        return check_integration(spec, address, episodes=episodes, seed=seed)
    # No restarts: a sim that dies during the check is a finding, not something to hide.
    # Bonsai sims: a copy for the session the protocol checks keep open, and one more.
    launch = spec_launch(spec, sessions=2, transport=transport, max_restarts=0)
    log_dir = Path(tempfile.mkdtemp(prefix="simgym-check-"))
    keep_log = False
    try:
        try:
            pool = start_sims(spec, launch, log_dir)
        except SidecarStartError as exc:
            error, keep_log = _start_failure(launch, exc)
            raise error from None
        if isinstance(launch, BonsaiPlan):
            spec = launch.connect_spec(spec)
        watch = ServerWatch(pool)
        try:
            spec = _estimated(spec, pool.addresses[0], episodes, seed, ranges_out)
            report = check_integration(
                spec, pool.addresses[0], episodes=episodes, seed=seed, watch=watch
            )
        except SimgymError as exc:
            if watch.server.alive:
                raise
            # It died before the episodes (handshake, protocol or Gymnasium checks).
            keep_log = True
            raise SimgymError(
                f"simserver {watch.server.target}: {watch.ended().splitlines()[0]} while it "
                f"was checked ({exc}); server log kept at {watch.server.log_file}"
            ) from None
        finally:
            watch.close()
            pool.stop()
        leak = watch.leak()
        if leak is not None:
            report.checks.append(leak)
        if not watch.server.alive:
            # Episodes cut short by the server's end did not end by themselves: no warning.
            report.checks = [c for c in report.checks if c.name != "episodes end"]
        return report
    finally:
        if not keep_log:
            shutil.rmtree(log_dir, ignore_errors=True)


def _estimated(
    spec: EnvSpec,
    address: str,
    episodes: int,
    seed: int,
    out: dict[str, Estimate] | None,
) -> EnvSpec:
    """``spec`` with its unranged observations' ranges estimated at ``address``."""
    found = ranges.estimate(spec, address, episodes=episodes, seed=seed)
    if out is not None:
        out.update(found)
    return ranges.with_ranges(spec, {n: e.as_dict() for n, e in found.items()})


def _start_failure(launch: Launch | BonsaiPlan, exc: SidecarStartError) -> tuple[SimgymError, bool]:
    """One line saying why the server did not start, and whether its log is kept.

    The reason is quoted (the log's error line, else its last line, typically the sim's
    exception); a log with more than that is kept and cited. Bonsai sims' first line says
    which process failed (the endpoint, a copy) and cites its log, which is kept.
    """
    if isinstance(launch, BonsaiPlan):
        return SimgymError(str(exc).splitlines()[0]), True
    target = launch.target or ""
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
        for name, satisfied in report.goals.items():
            share = satisfied / report.goal_episodes if report.goal_episodes else 0.0
            stats.add_row(f"goal {name} satisfied", f"{share:.0%}")
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
