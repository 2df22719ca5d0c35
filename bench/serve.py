"""``simgym serve``: latency and throughput over HTTP vs the in-process ``Agent.act``, one run.

    python bench/serve.py                       # exports an (untrained) CSTR-shaped agent first
    python bench/serve.py --agent agent/        # an existing export
    python bench/serve.py --clients 4 --seconds 3

What is timed, one state per request (the CSTR spec's six states, RLlib's default 256×256
network):

* ``Agent.act in-process``  — ``load_agent(dir).act(states)``: the baseline, no HTTP.
* ``v1 keep-alive``          — ``POST /v1/prediction`` on one kept-alive ``http.client``
                               connection (a control loop that holds its connection).
* ``v2 keep-alive``          — ``POST /v2/clients/{id}/predict``, same.
* ``v1 raw socket``          — the same request bytes written to a socket and the reply read
                               back with no HTTP library: the server's own cost per request.
* ``floor: socket echo``     — baselines for the raw-socket path, in processes of their own:
  ``floor: bare http.server``  a socket that answers a fixed reply (the loopback round trip),
  ``floor: simgym.httpbase``   and three servers whose handler only reads the body and answers
  ``floor: h11``               ``{}``: ``ThreadingHTTPServer`` as the standard library parses,
                               ``simgym.httpbase`` (what ``simgym serve`` stands on: its plain
                               parser, one-write replies) and h11 (the sans-I/O HTTP/1.1
                               library, on the same thread-per-connection server), so that
                               the three parsers are compared in one run.
* ``parse + reply in process`` — no socket at all: one keep-alive request's bytes parsed and
                               its ``{}`` reply written, by ``simgym.httpbase.JSONHandler`` and
                               by an ``h11.Connection`` (the CPU cost of each parser alone).
* ``v1 requests.post``       — ``requests.post(url, json=state)`` per call, a new connection
                               each time: what Bonsai's sample integrations did.
* ``v1 N clients``           — N client processes, each with its own keep-alive connection, at
                               once: throughput of the server (and latency under that load).

Latency is per request as the client sees it (p50, p99); throughput is requests/s over the
window. The server is a real ``simgym serve`` child process on loopback; on a 2-core machine
the clients compete with it for the CPU, so the N-client figures are a floor.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import multiprocessing as mp
import re
import socket
import socketserver
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _timing import best_us  # noqa: E402  # beside this file (on sys.path as its folder)

from simgym.httpbase import JSONHandler, SlotServer  # noqa: E402  # REPO on sys.path first

HAVE_H11 = importlib.util.find_spec("h11") is not None
STATE = {
    "Cr": 8.57,
    "Tr": 311.3,
    "Tc": 292.0,
    "Cref_next": 8.57,
    "Tref_next": 311.26,
    "Cref_preview": 8.57,
}


def export_untrained(out: Path, spec_path: Path) -> Path:
    """An agent folder exported from a freshly built PPO module (RLlib's default network)."""
    import gymnasium as gym
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from gymclient.spec import load_spec
    from launcher.export import export_run

    spec = load_spec(spec_path)
    module = RLModuleSpec(
        module_class=DefaultPPOTorchRLModule,
        observation_space=gym.spaces.Box(-1.0, 1.0, (len(spec.observations),), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (len(spec.actions),), np.float32),
    ).build()
    checkpoint = (out.parent / "module").resolve()
    module.save_to_path(str(checkpoint))
    export_run(None, out, checkpoint=checkpoint, spec=spec, samples=200)
    return out


def timed(call: Callable[[], Any], seconds: float) -> list[float]:
    """Seconds per call for ``seconds`` of back-to-back calls (after a short warm-up)."""
    for _ in range(50):
        call()
    times = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        call()
        times.append(time.perf_counter() - start)
    return times


def keep_alive_client(host: str, port: int, path: str, body: bytes) -> Callable[[], Any]:
    """One request per call on one kept-alive connection."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Content-Type": "application/json"}

    def call() -> Any:
        conn.request("POST", path, body=body, headers=headers)
        reply = conn.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{reply.status}: {data[:200]!r}")
        return data

    return call


def raw_client(host: str, port: int, path: str, body: bytes) -> Callable[[], Any]:
    """Prepared request bytes on one socket; the reply read by its Content-Length."""
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    length = re.compile(rb"Content-Length: (\d+)", re.IGNORECASE)

    def call() -> bytes:
        sock.sendall(request)
        data = sock.recv(65536)
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        found = length.search(head)
        if not head.startswith(b"HTTP/1.1 200 ") or found is None:
            raise RuntimeError(f"unexpected reply {head[:100]!r}")
        while len(rest) < int(found.group(1)):
            rest += sock.recv(65536)
        return rest

    return call


class _Floor(JSONHandler):
    """``simgym.httpbase``'s handler doing no work: read the body, answer ``{}``."""

    def dispatch(self, method: str) -> None:
        self.rfile.read(self.body_size(2**20))
        self.send_json(200, {})


def _h11_serve(sock: socket.socket) -> None:
    """One keep-alive connection served with h11: read each request's body, answer ``{}``."""
    import h11

    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.EndOfMessage):
            sock.sendall(
                conn.send(h11.Response(status_code=200, headers=_H11_HEADERS))
                + conn.send(h11.Data(data=b"{}"))
                + conn.send(h11.EndOfMessage())
            )
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed) or conn.our_state is h11.MUST_CLOSE:
            return


# What simgym.httpbase's reply carries too (h11 adds no Date or Server of its own).
_H11_HEADERS = [
    ("Server", "h11-floor"),
    ("Date", formatdate(usegmt=True)),
    ("Content-Type", "application/json; charset=utf-8"),
    ("Content-Length", "2"),
]


class _H11Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _h11_serve(self.request)


class _Bare(BaseHTTPRequestHandler):
    """The least a ``ThreadingHTTPServer`` handler can do: read the body, answer ``{}``."""

    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def _floor_server(kind: str, out: Any) -> None:
    if kind in ("http", "httpbase", "h11"):
        server: socketserver.TCPServer
        if kind == "http":
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Bare)
        elif kind == "httpbase":
            server = SlotServer(("127.0.0.1", 0), _Floor, 64)
        else:
            server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _H11Handler)
        server.daemon_threads = True
        out.put(server.server_address[1])
        server.serve_forever()
    listener = socket.create_server(("127.0.0.1", 0))
    out.put(listener.getsockname()[1])
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    while conn.recv(65536):
        conn.sendall(reply)


def floor(kind: str, seconds: float) -> list[float]:
    """The raw-socket client against a floor server in its own process.

    ``kind``: ``echo``, ``http`` (http.server), ``httpbase`` (simgym.httpbase) or ``h11``.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_floor_server, args=(kind, queue), daemon=True)
    proc.start()
    try:
        port = queue.get(timeout=60)
        return timed(raw_client("127.0.0.1", port, "/", json.dumps(STATE).encode()), seconds)
    finally:
        proc.terminate()
        proc.join(timeout=10)


def _client_process(host: str, port: int, seconds: float, start_at: float, out: Any) -> None:
    call = keep_alive_client(host, port, "/v1/prediction", json.dumps(STATE).encode())
    for _ in range(20):
        call()
    while time.time() < start_at:
        time.sleep(0.001)
    out.put(timed(call, seconds))


def concurrent(host: str, port: int, clients: int, seconds: float) -> tuple[list[float], float]:
    """Latencies of all requests and the total requests/s of ``clients`` processes at once."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 3.0  # every process connected and warm before the window
    procs = [
        ctx.Process(target=_client_process, args=(host, port, seconds, start_at, queue))
        for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    latencies = [t for r in results for t in r]
    return latencies, len(latencies) / seconds


def parse_in_process(seconds: float) -> list[dict[str, Any]]:
    """µs per request parsed and answered ``{}`` with no socket: httpbase's handler vs h11."""
    import io

    import h11

    body = json.dumps(STATE).encode()
    request = (
        f"POST /v1/prediction HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        f"\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    handler = _Floor.__new__(_Floor)  # no socket: the parts a request touches, set by hand
    handler.client_address = ("127.0.0.1", 0)
    handler.request_version = "HTTP/1.1"

    def ours() -> None:
        handler.rfile, handler.wfile = io.BytesIO(request), io.BytesIO()
        handler.raw_requestline = handler.rfile.readline(65537)
        if not handler.parse_request():
            raise RuntimeError("httpbase refused the request")
        handler.dispatch(handler.command)

    conn = h11.Connection(h11.SERVER)

    def theirs() -> None:
        conn.receive_data(request)
        while not isinstance(conn.next_event(), h11.EndOfMessage):
            pass
        conn.send(h11.Response(status_code=200, headers=_H11_HEADERS))
        conn.send(h11.Data(data=b"{}"))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()

    return [
        {"parser": "simgym.httpbase", "us": best_us(ours, seconds)},
        {"parser": "h11", "us": best_us(theirs, seconds)},
    ]


def row(name: str, times: list[float], rate: float | None = None) -> dict[str, Any]:
    """Per-call statistics of one path."""
    us = np.array(times) * 1e6
    return {
        "path": name,
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "req_s": rate if rate is not None else len(times) / float(np.sum(times)),
        "n": len(times),
    }


def start_server(agent: Path) -> tuple[subprocess.Popen[str], str, int]:
    """``simgym serve`` on a free loopback port; returns the process, host and port."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from launcher.cli import main; main()", "serve", str(agent),
         "--port", "0", "--concept", "Bench"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    match = re.search(r" at http://([^:]+):(\d+): ", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit("simgym serve did not start")
    return proc, match.group(1), int(match.group(2))


def main() -> None:
    """Run every path, print the table and the ratios to the in-process call."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", type=Path, help="an agent folder (default: export one)")
    parser.add_argument("--seconds", type=float, default=3.0, help="window per path")
    parser.add_argument("--clients", type=int, default=4, help="processes for the N-client run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        agent_dir = args.agent or export_untrained(
            Path(tmp) / "agent", REPO / "examples" / "cstr" / "spec.yaml"
        )
        from gymclient.agent import load_agent

        agent = load_agent(agent_dir)
        rows = [row("Agent.act in-process", timed(lambda: agent.act(STATE), args.seconds))]
        proc, host, port = start_server(agent_dir)
        try:
            body = json.dumps(STATE).encode()
            v1 = keep_alive_client(host, port, "/v1/prediction", body)
            assert json.loads(v1()) == agent.act(STATE)  # the same answer, over HTTP
            rows.append(row("v1 keep-alive", timed(v1, args.seconds)))
            v2_body = json.dumps({"state": STATE}).encode()
            v2 = keep_alive_client(host, port, "/v2/clients/bench/predict", v2_body)
            rows.append(row("v2 keep-alive", timed(v2, args.seconds)))
            rows.append(
                row(
                    "v1 raw socket",
                    timed(raw_client(host, port, "/v1/prediction", body), args.seconds),
                )
            )
            rows.append(row("floor: socket echo", floor("echo", args.seconds)))
            rows.append(row("floor: bare http.server", floor("http", args.seconds)))
            rows.append(row("floor: simgym.httpbase", floor("httpbase", args.seconds)))
            if HAVE_H11:
                rows.append(row("floor: h11", floor("h11", args.seconds)))
            try:
                import requests
            except ImportError:  # not a simgym dependency (MLflow brings it with `train`)
                print("requests is not installed: its path is skipped")
            else:
                url = f"http://{host}:{port}/v1/prediction"
                call = lambda: requests.post(url, json=STATE)  # noqa: E731
                rows.append(row("v1 requests.post", timed(call, args.seconds)))
            latencies, rate = concurrent(host, port, args.clients, args.seconds)
            rows.append(row(f"v1 {args.clients} clients", latencies, rate))
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    base = rows[0]
    print(f"{'path':<24} {'p50 µs':>9} {'p99 µs':>9} {'req/s':>9} {'p50 ×':>7} {'req/s ×':>8}")
    for r in rows:
        print(
            f"{r['path']:<24} {r['p50_us']:9.1f} {r['p99_us']:9.1f} {r['req_s']:9.0f} "
            f"{r['p50_us'] / base['p50_us']:7.1f} {r['req_s'] / base['req_s']:8.3f}"
        )
    print("(× : ratio to Agent.act in-process, measured in this run)")
    if not HAVE_H11:
        print("h11 is not installed (uvicorn brings it with `train`): its paths are skipped")
        return
    parsed = parse_in_process(args.seconds)
    print(f"\n{'parse + reply in process':<24} {'µs':>9} {'× httpbase':>11}")
    for p in parsed:
        print(f"{p['parser']:<24} {p['us']:9.2f} {p['us'] / parsed[0]['us']:11.2f}")


if __name__ == "__main__":
    main()
