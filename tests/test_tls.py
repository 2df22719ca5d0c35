"""TLS with a token: a server off loopback must be reachable only with both right."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from gymclient.connection import Connection, ConnectOptions
from gymclient.errors import AuthError, ServerUnavailable

from .conftest import SIMS

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


def _pair(d, name):
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(d / f"{name}-key.pem"), "-out", str(d / f"{name}-cert.pem"),
            "-subj", "/CN=localhost",
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    return d / f"{name}-cert.pem", d / f"{name}-key.pem"


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("garbage cert", "--tls-cert {bad}: no PEM certificate in it"),
        ("garbage key", "--tls-key {bad}: not a PEM private key"),
        ("swapped", "--tls-cert {key}: no PEM certificate in it"),
        ("other key", "--tls-key {other_key} is not the key of the certificate"),
        ("missing key", "--tls-key {missing}: no such file"),
    ],
)
def test_bad_tls_files_are_named(tmp_path, certs, which, message):
    cert, key = certs / "cert.pem", certs / "key.pem"
    _other_cert, other_key = _pair(tmp_path, "other")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a PEM file\n")
    missing = tmp_path / "missing.pem"
    pair = {
        "garbage cert": (bad, key),
        "garbage key": (cert, bad),
        "swapped": (key, cert),
        "other key": (cert, other_key),
        "missing key": (cert, missing),
    }[which]
    proc = subprocess.run(
        [sys.executable, "-m", "simserver", "toy.py:Toy", "--port", "0",
         "--tls-cert", str(pair[0]), "--tls-key", str(pair[1])],
        capture_output=True, text=True, timeout=60, cwd=SIMS,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no gRPC log noise, no traceback
    expected = message.format(bad=bad, key=key, other_key=other_key, missing=missing)
    assert lines[0].startswith("simserver: error:") and expected in lines[0], lines[0]
