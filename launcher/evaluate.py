"""``simgym evaluate``: a trained agent and baseline controllers on fixed, seeded scenarios.

Every controller runs every episode of a scenario file through real sim servers (started
from the env spec, like training's sidecars) — the same bridge, the same observation and
reward code as training — and is scored on the episode's return, length, terminations and
the final value of each ``log_states`` entry. The scenario file, the controllers and the
output folder are described in docs/evaluation.md.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gymclient.codec import (
    Codec,
    declared_action_names,
    declared_integer_actions,
    sample_config,
    session_codec,
)
from gymclient.connection import Connection, RemoteSession
from gymclient.env import connect_options
from gymclient.errors import SimgymError, SpecError
from gymclient.goals import StepRules, uses_rules
from gymclient.spec import EnvSpec, Lesson, load_spec, read_text
from launcher.bonsai_sims import BonsaiPlan
from launcher.sidecars import SidecarPool, SidecarStartError
from launcher.sims import spec_launch, start_sims
from simgym.targets import LoadError, resolve_class


class EvaluationError(SimgymError):
    """The evaluation cannot run (bad scenario file, baseline, run folder)."""


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Episode:
    """One reset config and sim seed, in a named scenario."""

    scenario: str
    config: dict[str, Any]
    seed: int
    group: str = ""


@dataclass(frozen=True)
class Panel:
    """One subplot: states (with an optional reference state drawn dashed), or an action."""

    states: tuple[str, ...] = ()
    reference: str | None = None
    action: str | None = None


@dataclass
class Scenarios:
    """A parsed scenario file."""

    episodes: list[Episode]
    panels: list[Panel]
    parallel: int | None = None
    source: str = "<scenarios>"

    @property
    def names(self) -> list[str]:
        """Scenario names in file order."""
        return list(dict.fromkeys(e.scenario for e in self.episodes))

    @property
    def groups(self) -> list[str]:
        """Group names in file order."""
        return [g for g in dict.fromkeys(e.group for e in self.episodes) if g]


def _seeds(entry: Mapping[str, Any], where: str, source: str) -> list[int]:
    if "seeds" in entry:
        seeds = entry["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
            raise SpecError(source, f"{where}.seeds", "expected a non-empty list of integers")
        return list(seeds)
    seed, count = entry.get("seed", 0), entry.get("count", 1)
    if not isinstance(seed, int) or not isinstance(count, int) or count < 1:
        raise SpecError(source, where, "seed must be an integer and count a positive integer")
    return list(range(seed, seed + count))


def _format(template: str, config: Mapping[str, Any], source: str, where: str) -> str:
    try:
        return template.format(**config)
    except (KeyError, IndexError, ValueError) as exc:
        raise SpecError(
            source, where, f"cannot fill {template!r} from {dict(config)}: {exc}"
        ) from None


def load_scenarios(path: str | os.PathLike[str], spec: EnvSpec | None = None) -> Scenarios:
    """Read and validate a scenario file.

    Raises:
        SpecError: Naming the file and the entry at fault.
    """
    source = str(path)
    data = _read_mapping(Path(path))
    episodes: list[Episode] = []
    for i, entry in enumerate(data["scenarios"]):
        episodes += _episodes(entry, f"scenarios[{i}]", i, source, spec)
    if not episodes:
        raise SpecError(source, "scenarios", "no episodes")
    parallel = data.get("parallel")
    if parallel is not None and (not isinstance(parallel, int) or parallel < 1):
        raise SpecError(source, "parallel", "expected a positive integer")
    return Scenarios(episodes, _panels(data.get("plot") or [], source), parallel, source)


def _read_mapping(p: Path) -> dict[str, Any]:
    """The scenario file's top level: ``scenarios`` (a list), ``plot`` and ``parallel``."""
    source = str(p)
    if not p.is_file():
        raise SpecError(source, "", "no such file")
    try:
        data = yaml.safe_load(read_text(p))
    except yaml.YAMLError as exc:
        raise SpecError(source, "", f"not valid YAML: {exc}") from None
    if isinstance(data, list):
        data = {"scenarios": data}
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list):
        raise SpecError(source, "scenarios", "expected a list of scenarios")
    unknown = set(data) - {"scenarios", "plot", "parallel"}
    if unknown:
        raise SpecError(source, sorted(unknown)[0], "unknown key (check its spelling)")
    return data


_ENTRY_KEYS = {"name", "config", "grid", "lesson", "seeds", "seed", "count", "group"}


def _episodes(
    entry: Any, where: str, index: int, source: str, spec: EnvSpec | None
) -> list[Episode]:
    """The episodes of one scenario entry: a fixed ``config``, a ``grid``, or ``lesson`` draws."""
    if not isinstance(entry, dict):
        raise SpecError(source, where, "expected a mapping")
    extra = set(entry) - _ENTRY_KEYS
    if extra:
        raise SpecError(source, f"{where}.{sorted(extra)[0]}", "unknown key (check its spelling)")
    kinds = [k for k in ("config", "grid", "lesson") if k in entry]
    if len(kinds) != 1:
        raise SpecError(source, where, "give exactly one of config, grid, lesson")
    seeds = _seeds(entry, where, source)
    group = str(entry.get("group", ""))

    def episodes(name: str, config: dict[str, Any]) -> list[Episode]:
        return [Episode(name, config, s, _format(group, config, source, where)) for s in seeds]

    if "config" in entry:
        config = entry["config"] or {}
        if not isinstance(config, dict):
            raise SpecError(source, f"{where}.config", "expected a mapping")
        return episodes(str(entry.get("name") or _default_name(config)), dict(config))
    if "grid" in entry:
        grid = entry["grid"]
        if not isinstance(grid, dict) or not grid:
            raise SpecError(source, f"{where}.grid", "expected a mapping of key → list")
        out: list[Episode] = []
        lists = [v if isinstance(v, list) else [v] for v in grid.values()]
        for combo in itertools.product(*lists):
            config = dict(zip(grid, combo, strict=True))
            name = (
                _format(str(entry["name"]), config, source, f"{where}.name")
                if entry.get("name")
                else _default_name(config)
            )
            out += episodes(name, config)
        return out
    lessons = _lessons(entry["lesson"], f"{where}.lesson", source, spec)
    rng = np.random.default_rng(seeds[0])
    name = str(entry.get("name") or f"lesson-{index}")
    out = []
    for s in seeds:
        config = sample_config(lessons, rng)
        out.append(Episode(name, config, s, _format(group, config, source, where)))
    return out


def _lessons(lesson: Any, where: str, source: str, spec: EnvSpec | None) -> dict[str, Lesson]:
    """A ``lesson:`` entry's lessons: the env spec's or a lessons mapping.

    ``spec``: the env spec's last lesson (several lessons: the one training ends on);
    ``spec:NAME`` or ``spec:N`` (1-based): that lesson of the env spec.
    """
    if isinstance(lesson, str) and (lesson == "spec" or lesson.startswith("spec:")):
        if spec is None or spec.is_reference:
            raise SpecError(source, where, "'spec' needs a declarative env spec's lessons")
        ref = lesson.partition(":")[2].strip() or None
        try:
            index = spec.lesson_index(ref)
        except SpecError as exc:
            raise SpecError(source, where, exc.problem) from None
        return spec.lesson_config(index)
    if not isinstance(lesson, dict):
        raise SpecError(source, where, "expected 'spec', 'spec:<lesson>' or a lessons mapping")
    try:
        return {
            k: Lesson.model_validate(v if isinstance(v, dict) else {"values": [v]})
            for k, v in lesson.items()
        }
    except Exception as exc:
        raise SpecError(source, where, str(exc).splitlines()[0]) from None


def _panels(items: list[Any], source: str) -> list[Panel]:
    """The ``plot:`` panels."""
    panels = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not ({"states", "action"} & set(item)):
            raise SpecError(
                source, f"plot[{i}]", "expected {states: [...], reference: name} or {action: name}"
            )
        states = item.get("states") or []
        panels.append(
            Panel(
                tuple([states] if isinstance(states, str) else states),
                item.get("reference"),
                item.get("action"),
            )
        )
    return panels


def _default_name(config: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items()) or "default"


# ---------------------------------------------------------------- controllers


StepFn = Callable[[np.ndarray, dict[str, float]], list[float]]


class Controller:
    """Something that acts in an episode: ``start()`` gives a per-episode step function.

    The step function takes the observation (as the agent sees it) and the raw states,
    and returns the sim's action values in the session's action order.
    """

    name: str = "controller"

    def bind(self, codec: Codec, action_names: list[str]) -> None:
        """Learn the session's names before the first episode (once per worker)."""
        self.codec = codec
        self.action_names = action_names

    def start(self) -> StepFn:
        """A step function for one episode."""
        raise NotImplementedError


class AgentController(Controller):
    """The trained policy from an RLlib checkpoint, deterministic.

    The Gaussian's mean for continuous actions, the most likely choice (argmax) of each
    discrete action, decoded to the values the sim receives.
    """

    def __init__(self, module: Any, name: str = "agent") -> None:
        import torch

        torch.set_num_threads(1)
        self.module = module
        self.name = name

    def start(self) -> StepFn:
        """The module's mean action, decoded like training's env does."""
        import torch

        def step(obs: np.ndarray, states: dict[str, float]) -> list[float]:
            with torch.no_grad():
                out = self.module.forward_inference({"obs": torch.from_numpy(obs[None, :])})
            return self.codec.decode(self.codec.deterministic(out["action_dist_inputs"][0].numpy()))

        return step


class CallableController(Controller):
    """A baseline ``states -> {action: value}``: a class (an instance per episode) or function."""

    def __init__(self, target: Any, name: str) -> None:
        self.target = target
        self.name = name

    def start(self) -> StepFn:
        """One controller instance per episode (a fresh integrator), or the function itself."""
        fn = self.target() if isinstance(self.target, type) else self.target
        names = self.action_names
        who = self.name

        def step(obs: np.ndarray, states: dict[str, float]) -> list[float]:
            out = fn(dict(states))
            if not isinstance(out, Mapping):
                raise EvaluationError(
                    f"baseline {who} returned {type(out).__name__}; expected a dict of "
                    f"action name → value ({', '.join(names)})"
                )
            values = []
            for n in names:
                if n not in out:
                    raise EvaluationError(f"baseline {who} returned no value for action {n!r}")
                values.append(float(out[n]))
            return values

        return step


class ExportedAgentController(CallableController):
    """An exported agent folder (``simgym export``), through onnxruntime."""

    def __init__(self, folder: Path, name: str) -> None:
        from gymclient.agent import load_agent

        self.agent = load_agent(folder)
        super().__init__(self.agent.act, name)


def load_baseline(ref: str) -> Controller:
    """``file.py:Name`` (a class or function) or an exported agent folder.

    Raises:
        EvaluationError: The file, the name or the folder cannot be loaded.
    """
    path = Path(ref)
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise EvaluationError(f"--baseline {ref}: a folder must be an exported agent")
        return ExportedAgentController(path, path.name or str(path))
    module_part, sep, attr = ref.rpartition(":")
    if not sep or not attr:
        raise EvaluationError(f"--baseline {ref}: expected file.py:Name or an agent folder")
    if module_part.endswith(".py"):
        if not Path(module_part).is_file():
            raise EvaluationError(f"--baseline {ref}: no such file {module_part}")
        ref = f"{Path(module_part).resolve()}:{attr}"
    try:
        target = resolve_class(ref)
    except LoadError as exc:
        raise EvaluationError(f"--baseline {ref}: {exc}") from None
    if not callable(target):
        raise EvaluationError(f"--baseline {ref}: {attr} is not callable")
    return CallableController(target, attr)


# ---------------------------------------------------------------- running


@dataclass
class Result:
    """One controller's episode."""

    controller: str
    episode: Episode
    ret: float = 0.0
    length: int = 0
    terminated: bool = False
    truncated: bool = False
    error: str = ""
    reset_failed: bool = False  # the sim refused the episode's reset (``error`` says why)
    final: dict[str, float] = field(default_factory=dict)
    states: list[list[float]] = field(default_factory=list)  # after reset, then every step
    actions: list[list[float]] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    goals: dict[str, bool] = field(default_factory=dict)  # the spec's goals: satisfied?


class _Worker:
    """A session per thread, bound to one server; reused across episodes."""

    def __init__(self, spec: EnvSpec, address: str) -> None:
        self.conn = Connection(address, connect_options(spec))
        self.session: RemoteSession = self.conn.open(
            declared_action_names(spec),
            f"simgym evaluate pid {os.getpid()}",
            declared_integer_actions(spec),
        )
        self.codec = session_codec(spec, self.session)
        self.spec = spec
        # The spec's reward/terminal/truncate expressions and goals, as the envs apply them.
        self.rules = (
            StepRules(spec, self.session.state_names, self.codec.lessons, self.codec.reward)
            if uses_rules(spec)
            else None
        )

    def close(self) -> None:
        try:
            self.session.close()
        finally:
            self.conn.close()


def run_episode(
    worker: _Worker, controller: Controller, episode: Episode, max_steps: int = 100_000
) -> Result:
    """One episode; a sim failure ends it and is recorded in ``error``."""
    codec, session = worker.codec, worker.session
    names = session.state_names
    result = Result(controller.name, episode)
    try:
        transition = session.reset(episode.config, episode.seed)
    except SimgymError as exc:
        result.error, result.reset_failed = f"reset: {exc}", True
        return result
    step = controller.start()
    limit = worker.spec.max_episode_steps or max_steps
    rules = worker.rules
    if rules is not None:
        rules.reset(episode.config)
    while True:
        values = list(transition.states)
        states = dict(zip(names, values, strict=True))
        result.states.append(values)
        if result.length >= limit or result.terminated or result.truncated:
            break
        obs, _ = codec.encode(states, values)
        if not np.all(np.isfinite(obs)):
            obs = np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=-1.0)
        action = step(obs, states)
        result.actions.append(action)
        try:
            transition = session.step(action)
        except SimgymError as exc:
            result.error = str(exc)
            result.truncated = True
            break
        result.length += 1
        if transition.nonfinite:
            bad = [names[i] for i in transition.nonfinite]
            result.error = f"non-finite states: {', '.join(bad)}"
            result.truncated = True
            result.states.append(list(transition.states))
            break
        new_states = dict(zip(names, transition.states, strict=True))
        sim_reward = transition.reward if transition.HasField("reward") else None
        if rules is not None:
            reward, term, trunc = rules.step(
                new_states, transition.terminated, transition.truncated, sim_reward, result.length
            )
        else:
            reward, term, trunc = codec.reward(
                new_states, transition.terminated, transition.truncated, sim_reward
            )
        result.rewards.append(reward)
        result.ret += reward
        result.terminated, result.truncated = term, trunc
        if result.length >= limit and not term:
            result.truncated = True
    last = dict(zip(names, result.states[-1], strict=True))
    result.final = {n: float(last[n]) for n in codec.log_states if n in last}
    if rules is not None and rules.has_goals and result.length and not result.error:
        result.goals = rules.end_info()["goals"]
    return result


def run_all(
    spec: EnvSpec,
    addresses: list[str],
    controllers: Sequence[Controller],
    episodes: Sequence[Episode],
    parallel: int,
) -> list[Result]:
    """Every controller on every episode, ``parallel`` sessions at once, results in order."""
    jobs = [(c, e) for c in controllers for e in episodes]
    local = threading.local()
    workers: list[_Worker] = []
    lock = threading.Lock()
    counter = itertools.count()

    def worker() -> _Worker:
        w = getattr(local, "worker", None)
        if w is None:
            address = addresses[next(counter) % len(addresses)]
            w = _Worker(spec, address)
            for c in controllers:
                with lock:
                    if not hasattr(c, "codec"):
                        c.bind(w.codec, w.session.action_names)
            local.worker = w
            with lock:
                workers.append(w)
        return w

    def job(item: tuple[Controller, Episode]) -> Result:
        return run_episode(worker(), item[0], item[1])

    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            return list(pool.map(job, jobs))
    finally:
        for w in workers:
            try:
                w.close()
            except SimgymError:
                pass


# ---------------------------------------------------------------- summary


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def summarize(results: Sequence[Result], log_states: Sequence[str], scen: Scenarios) -> list[dict]:
    """Rows per (scenario, controller), per (group, controller) and overall per controller."""
    controllers = list(dict.fromkeys(r.controller for r in results))
    levels = [("scenario", s) for s in scen.names] + [("group", g) for g in scen.groups]
    rows = []
    goals = any(r.goals for r in results)
    for level, name in [*levels, ("overall", "all")]:
        for c in controllers:
            rs = [
                r
                for r in results
                if r.controller == c and (level == "overall" or getattr(r.episode, level) == name)
            ]
            if not rs:
                continue
            row: dict[str, Any] = {
                "level": level,
                "name": name,
                "controller": c,
                "episodes": len(rs),
                "return_mean": _mean([r.ret for r in rs]),
                "length_mean": _mean([r.length for r in rs]),
                "terminated": sum(r.terminated for r in rs),
                "errors": sum(bool(r.error) for r in rs),
            }
            if goals:  # the share of episodes that satisfied every goal (errors: not)
                row["goal_success"] = _mean(
                    [float(bool(r.goals) and all(r.goals.values())) for r in rs]
                )
            for s in log_states:
                row[f"final_{s}"] = _mean([r.final.get(s, math.nan) for r in rs])
            rows.append(row)
    return rows


def action_columns(state_names: Sequence[str], action_names: Sequence[str]) -> list[str]:
    """trajectories.csv's action columns: an action named like a state is ``action.<name>``.

    A sim may report the action it received as a state of the same name (``hvacON``); two
    columns of one name would collapse in a CSV reader.
    """
    states = set(state_names)
    return [f"action.{n}" if n in states else n for n in action_names]


def write_outputs(
    out: Path,
    results: Sequence[Result],
    summary: Sequence[dict],
    state_names: list[str],
    action_names: list[str],
    log_states: list[str],
) -> None:
    """``episodes.csv``, ``summary.csv``, ``trajectories.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "episodes.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "controller",
                "scenario",
                "group",
                "seed",
                "config",
                "return",
                "length",
                "terminated",
                "truncated",
                "error",
                *[f"final_{s}" for s in log_states],
            ]
        )
        for r in results:
            e = r.episode
            w.writerow(
                [
                    r.controller,
                    e.scenario,
                    e.group,
                    e.seed,
                    json.dumps(e.config),
                    f"{r.ret:.6g}",
                    r.length,
                    int(r.terminated),
                    int(r.truncated),
                    r.error,
                    *[f"{r.final.get(s, math.nan):.6g}" for s in log_states],
                ]
            )
    if summary:
        with (out / "summary.csv").open("w", newline="") as f:
            w2 = csv.DictWriter(f, fieldnames=list(summary[0]))
            w2.writeheader()
            for row in summary:
                w2.writerow(
                    {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
                )
    with (out / "trajectories.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "controller",
                "scenario",
                "seed",
                "step",
                *state_names,
                *action_columns(state_names, action_names),
                "reward",
            ]
        )
        for r in results:
            for t, values in enumerate(r.states):
                action = r.actions[t] if t < len(r.actions) else [math.nan] * len(action_names)
                reward = r.rewards[t - 1] if 0 < t <= len(r.rewards) else math.nan
                w.writerow(
                    [
                        r.controller,
                        r.episode.scenario,
                        r.episode.seed,
                        t,
                        *[f"{v:.9g}" for v in values],
                        *[f"{v:.9g}" for v in action],
                        f"{reward:.6g}",
                    ]
                )


def default_panels(spec: EnvSpec, state_names: list[str], action_names: list[str]) -> list[Panel]:
    """One panel per observed state (plain or used in an expression), one per action."""
    if spec.is_reference:
        observed = [n for n in state_names if n not in action_names][:4]
    else:
        from launcher.export import input_states

        observed = [n for n in input_states(spec) if n in state_names]
    return [Panel((n,)) for n in observed] + [Panel(action=a) for a in action_names]


def _draw_panel(
    ax: Any,
    panel: Panel,
    results: Sequence[Result],
    colours: Mapping[str, str],
    index: Mapping[str, int],
    a_index: Mapping[str, int],
) -> None:
    """One panel of a scenario's plot: each controller's states (or action), the reference once."""
    refs_drawn = False
    for r in results:
        arr = np.asarray(r.states, dtype=float)
        steps = np.arange(arr.shape[0])
        if panel.action:
            acts = np.asarray(r.actions, dtype=float)
            if acts.size:
                ax.step(
                    np.arange(1, acts.shape[0] + 1),
                    acts[:, a_index[panel.action]],
                    where="pre",
                    color=colours[r.controller],
                    label=r.controller,
                )
            ax.set_ylabel(panel.action)
            continue
        for k, s in enumerate(panel.states):
            if s in index:
                ax.plot(
                    steps,
                    arr[:, index[s]],
                    color=colours[r.controller],
                    linestyle="-" if k == 0 else ":",
                    alpha=1.0 if k == 0 else 0.5,
                    label=r.controller if k == 0 else None,
                )
        if panel.reference and panel.reference in index and not refs_drawn:
            ax.plot(
                steps,
                arr[:, index[panel.reference]],
                color="black",
                linestyle="--",
                linewidth=1.2,
                label=panel.reference,
            )
            refs_drawn = True
        ax.set_ylabel(" / ".join(panel.states))
    ax.grid(alpha=0.3)


def plot_scenarios(
    out: Path,
    results: Sequence[Result],
    panels: Sequence[Panel],
    state_names: list[str],
    action_names: list[str],
) -> list[Path]:
    """One PNG per scenario: its first seed, every controller overlaid, one panel per row.

    Raises:
        EvaluationError: matplotlib is not installed (it comes with the train extra).
    """
    try:
        import matplotlib
    except ImportError:
        raise EvaluationError(
            "plots need matplotlib: pip install 'simgym[train]' (or matplotlib)"
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    index = {n: i for i, n in enumerate(state_names)}
    a_index = {n: i for i, n in enumerate(action_names)}
    controllers = list(dict.fromkeys(r.controller for r in results))
    colours = {c: f"C{i % 10}" for i, c in enumerate(controllers)}
    written = []
    for scenario in dict.fromkeys(r.episode.scenario for r in results):
        mine = [r for r in results if r.episode.scenario == scenario]
        seed = mine[0].episode.seed
        mine = [r for r in mine if r.episode.seed == seed]
        fig, axes = plt.subplots(
            len(panels), 1, figsize=(9, 2.2 * len(panels) + 0.6), sharex=True, squeeze=False
        )
        for ax, panel in zip(axes[:, 0], panels, strict=True):
            _draw_panel(ax, panel, mine, colours, index, a_index)
        axes[0, 0].legend(loc="best", fontsize=8)
        axes[-1, 0].set_xlabel("step")
        fig.suptitle(f"{scenario} (seed {seed})")
        fig.tight_layout()
        safe = "".join(ch if ch.isalnum() or ch in "-_=." else "_" for ch in scenario)
        path = folder / f"{safe}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------- entry point


@dataclass
class EvaluationReport:
    """What ``evaluate`` did, for the CLI to print."""

    out: Path
    summary: list[dict]
    log_states: list[str]
    results: list[Result]
    plots: list[Path]
    seconds: float
    controllers: list[str]


def _load_spec(run_dir: Path | None, spec_path: Path | None) -> EnvSpec:
    """The env spec: ``--spec``'s, else the run folder's.

    Observations ``--spec`` leaves without a range take the run's estimate (``ranges.yaml``):
    the agent must see them scaled as in training.
    """
    if spec_path is not None:
        spec = load_spec(spec_path)
        from launcher import ranges

        saved = ranges.load(run_dir) if run_dir is not None else None
        return ranges.with_ranges(spec, saved) if saved else spec
    if run_dir is None:
        raise EvaluationError("give a run folder, or --spec to evaluate baselines only")
    from launcher.export import load_run_spec

    return load_run_spec(run_dir)


def _controllers(
    spec: EnvSpec, run_dir: Path | None, checkpoint: Path | None, baselines: Sequence[str]
) -> list[Controller]:
    """The agent (when ``run_dir`` is given) and the baselines, with unique names."""
    controllers: list[Controller] = []
    if run_dir is not None:
        from launcher.export import load_module, resolve_checkpoint

        module_dir = resolve_checkpoint(run_dir, checkpoint)
        try:
            module = load_module(module_dir)
        except Exception as exc:
            raise EvaluationError(f"{module_dir}: cannot load the RLlib module: {exc}") from None
        controllers.append(AgentController(module))
    controllers += [load_baseline(ref) for ref in baselines]
    if not controllers:
        raise EvaluationError("nothing to evaluate: give a run folder or --baseline")
    names = [c.name for c in controllers]
    for n in set(names):
        if names.count(n) > 1:
            dupes = [c for c in controllers if c.name == n]
            for k, c in enumerate(dupes[1:], start=2):
                c.name = f"{n}#{k}"
    return controllers


def _sim_names(spec: EnvSpec, address: str) -> tuple[list[str], list[str], list[str]]:
    """State, action and log-state names, from one session (every session has the same)."""
    with Connection(address, connect_options(spec)) as conn:
        session = conn.open(declared_action_names(spec), client="simgym evaluate")
        state_names, action_names = session.state_names, session.action_names
        log_states = session_codec(spec, session).log_states
        session.close()
    return state_names, action_names, log_states


def _check_panels(
    panels: Sequence[Panel], state_names: list[str], action_names: list[str], source: str
) -> None:
    bad = [
        n
        for p in panels
        for n in (*p.states, *([p.reference] if p.reference else []))
        if n not in state_names
    ] + [p.action for p in panels if p.action and p.action not in action_names]
    if bad:
        raise EvaluationError(
            f"{source}: plot: the sim has no state or action {bad[0]!r} "
            f"(states: {', '.join(state_names)}; actions: {', '.join(action_names)})"
        )


def evaluate(
    run_dir: Path | None,
    scenarios_path: Path,
    *,
    checkpoint: Path | None = None,
    baselines: Sequence[str] = (),
    spec_path: Path | None = None,
    out: Path | None = None,
    parallel: int | None = None,
    servers: int | None = None,
    agent: bool = True,
    plots: bool = True,
) -> EvaluationReport:
    """Evaluate a run's agent (and baselines) on a scenario file; write CSVs and plots.

    Raises:
        SimgymError: Run folder, checkpoint, scenario file, baseline or sims at fault (one line).
    """
    started = time.monotonic()
    spec = _load_spec(run_dir, spec_path)
    scen = load_scenarios(scenarios_path, spec)
    if plots and importlib.util.find_spec("matplotlib") is None:
        # Said before any episode runs, not after the work is done.
        raise EvaluationError(
            "plots need matplotlib: pip install 'simgym[train]' (or matplotlib), or pass --no-plots"
        )
    controllers = _controllers(spec, run_dir if agent else None, checkpoint, baselines)
    n_parallel = parallel or scen.parallel or 4
    if out is None:
        out = (run_dir or Path(".")) / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    pool: SidecarPool | None = None
    try:
        if spec.sim.target or spec.sim.bonsai:
            n_servers = servers or min(2, os.cpu_count() or 1)
            launch = spec_launch(
                spec,
                sessions=n_parallel,
                servers=n_servers,
                sessions_per_server=math.ceil(n_parallel / n_servers),
            )
            try:
                pool = start_sims(spec, launch, out / "sims")
            except SidecarStartError as exc:
                raise EvaluationError(str(exc).splitlines()[0]) from None  # it names the log
            if isinstance(launch, BonsaiPlan):  # its clients need the endpoint's token
                spec = launch.connect_spec(spec)
            addresses = pool.addresses
        else:
            addresses = spec.sim.address_list()
            if not addresses:
                raise EvaluationError(f"{spec.source}: sim: no target or address to evaluate on")
        state_names, action_names, log_states = _sim_names(spec, addresses[0])
        panels = scen.panels or default_panels(spec, state_names, action_names)
        _check_panels(panels, state_names, action_names, scen.source)
        results = run_all(spec, addresses, controllers, scen.episodes, n_parallel)
    finally:
        if pool is not None:
            pool.stop()

    failed = [r for r in results if r.reset_failed]
    if failed:
        r = failed[0]
        raise EvaluationError(
            f"{scen.source}: scenario {r.episode.scenario!r}: the sim rejected the reset config "
            f"{r.episode.config}: {r.error.removeprefix('reset: ')}"
        )
    summary = summarize(results, log_states, scen)
    write_outputs(out, results, summary, state_names, action_names, log_states)
    written = plot_scenarios(out, results, panels, state_names, action_names) if plots else []
    return EvaluationReport(
        out, summary, log_states, results, written, time.monotonic() - started,
        [c.name for c in controllers],
    )  # fmt: skip


__all__ = [
    "AgentController",
    "CallableController",
    "Controller",
    "Episode",
    "EvaluationError",
    "EvaluationReport",
    "Scenarios",
    "evaluate",
    "load_baseline",
    "load_scenarios",
    "run_all",
    "run_episode",
    "summarize",
]
