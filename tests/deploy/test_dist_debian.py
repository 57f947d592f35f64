"""The artifact on a clean Debian 13: install.sh installs it, and Debian's python3 runs the node.

The tree (.ci/debian-trixie-tree: debootstrap minbase + python3, cached in $EDGE_TRIXIE_ROOT, default
/var/tmp/edge-trixie) stays clean: each test sees it through an overlay whose upper layer is in
tmp_path, mounted in a private mount namespace that ends with the command. Root only (debootstrap,
mounts, chroot); the `debian_tree` marker selects or leaves out this tier.
"""

from __future__ import annotations

import os
import platform
import shutil
import stat
import subprocess
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from loadtest._servers import Server, free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = f"edge-{platform.machine()}.pyz"

pytestmark = [
    pytest.mark.debian_tree,
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap, mounts and chroot need root (CI is root)"),
]

# Mounts the overlay, /proc, /dev and /sys in this (private) mount namespace, then runs the command
# in the tree with a clean environment (or, after --host, on this machine with the tree mounted).
ENTER = """set -e
lower=$1 upper=$2 work=$3 merged=$4
shift 4
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$merged"
mount -t proc proc "$merged/proc"
mount --rbind /dev "$merged/dev"
mount --rbind /sys "$merged/sys"
if [ "$1" = --host ]; then shift; exec "$@"; fi
exec chroot "$merged" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 "$@"
"""
AS_NODE = ["setpriv", "--reuid=edge-node", "--regid=edge-node", "--init-groups"]


class Tree:
    """A Debian tree seen through an overlay: commands run chrooted into it."""

    def __init__(self, lower: Path, tmp_path: Path) -> None:
        self.lower = lower
        self.upper, self.work, self.merged = (tmp_path / name for name in ("upper", "work", "merged"))
        for directory in (self.upper, self.work, self.merged):
            directory.mkdir()

    def argv(self, command: Sequence[str]) -> list[str]:
        """`command` inside the tree (it may start with NAME=VALUE environment entries)."""
        layers = [str(path) for path in (self.lower, self.upper, self.work, self.merged)]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", ENTER, "sh", *layers, *command]

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(command), capture_output=True, text=True, timeout=120, check=False)

    def host(self, *command: str) -> subprocess.CompletedProcess[str]:
        """`command` on this machine while the tree is mounted at `self.merged`."""
        return self.run("--host", *command)


@pytest.fixture(scope="session")
def debian_root() -> Path:
    result = subprocess.run(
        [str(REPO / ".ci" / "debian-trixie-tree")], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stderr
    return Path(os.environ.get("EDGE_TRIXIE_ROOT") or "/var/tmp/edge-trixie")


@pytest.fixture
def tree(debian_root: Path, dist: Path, tmp_path: Path) -> Tree:
    """A fresh view of the Debian tree with /edge-test: deploy/, the artifact and two functions."""
    tree = Tree(debian_root, tmp_path)
    staging = tree.upper / "edge-test"
    shutil.copytree(REPO / "deploy", staging / "deploy")
    for name in (ARTIFACT, "edge-deploy.tar.gz", "SHA256SUMS"):
        shutil.copy(dist / name, staging / name)
    functions = staging / "functions"
    shutil.copytree(REPO / "examples" / "hello", functions / "hello")
    (functions / "boxed").mkdir()
    (functions / "boxed" / "edge.toml").write_text('entrypoint = "main:handler"\nisolation = "process"\n')
    # The child's import path: the guest must come from the unpacked artifact.
    (functions / "boxed" / "main.py").write_text(
        "import sys\n\ndef handler(request):\n    return '\\n'.join(sys.path)\n"
    )
    for path in [staging, *staging.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH | (0o055 if path.is_dir() else 0))
    return tree


def test_install_sh_installs_the_artifact_and_the_node_answers(tree: Tree, dist: Path) -> None:
    # Debian's python3 alone: no pip, none of the node's dependencies.
    assert tree.run("python3", "-c", "import sys; print(sys.version_info[:2])").stdout == "(3, 13)\n"
    assert "No module named 'msgspec'" in tree.run("python3", "-c", "import msgspec").stderr
    assert "No module named pip" in tree.run("python3", "-m", "pip", "--version").stderr

    first = tree.run("sh", "/edge-test/deploy/install.sh", "--artifact", f"/edge-test/{ARTIFACT}", "node")
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout == (
        f"install.sh: installed /usr/local/lib/edge/edge.pyz from /edge-test/{ARTIFACT}\n"
        "install.sh: edge 0.1.0: run as /usr/local/bin/edge\n"
        "install.sh: created the system user edge-node\n"
        "install.sh: wrote /etc/edge/node.env: set EDGE_ORIGIN to your origin\n"
        "install.sh: put the node token in /etc/edge/node-token (empty now, mode 0600): on the origin"
        " host, runuser -u edge-origin -- edge origin token create --role node --data /var/lib/edge/origin\n"
        "install.sh: installed into / (systemd not reloaded)\n"
    )
    lib = tree.upper / "usr/local/lib/edge"
    assert (lib / "edge.pyz").read_bytes() == (dist / ARTIFACT).read_bytes()
    assert stat.filemode((lib / "edge.pyz").stat().st_mode) == "-rw-r--r--"
    (unpacked,) = (lib / "site").glob("edge.pyz_*")
    assert (unpacked / "site-packages/isolates/guest/_edge_child.py").is_file()
    assert stat.filemode((tree.upper / "usr/local/bin/edge").stat().st_mode) == "-rwxr-xr-x"
    unit = (tree.upper / "etc/systemd/system/edge-node.service").read_text()
    assert "\nExecStart=/usr/local/bin/edge node " in unit

    # Again: the same artifact changes nothing.
    second = tree.run("sh", "/edge-test/deploy/install.sh", "--artifact", f"/edge-test/{ARTIFACT}", "node")
    assert second.returncode == 0, second.stderr
    assert "installed /usr/local/lib/edge/edge.pyz" not in second.stdout
    assert "created" not in second.stdout
    assert list((lib / "site").glob("edge.pyz_*")) == [unpacked]

    # The service's user runs it from files it cannot write (ProtectSystem=strict would not let it).
    version = tree.run(*AS_NODE, "edge", "--version")
    assert (version.returncode, version.stdout, version.stderr) == (0, "edge 0.1.0\n", "")

    # An EDGE_* variable makes the node re-execute itself (as under systemd, with node.env): the
    # artifact must start again from the archive, not with `python3 -m edge`.
    port = free_port()
    command = ["EDGE_SCRUB_ME=1", *AS_NODE, "edge", "node", "--functions", "/edge-test/functions"]
    node = Server(
        tree.argv([*command, "--port", str(port), "--admin-port", "0"]),
        f"http://127.0.0.1:{port}/_edge/ready",
        log_path=tree.upper.parent / "node.log",
    )
    node.start(timeout=120)  # the machine may be busy: two isolates load before it is ready
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=30) as reply:
            assert (reply.status, reply.read()) == (200, b"hello world")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/boxed", timeout=30) as reply:
            child_path = reply.read().decode().splitlines()
    finally:
        node.stop()
    guest = f"/usr/local/lib/edge/site/{unpacked.name}/site-packages/isolates/guest"
    assert child_path[:2] == ["/edge-test/functions/boxed", guest]
    assert [entry for entry in child_path if entry.startswith("/usr/local/lib/edge")] == [guest]
    log = (tree.upper.parent / "node.log").read_text()
    assert "edge node: re-executing without $EDGE_SCRUB_ME\n" in log
    assert "function boxed: serving version" in log


def test_the_cloud_init_example_installs_a_node(tree: Tree, dist: Path) -> None:
    config = yaml.safe_load((REPO / "deploy" / "cloud-init.yaml").read_text())
    assert config["packages"] == ["python3"]
    # cloud-init's write_files, with the CHANGE-ME values filled in.
    token = "edge_node_from_user_data\n"
    filled = {
        "/run/edge-install/SHA256SUMS": (dist / "SHA256SUMS").read_text(),
        "/run/edge-install/node-token": token,
    }
    for entry in config["write_files"]:
        path = tree.upper / entry["path"].lstrip("/")
        for parent in reversed(path.relative_to(tree.upper).parents[:-1]):
            (tree.upper / parent).mkdir(mode=0o755, exist_ok=True)
        path.write_text(filled.get(entry["path"], entry["content"]))
        path.chmod(int(entry["permissions"], 8))
    (step,) = config["runcmd"]
    assert step[:2] == ["sh", "-c"]
    script = step[2]
    # Files served from the test's staging directory; no systemd in a chroot.
    assert "\nbase_url=https://files.example.net/edge  # CHANGE-ME\n" in script
    assert script.endswith("\nsystemctl enable --now edge-node\n")
    script = script.replace("base_url=https://files.example.net/edge", "base_url=file:///edge-test")
    script = script.removesuffix("systemctl enable --now edge-node\n")

    result = tree.run("sh", "-c", script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "install.sh: stored the node token in /etc/edge/node-token (mode 0600)\n" in result.stdout
    assert (tree.upper / "etc/edge/node-token").read_text() == token
    assert stat.filemode((tree.upper / "etc/edge/node-token").stat().st_mode) == "-rw-------"
    assert not (tree.upper / "run/edge-install/node-token").exists()
    env_entry = next(entry for entry in config["write_files"] if entry["path"] == "/etc/edge/node.env")
    assert (tree.upper / "etc/edge/node.env").read_text() == env_entry["content"]
    unit = (tree.upper / "etc/systemd/system/edge-node.service").read_text()
    assert unit == (REPO / "deploy" / "edge-node.service").read_text()
    version = tree.run(*AS_NODE, "edge", "--version")
    assert (version.returncode, version.stdout) == (0, "edge 0.1.0\n")


def test_install_sh_with_root_installs_the_artifact_from_outside(tree: Tree, dist: Path) -> None:
    # A staging tree: users through useradd --prefix, the tree's own python3 through chroot.
    script = str(REPO / "deploy/install.sh")
    result = tree.host("sh", script, "--root", str(tree.merged), "--artifact", str(dist / ARTIFACT), "node")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(
        f"install.sh: installed {tree.merged}/usr/local/lib/edge/edge.pyz from {dist / ARTIFACT}\n"
        "install.sh: edge 0.1.0: run as "
        f"{tree.merged}/usr/local/bin/edge\n"
        "install.sh: created the system user edge-node\n"
    )
    assert result.stdout.endswith(f"install.sh: installed into {tree.merged} (systemd not reloaded)\n")
    version = tree.run(*AS_NODE, "edge", "--version")
    assert (version.returncode, version.stdout, version.stderr) == (0, "edge 0.1.0\n", "")
