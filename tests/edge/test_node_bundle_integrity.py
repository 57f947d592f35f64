"""Unpacked bundles are read-only and checked against their stored archive after a restart.

Real processes: an origin and a node; the node is stopped, a file of its unpacked bundle is
changed (as someone with the node's uid could: mode bits do not stop root), and the node starts
again while the origin is down, so only its own stored archive can repair the bundle.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet.fleet_harness import Fleet, Node, run_edge, wait_for, write_version

from edge import bundle


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(tmp_path)
    try:
        yield running
    finally:
        running.close()


def modes(directory: Path) -> dict[str, int]:
    """Mode bits of everything under `directory` (itself as "."), bytecode caches left out."""
    found = {".": stat.S_IMODE(directory.stat().st_mode)}
    for path in directory.rglob("*"):
        if "__pycache__" not in path.parts:
            found[path.relative_to(directory).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return found


def tamper(path: Path, text: str) -> None:
    """What an attacker with the node's uid does: make it writable again and change it."""
    path.parent.chmod(0o755)
    if path.exists():
        path.chmod(0o644)
    path.write_text(text)


def deploy_original(fleet: Fleet, tmp_path: Path) -> tuple[Node, str]:
    origin = fleet.start_origin()
    node = fleet.start_node()
    directory, version = write_version(tmp_path / "src", "original")
    result = run_edge("deploy", str(directory), env=origin.env())
    assert result.returncode == 0, result.stderr
    wait_for(lambda: node.serves(b"original"), 20, "the node to serve the original")
    return node, version


def test_a_changed_bundle_is_unpacked_again_from_the_stored_archive(fleet: Fleet, tmp_path: Path) -> None:
    node, version = deploy_original(fleet, tmp_path)
    unpacked = node.data / "bundles" / version
    assert modes(unpacked) == {".": 0o555, "edge.toml": 0o444, "main.py": 0o444}
    archive = node.data / "blobs" / version
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == version
    node.stop()
    assert fleet.origin is not None
    fleet.origin.stop()

    tamper(unpacked / "main.py", "async def handler(request):\n    return 'tampered'\n")
    tamper(unpacked / "evil.py", "print('planted')\n")
    node.start()  # the origin is down: only the stored archive can help

    assert node.body() == b"original"
    message = (
        f"function hello: bundle {version[:12]} was changed on disk (main.py: content differs,"
        " evil.py: not in the bundle); unpacked it again from the stored archive"
    )
    assert f"ERROR edge.sync: {message} ({unpacked})" in node.output()
    ready = node.ready()
    assert ready["functions"]["hello"] == {"state": "serving", "versions": [version]}
    assert message in ready["errors"]
    assert modes(unpacked) == {".": 0o555, "edge.toml": 0o444, "main.py": 0o444}
    assert sorted(p.name for p in unpacked.parent.iterdir() if not p.name.endswith(".lock")) == [version]


def test_a_changed_bundle_without_a_good_archive_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    node, version = deploy_original(fleet, tmp_path)
    node.stop()
    assert fleet.origin is not None
    fleet.origin.stop()
    unpacked = node.data / "bundles" / version
    archive = node.data / "blobs" / version
    tamper(unpacked / "main.py", "async def handler(request):\n    return 'tampered'\n")
    tamper(archive, "not the archive")
    node.start()

    reply = node.get("/hello")
    assert reply.status == 503
    assert b"tampered" not in reply.body
    hello = node.ready()["functions"]["hello"]
    assert hello["state"] == "error"
    assert "versions" not in hello
    problem = f"bundle {version[:12]}: the stored archive {archive} does not match its digest"
    # What clients (and /_edge/ready) see leaves out the node's paths; the log has them.
    public = problem.replace(str(node.data.resolve()), "<node data>")
    assert hello["error"].startswith(
        f"function hello failed to load: {public}, and the origin cannot send it: "
    )
    assert reply.json()["error"] == hello["error"]
    assert f"ERROR edge.sync: function hello: {problem}; fetching it again" in node.output()

    # Once the origin answers again, the node fetches the archive and serves the original.
    fleet.origin.start()
    wait_for(lambda: node.serves(b"original"), 40, "the node to serve again with the origin back")
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == version
    assert node.ready()["functions"]["hello"] == {"state": "serving", "versions": [version]}


def test_with_the_origin_back_a_damaged_archive_is_fetched_again(fleet: Fleet, tmp_path: Path) -> None:
    node, version = deploy_original(fleet, tmp_path)
    node.stop()
    unpacked = node.data / "bundles" / version
    archive = node.data / "blobs" / version
    tamper(unpacked / "main.py", "async def handler(request):\n    return 'tampered'\n")
    tamper(archive, "not the archive")
    node.start()  # the origin is up

    assert node.body() == b"original"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == version
    assert "main.py: content differs" in node.output()


# The checks themselves, on a bundle unpacked in a temporary directory.


@pytest.fixture
def unpacked(tmp_path: Path) -> tuple[bytes, Path]:
    source = tmp_path / "src"
    (source / "lib").mkdir(parents=True)
    (source / "edge.toml").write_text('name = "fn"\n')
    (source / "main.py").write_text("from lib import x as handler\n")
    (source / "lib" / "x.py").write_text("x = 1\n")
    data = bundle.pack(source)
    directory = tmp_path / "bundles" / "v1"
    bundle.extract(data, directory, "fn")
    return data, directory


def test_an_untouched_tree_verifies(unpacked: tuple[bytes, Path]) -> None:
    data, directory = unpacked
    assert bundle.verify_tree(data, directory) == []


def test_every_kind_of_change_is_named(unpacked: tuple[bytes, Path], tmp_path: Path) -> None:
    data, directory = unpacked
    tamper(directory / "main.py", "import os\n")
    (directory / "lib" / "x.py").chmod(0o644)
    (directory / "lib" / "x.py").unlink()
    (directory / "lib" / "x.py").symlink_to(tmp_path / "elsewhere.py")
    tamper(directory / "lib" / "y.py", "")
    (directory / "edge.toml").chmod(0o644)
    (directory / "edge.toml").unlink()
    assert bundle.verify_tree(data, directory) == [
        "edge.toml: missing",
        "lib/x.py: not a regular file",
        "main.py: content differs",
        "lib/y.py: not in the bundle",
    ]


def test_a_directory_swapped_for_a_symlink_is_named(unpacked: tuple[bytes, Path], tmp_path: Path) -> None:
    data, directory = unpacked
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "x.py").write_text("x = 1\n")
    directory.chmod(0o755)
    bundle.remove_tree(directory / "lib")
    (directory / "lib").symlink_to(copy)
    assert bundle.verify_tree(data, directory) == ["lib: a symbolic link, not a directory"]


def test_bytecode_caches_are_removed_then_ignored(unpacked: tuple[bytes, Path], tmp_path: Path) -> None:
    data, directory = unpacked
    for cache in (directory / "__pycache__", directory / "lib" / "__pycache__"):
        cache.parent.chmod(0o755)
        cache.mkdir()
        (cache / "x.cpython-313.pyc").write_bytes(b"planted")
        cache.parent.chmod(0o555)
    elsewhere = tmp_path / "planted"
    elsewhere.mkdir()
    (directory / "lib").chmod(0o755)
    (directory / "lib" / "__pycache__").rename(directory / "lib" / "old")
    (directory / "lib" / "__pycache__").symlink_to(elsewhere)
    assert bundle.clear_bytecode(directory) == 2
    assert not any(path.name == "__pycache__" for path in directory.rglob("*"))
    assert elsewhere.is_dir()  # the link went, not what it pointed to
    assert bundle.verify_tree(data, directory) == [
        "lib/old: not in the bundle",
        "lib/old/x.cpython-313.pyc: not in the bundle",
    ]
    bundle.remove_tree(directory / "lib" / "old")
    (directory / "lib").chmod(0o555)
    assert modes(directory)["lib"] == 0o555
    assert bundle.verify_tree(data, directory) == []


def test_replace_tree_puts_back_the_archives_files_read_only(unpacked: tuple[bytes, Path]) -> None:
    data, directory = unpacked
    tamper(directory / "main.py", "import os\n")
    bundle.replace_tree(data, directory, "fn")
    assert bundle.verify_tree(data, directory) == []
    assert modes(directory) == {
        ".": 0o555,
        "edge.toml": 0o444,
        "lib": 0o555,
        "lib/x.py": 0o444,
        "main.py": 0o444,
    }
    assert sorted(os.listdir(directory.parent)) == ["v1"]


def test_an_archive_of_several_gzip_members_verifies_too(unpacked: tuple[bytes, Path]) -> None:
    data, directory = unpacked
    raw = gzip.decompress(data)
    split = gzip.compress(raw[:1024]) + gzip.compress(raw[1024:])
    assert bundle.verify_tree(split, directory) == []
    tamper(directory / "main.py", "import os\n")
    assert bundle.verify_tree(split, directory) == ["main.py: content differs"]


def test_the_node_caches_checked_bytecode_of_the_function_modules_and_the_bundle_stays_sealed(
    unpacked: tuple[bytes, Path],
) -> None:
    data, directory = unpacked
    before = modes(directory)
    assert bundle.compile_bytecode(directory) is None
    # Where imports look: __pycache__ beside each module, or under PYTHONPYCACHEPREFIX if set.
    modules = (directory / "main.py", directory / "lib" / "x.py")
    caches = [Path(importlib.util.cache_from_source(str(module))) for module in modules]
    for cache in caches:
        # PEP 552 flags: hash-based (bit 0) and checked (bit 1) against the source at every import.
        assert int.from_bytes(cache.read_bytes()[4:8], "little") == 0b11
        if sys.pycache_prefix is None:
            assert stat.S_IMODE(cache.stat().st_mode) == 0o444
            assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o555
    other = {path for path in directory.rglob("*.pyc")} - set(caches)
    assert not other
    assert modes(directory) == before  # sealed as it was
    assert bundle.verify_tree(data, directory) == []  # caches are not part of the bundle
    # A source changed on disk is imported as it is now, not from the stale cache.
    tamper(directory / "lib" / "x.py", "x = 2\n")
    probe = f"import sys; sys.path.insert(0, {str(directory)!r}); import lib.x; print(lib.x.x)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "2"


def test_vendored_dependencies_are_left_to_their_imports(tmp_path: Path) -> None:
    directory = tmp_path / "fn"
    (directory / bundle.DEPS_DIR / "dep").mkdir(parents=True)
    (directory / "main.py").write_text("def handler(request):\n    return 'hi'\n")
    (directory / bundle.DEPS_DIR / "dep" / "__init__.py").write_text("y = 1\n")
    (directory / "broken.py").write_text("def (:\n")  # reported by its own import, as before
    assert bundle.compile_bytecode(directory) is None
    assert Path(importlib.util.cache_from_source(str(directory / "main.py"))).is_file()
    dependency = directory / bundle.DEPS_DIR / "dep" / "__init__.py"
    assert not Path(importlib.util.cache_from_source(str(dependency))).exists()
