"""The committed generated code matches proto/, and the contract is documented."""

from __future__ import annotations

import re

from simserver.protogen import PROTO_ROOT, REPO_ROOT, generate

PROTO = PROTO_ROOT / "simgym/v1/simulator.proto"


def test_generated_code_is_fresh(tmp_path):
    generated = generate(tmp_path)
    assert generated, "protoc produced nothing"
    for fresh in generated:
        rel = fresh.relative_to(tmp_path)
        committed = REPO_ROOT / rel
        assert committed.exists(), f"{rel} is not committed: run `make proto`"
        assert committed.read_text() == fresh.read_text(), (
            f"{rel} is stale: run `make proto` and commit"
        )


def test_every_message_rpc_and_field_is_documented():
    lines = PROTO.read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        is_decl = re.match(r"^(message|service|rpc|oneof)\s", stripped)
        is_field = re.match(r"^(repeated |optional )?[\w.]+\s+\w+\s*=\s*\d+", stripped)
        if (
            (is_decl or is_field)
            and not lines[i - 1].strip().startswith("//")
            and "//" not in stripped
        ):
            undocumented.append(stripped)
    assert not undocumented, f"add a comment saying what these mean: {undocumented}"


def test_package_is_versioned():
    assert "package simgym.v1;" in PROTO.read_text()
