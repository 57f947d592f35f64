"""`make dist`: one shiv zipapp per architecture, its wheels for that architecture, and SHA256SUMS.

The aarch64 artifact cannot run here; what can be checked is that every native file it holds is an
aarch64 ELF object, and that every wheel it was made from is tagged for aarch64 (or pure Python).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARCHES = {"x86_64": 62, "aarch64": 183}  # ELF e_machine
# Extension modules the node cannot start without, one per native dependency.
NATIVE = (
    "msgspec/_core.cpython-313-{arch}-linux-gnu.so",
    "uvloop/loop.cpython-313-{arch}-linux-gnu.so",
    "granian/_granian.cpython-313-{arch}-linux-gnu.so",
    "cryptography/hazmat/bindings/_rust.abi3.so",
    "nacl/_sodium.abi3.so",
    "_cffi_backend.cpython-313-{arch}-linux-gnu.so",
)


def machine_of(data: bytes) -> int | None:
    if data[:4] != b"\x7fELF":
        return None
    return int.from_bytes(data[18:20], "little" if data[5] == 1 else "big")


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_every_native_file_is_built_for_its_architecture(dist: Path, arch: str) -> None:
    with zipfile.ZipFile(dist / f"edge-{arch}.pyz") as archive:
        names = archive.namelist()
        native = [n for n in names if n.endswith(".so") or ".so." in n.rsplit("/", 1)[-1]]
        machines = {name: machine_of(archive.read(name)[:20]) for name in native}
        wheels = [archive.read(n).decode() for n in names if n.endswith(".dist-info/WHEEL")]
        environment = json.loads(archive.read("environment.json"))
    assert {f"site-packages/{path.format(arch=arch)}" for path in NATIVE} <= set(native)
    assert {name: m for name, m in machines.items() if m != ARCHES[arch]} == {}
    tags = {line[5:] for text in wheels for line in text.splitlines() if line.startswith("Tag: ")}
    # Pure Python, or CPython 3.13 (its own ABI or the stable one) for this architecture.
    foreign = {
        tag
        for tag in tags
        if not tag.endswith("-none-any")
        and not (tag.split("-")[1] in {"cp313", "abi3"} and tag.endswith(f"_{arch}"))
    }
    assert foreign == set()
    assert any(tag.startswith("cp313-cp313-manylinux") for tag in tags)
    assert environment["entry_point"] == "edge.cli:main"
    # The guest runs by path in process children: its files must be in the archive as files.
    assert "site-packages/isolates/guest/_edge_child.py" in names


def test_the_checksum_file_lists_both_artifacts_and_the_deploy_files(dist: Path) -> None:
    names = ["edge-aarch64.pyz", "edge-deploy.tar.gz", "edge-x86_64.pyz"]
    expected = "".join(
        f"{hashlib.sha256((dist / name).read_bytes()).hexdigest()}  {name}\n" for name in names
    )
    assert (dist / "SHA256SUMS").read_text() == expected
    checked = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=dist, capture_output=True, text=True, check=False
    )
    assert checked.stdout == "".join(f"{name}: OK\n" for name in names)
    with tarfile.open(dist / "edge-deploy.tar.gz") as tar:
        members = {member.name: (stat.filemode(member.mode), member.mtime) for member in tar}
        unit = tar.extractfile("deploy/edge-node.service")
        assert unit is not None and unit.read() == (REPO / "deploy/edge-node.service").read_bytes()
    assert members == {
        "deploy/install.sh": ("?rwxr-xr-x", 0),
        "deploy/edge-node.service": ("?rw-r--r--", 0),
        "deploy/edge-origin.service": ("?rw-r--r--", 0),
    }


def test_the_artifact_runs_without_any_installed_package(dist: Path, tmp_path: Path) -> None:
    # The base interpreter (not the venv), -I -S: nothing but the standard library and the archive.
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    env = {"PATH": os.environ["PATH"], "SHIV_ROOT": str(tmp_path)}
    probe = subprocess.run(
        [python, "-I", "-S", "-c", "import msgspec"], env=env, stderr=subprocess.DEVNULL, check=False
    )
    assert probe.returncode == 1
    artifact = dist / f"edge-{platform.machine()}.pyz"
    result = subprocess.run(
        [python, "-I", "-S", str(artifact), "--version"], env=env, capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "edge 0.1.0\n", "")
    # Unpacked once under SHIV_ROOT, as real files (process children read the guest by path).
    (unpacked,) = tmp_path.glob(f"{artifact.name}_*/site-packages")
    assert (unpacked / "isolates/guest/_edge_child.py").is_file()
