"""Lessons (integer ranges, several lessons that advance), estimated ranges, env spec as training.

Real parts: sim servers on real sockets, real Ray and real MLflow (sqlite) for the trainings.
The sim (tests/sims/lessons_sim.py) shows the lesson it was reset with as its `level` state
and indexes a list with it, so a float draw fails in the sim as the issue's HVAC sim did.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from gymclient.codec import sample_config
from gymclient.errors import SpecError
from gymclient.spec import load_spec
from launcher import ranges
from launcher.curriculum import Curriculum

from .conftest import SIMS

SIM = f"{SIMS / 'lessons_sim.py'}:LessonSim"
SIMGYM = [sys.executable, "-c", "from launcher.cli import main; main()"]


def _write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _lesson_spec(tmp_path: Path, extra: str = "") -> Path:
    """Two lessons (`easy` level 0, `hard` an integer level 18..24); `temp` and `t` unranged.

    `easy` moves on after 10 episodes: its reward threshold always holds, its success one
    only when the episodes report `goal_success` (the goal is never violated).
    """
    return _write(
        tmp_path,
        f"""\
        name: lesson sim
        sim: {{target: "{SIM}", workdir: "{SIMS}"}}
        observations:
          level: {{min: 0, max: 30}}
          temp: {{}}        # no range: estimated
          t:
        actions:
          u: {{min: -1, max: 1}}
        reward: {{state: t}}
        goals:                # never violated: every episode reports goal_success true
          Bounded: {{avoid: "abs(temp)", above: 100000}}
        log_states: [level]
        lessons:
          - name: easy
            config: {{level: 0}}
            advance: {{reward: -1.0e9, success: 0.5, min_episodes: 10}}
          - name: hard
            config: {{level: {{min: 18, max: 24, step: 1}}}}
        {extra}""",
    )


# ------------------------------------------------------------------------------ lessons


def test_an_integer_range_draws_ints_over_the_whole_grid(tmp_path):
    spec = load_spec(_lesson_spec(tmp_path))
    rng = np.random.default_rng(0)
    draws = [sample_config(spec.lesson_config(1), rng)["level"] for _ in range(300)]
    assert all(type(d) is int for d in draws)
    assert set(draws) == set(range(18, 25))


def test_a_float_step_draws_a_grid_without_rounding_noise(tmp_path):
    spec = load_spec(
        _write(
            tmp_path,
            """\
            observations: {x: {min: 0, max: 1}}
            actions: {u: {min: 0, max: 1}}
            lessons: {gain: {min: 0, max: 0.3, step: 0.1}}
            """,
        )
    )
    rng = np.random.default_rng(1)
    draws = {sample_config(spec.lesson_config(), rng)["gain"] for _ in range(200)}
    assert draws == {0.0, 0.1, 0.2, 0.3}


def test_several_lessons_inherit_config_and_are_found_by_name_or_number(tmp_path):
    spec = load_spec(
        _write(
            tmp_path,
            f"""\
            sim: {{target: "{SIM}"}}
            observations: {{level: {{min: 0, max: 30}}}}
            actions: {{u: {{min: -1, max: 1}}}}
            lessons:
              - name: easy
                config: {{level: 0, noise: 0.0}}
                advance: {{success: 0.8}}
              - name: hard
                config: {{level: 20}}
            """,
        )
    )
    easy, hard = spec.lesson_stages()
    assert (easy.name, hard.name) == ("easy", "hard")
    assert hard.config["noise"].values == [0.0]  # inherited from easy
    assert spec.lesson_names() == {"level", "noise"}
    assert spec.lesson_index("hard") == spec.lesson_index(2) == spec.lesson_index() == 1
    assert easy.advance is not None and easy.advance.min_episodes == 100
    with pytest.raises(SpecError, match=r"lessons: no lesson 'medium' \(the lessons: 1 easy"):
        spec.lesson_index("medium")


def test_a_lesson_that_cannot_advance_is_refused_naming_it(tmp_path):
    path = _write(
        tmp_path,
        """\
        observations: {x: {min: 0, max: 1}}
        actions: {u: {min: 0, max: 1}}
        lessons:
          - {name: a, config: {x0: 0}}
          - {name: b, config: {x0: 1}}
        """,
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert f"{path}: lessons.0.advance: lesson 'a' needs an advance rule" in str(info.value)


def test_every_spec_problem_is_listed_at_once_one_per_line(tmp_path):
    path = _write(
        tmp_path,
        """\
        observations:
          x: {min: 0, maxx: 1}
        actions:
          u: {min: -1, max: nope}
        lessons:
          Tset: {min: 18, max: 24, int: true}
        """,
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 3 problems:"
    # Unknown keys first (a typo also makes its real key "missing"), then the others.
    assert lines[1:] == [
        f"  {path}: observations.x.maxx: unknown key (did you mean 'max'?)",
        f"  {path}: lessons.Tset.int: unknown key (integers: give step, "
        "e.g. {min: 18, max: 24, step: 1})",
        f"  {path}: actions.u.max: Input should be a number",
    ]


def test_the_cli_shows_every_problem_and_exits_2_without_a_traceback(tmp_path):
    path = _write(
        tmp_path,
        """\
        observations: {x: {min: 0, maxx: 1}}
        actions: {u: {min: -1}}
        lessons: {T: {min: 1, max: 2, stp: 1}}
        """,
    )
    proc = subprocess.run(
        [*SIMGYM, "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"simgym: error: {path}: 3 problems:", proc.stderr
    assert [line.split(": ")[1] for line in lines[1:]] == [
        "observations.x.maxx",
        "lessons.T.stp",
        "actions.u.max",
    ], proc.stderr
    assert "Traceback" not in proc.stderr


def test_curriculum_moves_on_after_min_episodes_of_its_own_lesson(tmp_path):
    spec = load_spec(_lesson_spec(tmp_path))
    cur = Curriculum(spec.lesson_stages())
    cur.observe([(1, 5.0, 1.0)] * 50)  # another lesson's episodes do not count
    cur.observe([(0, 1.0, 1.0)] * 9)
    assert cur.ready() == ""  # 9 < min_episodes 10
    cur.observe([(0, 1.0, None)])
    assert cur.ready() == ""  # an episode without goal_success: the success rate lacks it
    cur.observe([(0, 1.0, 1.0)])
    assert cur.ready() == (
        "episode_reward_mean 1 >= -1e+09 and goal success 1 >= 0.5 over the last 10 episodes"
    )
    cur.advance()
    assert (cur.number, cur.stage.name, cur.episodes) == (2, "hard", 0)
    cur.observe([(1, 3.0, None)] * 500)
    assert cur.ready() == ""  # the last lesson never moves on


def test_the_success_rule_needs_goal_success_over_the_whole_window(tmp_path):
    path = _write(
        tmp_path,
        """\
        observations: {x: {min: 0, max: 1}}
        actions: {u: {min: 0, max: 1}}
        lessons:
          - {name: a, config: {x0: 0}, advance: {reward: 10, success: 0.75, min_episodes: 4}}
          - {name: b, config: {x0: 1}}
        """,
    )
    cur = Curriculum(load_spec(path).lesson_stages())
    cur.observe([(0, 20.0, 1.0), (0, 20.0, 0.0), (0, 20.0, 1.0), (0, 20.0, 0.0)])
    assert cur.ready() == ""  # success 0.5 < 0.75
    cur.observe([(0, 20.0, 1.0), (0, 20.0, 1.0)])  # window: 1, 0, 1, 1
    assert cur.ready() == (
        "episode_reward_mean 20 >= 10 and goal success 0.75 >= 0.75 over the last 4 episodes"
    )
    cur.observe([(0, 5.0, 1.0)] * 4)
    assert cur.ready() == ""  # reward 5 < 10


# ------------------------------------------------------------------------------ ranges


@pytest.mark.parametrize(
    ("seen", "proposed"),
    [
        ((-2.285, 230.63), (-30, 260)),
        ((0.0, 10.0), (-1, 11)),
        ((5.0, 5.0), (4, 6)),
        ((50.0, 50.0), (45, 55)),
    ],
)
def test_a_proposed_range_is_widened_and_rounded_outward(seen, proposed):
    assert ranges.propose(*seen) == proposed


def test_ranges_are_estimated_from_seeded_episodes_of_every_lesson(tmp_path, start_server):
    spec = load_spec(_lesson_spec(tmp_path))
    assert ranges.unranged(spec) == ["temp", "t"]
    server = start_server(SIM)
    first = ranges.estimate(spec, server.address, episodes=4, seed=3)
    again = ranges.estimate(spec, server.address, episodes=4, seed=3)
    assert first == again  # seeded: the same ranges every time
    # Episodes 1 and 3 drew from `hard` (level 18..24: temp starts at 180..240).
    assert first["temp"].seen_max >= 170 and first["temp"].seen_min < 10
    assert (first["t"].seen_min, first["t"].seen_max) == (0.0, 10.0)
    filled = ranges.with_ranges(spec, {n: e.as_dict() for n, e in first.items()})
    assert not ranges.unranged(filled)


def test_check_write_ranges_writes_them_into_the_spec_keeping_the_rest(tmp_path):
    path = _lesson_spec(tmp_path)
    before = path.read_text()
    proc = subprocess.run(
        [*SIMGYM, "check", str(path), "--episodes", "4", "--write-ranges"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())
    assert "ranges estimated from 4 seeded episodes with random actions: temp [" in out
    assert f"wrote min/max of temp, t into {path}" in out
    after = path.read_text()
    assert "temp: {min: " in after and "}        # no range: estimated" in after
    assert "  t: {min: -1, max: 11}" in after
    # Only those two lines changed.
    changed = [a for a, b in zip(after.splitlines(), before.splitlines(), strict=True) if a != b]
    assert len(changed) == 2
    assert not ranges.unranged(load_spec(path))


@pytest.mark.slow
def test_the_terminal_shows_no_third_party_warnings_but_train_log_keeps_them(tmp_path):
    spec = _lesson_spec(tmp_path)
    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text(
        yaml.safe_dump(
            {
                "env": spec.name,
                "algorithm": "PPO",
                "config": {"train_batch_size_per_learner": 400, "minibatch_size": 100,
                           "num_epochs": 1, "min_time_s_per_iteration": 1},
                "resources": {"env_runners": 1, "envs_per_runner": 4, "cpus": 2},
                "stop": {"iterations": 1},
                "output": str(tmp_path / "runs"),
            }
        )
    )  # fmt: skip
    proc = subprocess.run(
        [*SIMGYM, "train", str(train_yaml)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    terminal = proc.stdout + proc.stderr
    for noise in ("core_worker.cc", "new API stack", "mlflow.store", "Warning: "):
        assert noise not in terminal, terminal
    assert "observations without min/max scaled by ranges estimated" in " ".join(terminal.split())
    (run_dir,) = (tmp_path / "runs").iterdir()
    log = (run_dir / "train.log").read_text()
    assert "simgym.stderr: " in log and "new API stack" in log


def test_evaluation_draws_from_the_last_lesson_or_the_one_named(tmp_path):
    from launcher.evaluate import load_scenarios

    spec = load_spec(_lesson_spec(tmp_path))
    scenarios = _write(
        tmp_path,
        """\
        scenarios:
          - {name: default, lesson: spec, count: 20}
          - {name: first, lesson: "spec:easy", count: 5}
          - {name: numbered, lesson: "spec:1", count: 5}
        """,
        "scenarios.yaml",
    )
    episodes = load_scenarios(scenarios, spec).episodes
    levels = {name: {e.config["level"] for e in episodes if e.scenario == name}
              for name in ("default", "first", "numbered")}  # fmt: skip
    assert levels["default"] <= set(range(18, 25)) and len(levels["default"]) > 1
    assert levels["first"] == levels["numbered"] == {0}
    scenarios.write_text("scenarios:\n  - {lesson: 'spec:medium', count: 1}\n")
    with pytest.raises(SpecError, match=r"scenarios\[0\]\.lesson: no lesson 'medium'"):
        load_scenarios(scenarios, spec)


@pytest.mark.parametrize(
    ("line", "noise"),
    [
        ("[2026-12-03 05:37:07,033 E 11158 11158] core_worker.cc:2465: Actor with class", True),
        ("2026-12-03 05:37:04,850\tWARNING algorithm_config.py:5160 -- You are running PPO", True),
        ("2026/12/03 05:37:14 INFO mlflow.store.db.utils: Creating initial MLflow database", True),
        ("/x/.venv/lib/python3.11/site-packages/marshmallow/schema.py:129: "
         "RemovedInMarshmallow4Warning: The `ordered` option is deprecated.", True),
        ("simgym: error: spec.yaml: observations.x: the sim has no state 'x'", False),
        ("Traceback (most recent call last):", False),
        ("my_sim.py:12: UserWarning: the user's own warning", False),
    ],
)  # fmt: skip
def test_only_third_party_lines_are_kept_out_of_the_terminal(line, noise):
    from launcher.quiet import is_noise

    assert is_noise(line) is noise


def test_stderr_lines_go_to_the_log_and_only_others_reach_the_terminal(tmp_path):
    # A child process, so that its file descriptor 2 is the one redirected (C++ writes too).
    script = textwrap.dedent(
        f"""\
        import logging, os, sys
        from launcher.quiet import ThirdPartyOutput
        handler = logging.FileHandler({str(tmp_path / "train.log")!r})
        logging.getLogger("simgym").addHandler(handler)
        logging.getLogger("simgym").setLevel(logging.INFO)
        with ThirdPartyOutput():
            os.write(2, b"[2026-12-03 05:37:07,033 E 1 1] core_worker.cc:2465: noise\\n")
            sys.stderr.write("/v/site-packages/azure/x.py:1: FutureWarning: old\\n  src\\n")
            sys.stderr.write("simgym: error: the user's problem\\n")
        sys.stderr.write("after\\n")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "simgym: error: the user's problem\nafter\n"
    log = (tmp_path / "train.log").read_text()
    for line in ("core_worker.cc:2465: noise", "FutureWarning: old", "  src", "the user's problem"):
        assert line in log
