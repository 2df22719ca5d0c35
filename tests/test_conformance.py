"""The conformance kit, used the way a sim author would use it in their own suite."""

from __future__ import annotations

import pytest

from gymclient.conformance import ConformanceSuite, check_integration
from simserver.process import ServerProcess

from .conftest import SIMS


@pytest.fixture(scope="class")
def toy_server(request):
    server = ServerProcess("toy.py:Toy", workdir=SIMS, kwargs={"gain": 2.0})
    server.start()
    request.cls.address = server.address
    yield server
    server.cleanup()


@pytest.mark.usefixtures("toy_server")
class TestToyConforms(ConformanceSuite):
    spec = str(SIMS / "toy_spec.yaml")


def test_report_flags_a_failing_sim():
    with ServerProcess("toy.py:Raising", workdir=SIMS, kwargs={"fail_at": 3}) as server:
        report = check_integration(str(SIMS / "toy_spec.yaml"), server.address, episodes=3)
    assert not report.sound
    assert report.sim_errors and "ZeroDivisionError" in report.sim_errors[0]


def test_report_flags_nonfinite_states():
    with ServerProcess("toy.py:NaNSim", workdir=SIMS) as server:
        report = check_integration(str(SIMS / "toy_spec.yaml"), server.address, episodes=2)
    assert not report.sound and report.nonfinite == 2


def test_report_counts_clipping_and_stats():
    with ServerProcess("toy.py:Toy", workdir=SIMS, kwargs={"gain": 2.0}) as server:
        report = check_integration(str(SIMS / "toy_spec.yaml"), server.address, episodes=5, seed=1)
    assert report.sound, [c for c in report.checks if not c.ok]
    assert report.episodes == 5 and report.steps == sum(report.lengths)
    assert report.terminated + report.truncated == 5
    x = next(o for o in report.observations if o.name == "x")
    assert x.declared == (-10.0, 10.0) and x.seen_min <= x.seen_max


def test_report_flags_nonfinite_states_at_reset(caplog):
    # NaN only at reset: no step ever sees one, so only counting resets reveals it.
    with ServerProcess("faults.py:NaNAtReset", workdir=SIMS) as server:
        report = check_integration(str(SIMS / "toy_spec.yaml"), server.address, episodes=3)
    assert not report.sound
    assert report.nonfinite == 3
    assert report.nonfinite_at[0] == "episode 0 reset: non-finite states at reset: x"
    check = next(c for c in report.checks if c.name == "states are finite")
    assert not check.ok and "episode 0 reset" in check.detail
    # The log says what happened: not that a just-started episode was truncated.
    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert warnings and all("at reset" in w and "truncated" not in w for w in warnings)


def test_a_sim_that_takes_no_seed_need_not_repeat_episodes():
    # A Bonsai SDK sim in its own process cannot be seeded: Gymnasium's determinism checks and
    # the packed-vs-unary value comparison would call it unsound. They are a warning and a
    # comparison in form; every other check still runs.
    with ServerProcess("noisy.py:NoisyNoSeed", workdir=SIMS) as server:
        report = check_integration(str(SIMS / "toy_spec.yaml"), server.address, episodes=2)
    assert report.sound, [c for c in report.checks if not c.ok and not c.warning]
    gym = next(c for c in report.checks if c.name == "gymnasium check_env")
    assert gym.warning and not gym.ok and "determinism" in gym.detail
    packed = next(c for c in report.checks if c.name == "packed step matches a unary step")
    assert packed.ok and "compared in form" in packed.detail


def test_a_sim_that_names_a_seed_must_honour_it():
    with ServerProcess("noisy.py:NoisyIgnoresSeed", workdir=SIMS) as server:
        report = check_integration(str(SIMS / "toy_spec.yaml"), server.address, episodes=2)
    assert not report.sound
    gym = next(c for c in report.checks if c.name == "gymnasium check_env")
    assert not gym.ok and not gym.warning and "determinis" in gym.detail.lower()
    packed = next(c for c in report.checks if c.name == "packed step matches a unary step")
    assert not packed.ok
