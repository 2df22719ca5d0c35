"""TLS with a token: a server off loopback must be reachable only with both right."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from gymclient.connection import Connection, ConnectOptions
from gymclient.errors import AuthError, ServerUnavailable

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    # A self-signed certificate for "localhost" (with a SAN: gRPC checks it).
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    return d


def test_tls_with_token(start_server, certs):
    server = start_server(
        "toy.py:Toy",
        transport="tcp",
        args=[
            "--tls-cert",
            str(certs / "cert.pem"),
            "--tls-key",
            str(certs / "key.pem"),
            "--token",
            "t0k",
        ],
    )
    port = server.address.rsplit(":", 1)[1]
    address = f"localhost:{port}"
    good = ConnectOptions(tls=True, tls_ca=str(certs / "cert.pem"), token="t0k")
    with Connection(address, good) as conn:
        s = conn.open(["u"])
        s.reset({})
        assert s.step([1.0]).step == 1
    with Connection(
        address, ConnectOptions(tls=True, tls_ca=str(certs / "cert.pem"), token="bad")
    ) as conn:
        with pytest.raises(AuthError):
            conn.open(["u"])
    # A plaintext client cannot talk to a TLS server.
    with Connection(address, ConnectOptions(token="t0k", connect_timeout=1.0)) as conn:
        with pytest.raises(ServerUnavailable):
            conn.open(["u"])
