"""Sims in the common shapes, hosted unedited (issue 15, parts 2 and 3), on real servers.

Each shape in tests/sims/shapes.py is served by a real ``simserver`` and driven through
``gymclient``; the session class and the constructor-per-episode shape also under
``--isolate process``, whose workers rebuild the sim through ``loader.build_instance``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gymclient.connection import Connection

from .conftest import REPO, SIMS

ISOLATIONS = [[], ["--isolate", "process"]]
EXAMPLE = REPO / "examples" / "bonsai-cartpole"


def _states(session, transition):
    return dict(zip(session.state_names, transition.states, strict=True))


def test_keyword_config_scalar_step_state_property_halted(start_server):
    """Bonsai's sample shape: reset(x0=..., gain=...), step(command: float), `state`, halted()."""
    server = start_server("shapes.py:KeywordConfig")
    with Connection(server.address) as conn:
        session = conn.open(["command"])
        assert session.state_names == ["x", "gain"]  # the `truncated` flag is not a state
        assert [v.name for v in session.info.config] == ["x0", "gain"]  # from reset's keywords
        assert _states(session, session.reset({"x0": 1.0, "gain": 2.0})) == {"x": 1.0, "gain": 2.0}
        out = session.step([0.5])
        assert _states(session, out)["x"] == 2.0 and not out.terminated
        out = session.step([1.0])
        assert out.terminated and not out.truncated  # halted() is terminated
        session.reset({})
        for _ in range(4):
            assert not session.step([0.0]).truncated
        assert session.step([0.0]).truncated  # from the state dict's flag


def test_var_keywords_get_no_seed_and_a_scalar_named_action(start_server):
    """reset(**config) names no seed: a seeded reset works (it used to get seed= and fail)."""
    server = start_server("shapes.py:VarKeywords")
    with Connection(server.address) as conn:
        session = conn.open(["u"])
        assert _states(session, session.reset({"x0": 0.5}, seed=7)) == {"x": 0.5, "t": 0.0}
        out = session.step([2.0])  # step(u): one number, since the only action is `u`
        assert _states(session, out)["x"] == 2.5 and not out.terminated
        assert session.step([1.0]).terminated  # the state dict's `terminated`


def test_the_seed_goes_to_the_parameter_that_names_it(start_server):
    """reset(seed=None, **config) gets the seed by name and the config as keywords."""
    server = start_server("shapes.py:Seeded")
    with Connection(server.address) as conn:
        session = conn.open(["u"])
        out = session.reset({"x0": 1.0}, seed=5)
        assert _states(session, out) == {"x": 1.0, "seed": 5.0}
        assert _states(session, session.step([0.5]))["x"] == 1.5  # a dict: annotated Dict


@pytest.mark.parametrize("isolate", ISOLATIONS, ids=["thread", "process"])
def test_a_class_without_reset_is_rebuilt_per_episode(start_server, isolate):
    """Constructor as the reset: the config and the seed are its arguments."""
    server = start_server("shapes.py:Rebuilt", args=isolate)
    with Connection(server.address) as conn:
        session = conn.open(["u"])
        session.reset({"x0": 2.0}, seed=3)
        first = _states(session, session.step([0.5]))
        assert first["x"] == 2.5 and first["seed"] == 3.0
        assert session.step([1.0]).terminated  # termination() of the new object
        session.reset({"x0": -1.0})
        second = _states(session, session.step([0.5]))
        assert second["x"] == -0.5 and second["built"] > first["built"]  # a new object


@pytest.mark.parametrize("isolate", ISOLATIONS, ids=["thread", "process"])
def test_a_bonsai_session_class(start_server, isolate):
    """episode_start/episode_step/get_state/halted, actions from get_interface()."""
    server = start_server("shapes.py:Session", args=isolate)
    with Connection(server.address) as conn:
        session = conn.open()  # no action names: the interface declares them
        assert session.info.sim_name == "bonsai-session"
        assert session.action_names == ["push"]
        assert (session.info.actions[0].low, session.info.actions[0].high) == (-1.0, 1.0)
        assert session.reset({"x0": 2.5}).states == [2.5]
        out = session.step([0.25])
        assert out.states == [2.75] and not out.terminated
        out = session.step([1.0])
        assert out.terminated and not out.truncated  # halted() is terminated


@pytest.mark.parametrize("target", ["sim/cartpole.py:CartPole", "main.py:CartPoleSession"])
def test_the_bonsai_example_hosted_unedited(start_server, target):
    """examples/bonsai-cartpole: the plain sim and the SDK connector's session class."""
    server = start_server(target, workdir=EXAMPLE)
    with Connection(server.address) as conn:
        session = conn.open(["command"])
        session.reset({"initial_pole_angle": 0.1}, seed=0)
        for steps in range(1, 200):  # noqa: B007 - counted
            out = session.step([0.0])  # no push: the pole falls
            if out.terminated:
                break
        assert out.terminated and not out.truncated and 5 < steps < 100
        assert _states(session, out)["pole_angle"] > 0.2


def test_simgym_check_passes_on_the_bonsai_example():
    """The example's spec (target sim/cartpole.py:CartPole) is sound, as the README promises."""
    spec = str(EXAMPLE / "spec.yaml")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from launcher.cli import main; main()",
            "check",
            spec,
            "--episodes",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "SOUND" in proc.stdout, proc.stdout + proc.stderr


def _simserver_fails(target: str, prelude: str = "", cwd=SIMS, args=()) -> str:
    """Start ``simserver target``; it must exit 2 with one line on stderr: that line."""
    argv = ["simserver", target, "--port", "0", *args]
    code = textwrap.dedent(prelude) + textwrap.dedent(f"""
        import runpy, sys
        sys.argv = {argv!r}
        runpy.run_module("simserver", run_name="__main__")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("shapes.py:NoStep", ["cannot be hosted", "step()", "episode_step()", "looked for"]),
        ("shapes.py:NoState", ["cannot be hosted", "get_state, get_states, state, states"]),
    ],
)
def test_a_shape_that_cannot_be_hosted_is_one_line_saying_what_was_looked_for(target, words):
    line = _simserver_fails(target)
    assert all(w in line for w in words), line


# Hides the Bonsai SDK as if it were not installed, whatever this venv has.
_HIDE_SDK = """
    import sys
    class _Hide:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "microsoft_bonsai_api":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, _Hide())
"""


def test_a_session_class_without_the_sdk_says_which_package_to_install():
    line = _simserver_fails("main.py:CartPoleSession", _HIDE_SDK, cwd=EXAMPLE)
    assert "microsoft_bonsai_api" in line and 'pip install "simgym[bonsai]"' in line, line
    assert "--chdir" not in line  # not a path problem


def test_a_missing_package_is_named_not_taken_for_a_path_problem(tmp_path):
    (tmp_path / "needs.py").write_text("import simgym_no_such_package\nclass Sim: pass\n")
    line = _simserver_fails(str(tmp_path / "needs.py") + ":Sim")
    assert "simgym_no_such_package" in line and "pip install" in line, line
    assert "--chdir" not in line


def test_simgym_check_reports_a_shape_it_cannot_host_in_one_line(tmp_path):
    """`simgym check` starts the sim's server; its start-up error reaches the user as one line."""
    (tmp_path / "shapes.py").write_text((SIMS / "shapes.py").read_text())
    (tmp_path / "spec.yaml").write_text(
        "sim: {target: shapes.py:NoStep}\nobservations: {x: {min: -1, max: 1}}\n"
        "actions: {u: {min: -1, max: 1}}\nreward: x\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", "from launcher.cli import main; main()", "check", "spec.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert "NoStep cannot be hosted" in lines[0] and "looked for" in lines[0], lines[0]


@pytest.mark.parametrize("isolate", ISOLATIONS, ids=["thread", "process"])
def test_the_user_picks_the_shape_where_detection_cannot_be_sure(start_server, isolate):
    """``simserver --shape``: one number whatever step's parameter is called, a new object."""
    server = start_server("shapes.py:Opaque", args=["--shape", "step=scalar", *isolate])
    with Connection(server.address) as conn:
        session = conn.open(["u"])
        assert session.reset({"x0": 1.0}).states == [101.0]  # reset(config)
        assert session.step([2.0]).states == [103.0]  # step(a) got one number
    server = start_server("shapes.py:Opaque", args=["--shape", "reset=constructor,step=scalar"])
    with Connection(server.address) as conn:
        session = conn.open(["u"])
        assert session.reset({"x0": 1.0}).states == [1.0]  # Opaque(x0=1.0), not reset()
        assert session.step([2.0]).states == [3.0]


def test_a_bad_shape_choice_is_one_line():
    line = _simserver_fails("shapes.py:Opaque", args=["--shape", "step=number"])
    assert "--shape 'step=number': expected reset=method|constructor" in line, line


def test_a_specs_sim_shape_reaches_the_servers_simgym_starts(tmp_path):
    """``sim.shape`` in an env spec is the sidecars' ``--shape``; a bad one names the key."""
    import yaml

    from gymclient.errors import SpecError
    from gymclient.spec import load_spec
    from launcher.sims import spec_launch, start_sims

    spec_file = tmp_path / "spec.yaml"
    data = {
        "sim": {"target": str(SIMS / "shapes.py") + ":Opaque", "shape": "reset=constructor, step=scalar"},
        "observations": {"x": {"min": -10, "max": 10}},
        "actions": {"u": {"min": -1, "max": 1}},
    }  # fmt: skip
    spec_file.write_text(yaml.safe_dump(data))
    spec = load_spec(spec_file)
    pool = start_sims(spec, spec_launch(spec), tmp_path / "logs")
    try:
        with Connection(pool.addresses[0]) as conn:
            session = conn.open(["u"])
            assert session.reset({"x0": 1.0}).states == [1.0]  # Opaque(x0=1.0): constructor
            assert session.step([2.0]).states == [3.0]  # one number
    finally:
        pool.stop()
    data["sim"]["shape"] = "step=number"
    spec_file.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as info:
        load_spec(spec_file)
    assert "sim.shape" in str(info.value) and "expected reset=method|constructor" in str(info.value)
