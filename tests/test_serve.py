"""`simgym serve`: a real server process on loopback answering Bonsai's exported-brain calls.

The agent is a real export (``launcher.export.export_run``) of an RLlib PPO module that the
test builds and checkpoints itself (untrained weights: what is served must equal what
``Agent.act`` and ``simgym predict`` answer, not be good control).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("ray.rllib", reason="building the agent needs the train extra (make)")
pytest.importorskip("onnxruntime", reason="serving needs the infer extra (installed by make)")

from gymclient.actions import ActionMap
from gymclient.agent import AgentError, load_agent
from gymclient.spec import load_spec
from launcher.serve import AgentServer, ServeError, ServeOptions

from .conftest import REPO, SIMS

CLI = [sys.executable, "-c", "from launcher.cli import main; main()"]
URL = re.compile(r" at (http://[^:]+):(\d+): ")


def export_untrained(out: Path, spec_path: Path) -> Path:
    """An agent folder exported from a PPO module checkpoint made here (no training run)."""
    import gymnasium as gym
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from launcher.export import export_run

    spec = load_spec(spec_path)
    module = RLModuleSpec(
        module_class=DefaultPPOTorchRLModule,
        observation_space=gym.spaces.Box(-1.0, 1.0, (len(spec.observations),), np.float32),
        # What training builds: Box(-1, 1) for ranges, (Multi)Discrete for values.
        action_space=ActionMap(spec.source, spec.actions, list(spec.actions)).space(),
        model_config={"fcnet_hiddens": [16, 16]},
    ).build()
    checkpoint = (out.parent / "module").resolve()
    module.save_to_path(str(checkpoint))
    export_run(None, out, checkpoint=checkpoint, spec=spec, samples=200)
    return out


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_untrained(tmp_path_factory.mktemp("serve") / "agent", SIMS / "toy_spec.yaml")


class Served:
    """A ``simgym serve`` child process and plain HTTP/1.1 calls to it."""

    def __init__(self, agent: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "serve", str(agent), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once it listens
        match = URL.search(line)
        if not match:
            self.proc.kill()
            raise AssertionError(f"no URL in {line!r}: {self.proc.communicate()[1]}")
        self.host, self.port = match.group(1).removeprefix("http://"), int(match.group(2))
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """One request on the kept-alive connection; JSON bodies encoded, replies decoded."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=data, headers=headers or {})
        reply = self.conn.getresponse()
        raw = reply.read()
        if reply.will_close:
            self.conn.close()
        return reply.status, dict(reply.getheaders()), json.loads(raw) if raw else None

    def stop(self) -> str:
        """SIGTERM; returns stderr, asserting a clean exit (code 0, no traceback)."""
        self.conn.close()
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        assert "Traceback" not in err, err
        return err


@pytest.fixture(scope="module")
def served(agent_dir: Path) -> Iterator[Served]:
    server = Served(agent_dir, "--concept", "BalancePole")
    yield server
    server.stop()


def _states(n: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(7)
    return [{"x": float(rng.uniform(-12, 12)), "t": float(rng.uniform(-1, 21))} for _ in range(n)]


def test_v1_and_v2_answer_what_the_agent_and_simgym_predict_answer(served, agent_dir):
    agent = load_agent(agent_dir)
    for state in _states(20):
        expected = agent.act(state)
        status, headers, v1 = served.call("POST", "/v1/prediction", state)
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert v1 == expected  # the same floats: one inference path, exact JSON round trip
        # Bonsai's samples sent the state as the body of a GET (requests.get(url, json=...)).
        assert served.call("GET", "/v1/prediction", state)[2] == expected
        status, _, v2 = served.call("POST", "/v2/clients/plant-7/predict", {"state": state})
        assert status == 200
        assert v2 == {"clientId": "plant-7", "concepts": {"BalancePole": {"action": expected}}}
    state = {"x": 1.5, "t": 3.0}
    cli = subprocess.run(
        [*CLI, "predict", str(agent_dir), "--state", json.dumps(state)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert served.call("POST", "/v1/prediction", state)[2] == json.loads(cli.stdout)


def test_concurrent_clients_each_get_their_own_answer(served, agent_dir):
    # Several connections at once (a thread each on the server): every reply must be the
    # answer to its own request, not a neighbour's.
    from concurrent.futures import ThreadPoolExecutor

    agent = load_agent(agent_dir)
    states = _states(80)

    def client(chunk: list[dict[str, float]]) -> list[Any]:
        conn = http.client.HTTPConnection(served.host, served.port, timeout=30)
        answers = []
        for state in chunk:
            conn.request("POST", "/v2/clients/c/predict", body=json.dumps({"state": state}))
            answers.append(json.loads(conn.getresponse().read()))
        conn.close()
        return answers

    chunks = [states[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(client, chunks))
    for chunk, answers in zip(chunks, replies, strict=True):
        for state, answer in zip(chunk, answers, strict=True):
            assert answer["concepts"]["BalancePole"]["action"] == agent.act(state)


def test_discrete_actions_are_served_as_the_values_the_sim_takes(agent_dir, tmp_path):
    # An on/off action with named values and an integer range (Inkling's number<off=0, on=1>
    # and Number.Int8<0 .. 4>): replies carry the numbers the sim receives, as JSON ints.
    env = yaml.safe_load((SIMS / "toy_spec.yaml").read_text())
    env["sim"]["target"] = f"{SIMS / 'toy.py'}:Toy"
    env["reward"] = f"{SIMS / 'reward.py'}:reward"
    env["name"] = "Heater"  # the spec's name: the manifest's, then v2's concept by default
    env["actions"] = {
        "heat": {"values": {"off": 0, "on": 1}},
        "stage": {"min": 0, "max": 4, "step": 1},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(env))
    discrete = export_untrained(tmp_path / "agent", tmp_path / "spec.yaml")
    agent = load_agent(discrete)
    # In process this time (a real socket all the same): AgentServer is simgym serve's body.
    server = AgentServer(discrete, ServeOptions(port=0))
    host, port = server.start().removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def call(path: str, body: Any) -> Any:
        conn.request("POST", path, body=json.dumps(body))
        reply = conn.getresponse()
        assert reply.status == 200
        return json.loads(reply.read())

    try:
        for state in _states(12):
            expected = agent.act(state)
            assert set(expected) == {"heat", "stage"}
            v1 = call("/v1/prediction", state)
            v2 = call("/v2/clients/hvac/predict", {"state": state})["concepts"]["Heater"]["action"]
            assert v1 == expected == v2
            assert v1["heat"] in (0, 1) and v1["stage"] in range(5)
            assert all(type(v) is int for v in (*v1.values(), *v2.values()))
    finally:
        conn.close()
        server.stop()


def test_state_forms_bonsai_allowed(served, agent_dir):
    expected = load_agent(agent_dir).act({"x": -2.0, "t": 4.0})
    # Values without names, in the agent's state order; v2's template's [ {...} ] wrapper;
    # extra states are ignored; ints are numbers; a client id with an encoded slash.
    assert served.call("POST", "/v1/prediction", [-2.0, 4])[2] == expected
    v2 = served.call("POST", "/v2/clients/a%2Fb/predict", {"state": [{"x": -2, "t": 4.0}]})
    assert v2[0] == 200 and v2[2]["clientId"] == "a/b"
    assert v2[2]["concepts"]["BalancePole"]["action"] == expected
    extra = served.call("POST", "/v1/prediction", {"x": -2.0, "t": 4.0, "other": "text"})
    assert extra[2] == expected


def test_health_reset_and_counts(served):
    status, _, before = served.call("GET", "/v1/status")
    assert status == 200 and before["status"] == "ok"
    assert before["states"] == ["x", "t"] and before["actions"] == ["u"]
    assert before["concept"] == "BalancePole"
    served.call("POST", "/v1/prediction", {"x": 0.0, "t": 1.0})
    served.call("POST", "/v1/prediction", {"x": "hot", "t": 1.0})
    after = served.call("GET", "/health")[2]
    assert after["predictions"] == before["predictions"] + 1
    assert after["refused"] == before["refused"] + 1
    # DELETE answers 204 for any client, known or not (clients probe a v2 brain this way).
    assert served.call("DELETE", "/v2/clients/never-seen")[:2][0] == 204
    assert served.call("DELETE", "/v2/clients/never-seen/")[0] == 204
    assert served.call("DELETE", "/v1")[0] == 204


BAD = [
    ("POST", "/v1/prediction", {"t": 3}, 400, "state 'x': missing (the agent needs: x, t)"),
    ("POST", "/v1/prediction", {"x": "hot", "t": 3}, 400, "state 'x': expected a number"),
    ("POST", "/v1/prediction", {"x": True, "t": 3}, 400, "state 'x': expected a number"),
    ("POST", "/v1/prediction", b'{"x": NaN, "t": 3}', 400, "expected a finite number"),
    (
        "POST",
        "/v1/prediction",
        b'{"x": 1' + b"0" * 400 + b', "t": 3}',
        400,
        "state 'x': expected a",
    ),
    ("POST", "/v1/prediction", b'{"x": 1', 400, "the body is not JSON"),
    ("POST", "/v1/prediction", None, 400, "the body is empty"),
    ("POST", "/v1/prediction", [1.0], 400, "1 values without names; give 2 in this order: x, t"),
    ("POST", "/v1/prediction", "x=1", 400, "expected an object of state name: number"),
    ("POST", "/v1/prediction", b"[" * 100_000, 400, "the body is not JSON"),
    ("POST", "/v2/clients/c/predict", {"x": 1}, 400, 'the body must be {"state"'),
    ("POST", "/v2/clients/c/predict", {"state": 5}, 400, "state: expected an object"),
    ("POST", "/v2/clients/" + "c" * 65 + "/predict", {"state": {}}, 400, "1 to 64 characters"),
    ("PUT", "/v1/prediction", {}, 405, "PUT is not served on this path (allowed: GET, POST)"),
    ("GET", "/v2/clients/c/predict", None, 405, "allowed: POST"),
    ("GET", "/v3/anything", None, 404, "no such path /v3/anything; this server answers"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "detail"), BAD)
def test_bad_requests_are_problem_details(served, method, path, body, status, detail):
    got, headers, reply = served.call(method, path, body)
    assert got == status, reply
    assert headers["Content-Type"].startswith("application/problem+json")
    assert reply["status"] == status and reply["title"] and detail in reply["detail"], reply
    if "state '" in detail:
        assert reply["errors"] == {"x": [reply["detail"].split(": ", 1)[1]]}
    # The server keeps answering on the same connection.
    assert served.call("GET", "/v1/status")[0] == 200


def _raw(host: str, port: int, request: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


RAW = [
    # The server's own request parser: the standard library's bounds and rules.
    (b"POST /v1/prediction HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
     b"400 ", b"two different Content-Length"),
    (b"POST /v1/prediction HTTP/1.1\r\nno colon here\r\n\r\n", b"400 ", b"bad header line"),
    (b"GET /v1/status HTTP/2.0\r\n\r\n", b"505 ", b"HTTP version not supported"),
    (b"GET /v1/status\r\n\r\n", b"400 ", b"bad request line"),
    (b"GET /v1/status HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n", b"431 ", b"more than 100"),
    (b"GET /v1/status HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", b"431 ", b"too long"),
    (b"HEAD /v1/status HTTP/1.1\r\n\r\n", b"501 ", b"Unsupported method"),
    # Accepted: HTTP/1.0 (answered, then closed), any header case, Expect: 100-continue.
    (b"GET /v1/status HTTP/1.0\r\n\r\n", b"200 ", b'"status":"ok"'),
    (b"POST /v1/prediction HTTP/1.1\r\ncontent-LENGTH: 16\r\nconnection: close\r\n\r\n"
     b'{"x": 1, "t": 2}', b"200 ", b'{"u":'),
    (b"POST /v1/prediction HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 16\r\n"
     b'Connection: close\r\n\r\n{"x": 1, "t": 2}', b"100 Continue", b'{"u":'),
]  # fmt: skip


@pytest.mark.parametrize(("request_bytes", "status", "text"), RAW)
def test_raw_requests(served, request_bytes, status, text):
    reply = _raw(served.host, served.port, request_bytes)
    assert reply.startswith(b"HTTP/1.1 " + status), reply[:200]
    assert text in reply, reply[:300]
    assert served.call("GET", "/v1/status")[0] == 200  # and the server goes on


def test_token_body_size_chunked_and_connection_limits(agent_dir):
    # The token from the environment (kept out of `ps`), every path behind it.
    server = Served(
        agent_dir, "--max-body-kb", "1", "--max-connections", "2",
        env={"SIMGYM_SERVE_TOKEN": "s3cret-token"},
    )  # fmt: skip
    auth = {"Authorization": "s3cret-token"}

    def again_on_503(send: Any) -> Any:
        # With 2 slots, a connection the server has just refused holds its slot a moment
        # longer (it reads the rest of the refused body, then sees the close): a new
        # connection may meet a 503 meanwhile, which is the limit working.
        for _ in range(200):
            reply = send()
            if (reply[0] if isinstance(reply, tuple) else int(reply[9:12])) != 503:
                return reply
            time.sleep(0.05)
        raise AssertionError("503 for 10 s")

    def call(*args: Any) -> tuple[int, dict[str, str], Any]:
        return again_on_503(lambda: server.call(*args))  # type: ignore[no-any-return]

    try:
        status, _, reply = call("POST", "/v1/prediction", {"x": 1.0, "t": 2.0})
        assert status == 401 and "no Authorization header" in reply["detail"]
        status, _, reply = call("GET", "/v1/status", None, {"Authorization": "guess"})
        assert status == 403 and "wrong token" in reply["detail"]
        for value in ("s3cret-token", "Bearer s3cret-token"):
            ok = call("POST", "/v1/prediction", {"x": 1.0, "t": 2.0}, {"Authorization": value})
            assert ok[0] == 200 and set(ok[2]) == {"u"}

        big = {"x": 1.0, "t": 2.0, "pad": "p" * 4096}
        status, _, reply = call("POST", "/v1/prediction", big, auth)
        assert status == 413 and "at most 1,024" in reply["detail"]
        chunked = again_on_503(
            lambda: _raw(
                server.host,
                server.port,
                b"POST /v1/prediction HTTP/1.1\r\nHost: x\r\nAuthorization: s3cret-token\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            )
        )
        assert chunked.startswith(b"HTTP/1.1 411 ")

        # Two idle keep-alive connections hold both slots: the third is refused at once.
        server.conn.close()

        def hold_a_slot() -> http.client.HTTPConnection:
            # The refused connections above free their slots once the server has read
            # their close (after a lingering read): until then a new one may see a 503.
            for _ in range(200):
                conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
                conn.request("GET", "/v1/status", headers=auth)
                reply = conn.getresponse()
                reply.read()
                if reply.status == 200:
                    return conn
                conn.close()
                time.sleep(0.05)
            raise AssertionError("no connection slot came free")

        first, second = hold_a_slot(), hold_a_slot()
        status_request = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: s3cret-token\r\n"
        refused = _raw(server.host, server.port, status_request + b"\r\n")
        assert refused.startswith(b"HTTP/1.1 503 ") and b"connection limit" in refused
        first.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the slot frees when the server sees the close
            reply_bytes = _raw(
                server.host, server.port, status_request + b"Connection: close\r\n\r\n"
            )
            if reply_bytes.startswith(b"HTTP/1.1 200 "):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("a closed connection's slot was never freed")
        second.close()
    finally:
        server.stop()


def test_cli_errors_are_one_line(agent_dir, tmp_path):
    with pytest.raises(AgentError, match="not an agent folder"):
        AgentServer(tmp_path)
    cases = [([str(agent_dir), "--host", "0.0.0.0"], "--host 0.0.0.0 lets anyone")]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases.append(([str(agent_dir), "--port", port], f"cannot listen on 127.0.0.1:{port}"))
        for args, message in cases:
            proc = subprocess.run(
                [*CLI, "serve", *args], capture_output=True, text=True, timeout=120
            )
            assert proc.returncode == 2, (args, proc.stderr)
            assert proc.stderr.startswith("simgym: error: ") and message in proc.stderr, proc.stderr
            assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": 70000}, "--port 70000: give a port from 0 to 65535"),
        ({"token": " padded "}, "--token: use printable ASCII"),
        ({"token": "   "}, "--token: the token is empty"),
        ({"max_connections": 0}, "--max-connections 0"),
        ({"max_body_bytes": 10}, "--max-body-kb 0"),
        ({"concept": " "}, "--concept: give a name"),
        ({"host": "::"}, "--host :: lets anyone"),
    ],
)
def test_options_are_checked_before_anything_starts(options, message):
    with pytest.raises(ServeError) as caught:
        ServeOptions(**options).validate()
    assert message in str(caught.value) and "\n" not in str(caught.value)
    ServeOptions(host="0.0.0.0", insecure=True).validate()  # the risk taken explicitly
    ServeOptions(host="10.1.2.3", token="t0ken").validate()


def test_the_serve_path_imports_neither_ray_nor_torch(agent_dir):
    code = (
        "import json, sys, urllib.request\n"
        "from launcher.serve import AgentServer, ServeOptions\n"
        f"server = AgentServer({str(agent_dir)!r}, ServeOptions(port=0))\n"
        "url = server.start()\n"
        "req = urllib.request.Request(url + '/v1/prediction', data=b'{\"x\": 1, \"t\": 2}')\n"
        "print(json.load(urllib.request.urlopen(req, timeout=30)))\n"
        "server.stop()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch'))\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert "'u':" in proc.stdout
