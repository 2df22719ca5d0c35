"""`simgym import-inkling`: the grammar, each construct's translation, errors with file:line:col.

The .ink files here are simgym's own (tests/data/inkling/, examples/): public Bonsai files were
checked by hand, with the results in docs/inkling.md.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from gymclient.expr import compile_expr, parse
from gymclient.spec import load_spec
from launcher.inkling import (
    BONSAI_EPISODE_ITERATION_LIMIT,
    InklingError,
    import_inkling,
    parse_inkling,
    render,
    write_specs,
)
from launcher.trainspec import load_train_spec

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "inkling"
SAMPLES = {
    "hvac": (ROOT / "examples" / "bonsai-hvac", "sim/house.py:House", "bonsai-hvac"),
    "cartpole": (
        ROOT / "examples" / "bonsai-cartpole" / "inkling",
        "../sim/cartpole.py:CartPole",
        "bonsai-cartpole-goals",
    ),
}


def evaluate(text: str, **values: float) -> float:
    names = sorted(parse(text))
    return compile_expr(text, names)([values[n] for n in names])


def test_the_grammar_parses_every_own_file():
    files = [*DATA.glob("*.ink"), *(d / "machine_teacher.ink" for d, _, _ in SAMPLES.values())]
    assert len(files) == 4
    for f in files:
        tree = parse_inkling(f.read_text(), str(f))
        assert any(item.data == "graph_decl" for item in tree.children), f


def test_types_become_observations_and_actions():
    spec = import_inkling(DATA / "functions.ink").spec
    limit = 30 * math.pi / 180
    assert spec["observations"] == {
        "x": {"min": -limit, "max": limit},  # a range over consts
        "v": {},  # no range: estimated before training
        "angle": {"min": -1, "max": 1},  # enumeration -> its extent
        "level": {"min": 0, "max": 10},  # a named type (`level` in backticks)
    }
    assert spec["actions"] == {
        "valve": {"values": [0, 1]},  # number<0, 1,>
        "mode": {"values": {"Off": 0, "Heat": 1, "Cool": 2}},  # Number.Int8<Off=0, ...>
        "stage": {"min": 0, "max": 4, "step": 1},  # an integer kind's range steps by 1
        "gear": {"min": 1, "max": 3, "step": 1},  # number<1 .. 3 step 1>
    }
    assert all(isinstance(v, int) for v in spec["actions"]["stage"].values())


def test_consts_scenarios_and_training_settings():
    imported = import_inkling(DATA / "functions.ink")
    spec, train = imported.spec, imported.train
    assert spec["name"] == "Control" and imported.concept == "Control"
    assert spec["max_episode_steps"] == 100  # EpisodeIterationLimit: 50 * 2
    assert spec["lessons"] == {
        "x0": {"min": -0.5, "max": 0.5},
        "mass": pytest.approx(15 * math.pi / 180),  # const Half = Limit / 2
        "seed": {"min": 1, "max": 9, "step": 2},
        "flag": {"values": [0, 1]},
        "fixed": -1,
    }
    assert train == {
        "env": "spec.yaml",
        "algorithm": "APPO",
        "stop": {"max_time": "30m", "env_steps": 2000000},  # TotalIterationLimit
        "experiment": "Control",
    }
    notes = " ".join(imported.notes)
    assert "package 'plant'" in notes and "NoProgressIterationLimit ignored" in notes
    assert "MemoryMode" in notes


@pytest.mark.parametrize(
    ("x", "v", "energy"),
    [(0.5, 1.0, 0.0), (-1.0, 2.0, 6.0), (2.0, -3.0, -7.0), (0.0, 0.0, 5.0), (1.0, 1.0, -5.0)],
)
def test_the_reward_function_is_translated_faithfully(x, v, energy):
    reward = import_inkling(DATA / "functions.ink").spec["reward"]["expr"]
    # Cost() in functions.ink, written out in Python.
    c = x * x + 0.1 * v**2
    if energy > 5:
        c += 1
    elif energy < -5:
        c += 2
    assert evaluate(reward, x=x, v=v, energy=energy) == pytest.approx(-c)


def test_the_terminal_function_becomes_a_condition():
    terminal = import_inkling(DATA / "functions.ink").spec["terminal"]
    # A flag set in two `if`s collapses to one `or`; true/false never reach the text.
    assert terminal == "abs(angle) > 0.5235987755982988 or not (x <= 2 and x >= -2)"
    assert evaluate(terminal, angle=0.6, x=0) and evaluate(terminal, angle=0, x=2.5)
    assert not evaluate(terminal, angle=0.5, x=-2)


def test_goals_of_every_kind():
    spec = import_inkling(DATA / "goals.ink").spec
    assert spec["goals"] == {
        "Too Far": {"avoid": "abs(a)", "above": 10},
        "Window": {"avoid": "b", "range": [3, 4], "weight": 2},
        "Center": {"drive": "a", "range": [-0.5, 0.5], "within": 20},
        "Top": {"reach": "c", "above": 9},
        "Spread": {"minimize": "hypot(a, b)", "below": 0.5, "weight": 0.5},
        "Height": {"maximize": "c", "above": 3},
    }
    assert "reward" not in spec and "terminal" not in spec


def test_goal_bounds_that_move_and_a_scalar_sphere(tmp_path):
    ink = tmp_path / "g.ink"
    ink.write_text(
        (DATA / "goals.ink")
        .read_text()
        .replace("State.a in Goal.Range(-Band, Band)", "State.a in Goal.Sphere(State.c, Band)")
        .replace("Goal.RangeAbove(9)", "Goal.RangeAbove(State.b * 2)")
    )
    goals = import_inkling(ink).spec["goals"]
    assert goals["Center"]["range"] == ["c - 0.5", "c + 0.5"]
    assert goals["Top"]["above"] == "b * 2"
    ink.write_text(
        (DATA / "goals.ink")
        .read_text()
        .replace("Goal.RangeBelow(Band)", "Goal.RangeBelow(State.c)")
    )
    with pytest.raises(InklingError, match="must be constant numbers"):
        import_inkling(ink)


def test_several_lessons_become_the_list_form_with_advance_rules():
    imported = import_inkling(DATA / "goals.ink")
    assert imported.spec["lessons"] == [
        {
            "name": "Easy",
            "config": {"a0": {"min": -0.1, "max": 0.1}, "target": 5},
            # the lesson's LessonSuccessThreshold, the curriculum's LessonAssessmentWindow
            "advance": {"min_episodes": 40, "success": 0.8},
        },
        {
            "name": "Medium",
            "config": {"a0": {"min": -1, "max": 1}, "target": {"min": 3, "max": 7, "step": 1}},
            "advance": {"min_episodes": 40, "reward": 150},
        },
        {
            "name": "Hard",
            "config": {"a0": {"min": -3, "max": 3}, "target": {"min": 0, "max": 10, "step": 1}},
        },
    ]
    assert imported.spec["max_episode_steps"] == 300


def test_no_episode_limit_is_bonsais_default_and_said(tmp_path):
    ink = tmp_path / "t.ink"
    ink.write_text((DATA / "goals.ink").read_text().replace("EpisodeIterationLimit: 300,", ""))
    imported = import_inkling(ink)
    assert imported.spec["max_episode_steps"] == BONSAI_EPISODE_ITERATION_LIMIT == 1000
    assert any("EpisodeIterationLimit" in n for n in imported.notes)


def test_written_specs_load_as_simgym_specs(tmp_path):
    for name in ("functions.ink", "goals.ink"):
        imported = import_inkling(DATA / name, sim="plant.py:Plant")
        out = tmp_path / name
        out.mkdir()
        (out / "plant.py").write_text("class Plant: ...\n")  # the spec checks sim.target's file
        spec_path, train_path = write_specs(imported, out, DATA / name)
        spec = load_spec(spec_path)
        assert spec.sim.target == "plant.py:Plant"
        assert list(spec.observations) == list(imported.spec["observations"])
        assert list(spec.actions) == list(imported.spec["actions"])
        assert load_train_spec(train_path).env == "spec.yaml"
        # A second import into the same folder does not overwrite without --force.
        with pytest.raises(Exception, match="exists"):
            write_specs(imported, out, DATA / name)


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_the_samples_import_as_committed(tmp_path, sample):
    folder, sim, name = SAMPLES[sample]
    imported = import_inkling(folder / "machine_teacher.ink", sim=sim, name=name)
    for f, text in render(imported, folder / "machine_teacher.ink").items():
        assert text == (folder / f).read_text(), f  # no hand edit to the imported specs
    spec = load_spec(folder / "spec.yaml")
    assert spec.name == name and spec.goals


ERROR_CASES = [
    # (replace this line of goals.ink's text, with this, -> line, column, message part)
    ("    u: number<-2 .. 2>,", "    u: number,", 15, 5, "action u: needs a range"),
    ("    u: number<-2 .. 2>,", "    u: number[3],", 15, 5, "action u: an array type"),
    (
        "    u: number<-2 .. 2>,",
        "    u: number<-2 .. 2>,\n    w: number<0, 1>,",
        14,
        8,
        "action type: mixes discrete (w) and continuous (u)",
    ),
    ("    return Math.Hypot(p, q)", "    return Math.Gamma(p)", 24, 12, "Math.Gamma: not in"),
    ("    return Math.Hypot(p, q)", "    return p[0]", 24, 12, "array index"),
    ("    return Math.Hypot(p, q)", "    var z = 1", 23, 1, "function Dist: does not return"),
    (
        "State.c in Goal.RangeAbove(9)",
        "[State.a, State.c] in Goal.Sphere([0, 0], 1)",
        38,
        28,
        "reach Top: a vector objective is not supported",
    ),
    (
        "State.c in Goal.RangeAbove(3)",
        "State.z in Goal.RangeAbove(3)",
        40,
        34,
        "S has no field 'z'",
    ),
    (
        "            source Sim\n",
        "            source Sim\n            state Obs\n",
        34,
        13,
        "state Obs",
    ),
    ("                    target: 5,", "                    speed: 5,", 49, 21, "scenario speed"),
    ("EpisodeIterationLimit: 300,", "EpisodeIterationLimit: 1.5,", 43, 17, "positive whole"),
    ("    a: number,", "    a: number<>,", 9, 15, "syntax: unexpected '>'"),
]


@pytest.mark.parametrize(("old", "new", "line", "column", "message"), ERROR_CASES)
def test_what_is_outside_the_subset_is_named_with_its_position(
    tmp_path, old, new, line, column, message
):
    text = (DATA / "goals.ink").read_text()
    assert old in text
    ink = tmp_path / "bad.ink"
    ink.write_text(text.replace(old, new, 1))
    with pytest.raises(InklingError) as info:
        import_inkling(ink)
    text = str(info.value)
    assert text.startswith(f"{ink}:{line}:{column}: "), text
    assert message in text and "\n" not in text


def test_graph_level_errors(tmp_path):
    def failing(source: str) -> str:
        ink = tmp_path / "g.ink"
        ink.write_text(textwrap.dedent(source))
        with pytest.raises(InklingError) as info:
            import_inkling(ink)
        return str(info.value).removeprefix(f"{ink}:")

    two_concepts = """\
        inkling "2.0"
        type S {a: number}
        type A {u: number<0 .. 1>}
        graph (input: S): A {
            concept One(input): A { curriculum { source simulator (Action: A): S {} } }
            output concept Pick(input): A {
                select One
                curriculum { source simulator (Action: A): S {} }
            }
        }
        """
    assert failing(two_concepts).startswith("4:1: graph: 2 concepts (One, Pick)")
    ink = tmp_path / "two.ink"
    ink.write_text(textwrap.dedent(two_concepts))
    assert import_inkling(ink, concept="One").concept == "One"
    with pytest.raises(InklingError, match=r"two.ink:7:9: select: a selector concept"):
        import_inkling(ink, concept="Pick")
    inkling1 = "schema SimState\n    Int32 x\nend\n"
    assert failing(inkling1).startswith("1:1: schema: Inkling 1 (schema ... end) is not supported")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from launcher.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_writes_both_specs_and_fails_in_one_line(tmp_path):
    (tmp_path / "s.py").write_text("class S: ...\n")
    ok = run_cli(
        "import-inkling", str(DATA / "goals.ink"), "--out", str(tmp_path), "--sim", "s.py:S"
    )
    assert ok.returncode == 0, ok.stderr
    assert "wrote" in ok.stdout
    data = yaml.safe_load((tmp_path / "spec.yaml").read_text())
    assert data["sim"] == {"target": "s.py:S"} and len(data["lessons"]) == 3
    bad = tmp_path / "bad.ink"
    bad.write_text(
        (DATA / "goals.ink").read_text().replace("    u: number<-2 .. 2>,", "    u: number,")
    )
    proc = run_cli("import-inkling", str(bad), "--out", str(tmp_path / "b"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert f"{bad}:15:5: action u: needs a range" in proc.stderr


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_the_imported_samples_are_sound_on_their_sims(sample):
    # The house indexes a list with schedule_index and refuses an hvacON other than 0/1: a
    # float draw or a rounded continuous action would make the check unsound.
    from launcher.check import run_check

    folder = SAMPLES[sample][0]
    report = run_check(load_spec(folder / "spec.yaml"), episodes=2)
    assert report.sound, report


def test_without_lark_the_error_says_what_to_install(monkeypatch):
    from gymclient.errors import SimgymError

    monkeypatch.setitem(sys.modules, "lark", None)  # `import lark` now fails as if missing
    with pytest.raises(SimgymError, match=r"pip install 'simgym\[train\]'"):
        import_inkling(DATA / "goals.ink")
