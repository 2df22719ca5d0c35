"""Observations without ``min``/``max``: ranges estimated from seeded episodes.

An observation may leave out its range (``Tout: {}``, ``Tout:``, or a bare name in a list).
The agent still sees every observation scaled to [-1, 1], so simgym estimates the range
before training, the same way everywhere (docs/spec.md, "Observations without a range"):

* ``episodes`` seeded episodes (default 10) against the sim, with uniformly random actions
  (seeded), each drawing its config from a lesson (with several lessons, episode ``k`` from
  lesson ``k mod n``, so the harder lessons' states count too), at most ``MAX_STEPS`` steps;
* each unranged observation's smallest and largest value seen (reset and steps, NaN left
  out), widened by ``MARGIN`` of the span on each side and rounded outward to two
  significant digits of the span; a constant gets ±10 % of its value (at least ±1).

``simgym train`` does it at the start of a run and writes the result into the run folder
(``ranges.yaml``, and the env spec in ``spec.resolved.yaml``, which export and evaluation
read); a resumed run reads ``ranges.yaml`` back, so the agent keeps the scaling it learned
with. ``simgym check --write-ranges`` writes the same estimate into the spec file itself.
The estimate is a fixed linear map, not a running normaliser: the exported agent needs
nothing more than the ranges in its spec, and what the agent saw is written down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gymclient.codec import (
    DeclarativeCodec,
    declared_action_names,
    declared_integer_actions,
    sample_config,
    session_codec,
)
from gymclient.connection import Connection
from gymclient.env import connect_options
from gymclient.errors import SimgymError
from gymclient.spec import EnvSpec, Range

#: How far past the values seen a range reaches, as a share of their span, on each side.
MARGIN = 0.1
#: Steps per estimation episode at most (for sims that never end an episode by themselves).
MAX_STEPS = 1000
#: The file in a run folder that keeps the estimate (read back by ``--resume``).
RANGES_FILE = "ranges.yaml"


@dataclass(frozen=True)
class Estimate:
    """One observation's estimated range and what it was estimated from."""

    min: float
    max: float
    seen_min: float
    seen_max: float
    count: int

    def as_dict(self) -> dict[str, float]:
        """``{min, max}`` as the spec writes it."""
        return {"min": self.min, "max": self.max}


def unranged(spec: EnvSpec) -> list[str]:
    """The observations that have no ``min``/``max`` (in spec order)."""
    if spec.is_reference:
        return []
    return [name for name, r in spec.observations.items() if not r.ranged]


def _nice(value: float) -> float | int:
    """A rounded float without binary noise; an int when it is a whole number."""
    value = round(value, 10)
    return int(value) if value == int(value) and abs(value) < 1e15 else value


def propose(seen_min: float, seen_max: float, margin: float = MARGIN) -> tuple[float, float]:
    """The range for values seen in [seen_min, seen_max]: widened, then rounded outward."""
    span = seen_max - seen_min
    if span <= 0:
        pad = max(abs(seen_min) * 0.1, 1.0)
        lo, hi = seen_min - pad, seen_max + pad
    else:
        lo, hi = seen_min - margin * span, seen_max + margin * span
    quantum = 10.0 ** (math.floor(math.log10(hi - lo)) - 1)
    # The tolerance keeps 4.5 / 0.1 = 44.99999... on 45 (4.5 stays 4.5).
    return (
        _nice(math.floor(lo / quantum + 1e-9) * quantum),
        _nice(math.ceil(hi / quantum - 1e-9) * quantum),
    )


def placeholder_spec(spec: EnvSpec) -> EnvSpec:
    """``spec`` with unranged observations given a stand-in range (their values pass as is)."""
    missing = unranged(spec)
    if not missing:
        return spec
    observations = {
        name: r if r.ranged else r.model_copy(update={"min": -1.0, "max": 1.0})
        for name, r in spec.observations.items()
    }
    return spec.model_copy(update={"observations": observations})


def with_ranges(spec: EnvSpec, ranges: Mapping[str, Any]) -> EnvSpec:
    """``spec`` with these observations' ``min``/``max`` set (``{name: {min, max}}``)."""
    observations: dict[str, Range] = {}
    for name, r in spec.observations.items():
        given = ranges.get(name)
        if given is not None and not r.ranged:
            r = r.model_copy(update={"min": float(given["min"]), "max": float(given["max"])})
            Range.model_validate(r.model_dump())  # still ordered and finite
        observations[name] = r
    return spec.model_copy(update={"observations": observations})


def estimate(
    spec: EnvSpec,
    address: str,
    *,
    episodes: int = 10,
    seed: int = 0,
    names: list[str] | None = None,
) -> dict[str, Estimate]:
    """Estimate ranges for ``names`` (default: the unranged observations) at ``address``.

    Raises:
        SimgymError: The sim cannot be reached, or an observation was never finite.
    """
    names = unranged(spec) if names is None else names
    if not names:
        return {}
    work = placeholder_spec(spec)
    stages = spec.lesson_stages()
    rng = np.random.default_rng(seed)
    lows = dict.fromkeys(names, math.inf)
    highs = dict.fromkeys(names, -math.inf)
    counts = dict.fromkeys(names, 0)
    positions = {name: i for i, name in enumerate(work.observations)}
    with Connection(address, connect_options(work)) as conn:
        session = conn.open(
            declared_action_names(work),
            client="simgym range estimate",
            integer_actions=declared_integer_actions(work),
        )
        try:
            codec = session_codec(work, session)
            assert isinstance(codec, DeclarativeCodec)  # reference specs have no unranged ones
            space = codec.action_space()
            space.seed(seed)

            def see(values: Any) -> None:
                raw = codec.raw_observations(list(values))
                for name in names:
                    x = float(raw[positions[name]])
                    if math.isfinite(x):
                        lows[name], highs[name] = min(lows[name], x), max(highs[name], x)
                        counts[name] += 1

            for k in range(episodes):
                lessons = stages[k % len(stages)].config if not spec.is_reference else {}
                transition = session.reset(sample_config(lessons, rng), seed + k)
                see(transition.states)
                for _ in range(spec.max_episode_steps or MAX_STEPS):
                    if transition.terminated or transition.truncated:
                        break
                    transition = session.step(codec.decode(space.sample()))
                    see(transition.states)
        finally:
            session.close()
    out: dict[str, Estimate] = {}
    for name in names:
        if not counts[name]:
            raise SimgymError(
                f"{spec.source}: observations.{name}: no finite value in {episodes} seeded "
                "episodes; give its min and max"
            )
        lo, hi = propose(lows[name], highs[name])
        out[name] = Estimate(lo, hi, lows[name], highs[name], counts[name])
    return out


def describe(estimates: Mapping[str, Estimate], episodes: int) -> str:
    """The one line that tells the user what was estimated."""
    parts = ", ".join(f"{n} [{e.min:g}, {e.max:g}]" for n, e in estimates.items())
    return (
        f"observations without min/max scaled by ranges estimated from {episodes} seeded "
        f"episodes with random actions: {parts}"
    )


def save(run_dir: Path, estimates: Mapping[str, Estimate], episodes: int, seed: int) -> Path:
    """Write ``ranges.yaml`` into the run folder."""
    data = {
        "how": f"{episodes} seeded episodes (seed {seed}), random actions; launcher/ranges.py",
        "ranges": {n: e.as_dict() for n, e in estimates.items()},
        "seen": {
            n: {"min": e.seen_min, "max": e.seen_max, "values": e.count}
            for n, e in estimates.items()
        },
    }
    path = run_dir / RANGES_FILE
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load(run_dir: Path) -> dict[str, dict[str, float]] | None:
    """A run folder's ``ranges.yaml`` ranges (None: the run has none)."""
    path = run_dir / RANGES_FILE
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    ranges = data.get("ranges") if isinstance(data, dict) else None
    return dict(ranges) if isinstance(ranges, dict) else None


# ----------------------------------------------------------------- writing into a spec file


def _flow(lo: float, hi: float) -> str:
    return f"min: {_nice(lo)}, max: {_nice(hi)}"


def _edits_for(node: Any, text: str, ranges: Mapping[str, Any]) -> list[tuple[int, int, str]]:
    """(start, end, replacement) edits adding min/max to ``ranges``' entries under ``node``."""
    edits: list[tuple[int, int, str]] = []
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            if isinstance(item, yaml.ScalarNode) and item.value in ranges:
                r = ranges[item.value]
                replacement = f"{{{item.value}: {{{_flow(r['min'], r['max'])}}}}}"
                edits.append((item.start_mark.index, item.end_mark.index, replacement))
            elif isinstance(item, yaml.MappingNode):
                edits += _edits_for(item, text, ranges)
        return edits
    if not isinstance(node, yaml.MappingNode):
        return edits
    for key, value in node.value:
        r = ranges.get(key.value) if isinstance(key, yaml.ScalarNode) else None
        if r is None:
            continue
        pair = _flow(r["min"], r["max"])
        start, end = value.start_mark.index, value.end_mark.index
        if isinstance(value, yaml.ScalarNode):  # `Tout:` (empty) or `Tout: null`
            lead = "" if start < end else " "
            edits.append((start, end, f"{lead}{{{pair}}}"))
        elif isinstance(value, yaml.MappingNode) and value.flow_style:  # `{}`, `{expr: ...}`
            inner = text[start + 1 : end - 1].strip()
            edits.append((start, end, f"{{{inner}, {pair}}}" if inner else f"{{{pair}}}"))
        elif isinstance(value, yaml.MappingNode) and value.value:  # a block mapping
            indent = " " * value.value[0][0].start_mark.column
            last_end = value.value[-1][1].end_mark.index
            eol = text.find("\n", last_end)
            eol = len(text) if eol < 0 else eol
            lines = f"\n{indent}min: {_nice(r['min'])}\n{indent}max: {_nice(r['max'])}"
            edits.append((eol, eol, lines))
    return edits


def write_ranges(path: Path, ranges: Mapping[str, Any]) -> None:
    """Add ``min``/``max`` to these observations in the spec file, changing nothing else.

    The file keeps its comments, order and layout: each entry gets its two keys where it
    is written (``Tout: {}`` becomes ``Tout: {min: -30, max: 40}``, a block mapping gets
    two lines). The result is loaded back before it replaces the file.

    Raises:
        SimgymError: The file's ``observations`` cannot be edited so, or does not load after.
    """
    text = path.read_text(encoding="utf-8")
    root = yaml.compose(text)
    observations = None
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "observations":
                observations = value
    if observations is None:
        raise SimgymError(f"{path}: observations: not found; nothing to write ranges into")
    edits = _edits_for(observations, text, ranges)
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    try:
        spec = EnvSpec.model_validate({**yaml.safe_load(text), "source": str(path)})
    except (yaml.YAMLError, ValueError) as exc:
        raise SimgymError(
            f"{path}: writing the ranges would break it ({exc}); nothing written"
        ) from None
    missing = [n for n in ranges if n in spec.observations and not spec.observations[n].ranged]
    if missing:
        raise SimgymError(
            f"{path}: could not write ranges for {', '.join(missing)} (write them by hand)"
        )
    tmp = path.with_name(path.name + ".ranges.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
