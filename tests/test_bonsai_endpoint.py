"""simserver's Bonsai endpoint, driven by real Bonsai SDK connectors on real sockets.

Each test starts ``simserver --bonsai-port 0`` as a process and connectors
(``tests/sims/bonsai_connector.py``, written against ``microsoft-bonsai-api``) as processes
of their own; the sims they register are then used through gymclient's envs.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from gymclient.env import SimEnv
from gymclient.errors import ServerUnavailable, SimCallError, SimTimeout
from gymclient.vector import SimVectorEnv
from simserver.server import SimServer

from . import test_netns
from .conftest import REPO, SIMS

pytest.importorskip("microsoft_bonsai_api", reason="needs the bonsai extra (make installs it)")

CONNECTOR = SIMS / "bonsai_connector.py"
TOKEN = "bonsai-access-key-for-the-tests"
WAIT = 60.0  # bound of every wait for a process to come up (fails with the log if passed)


class Endpoint:
    """A ``simserver --bonsai-port 0`` process and the connectors started against it."""

    def __init__(self, folder: Path, args: list[str], prefix: list[str] | None = None) -> None:
        self.folder = folder
        self.log = folder / "simserver.log"
        self.url_file, self.grpc_file = folder / "bonsai-url", folder / "grpc-address"
        cmd = [sys.executable, "-m", "simserver", "--bonsai-port", "0", "--port", "0",
               "--bonsai-address-file", str(self.url_file), "--address-file", str(self.grpc_file),
               *args]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*(prefix or []), *cmd], stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        self.connectors: list[subprocess.Popen[bytes]] = []
        self.key = args[args.index("--token") + 1] if "--token" in args else "k"
        self.url = self._wait_file(self.url_file)

    def _wait_file(self, path: Path) -> str:
        deadline = time.monotonic() + WAIT
        while not path.exists():
            assert self.proc.poll() is None, f"simserver exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"no {path.name}:\n{self.log.read_text()}"
            time.sleep(0.05)
        return path.read_text().strip()

    def grpc_address(self) -> str:
        """The gRPC address, once the first sim's state names are known."""
        return self._wait_file(self.grpc_file)

    def connect(self, *args: str, key: str = "k", url: str = "", prefix: list[str] | None = None,
                cwd: Path | None = None, script: Path = CONNECTOR) -> subprocess.Popen[bytes]:  # fmt: skip
        """Start a connector (its output in its own log file)."""
        env = {**os.environ, "SIM_API_HOST": url or self.url, "SIM_WORKSPACE": "tests",
               "SIM_ACCESS_KEY": key, "PYTHONUNBUFFERED": "1"}  # fmt: skip
        out = (self.folder / f"connector{len(self.connectors)}.log").open("wb")
        proc = subprocess.Popen(
            [*(prefix or []), sys.executable, str(script), *args],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
        )  # fmt: skip
        out.close()
        self.connectors.append(proc)
        return proc

    def connector_log(self, k: int) -> str:
        return (self.folder / f"connector{k}.log").read_text()

    def wait_registered(self, count: int) -> list[dict[str, Any]]:
        """The registered sims, once there are ``count`` of them."""
        deadline = time.monotonic() + WAIT
        while True:
            status, sims = request(
                self.url, "GET", "/v2/workspaces/tests/simulatorSessions", key=self.key
            )
            assert status == 200
            if len(sims) >= count:
                return sims
            assert time.monotonic() < deadline, f"{len(sims)} of {count} sims registered"
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in [*self.connectors, self.proc]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Callable[..., Endpoint]]:
    started: list[Endpoint] = []

    def start(*args: str, prefix: list[str] | None = None) -> Endpoint:
        server = Endpoint(tmp_path, list(args), prefix)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def request(url: str, method: str, path: str, body: Any = None, key: str | None = "k",
            timeout: float = 30.0) -> tuple[int, Any]:  # fmt: skip
    """One HTTP request to the endpoint, as the SDK sends it: (status, parsed JSON body)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = key
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, body=data, headers=headers)
        reply = conn.getresponse()
        raw = reply.read()
        return reply.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def env_spec(tmp_path: Path, address: str, **extra: Any) -> Path:
    spec = {
        "sim": {"address": address, "timeout": 30, "reset_timeout": 30},
        "observations": {"x": {"min": -10, "max": 10}, "t": {"min": 0, "max": 50}},
        "actions": {"u": {"min": -1, "max": 1}},
        "reward": "x",
        "lessons": {"x0": {"min": -0.5, "max": 0.5}},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    path = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*')))}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sdk_sims_run_episodes_through_simenv_and_simvectorenv(endpoint, tmp_path):
    server = endpoint()
    server.connect()  # declares nothing: its state names come from its first post
    server.connect()
    spec = env_spec(tmp_path, server.grpc_address())
    server.wait_registered(2)
    env = SimEnv({"spec": str(spec)})
    try:
        obs, info = env.reset(seed=0)
        assert list(info["states"]) == ["x", "t"] and info["states"]["t"] == 0.0
        assert info["states"]["x"] == pytest.approx(info["config"]["x0"])
        terminated = truncated = False
        steps = 0
        while not (terminated or truncated):
            obs, reward, terminated, truncated, info = env.step(np.array([1.0], np.float32))
            steps += 1
            assert info["states"]["t"] == steps
        # halted (|x| > 10 after ~10 steps of +1) ends the episode as terminated.
        assert terminated and not truncated and info["states"]["x"] > 10
        env.reset(seed=1)  # the same sim: EpisodeFinish, then EpisodeStart
        assert env.step(np.array([0.5], np.float32))[4]["states"]["t"] == 1
    finally:
        env.close()
    venv = SimVectorEnv(str(spec), 2)
    try:
        obs, _ = venv.reset(seed=0)
        for _ in range(3):
            obs, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
        assert obs.shape == (2, 2) and not terminated.any()
        sims = server.wait_registered(2)
        assert sorted(s["sessionStatus"] for s in sims) == ["Attached", "Attached"]
    finally:
        venv.close()


def test_a_wrong_or_missing_access_key_is_refused(endpoint, tmp_path):
    server = endpoint("--token", TOKEN)
    path = "/v2/workspaces/tests/simulatorSessions"
    body = {"name": "raw", "timeout": 60}
    status, problem = request(server.url, "POST", path, body, key=None)
    assert status == 401 and "SIM_ACCESS_KEY" in problem["detail"]
    status, problem = request(server.url, "POST", path, body, key="not-the-key")
    assert status == 403 and problem["status"] == 403 and "wrong access key" in problem["detail"]
    assert request(server.url, "GET", path, key="not-the-key")[0] == 403
    wrong = server.connect(key="not-the-key")
    assert wrong.wait(WAIT) != 0  # the SDK's create raised: the connector never registered
    assert "403" in (tmp_path / "connector0.log").read_text()
    server.connect(key=TOKEN)
    assert len(server.wait_registered(1)) == 1
    assert request(server.url, "GET", path, key=f"Bearer {TOKEN}")[0] == 200
    assert server.grpc_address()


def test_a_connector_killed_mid_episode_fails_its_step_and_the_next_reset_takes_another_sim(
    endpoint, tmp_path
):
    server = endpoint()
    server.connect("--describe", "--die-at", "3")  # SIGKILLs itself at its third step
    env = SimEnv({"spec": str(env_spec(tmp_path, server.grpc_address()))})
    try:
        env.reset(seed=0)  # takes the only sim registered: the one that dies
        server.connect("--describe")
        server.wait_registered(2)
        env.step(np.array([0.1], np.float32))
        env.step(np.array([0.1], np.float32))
        with pytest.raises(SimCallError, match="closed its connection"):
            env.step(np.array([0.1], np.float32))
        obs, info = env.reset(seed=1)  # on the other sim
        assert env.step(np.array([0.1], np.float32))[4]["states"]["t"] == 1
    finally:
        env.close()
    assert server.connectors[0].wait(WAIT) == -signal.SIGKILL
    assert len(server.wait_registered(1)) == 1  # the dead one was dropped


def test_a_reset_whose_sim_died_unnoticed_goes_on_with_another_sim(endpoint, tmp_path):
    server = endpoint()
    dying = server.connect("--describe")  # registered first: the first free sim
    server.wait_registered(1)
    server.connect("--describe")
    server.wait_registered(2)
    env = SimEnv({"spec": str(env_spec(tmp_path, server.grpc_address()))})
    try:
        os.killpg(dying.pid, signal.SIGKILL)  # dead, not known to be yet (for LOST_GRACE)
        env.reset(seed=0)  # its EpisodeStart goes unanswered: the other sim takes over
        assert env.step(np.array([0.1], np.float32))[4]["states"]["t"] == 1
    finally:
        env.close()
    assert "taking another sim" in server.log.read_text()


def test_a_sim_that_misses_its_steps_limit_is_dropped_and_told_to_unregister(endpoint, tmp_path):
    server = endpoint()
    slow = server.connect("--describe", "--sleep", "1.5")  # each step takes 1.5 s
    spec = env_spec(tmp_path, server.grpc_address(), sim={"timeout": 0.5})
    env = SimEnv({"spec": str(spec)})
    try:
        env.reset(seed=0)
        server.connect("--describe")
        server.wait_registered(2)
        with pytest.raises(SimTimeout, match="did not return within"):
            env.step(np.array([0.1], np.float32))
        assert slow.wait(WAIT) == 0  # its answer got Unregister: it left
        assert "unregistered: did not answer step() in time" in server.connector_log(0)
        env.reset(seed=1)  # the other sim
        assert env.step(np.array([0.1], np.float32))[4]["states"]["t"] == 1
    finally:
        env.close()


def test_a_sim_that_stops_polling_past_its_timeout_is_dropped(endpoint, tmp_path):
    server = endpoint()
    stopped = server.connect("--describe", "--timeout", "1")  # its SimulatorInterface.timeout
    env = SimEnv({"spec": str(env_spec(tmp_path, server.grpc_address()))})
    try:
        env.reset(seed=0)
        os.kill(stopped.pid, signal.SIGSTOP)  # alive, connected, silent
        with pytest.raises(SimCallError, match="stopped polling"):
            env.step(np.array([0.1], np.float32))
        assert server.wait_registered(0) == []
    finally:
        env.close()


def test_a_restarted_endpoint_takes_its_port_back(endpoint, tmp_path):
    first = endpoint()
    port = first.url.rsplit(":", 1)[1]
    first.connect("--describe")
    env = SimEnv({"spec": str(env_spec(tmp_path, first.grpc_address()))})
    env.reset(seed=0)
    env.step(np.array([0.1], np.float32))
    os.killpg(first.proc.pid, signal.SIGKILL)  # it closes first: its side is in TIME_WAIT
    assert first.connectors[0].wait(WAIT) != 0  # the connector's advance failed
    env.close()
    for f in (first.url_file, first.grpc_file):
        f.unlink()
    second = endpoint("--bonsai-port", port)  # the last --bonsai-port wins
    assert second.url == first.url


def test_sequence_ids_a_repeated_post_gets_the_same_event_again(endpoint, tmp_path):
    server = endpoint()
    root = "/v2/workspaces/tests/simulatorSessions"
    description = {
        "state": {"category": "Struct", "fields": [{"name": "x"}, {"name": "t"}]},
        "action": {"category": "Struct", "fields": [{"name": "u"}]},
    }
    status, session = request(server.url, "POST", root, {"name": "raw", "description": description})
    assert status == 201 and session["sessionStatus"] == "Attachable"
    advance = f"{root}/{session['sessionId']}/advance"
    env = SimEnv({"spec": str(env_spec(tmp_path, server.grpc_address()))})
    results: list[Any] = []
    gym = threading.Thread(
        target=lambda: results.extend([env.reset(seed=0), env.step(np.array([1.0], np.float32))])
    )
    gym.start()

    def post(seq: int, state: dict[str, float], halted: bool = False) -> dict[str, Any]:
        while True:  # Idle until the client's call arrives
            status, event = request(server.url, "POST", advance,
                                    {"sequenceId": seq, "state": state, "halted": halted})  # fmt: skip
            assert status == 200
            if event["type"] != "Idle":
                return event
            assert event["sequenceId"] == seq and event["idle"]["callbackTime"] >= 0

    start = post(1, {})
    assert start["type"] == "EpisodeStart" and start["sequenceId"] == 2
    assert post(1, {}) == start  # its reply was lost: the same event again
    step = post(2, {"x": 0.25, "t": 0.0})
    assert step["type"] == "EpisodeStep" and step["sequenceId"] == 3
    assert step["episodeStep"]["action"] == {"u": pytest.approx(1.0)}
    assert post(2, {"x": 0.25, "t": 0.0}) == step
    halted = {"sequenceId": 3, "state": {"x": 11.0, "t": 1.0}, "halted": True}
    assert request(server.url, "POST", advance, halted)[1]["type"] == "Idle"
    gym.join(30)
    (obs, info), (_, _, terminated, truncated, info1) = results
    assert info["states"] == {"x": 0.25, "t": 0.0}
    assert terminated and not truncated and info1["states"]["x"] == 11.0  # halted: terminated
    assert request(server.url, "GET", f"{advance[:-8]}/action")[1] == step  # the last event
    env.close()  # the session ends: its sim's episode is finished for it
    finish = post(3, {"x": 11.0, "t": 1.0}, halted=True)
    assert (finish["type"], finish["episodeFinish"]["reason"]) == ("EpisodeFinish", "Terminal")
    assert request(server.url, "DELETE", f"{root}/{session['sessionId']}")[0] == 204
    status, event = request(server.url, "POST", advance, {"sequenceId": 5, "state": {}})
    assert (status, event["type"]) == (200, "Unregister")
    assert request(server.url, "GET", f"{root}/{session['sessionId']}")[0] == 404
    assert request(server.url, "GET", root)[1] == []


def test_sims_of_one_vector_step_step_in_parallel(endpoint, tmp_path):
    # Each sim sleeps in its step and records when it ran: a vector step that waited for one
    # sim after the other would give intervals that never overlap.
    server = endpoint()
    files = [tmp_path / f"times{i}" for i in range(3)]
    for f in files:
        server.connect("--describe", "--sleep", "0.2", "--times", str(f))
    spec = env_spec(tmp_path, server.grpc_address())
    server.wait_registered(3)
    venv = SimVectorEnv(str(spec), 3)
    try:
        venv.reset(seed=0)
        for _ in range(6):
            venv.step(np.zeros((3, 1), np.float32))
    finally:
        venv.close()
    times = [
        [tuple(map(float, line.split())) for line in f.read_text().splitlines()] for f in files
    ]
    assert [len(t) for t in times] == [6, 6, 6]
    overlapping = sum(max(t[i][0] for t in times) < min(t[i][1] for t in times) for i in range(6))
    assert overlapping >= 5, times  # all three sims inside their steps at once


def test_a_reset_with_no_free_sim_is_unavailable_after_its_wait(endpoint, tmp_path):
    server = endpoint()
    server.connect("--describe")
    spec = env_spec(tmp_path, server.grpc_address(), sim={"reset_timeout": 1.5})
    first = SimEnv({"spec": str(spec)})
    second = SimEnv({"spec": str(spec)})
    try:
        first.reset(seed=0)
        with pytest.raises(ServerUnavailable, match="no registered Bonsai sim became free"):
            second.reset(seed=0)
    finally:
        first.close()
        second.close()


def test_bad_requests_get_a_problem_details_status_and_the_endpoint_serves_on(endpoint):
    server = endpoint("--token", TOKEN, "--max-message-mb", "1", "--max-sessions", "1")
    root = "/v2/workspaces/tests/simulatorSessions"
    status, sim = request(server.url, "POST", root, {"name": "s"}, key=TOKEN)
    assert status == 201
    advance = f"{root}/{sim['sessionId']}/advance"
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    cases = [
        ("POST", root, b"[" * 100_000, 400, "not JSON"),  # nested past the parser's limit
        ("POST", root, b"\xff\xfe", 400, "not JSON"),
        ("POST", root, b'{"name": ""}', 400, "name is required"),
        ("POST", root, b'{"name": "a", "timeout": NaN}', 400, "timeout"),
        ("POST", root, b'{"name": "a", "description": {"state": {"fields": [1]}}}', 400, "name"),
        ("POST", root, b"x" * (2 * 2**20), 413, "at most"),
        ("POST", root, b'{"name": "second"}', 429, "--max-sessions"),  # one sim at most
        ("POST", advance, b'{"sequenceId": "1"}', 400, "sequenceId"),
        ("POST", advance, b'{"sequenceId": 1, "halted": "yes"}', 400, "halted"),
        ("PUT", root, b"{}", 405, "PUT"),
        ("GET", f"{root}/nope", b"", 404, "no simulator session"),
        ("GET", "/v1/prediction", b"", 404, "no such path"),
    ]
    for method, path, body, code, words in cases:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request(method, path, body=body, headers={"Authorization": TOKEN})
        reply = conn.getresponse()
        problem = json.loads(reply.read())
        conn.close()
        assert (reply.status, problem["status"]) == (code, code), (method, path, problem)
        assert words in problem["detail"], (method, path, problem)
    assert request(server.url, "GET", root, key=TOKEN)[0] == 200  # still serving
    assert "Traceback" not in server.log.read_text()


def test_the_endpoint_from_python():
    from gymclient.connection import Connection
    from simserver.bonsai import BonsaiOptions, serve
    from simserver.server import ServerOptions

    endpoint, server = serve(ServerOptions(port=0), BonsaiOptions(), ready_timeout=0.05)
    try:
        assert server is None  # no sim yet: the endpoint listens, gRPC waits
        description = {"state": {"fields": [{"name": "x"}]}, "action": {"fields": [{"name": "u"}]}}
        sim = {"name": "raw", "description": description}
        assert request(endpoint.url, "POST", "/v2/workspaces/w/simulatorSessions", sim)[0] == 201
        assert endpoint.wait_ready(5)
        server = SimServer(endpoint.factory(), ServerOptions(port=0))
        with Connection(server.start()[0]) as conn:
            session = conn.open()
            assert (session.state_names, session.action_names) == (["x"], ["u"])
            session.close()
    finally:
        if server is not None:
            server.stop(grace=0)
        endpoint.stop()


def test_bonsai_command_lines_that_cannot_work_are_one_line_errors(tmp_path):
    for args, words in [
        (["toy.py:Toy", "--bonsai-port", "0"], "not both"),
        (["--bonsai-port", "0", "--bonsai-host", "0.0.0.0"], "--token"),
        (["--bonsai-port", "0", "--isolate", "process"], "own process"),
        (["--bonsai-port", "70000"], "--bonsai-port"),
        ([], "give a sim TARGET"),
    ]:
        done = subprocess.run([sys.executable, "-m", "simserver", *args], capture_output=True,
                              text=True, timeout=60, cwd=SIMS)  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, done.stderr)


# ----------------------------------------------------------------------------- another host

_NETNS = os.geteuid() == 0 and shutil.which("ip") is not None
sim_host = test_netns.sim_host  # the fixture: a namespace joined to this one by a veth link


@pytest.mark.skipif(not _NETNS, reason="needs root and iproute2 (make ci-setup installs it)")
def test_a_sim_in_another_network_namespace_joins_with_the_access_key(endpoint, sim_host, tmp_path):
    ns, ns_ip = sim_host  # a namespace joined to this one by a veth link (test_netns)
    host_ip = str(ipaddress.ip_address(ns_ip) - 1)  # this side of the link
    server = endpoint("--bonsai-host", host_ip, "--token", TOKEN)
    assert server.url.startswith(f"http://{host_ip}:")
    in_ns = ["ip", "netns", "exec", ns]
    wrong = server.connect("--describe", key="wrong", prefix=in_ns)
    assert wrong.wait(WAIT) != 0
    server.connect("--describe", key=TOKEN, prefix=in_ns)
    spec = env_spec(tmp_path, server.grpc_address(), sim={"token": TOKEN})
    env = SimEnv({"spec": str(spec)})
    try:
        env.reset(seed=0)
        for t in range(1, 4):
            assert env.step(np.array([0.5], np.float32))[4]["states"]["t"] == t
    finally:
        env.close()


# ----------------------------------------------------------------------------- the example

CARTPOLE = REPO / "examples" / "bonsai-cartpole"


@pytest.mark.skipif(not (CARTPOLE / "main.py").exists(), reason="the example is not there yet")
def test_the_bonsai_cartpole_connector_runs_unmodified_against_the_endpoint(endpoint, tmp_path):
    server = endpoint()
    server.connect(script=CARTPOLE / "main.py", cwd=CARTPOLE)
    spec = yaml.safe_load((CARTPOLE / "spec.yaml").read_text())
    spec["sim"] = {"address": server.grpc_address()}
    spec["reward"] = str(CARTPOLE / spec["reward"]) if ".py:" in spec["reward"] else spec["reward"]
    path = tmp_path / "cartpole.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = SimEnv({"spec": str(path)})
    try:
        for episode in range(3):
            env.reset(seed=episode)
            done, steps = False, 0
            while not done:
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                done, steps = terminated or truncated, steps + 1
            assert steps <= spec.get("max_episode_steps", 10_000)
    finally:
        env.close()
