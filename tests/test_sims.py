"""`start_sims`: the one way train, node, evaluate and check start a spec's sim servers."""

from __future__ import annotations

import pytest
import yaml

from gymclient.connection import Connection
from gymclient.errors import SimgymError
from gymclient.spec import load_spec
from launcher.sidecars import SidecarStartError
from launcher.sims import spec_launch, start_sims

from .conftest import SIMS


def _spec(tmp_path, **sim):
    """The toy spec in a folder of its own, its sim found through ``sim.workdir``."""
    data = yaml.safe_load((SIMS / "toy_spec.yaml").read_text())
    data["sim"].update(sim)
    data["reward"] = f"{SIMS / 'reward.py'}:reward"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    return load_spec(tmp_path / "spec.yaml")


def test_servers_run_from_the_specs_workdir_sized_for_their_sessions(tmp_path):
    spec = _spec(tmp_path, workdir=str(SIMS))
    pool = start_sims(spec, spec_launch(spec, servers=2, sessions_per_server=3), tmp_path / "logs")
    try:
        assert len(pool.addresses) == 2
        for server in pool.servers:
            assert server.workdir == SIMS
            # Headroom over the planned sessions: a reconnecting client's new session comes
            # before the server reaps its old one.
            assert server.args[server.args.index("--max-sessions") + 1] == "10"
        with Connection(pool.addresses[1]) as conn:
            assert conn.open(["u"]).state_names
    finally:
        pool.stop()
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["server-0.log", "server-1.log"]


def test_a_sim_that_cannot_start_is_reported_in_its_own_words(tmp_path):
    spec = _spec(tmp_path, target="toy.py:BadCtor", kwargs={}, workdir=str(SIMS))
    with pytest.raises(SidecarStartError) as info:
        start_sims(spec, spec_launch(spec), tmp_path / "logs")
    assert "cannot find license server" in info.value.error_line
    assert info.value.status.startswith("exited with code")


def test_a_spec_without_a_target_is_one_line():
    spec = load_spec(SIMS / "toy_spec.yaml").model_copy(deep=True)
    spec = spec.model_copy(update={"sim": spec.sim.model_copy(update={"target": None})})
    with pytest.raises(SimgymError, match="sim: give `target`"):
        spec_launch(spec)


def test_sidecars_can_isolate_their_sims_in_worker_processes(tmp_path):
    spec = _spec(tmp_path, workdir=str(SIMS))
    launch = spec_launch(spec, isolate="process", max_sim_rss=512)
    pool = start_sims(spec, launch, tmp_path / "logs")
    try:
        args = pool.servers[0].args
        assert args[args.index("--isolate") + 1] == "process"
        assert args[args.index("--max-sim-rss") + 1] == "512"
        with Connection(pool.addresses[0]) as conn:
            session = conn.open(["u"])
            session.reset({})
            assert session.step([0.5]).states
    finally:
        pool.stop()
    with pytest.raises(ValueError, match="max_sim_rss needs isolate: process"):
        spec_launch(spec, max_sim_rss=512)
