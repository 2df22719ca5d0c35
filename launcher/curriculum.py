"""Several lessons: when training moves on, decided in the trainer, applied on every env runner.

The env spec's ``lessons:`` list (``gymclient.spec.LessonStage``) is a curriculum: resets
draw their config from the current lesson, and the lesson's ``advance`` rule says when to
move on (docs/spec.md, "Lessons"). The parts, in the order they run:

* **On each env runner** (``record_episode``, from the ``on_episode_end`` callback): every
  finished episode is noted with the lesson it was drawn from, its return and, when the
  episode's end ``info`` carries it, ``goal_success``.
* **In the trainer** (``on_train_result``, the driver's callback, once per ``algo.train()``):
  one ``foreach_env_runner`` call collects those notes from every env runner and tells each
  the current lesson (so a runner Ray restarted with the first lesson is back on the right one
  within an iteration); the ``Curriculum`` keeps the current lesson's last ``min_episodes``
  episodes and, when the rule holds, moves on and tells the runners at once. The result gets
  ``simgym_lesson`` (the lesson's number, 1-based) and ``simgym_lesson_event`` (a line saying
  why it moved on), which ``launcher.train`` logs (MLflow ``lesson``, ``train.log``) and keeps
  in ``run.json`` and each checkpoint's counters, so ``--resume`` goes on with that lesson.

Only episodes of the current lesson count: an episode drawn before a move (ending after it)
belongs to the earlier lesson and is ignored.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from gymclient.spec import EnvSpec, LessonStage

log = logging.getLogger("simgym.train")

# Where an env runner keeps its notes between two collections (an attribute of the runner).
_NOTES = "_simgym_lesson_notes"
# A runner's notes are bounded: a trainer that stops collecting must not grow them forever.
_MAX_NOTES = 100_000

#: The result keys ``on_train_result`` adds.
RESULT_LESSON = "simgym_lesson"
RESULT_EVENT = "simgym_lesson_event"
#: The lesson the env runners start with (0-based), in the RLlib ``env_config``.
ENV_CONFIG_KEY = "lesson"

Note = tuple[int, float, float | None]  # (lesson index, episode return, goal success or None)


def record_episode(
    env_runner: Any, env: Any, env_index: int | None, episode: Any, chunks: Any
) -> None:
    """Note a finished episode on its env runner: its lesson, return and goal success.

    ``env`` is the runner's env (unwrapped: a ``SimVectorEnv`` or ``SimEnv``), ``chunks`` the
    episode's earlier chunks (RLlib's ``prev_episode_chunks``: their returns count too).
    """
    if env_runner is None:
        return
    lessons = getattr(env, "episode_lessons", None)
    if lessons is not None and env_index is not None and env_index < len(lessons):
        lesson = int(lessons[env_index])
    else:
        lesson = int(getattr(env, "episode_lesson", 0))
    total = float(episode.get_return())
    for chunk in chunks or ():
        total += float(chunk.get_return())
    infos = episode.get_infos()
    last = infos[-1] if len(infos) else {}
    success = last.get("goal_success") if isinstance(last, dict) else None
    notes: list[Note] = env_runner.__dict__.setdefault(_NOTES, [])
    if len(notes) < _MAX_NOTES:
        notes.append((lesson, total, None if success is None else float(bool(success))))


def _collect_and_set(env_runner: Any, lesson: int) -> list[Note]:
    """On an env runner: hand over its notes and make its env draw from ``lesson``."""
    env = getattr(getattr(env_runner, "env", None), "unwrapped", None)
    set_lesson = getattr(env, "set_lesson", None)
    if set_lesson is not None and getattr(env, "lesson", None) != lesson:
        set_lesson(lesson)
    notes: list[Note] = env_runner.__dict__.get(_NOTES, [])
    env_runner.__dict__[_NOTES] = []
    return notes


class Curriculum:
    """The current lesson and the episodes that decide when it moves on.

    Args:
        stages: The lessons, in order (``EnvSpec.lesson_stages()``).
        index: The lesson to start with (0-based; a resumed run's).
    """

    def __init__(self, stages: Sequence[LessonStage], index: int = 0) -> None:
        self.stages = list(stages)
        self.index = max(0, min(index, len(self.stages) - 1))
        self._reset_window()

    @property
    def stage(self) -> LessonStage:
        """The current lesson."""
        return self.stages[self.index]

    @property
    def number(self) -> int:
        """The current lesson's number, 1-based (the MLflow metric ``lesson``)."""
        return self.index + 1

    def _reset_window(self) -> None:
        advance = self.stage.advance
        size = advance.min_episodes if advance is not None else 1
        self.returns: deque[float] = deque(maxlen=size)
        self.successes: deque[float] = deque(maxlen=size)
        self.episodes = 0  # of the current lesson, since it started (or the run resumed)

    def observe(self, notes: Iterable[Note]) -> None:
        """Take finished episodes; those of other lessons are ignored."""
        for lesson, total, success in notes:
            if lesson != self.index:
                continue
            self.episodes += 1
            self.returns.append(total)
            if success is not None:
                self.successes.append(success)

    def reward_mean(self) -> float | None:
        """Mean return over the current lesson's window (None: no episode yet)."""
        return sum(self.returns) / len(self.returns) if self.returns else None

    def success_rate(self) -> float | None:
        """Share of the window's episodes that satisfied every goal (None: none reported)."""
        return sum(self.successes) / len(self.successes) if self.successes else None

    def ready(self) -> str:
        """Why the current lesson is done ("" while it is not, or it is the last one)."""
        advance = self.stage.advance
        if advance is None or self.index + 1 >= len(self.stages):
            return ""
        n = advance.min_episodes
        if self.episodes < n or len(self.returns) < n:
            return ""
        reasons = []
        if advance.reward is not None:
            mean = self.reward_mean()
            if mean is None or mean < advance.reward:
                return ""
            reasons.append(f"episode_reward_mean {mean:.4g} >= {advance.reward:g}")
        if advance.success is not None:
            # Every episode of the window must have reported goal_success.
            rate = self.success_rate()
            if rate is None or len(self.successes) < n or rate < advance.success:
                return ""
            reasons.append(f"goal success {rate:.3g} >= {advance.success:g}")
        return " and ".join(reasons) + f" over the last {n} episodes"

    def advance(self) -> None:
        """Move on to the next lesson (its window starts empty)."""
        self.index = min(self.index + 1, len(self.stages) - 1)
        self._reset_window()


def curriculum_of(algorithm: Any) -> Curriculum | None:
    """The driver's curriculum for ``algorithm`` (made on first use), None for one lesson."""
    existing = getattr(algorithm, "_simgym_curriculum", None)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    env_config = getattr(getattr(algorithm, "config", None), "env_config", None) or {}
    spec = env_config.get("spec")
    if not isinstance(spec, EnvSpec) or not isinstance(spec.lessons, list):
        return None
    curriculum = Curriculum(spec.lesson_stages(), int(env_config.get(ENV_CONFIG_KEY) or 0))
    algorithm._simgym_curriculum = curriculum
    return curriculum


def on_train_result(algorithm: Any, result: dict[str, Any]) -> None:
    """The trainer's decision, once per iteration: collect, decide, tell the env runners."""
    curriculum = curriculum_of(algorithm)
    if curriculum is None:
        return
    group = getattr(algorithm, "env_runner_group", None)
    notes = _broadcast(group, curriculum.index)
    for runner_notes in notes:
        curriculum.observe(runner_notes)
    reason = curriculum.ready()
    if reason:
        done = curriculum.stage.name
        curriculum.advance()
        event = (
            f"lesson {curriculum.number} ({curriculum.stage.name}) from now on: "
            f"lesson {curriculum.index} ({done}) passed, {reason}"
        )
        log.info("%s", event)
        result[RESULT_EVENT] = event
        _broadcast(group, curriculum.index)
    result[RESULT_LESSON] = curriculum.number
    mean, rate = curriculum.reward_mean(), curriculum.success_rate()
    if mean is not None:
        result["simgym_lesson_reward_mean"] = mean
    if rate is not None:
        result["simgym_lesson_success_rate"] = rate


def _broadcast(group: Any, index: int) -> list[list[Note]]:
    """Every env runner's notes, each runner set to lesson ``index``; best effort."""
    if group is None:
        return []
    try:
        out = group.foreach_env_runner(
            lambda runner: _collect_and_set(runner, index),
            local_env_runner=True,
            timeout_seconds=60.0,
        )
    except Exception as exc:  # a runner being restarted: the next iteration tells it
        log.warning("could not reach every env runner for the lesson: %s", exc)
        return []
    return [list(notes) for notes in out if notes]
