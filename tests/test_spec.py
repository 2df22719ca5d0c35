"""Spec loading: validation errors name the file and the key."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from gymclient.codec import DeclarativeCodec, sample_config
from gymclient.errors import SpecError, SpecMismatch
from gymclient.spec import load_lessons, load_spec

from .conftest import SIMS

GOOD = """
sim: {target: toy.py:Toy}
observations:
  x: {min: -10, max: 10}
actions:
  u: {min: -2, max: 2}
reward: x
"""


def _write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    (tmp_path / "toy.py").write_text((SIMS / "toy.py").read_text())
    return path


def test_good_spec_loads(tmp_path):
    spec = load_spec(_write(tmp_path, GOOD))
    assert list(spec.observations) == ["x"]
    assert spec.reward is not None and spec.reward.state == "x"
    assert spec.sim.target == "toy.py:Toy"


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (GOOD.replace("max: 10", "max: -20"), "observations.x", "greater than min"),
        (GOOD.replace("u: {min: -2, max: 2}", "u: {min: -2}"), "actions.u.max", "Field required"),
        (GOOD + "lessons:\n  noise: {min: 1}\n", "lessons.noise", "give min and max"),
        (GOOD + "lessons:\n  noise: {values: []}\n", "lessons.noise", "must not be empty"),
        (GOOD + "lessons:\n  noise: {values: [1], min: 0, max: 1}\n", "lessons.noise", "not both"),
        (GOOD + "observatons: {}\n", "observatons", "unknown key"),
        (
            GOOD.replace("reward: x", "reward: {function: a.py:f, state: x}"),
            "reward",
            "exactly one",
        ),
        (GOOD.replace("reward: x", "reward: nofile.py:fn"), "reward.function", "file not found"),
        (GOOD.replace("toy.py:Toy", "nothere.py:Toy"), "sim.target", "file not found"),
        (
            GOOD.replace("sim: {target: toy.py:Toy}", "sim: {target: toy.py:Toy, address: 'h:1'}"),
            "sim",
            "only one",
        ),
        (GOOD + "sim: {timeout: -1}\n", "sim.timeout", "greater than 0"),
        ("observations: [1, 2]\n", "observations", "valid dictionary"),
        ("- a\n- b\n", "", "mapping at the top level"),
        ("observations: {x: {min: 0, max: 1}\n", "line", "not valid YAML"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, key, message):
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    text_ = str(info.value)
    assert text_.startswith(str(path)), text_
    assert key in text_ and message in text_, text_


def test_missing_file():
    with pytest.raises(SpecError, match="no such file"):
        load_spec("/nonexistent/spec.yaml")


def test_lessons_sampling_is_reproducible(tmp_path):
    path = tmp_path / "rl_lesson.yml"
    path.write_text(
        "noise_percentage: {min: 0, max: 20}\nCref_signal: {values: [1, 2, 3, 4, 5]}\nfixed: 7\n"
    )
    lessons = load_lessons(path)
    a = [sample_config(lessons, np.random.default_rng(3)) for _ in range(2)]
    b = sample_config(lessons, np.random.default_rng(4))
    assert a[0] == a[1] != b
    assert 0 <= a[0]["noise_percentage"] <= 20
    assert a[0]["Cref_signal"] in (1, 2, 3, 4, 5) and isinstance(a[0]["Cref_signal"], int)
    assert a[0]["fixed"] == 7


def test_bad_lesson_file_names_key(tmp_path):
    path = tmp_path / "rl_lesson.yml"
    path.write_text("noise_percentage: {min: 5, max: 1}\n")
    with pytest.raises(
        SpecError, match=r"rl_lesson.yml: noise_percentage: max \(1(\.0)?\) must be >= min"
    ):
        load_lessons(path)


def test_codec_normalises_clips_and_scales(tmp_path):
    spec = load_spec(
        _write(
            tmp_path,
            GOOD.replace("x: {min: -10, max: 10}", "x: {min: 0, max: 10}\n  t: {min: 0, max: 20}"),
        )
    )
    codec = DeclarativeCodec(spec, ["t", "x"], ["u"])
    obs, clipped = codec.encode({}, [10.0, 5.0])
    np.testing.assert_allclose(obs, [0.0, 0.0])
    obs, clipped = codec.encode({}, [40.0, -5.0])
    np.testing.assert_allclose(obs, [-1.0, 1.0])
    assert clipped.tolist() == [True, True]
    assert codec.decode([1.0]) == [2.0]
    assert codec.decode([-3.0]) == [-2.0]  # clipped to the action range
    assert codec.decode([0.0]) == [0.0]


def test_codec_reports_spec_sim_mismatch(tmp_path):
    spec = load_spec(_write(tmp_path, GOOD))
    with pytest.raises(
        SpecMismatch, match=r"observations.x: the sim has no state 'x' \(it has: a, b\)"
    ):
        DeclarativeCodec(spec, ["a", "b"], ["u"])
    with pytest.raises(SpecMismatch, match="actions"):
        DeclarativeCodec(spec, ["x"], ["v"])


def test_derived_observation(tmp_path):
    text = GOOD.replace(
        "x: {min: -10, max: 10}",
        "x: {min: -10, max: 10}\n  err: {expr: 'abs(x - t) * 2', min: 0, max: 40}",
    )
    spec = load_spec(_write(tmp_path, text))
    codec = DeclarativeCodec(spec, ["x", "t"], ["u"])
    obs, _ = codec.encode({}, [3.0, 8.0])
    np.testing.assert_allclose(obs, [0.3, (10.0 / 40) * 2 - 1])
    with pytest.raises(SpecMismatch, match=r"observations.err.expr: the sim has no state 't'"):
        DeclarativeCodec(spec, ["x", "y"], ["u"])


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("x -", "not valid"),
        ("__import__('os')", "may be called"),
        ("x.real", "Attribute is not allowed"),
        ("'a' + x", "only numbers"),
        ("[x][0]", "not allowed"),
    ],
)
def test_derived_observation_rejects_unsafe_or_bad_expressions(tmp_path, expr, message):
    text = GOOD.replace("x: {min: -10, max: 10}", f'x: {{min: -10, max: 10, expr: "{expr}"}}')
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, text))
    assert "observations.x.expr" in str(info.value) and message in str(info.value)


def test_action_expr_is_refused(tmp_path):
    text = GOOD.replace("u: {min: -2, max: 2}", "u: {min: -2, max: 2, expr: 'x'}")
    with pytest.raises(SpecError, match="expr is for observations only"):
        load_spec(_write(tmp_path, text))


def test_compiled_observer_matches_the_codec_on_the_cstr_spec():
    """The agent's generated single-state observer does the codec's arithmetic exactly."""
    import math

    from gymclient.expr import compile_observer

    spec = load_spec(SIMS.parent.parent / "examples" / "cstr" / "spec.yaml")
    from examples.cstr.sim import CSTR

    names = list(CSTR.state_names)
    index = {n: i for i, n in enumerate(names)}
    codec = DeclarativeCodec(spec.model_copy(update={"reward": None}), names, list(spec.actions))
    observe = compile_observer(
        [
            (r.expr, None if r.expr else index[n], r.min, r.max)
            for n, r in spec.observations.items()
        ],
        index,
    )
    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(300):
        values = [float(v) for v in rng.uniform(1.0, 400.0, len(names))]
        values[index["Cref_next"]] = float(rng.uniform(2.0, 8.57))
        values[index["Cref_preview"]] = float(rng.uniform(2.0, 8.57))
        obs, _ = codec.observe(dict(zip(names, values, strict=True)), values)
        got = np.array(observe(values), dtype=np.float32)
        np.testing.assert_array_equal(got, obs)
        compared += 1
    assert compared == 300
    # Shared subexpressions are computed once, and Python's math errors surface (the agent
    # then falls back to the graph's IEEE arithmetic).
    values[index["Cref_next"]] = 10.0  # log(c / (10 - c)): division by zero
    with pytest.raises(ArithmeticError):
        observe(values)
    bad = compile_observer([("log(x)", None, 0.0, 1.0)], {"x": 0})
    assert bad([math.e**0.5]) == [0.0]  # (0.5 - 0) * 2 - 1
    assert compile_observer([(None, 0, 0.0, 1.0)], {"x": 0})([float("nan")]) == [0.0]
    assert compile_observer([(None, 0, 0.0, 1.0)], {"x": 0})([7.0]) == [1.0]


@pytest.mark.parametrize(
    "address", ["localhost:70000", "127.0.0.1:65536", "h:0", "h:abc", "[::1]:99999",
                "dns:///h:70000"]
)  # fmt: skip
def test_a_port_outside_1_to_65535_is_refused_naming_the_address(tmp_path, address):
    # gRPC would wrap 70000 to another port (4464) and dial that.
    from gymclient.connection import Connection
    from gymclient.errors import SimgymError
    from launcher.trainspec import load_train_spec

    with pytest.raises(SimgymError, match=r"outside|not a number") as info:
        Connection(address)
    assert address in str(info.value) and "1-65535" in str(info.value)
    spec = _write(tmp_path, GOOD.replace("{target: toy.py:Toy}", f"{{address: '{address}'}}"))
    with pytest.raises(SpecError, match=r"sim\.address: sim address") as info:
        load_spec(spec)
    assert address in str(info.value)
    train = tmp_path / "train.yaml"
    train.write_text(f"env: spec.yaml\nsim: {{addresses: ['h:1', '{address}']}}\n")
    with pytest.raises(SpecError, match=r"sim\.addresses") as info:
        load_train_spec(train)
    assert address in str(info.value)


def test_good_addresses_pass(tmp_path):
    from gymclient.connection import check_port

    for address in ("h:50051", "[::1]:1", "10.0.0.5:65535", "unix:/x.sock", "dns:h", "h"):
        check_port(address)


def test_a_spec_that_is_not_utf8_is_one_line_naming_the_file(tmp_path):
    import subprocess
    import sys

    from launcher.trainspec import load_train_spec

    env = tmp_path / "spec.yaml"
    env.write_bytes(b"sim: {target: toy\xff.py:Toy}\n")
    train = tmp_path / "train.yaml"
    train.write_bytes(b"env: spec.yaml\nexperiment: caf\xe9\n")  # latin-1
    lessons = tmp_path / "rl_lesson.yml"
    lessons.write_bytes(b"noise: {min: 0, max: \xff}\n")
    for path, load in ((env, load_spec), (train, load_train_spec), (lessons, load_lessons)):
        with pytest.raises(SpecError, match="not UTF-8 text") as info:
            load(path)
        assert str(info.value).startswith(str(path))
    for command, path, byte in (("check", env, 0xFF), ("train", train, 0xE9)):
        proc = subprocess.run(
            [sys.executable, "-c", "from launcher.cli import main; main()", command, str(path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        offset = path.read_bytes().index(bytes([byte]))
        assert proc.stderr.strip().splitlines() == [
            f"simgym: error: {path}: not UTF-8 text (byte 0x{byte:02x} at offset {offset}); "
            "save it as UTF-8"
        ], proc.stderr


# ---------------------------------------------------------------- issue 16: training specs


def test_an_env_spec_is_a_training_spec_with_documented_defaults(tmp_path):
    from launcher.trainspec import ENV_SPEC_DEFAULTS, load_train_spec

    env = tmp_path / "spec.yaml"
    env.write_text(
        "name: HVAC on/off\nobservations: {Tin: {min: 10, max: 30}}\n"
        "actions: {u: {min: -1, max: 1}}\n"
    )
    spec = load_train_spec(env)
    assert spec.implied and spec.env == "spec.yaml" and spec.load_env_spec().name == "HVAC on/off"
    assert (spec.algorithm, spec.stop.max_time) == (ENV_SPEC_DEFAULTS["algorithm"], 600.0)
    assert (spec.resources.env_runners, spec.resources.envs_per_runner) == (1, 8)
    assert spec.experiment == "HVAC-on-off"  # the run folder's prefix and the MLflow experiment
    # A training spec without `experiment` takes the env spec's name too; one with it keeps it.
    train = tmp_path / "train.yaml"
    train.write_text("env: spec.yaml\nstop: {iterations: 1}\n")
    assert load_train_spec(train).experiment == "HVAC-on-off"
    assert not load_train_spec(train).implied
    train.write_text("env: spec.yaml\nexperiment: mine\n")
    assert load_train_spec(train).experiment == "mine"


def test_every_training_spec_problem_is_listed_and_a_missing_env_says_what_to_do(tmp_path):
    from launcher.trainspec import load_train_spec

    train = tmp_path / "train.yaml"
    train.write_text("algoritm: PPO\nstop: {max_time: soon}\nresources: {env_runners: -1}\n")
    with pytest.raises(SpecError) as info:
        load_train_spec(train)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{train}: 4 problems:"
    assert [line.split(": ")[1] for line in lines[1:]] == [
        "algoritm", "env", "resources.env_runners", "stop.max_time",
    ]  # fmt: skip
    assert "unknown key (did you mean 'algorithm'?)" in lines[1]
    assert "simgym train also takes an env spec itself" in lines[2]
