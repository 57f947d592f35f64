"""deploy/install.sh into a temporary --root (never the real system), and the units it installs.

The script creates the services' users (useradd --prefix), their state directories with modes and
owners, the node's token file (0600, root's: systemd hands the node a copy) and the units; a second
run changes nothing. `systemd-analyze verify` checks the units.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "install.sh"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="install.sh creates users and chowns (CI is root)")


def install(root: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT), "--root", str(root), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ids(root: Path, name: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"no user {name} in {root}/etc/passwd")


def layout(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every path under `root` with its mode and owner (uid, gid)."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        found[str(path.relative_to(root))] = (stat.filemode(info.st_mode), info.st_uid, info.st_gid)
    return found


def test_the_script_parses() -> None:
    assert subprocess.run(["sh", "-n", str(SCRIPT)], check=False).returncode == 0


@needs_root
def test_install_creates_users_directories_and_a_private_token_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first = install(root, "origin", "node")
    assert first.returncode == 0, first.stderr
    assert "created the system user edge-origin" in first.stdout
    assert "created the system user edge-node" in first.stdout
    origin, node = ids(root, "edge-origin"), ids(root, "edge-node")
    assert origin != node and 0 not in (*origin, *node)
    found = layout(root)
    assert found["var/lib/edge"] == ("drwxr-xr-x", 0, 0)
    assert found["var/lib/edge/origin"] == ("drwx------", *origin)
    assert found["var/lib/edge/node"] == ("drwx------", *node)
    assert found["etc/edge"] == ("drwxr-xr-x", 0, 0)
    assert found["etc/edge/node-token"] == ("-rw-------", 0, 0)
    assert found["etc/edge/node.env"] == ("-rw-r--r--", 0, 0)
    assert (root / "etc/edge/node-token").read_text() == ""
    assert "put the node token in" in first.stdout
    for unit in ("edge-origin.service", "edge-node.service"):
        assert (root / "etc/systemd/system" / unit).read_bytes() == (REPO / "deploy" / unit).read_bytes()
        assert found[f"etc/systemd/system/{unit}"] == ("-rw-r--r--", 0, 0)
    passwd = (root / "etc/passwd").read_text()
    assert "edge-node:x:" in passwd and ":/var/lib/edge/node:/usr/sbin/nologin" in passwd

    # Again: nothing new, nothing changed.
    second = install(root, "origin", "node")
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout
    assert layout(root) == found
    assert (root / "etc/passwd").read_text() == passwd

    # The token from standard input (never an argument), modes kept; a drifted mode is repaired.
    (root / "etc/edge/node-token").chmod(0o644)
    third = install(root, "--token-stdin", "node", stdin="edge_node_abc\n")
    assert third.returncode == 0, third.stderr
    assert (root / "etc/edge/node-token").read_text() == "edge_node_abc\n"
    assert layout(root)["etc/edge/node-token"] == ("-rw-------", 0, 0)

    # An operator's edited unit is kept unless asked.
    unit = root / "etc/systemd/system/edge-node.service"
    unit.write_text(unit.read_text() + "# local change\n")
    kept = install(root, "node")
    assert f"kept {unit}: it differs from {REPO / 'deploy/edge-node.service'}" in kept.stdout
    assert unit.read_text().endswith("# local change\n")
    assert install(root, "--force-units", "node").returncode == 0
    assert unit.read_bytes() == (REPO / "deploy/edge-node.service").read_bytes()


@needs_root
def test_install_refuses_bad_arguments(tmp_path: Path) -> None:
    result = install(tmp_path, "nodes")
    assert (result.returncode, result.stderr) == (
        1,
        "install.sh: error: unknown argument 'nodes': expected origin, node, --root DIR, --artifact FILE,"
        " --sha256sums FILE, --force-units or --token-stdin\n",
    )
    result = install(tmp_path)
    assert result.stderr == (
        "install.sh: error: say what to install: origin, node or both (e.g. deploy/install.sh node)\n"
    )
    result = install(tmp_path, "--token-stdin", "origin")
    assert result.stderr == "install.sh: error: --token-stdin is for the node\n"
    result = install(tmp_path, "--token-stdin", "node", stdin="\n")
    assert result.stderr == "install.sh: error: --token-stdin: no token on standard input\n"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    # The units name /usr/local/bin/edge; verify checks that it is executable: use this venv's.
    edge = Path(sys.executable).with_name("edge")
    for name in ("edge-origin.service", "edge-node.service"):
        text = (REPO / "deploy" / name).read_text()
        assert "ExecStart=/usr/local/bin/edge " in text
        (tmp_path / name).write_text(text.replace("/usr/local/bin/edge", str(edge)))
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "edge-origin.service"),
            str(tmp_path / "edge-node.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


@needs_root
def test_install_checks_the_artifact_before_changing_anything(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    here = platform.machine()
    other = "aarch64" if here != "aarch64" else "x86_64"
    for arch in (here, other):
        (tmp_path / f"edge-{arch}.pyz").write_bytes(f"not really {arch}".encode())
    sums = tmp_path / "SHA256SUMS"
    artifact = tmp_path / f"edge-{here}.pyz"

    result = install(root, "--artifact", str(tmp_path / "edge.pyz"), "node")
    assert result.stderr == (
        f"install.sh: error: --artifact {tmp_path}/edge.pyz: no such file"
        f" (make dist writes dist/edge-{here}.pyz)\n"
    )
    result = install(root, "--artifact", str(artifact), "node")
    assert result.stderr == (
        f"install.sh: error: --artifact {artifact}: no checksum file {sums} (make dist writes it beside"
        " the artifacts; or give --sha256sums FILE)\n"
    )
    sums.write_text(f"{'0' * 64}  edge-{other}.pyz\n")
    result = install(root, "--artifact", str(artifact), "node")
    assert result.stderr == (
        f"install.sh: error: --artifact {artifact}: {sums} has no line for edge-{here}.pyz\n"
    )
    digest = {arch: hashlib.sha256(f"not really {arch}".encode()).hexdigest() for arch in (here, other)}
    sums.write_text(f"{'0' * 64}  edge-{here}.pyz\n{digest[other]}  edge-{other}.pyz\n")
    result = install(root, "--artifact", str(artifact), "node")
    assert result.stderr == (
        f"install.sh: error: --artifact {artifact}: sha256 {digest[here]} does not match {'0' * 64}"
        f" in {sums}: the file is damaged or not the one built; copy it again\n"
    )
    result = install(root, "--artifact", str(tmp_path / f"edge-{other}.pyz"), "node")
    assert result.stderr == (
        f"install.sh: error: --artifact {tmp_path}/edge-{other}.pyz is built for {other}, this machine is"
        f" {here}: use edge-{here}.pyz\n"
    )
    # Checksums from elsewhere; a root tree without Debian's python3.
    elsewhere = tmp_path / "sums"
    elsewhere.write_text(f"{digest[here]}  edge-{here}.pyz\n")
    result = install(root, "--artifact", str(artifact), "--sha256sums", str(elsewhere), "node")
    assert result.stderr == (
        f"install.sh: error: --artifact needs Python 3.13 at {root}/usr/bin/python3"
        " (Debian 13: apt-get install python3)\n"
    )
    result = install(root, "--sha256sums", str(elsewhere), "node")
    assert result.stderr == "install.sh: error: --sha256sums goes with --artifact FILE\n"
    assert list(root.iterdir()) == []
