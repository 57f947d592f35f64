"""First start of the origin: signing key, admin token (0600, hashed in the database), token create."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

from origin_harness import free_port, run_edge, running_origin

from edge.control.signing import Signer


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_key_and_admin_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_origin(data) as origin:
        token_file = data / "admin-token"
        assert _mode(token_file) == 0o600
        assert _mode(data / "signing-key.pem") == 0o600
        token = origin.admin_token
        assert token.startswith("edge_admin_")
        assert origin.admin().functions() == []
        assert Signer.from_file(data / "signing-key.pem").public_key == origin.admin().key()
        first_output = origin.output()
    assert first_output.splitlines()[:2] == [
        f"created the signing key and the first admin token; the token is in {token_file}",
        f"origin on http://127.0.0.1:{origin.port}, data in {data}",
    ]
    with closing(sqlite3.connect(data / "origin.db")) as db:
        rows = db.execute("SELECT hash, role FROM tokens").fetchall()
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(), "admin")]

    with running_origin(data) as again:
        assert again.admin_token == token
        assert again.output().splitlines()[0] == f"origin on http://127.0.0.1:{again.port}, data in {data}"


def test_token_create_for_both_roles(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_origin(data) as origin:
        admin = origin.token("admin")
        node = origin.token("node")
        assert admin.startswith("edge_admin_") and node.startswith("edge_node_")
        assert origin.client(admin).functions() == []
        assert len(origin.client(node).key()) == 44
    with closing(sqlite3.connect(data / "origin.db")) as db:
        roles = sorted(role for (role,) in db.execute("SELECT role FROM tokens"))
        stored = {hash_ for (hash_,) in db.execute("SELECT hash FROM tokens")}
    assert roles == ["admin", "admin", "node"]
    assert admin not in stored and hashlib.sha256(admin.encode()).hexdigest() in stored


def test_token_create_needs_an_origin_data_dir(tmp_path: Path) -> None:
    result = run_edge("origin", "token", "create", "--role", "node", "--data", str(tmp_path / "none"))
    assert (result.returncode, result.stdout) == (1, "")
    none = tmp_path / "none"
    assert (
        result.stderr == f"error: {none}: no origin data here; start `edge origin --data {none}` once first\n"
    )


def test_token_create_rejects_an_unknown_role(tmp_path: Path) -> None:
    result = run_edge("origin", "token", "create", "--role", "root", "--data", str(tmp_path))
    assert result.returncode == 2
    # argparse quotes the choices differently across 3.13 patch releases.
    assert result.stderr.splitlines()[-1].startswith(
        "edge origin token create: error: argument --role: invalid choice: 'root' (choose from "
    )


def test_one_origin_per_data_directory_and_port(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_origin(data) as origin:
        result = run_edge("origin", "--port", str(free_port()), "--data", str(data), timeout=10)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == f"error: {data}: another origin is already running on this data directory\n"
        result = run_edge("origin", "--port", str(origin.port), "--data", str(tmp_path / "other"), timeout=10)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == f"error: cannot listen on 127.0.0.1:{origin.port}: Address already in use\n"
