"""A training run's folder: ``run.json``, checkpoints with their counters, ``train.log``."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from launcher.failure import TrainingError
from launcher.trainspec import TrainSpec

log = logging.getLogger("simgym.train")


@dataclass
class RunState:
    """Persisted in ``run.json``: what ``--resume`` needs.

    ``iteration``/``env_steps``/``episodes`` are the latest iteration's; each checkpoint
    keeps its own in ``<checkpoint>/simgym.json`` (see ``Counters``), which is what a
    resume continues from.
    """

    spec: str
    mlflow_run_id: str = ""
    iteration: int = 0
    env_steps: int = 0
    episodes: int = 0
    checkpoints: list[str] = field(default_factory=list)
    finished: bool = False
    stop_reason: str = ""
    lesson: int = 1  # the current lesson's number (1-based; several lessons: launcher.curriculum)

    def save(self, run_dir: Path) -> None:
        """Write ``run.json`` atomically."""
        tmp = run_dir / "run.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(run_dir / "run.json")

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        """Read ``run.json``.

        Raises:
            TrainingError: No run there.
        """
        path = run_dir / "run.json"
        if not path.exists():
            raise TrainingError(f"--resume {run_dir}: not a simgym run folder (no run.json)")
        return cls(**json.loads(path.read_text()))


@dataclass
class Counters:
    """The counters at a checkpoint, saved beside its weights as ``simgym.json``.

    ``run.json`` moves on every iteration, weights only every ``checkpoint.every``: a
    resume must go back to the checkpoint's counters, not the last iteration's.
    """

    iteration: int
    env_steps: int
    episodes: int
    lesson: int = 1  # the lesson (1-based) training was on: a resume goes on with it

    FILE = "simgym.json"

    def save(self, checkpoint: Path) -> None:
        """Write into the checkpoint folder."""
        (checkpoint / self.FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, checkpoint: Path) -> Counters | None:
        """The checkpoint's counters; None for a checkpoint written before they were kept."""
        try:
            data = json.loads((checkpoint / cls.FILE).read_text())
        except (OSError, ValueError):
            return None
        return cls(
            int(data["iteration"]),
            int(data["env_steps"]),
            int(data["episodes"]),
            int(data.get("lesson", 1)),
        )


def new_run_dir(spec: TrainSpec) -> Path:
    """``<output>/<experiment>-<timestamp>`` (never reuses a folder)."""
    root = Path(spec.output)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        run_dir = (
            root / f"{spec.experiment}-{stamp}"
            if n == 0
            else root / f"{spec.experiment}-{stamp}-{n}"
        )
        try:
            run_dir.mkdir()
            return run_dir.resolve()
        except FileExistsError:
            continue
    raise TrainingError(f"cannot create a run folder under {root}")


def save_checkpoint(algo: Any, run_dir: Path, state: RunState, keep: int) -> str:
    """Save the algorithm and its counters as ``checkpoints/iter_N``; keep the last ``keep``."""
    path = run_dir / "checkpoints" / f"iter_{state.iteration:06d}"
    path.parent.mkdir(exist_ok=True)
    algo.save_to_path(str(path.resolve()))  # RLlib needs an absolute path
    Counters(state.iteration, state.env_steps, state.episodes, state.lesson).save(path)
    state.checkpoints.append(str(path))
    while len(state.checkpoints) > keep:
        shutil.rmtree(state.checkpoints.pop(0), ignore_errors=True)
    state.save(run_dir)
    log.info(
        "checkpoint %s (env steps %d, episodes %d)", path.name, state.env_steps, state.episodes
    )
    return str(path)


def older_checkpoint_counters(
    run_dir: Path, checkpoint: Path, state: RunState, restored_steps: int, restored_episodes: int
) -> tuple[Counters, str]:
    """The counters at a checkpoint without ``simgym.json``, and where they came from.

    In order: ``metrics.csv``'s row for the checkpoint's iteration (what simgym logged
    then, exact); RLlib's counters restored with the checkpoint; else ``run.json``'s, the
    last iteration's — ahead of the checkpoint by at most one interval, so a resume stops
    early rather than counting from 0 and training far past ``stop.env_steps``.
    """
    iteration = int(checkpoint.name.rsplit("_", 1)[-1])
    try:
        with (run_dir / "metrics.csv").open() as f:
            for row in csv.DictReader(f):
                if int(float(row["iteration"])) == iteration:
                    steps, episodes = row["env_steps_total"], row["episodes_total"]
                    return Counters(iteration, int(float(steps)), int(float(episodes))), (
                        f"metrics.csv (iteration {iteration})"
                    )
    except (OSError, KeyError, TypeError, ValueError):  # no file, or an unusable row
        pass
    if restored_steps or restored_episodes:
        return Counters(iteration, restored_steps, restored_episodes), "RLlib's checkpoint"
    return Counters(iteration, state.env_steps, state.episodes), (
        f"run.json (iteration {state.iteration}'s: up to one checkpoint interval ahead)"
    )


class RunLog:
    """``train.log`` in the run folder: simgym's log records for the run's duration.

    Sidecar restarts, checkpoints, resumes and the stop reason land here as they happen,
    instead of only reaching whatever handler the process has (which in the terminal
    would print into the live table).
    """

    def __init__(self, run_dir: Path) -> None:
        self.logger = logging.getLogger("simgym")
        self.handler = logging.FileHandler(run_dir / "train.log")
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        self.handler.setLevel(logging.INFO)
        self._level = self.logger.level
        self.logger.addHandler(self.handler)
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)

    def close(self) -> None:
        """Detach from the logger."""
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self._level)
        self.handler.close()


def open_run(
    spec: TrainSpec, spec_path: str | os.PathLike[str], resume: Path | None
) -> tuple[Path, RunState]:
    """A new run folder and state, or the ``--resume`` folder's.

    Raises:
        TrainingError: The ``--resume`` folder has no run or no checkpoint.
    """
    if resume is None:
        return new_run_dir(spec), RunState(spec=str(Path(spec_path).resolve()))
    run_dir = resume.resolve()
    state = RunState.load(run_dir)
    if not state.checkpoints:
        raise TrainingError(f"--resume {run_dir}: no checkpoint to resume from")
    return run_dir, state
