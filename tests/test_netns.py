"""A sim on a separate "host": simserver in its own network namespace, reached over a veth link.

The test creates the namespace and the link itself (and removes them), serves the toy sim
there on the link's address with a token, trains briefly against it across the link, and
checks that a wrong or missing token is rejected. Traffic goes only to that namespace and to
loopback (Ray runs on 127.0.0.2).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gymclient.errors import AuthError, SimgymError

from .conftest import SIMS, private_ray

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and iproute2 (make ci-setup installs it)",
)
TOKEN = "s3cret-token-for-the-netns-test"


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.250.0.0/16 that no interface or route of this machine uses."""
    used = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    used += subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    for i in range(os.getpid() % 200, os.getpid() % 200 + 50):
        net = ipaddress.ip_network(f"10.250.{i % 250}.0/30")
        if f"10.250.{i % 250}." not in used:
            return net
    raise RuntimeError("no free 10.250.x.0/30 subnet")


@pytest.fixture
def sim_host():
    """A network namespace joined to this one by a veth pair; yields (namespace, its address)."""
    tag = f"{os.getpid() % 100000}"
    ns, host_if, ns_if = f"simgym-t{tag}", f"sgh{tag}", f"sgn{tag}"
    net = _free_subnet()
    host_ip, ns_ip = (str(a) for a in list(net.hosts())[:2])
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("addr", "add", f"{ns_ip}/30", "dev", ns_if, ns=ns)
        _ip("link", "set", ns_if, "up", ns=ns)
        _ip("link", "set", "lo", "up", ns=ns)
        yield ns, ns_ip
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)  # gone with the ns


@pytest.fixture
def remote_sim(sim_host, tmp_path):
    """simserver inside the namespace, on the veth address, requiring TOKEN."""
    ns, ns_ip = sim_host
    address_file = tmp_path / "address"
    log = (tmp_path / "simserver.log").open("wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "simserver", f"{SIMS / 'toy.py'}:Toy",
         "--host", ns_ip, "--port", "0", "--token", TOKEN, "--address-file", str(address_file),
         "--chdir", str(SIMS), "--max-sessions", "16"],
        stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not address_file.exists():
            assert proc.poll() is None, (tmp_path / "simserver.log").read_text()
            assert time.monotonic() < deadline, "simserver did not start in the namespace"
            time.sleep(0.1)
        address = address_file.read_text().strip()
        assert address.startswith(ns_ip + ":")
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _env_spec(tmp_path: Path, address: str, token_env: str = "SIMGYM_TEST_TOKEN") -> Path:
    env = yaml.safe_load((SIMS / "toy_spec.yaml").read_text())
    env["sim"] = {"address": address, "token_env": token_env}
    env["reward"] = f"{SIMS / 'reward.py'}:reward"
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(env))
    return path


def test_wrong_or_missing_token_is_rejected_over_the_link(remote_sim, tmp_path, monkeypatch):
    from gymclient.env import SimEnv
    from gymclient.spec import load_spec
    from launcher.train import preflight

    spec = _env_spec(tmp_path, remote_sim)
    monkeypatch.setenv("SIMGYM_TEST_TOKEN", "not-the-token")
    with pytest.raises(AuthError):
        SimEnv({"spec": str(spec)}).reset(seed=0)
    with pytest.raises(SimgymError) as exc:
        preflight(load_spec(spec), [remote_sim], 0)
    assert "token" in str(exc.value).lower()
    monkeypatch.delenv("SIMGYM_TEST_TOKEN")
    with pytest.raises(AuthError):
        SimEnv({"spec": str(spec)}).reset(seed=0)
    # The right token works across the link.
    monkeypatch.setenv("SIMGYM_TEST_TOKEN", TOKEN)
    env = SimEnv({"spec": str(spec)})
    try:
        obs, _ = env.reset(seed=0)
        obs, reward, *_ = env.step(env.action_space.sample())
        assert obs.shape == (2,)
    finally:
        env.close()


@pytest.mark.timeout(480)  # ~25 s on an idle machine
def test_training_against_a_sim_on_another_host(remote_sim, tmp_path, monkeypatch):
    pytest.importorskip("ray.rllib", reason="training needs the train extra")

    from launcher.train import train

    monkeypatch.setenv("SIMGYM_TEST_TOKEN", TOKEN)
    _env_spec(tmp_path, remote_sim)
    train_spec = tmp_path / "train.yaml"
    train_spec.write_text(yaml.safe_dump({
        "env": "env.yaml",
        "sim": {"address": remote_sim, "token_env": "SIMGYM_TEST_TOKEN"},
        "algorithm": "PPO",
        "config": {"train_batch_size_per_learner": 200, "minibatch_size": 100, "num_epochs": 1,
                   "min_time_s_per_iteration": 1},
        "resources": {"env_runners": 1, "envs_per_runner": 4, "cpus": 2},
        "stop": {"iterations": 2},
        "checkpoint": {"every": 5, "keep": 1},
        "output": str(tmp_path / "runs"),
        "experiment": "netns",
    }))  # fmt: skip
    # Ray on loopback (127.0.0.1 itself Ray would swap for the machine's address).
    with private_ray(num_cpus=2, _node_ip_address="127.0.0.2"):
        run_dir, state = train(train_spec)
    assert state.finished and state.iteration == 2 and state.env_steps > 0
    log = (tmp_path / "simserver.log").read_text()
    assert "for SimVectorEnv[" in log  # the env runner's sessions were on the remote sim
