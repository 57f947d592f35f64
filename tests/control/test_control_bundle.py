"""`edge.bundle`: deterministic packing, validation messages, limits and safe extraction."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from edge import bundle
from edge.bundle import BundleError, Limits, ManifestBounds
from isolates.manifest import Manifest


def _function(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "edge.toml").write_text('routes = ["/x"]\n')
    (directory / "main.py").write_text("async def handler(request):\n    return 'hi'\n")
    (directory / "lib").mkdir()
    (directory / "lib" / "__init__.py").write_text("")
    (directory / "lib" / "tool.sh").write_text("#!/bin/sh\n")
    (directory / "lib" / "tool.sh").chmod(0o775)
    return directory


def _tar(*members: tuple[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_pack_is_deterministic(tmp_path: Path) -> None:
    first = bundle.pack(_function(tmp_path / "a" / "fn"))
    second_dir = _function(tmp_path / "b" / "fn")
    os.utime(second_dir / "main.py", (0, 1_000_000_000))
    (second_dir / "__pycache__").mkdir()
    (second_dir / "__pycache__" / "main.cpython-313.pyc").write_bytes(b"junk")
    (second_dir / ".git").mkdir()
    (second_dir / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (second_dir / "stale.pyc").write_bytes(b"junk")
    assert bundle.pack(second_dir) == first
    assert bundle.digest(first) == bundle.digest(bundle.pack(second_dir))
    assert len(bundle.digest(first)) == 64


def test_pack_normalises_metadata(tmp_path: Path) -> None:
    data = bundle.pack(_function(tmp_path / "fn"))
    assert gzip.decompress(data)  # a plain gzip stream
    assert data[4:8] == b"\0\0\0\0"  # gzip mtime 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [(m.name, m.mode, m.mtime, m.uid, m.gid, m.uname, m.gname) for m in tar]
    assert members == [
        ("edge.toml", 0o644, 0, 0, 0, "", ""),
        ("lib/__init__.py", 0o644, 0, 0, 0, "", ""),
        ("lib/tool.sh", 0o755, 0, 0, 0, "", ""),
        ("main.py", 0o644, 0, 0, 0, "", ""),
    ]


def test_pack_refuses_symlinks(tmp_path: Path) -> None:
    directory = _function(tmp_path / "fn")
    (directory / "link.py").symlink_to(directory / "main.py")
    with pytest.raises(BundleError) as caught:
        bundle.pack(directory)
    assert str(caught.value) == f"{directory / 'link.py'}: symbolic links cannot be packed into a bundle"


def test_validate_returns_the_manifest(tmp_path: Path) -> None:
    data = bundle.pack(_function(tmp_path / "fn"))
    assert bundle.validate(data, "fn") == Manifest(name="fn", entrypoint="main:handler", routes=["/x"])


def test_validate_skips_compiling_deps() -> None:
    data = _tar(("edge.toml", b""), ("main.py", b"handler = print\n"), (".deps/old/py2.py", b"print 'hi'\n"))
    assert bundle.validate(data, "fn").name == "fn"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (
            [("edge.toml", b"name = 'Bad Name'\n"), ("main.py", b"")],
            "edge.toml: Expected a name of 1-63 lowercase letters, digits, '-' or '_', got 'Bad Name'"
            " - at `$.name`",
        ),
        ([("edge.toml", b"nope = 1\n"), ("main.py", b"")], "edge.toml: Object contains unknown field `nope`"),
        ([("edge.toml", b""), ("main.py", b"x = (\n")], "main.py:1: SyntaxError: '(' was never closed"),
        (
            [("edge.toml", b""), ("main.py", b"x = 1\0\n")],
            "main.py: SyntaxError: source code string cannot contain null bytes",
        ),
        (
            [("edge.toml", b""), ("main.py", b""), ("main.py", b"")],
            "main.py: appears more than once in the bundle",
        ),
        (
            [("edge.toml", b""), ("./main.py", b""), ("a/./b/../c", b"")],
            "a/./b/../c: '..' path components are not allowed in a bundle",
        ),
    ],
)
def test_validate_messages(members: list[tuple[str, bytes]], message: str) -> None:
    with pytest.raises(BundleError) as caught:
        bundle.validate(_tar(*members), "fn")
    assert str(caught.value) == message


def test_limits() -> None:
    data = _tar(("edge.toml", b""), ("main.py", b""), ("a", b""), ("b", b""))
    with pytest.raises(BundleError) as caught:
        bundle.validate(data, "fn", Limits(max_members=3))
    assert str(caught.value) == "bundle has more than 3 members; that is the limit"
    with pytest.raises(BundleError) as caught:
        bundle.validate(data, "fn", Limits(max_bytes=10))
    assert str(caught.value) == f"bundle is {len(data)} bytes compressed; the limit is 10"
    bomb = _tar(("edge.toml", b""), ("main.py", b""), ("zeros", bytes(10_000_000)))
    assert len(bomb) < 20_000
    with pytest.raises(BundleError) as caught:
        bundle.validate(bomb, "fn", Limits(max_unpacked_bytes=1_000_000))
    assert str(caught.value) == "bundle unpacks to more than 1000000 bytes; that is the limit"


HANDLER = b"async def handler(request):\n    return 'hi'\n"


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def _tar_with_dirs(*members: tuple[str, bytes] | str) -> bytes:
    """A tar.gz of files (name, data) and directory entries (a bare name)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for member in members:
            if isinstance(member, str):
                tar.addfile(_dir(member))
                continue
            info = tarfile.TarInfo(member[0])
            info.size = len(member[1])
            tar.addfile(info, io.BytesIO(member[1]))
    return raw.getvalue()


COLLIDING = [
    pytest.param(
        [("edge.toml", b""), ("main.py", b""), ("a", b"file"), ("a/b", b"under it")],
        "a/b: collides with the file a: a bundle cannot hold both a file a and a member under a/;"
        " rename one of them",
        id="file-then-member-under-it",
    ),
    pytest.param(
        [("edge.toml", b""), ("main.py", b""), ("lib/deep/x.py", b""), ("lib/deep", b"file")],
        "lib/deep: collides with lib/deep/x.py: a bundle cannot hold both a file lib/deep and a member"
        " under lib/deep/; rename one of them",
        id="member-under-it-then-file",
    ),
    pytest.param(
        [("edge.toml", b""), ("main.py", b""), "data/", ("data", b"file")],
        "data: collides with data: a bundle cannot hold both a file data and a member under data/;"
        " rename one of them",
        id="directory-entry-then-file",
    ),
    pytest.param(
        [("edge.toml", b""), ("main.py", b""), ("./data", b"file"), "data/"],
        "data: collides with the file data: a bundle cannot hold both a file data and a member under"
        " data/; rename one of them",
        id="file-then-directory-entry",
    ),
]


@pytest.mark.parametrize(("members", "message"), COLLIDING)
def test_colliding_members_are_refused_naming_both(
    tmp_path: Path, members: list[tuple[str, bytes] | str], message: str
) -> None:
    data = _tar_with_dirs(*members)
    with pytest.raises(BundleError) as caught:
        bundle.validate(data, "fn")
    assert str(caught.value) == message
    with pytest.raises(BundleError) as caught:  # what a node runs before it unpacks
        bundle.extract(data, tmp_path / "v1", "fn")
    assert str(caught.value) == message
    assert list(tmp_path.iterdir()) == []


def test_directories_shared_by_members_do_not_collide(tmp_path: Path) -> None:
    data = _tar_with_dirs(
        "./",
        ("edge.toml", b""),
        ("main.py", HANDLER),
        "lib/",
        ("lib/a.py", b""),
        "lib/",
        ("lib/sub/b.py", b""),
    )
    bundle.extract(data, tmp_path / "v1", "fn")
    assert sorted(p.relative_to(tmp_path / "v1").as_posix() for p in (tmp_path / "v1").rglob("*.py")) == [
        "lib/a.py",
        "lib/sub/b.py",
        "main.py",
    ]


def test_manifest_bounds_are_checked_only_when_given() -> None:
    bounds = ManifestBounds(max_manifest_bytes=100, max_env_bytes=10, max_routes=2)
    env = _tar(("edge.toml", b'[env]\nKEY = "0123456789"\n'), ("main.py", HANDLER))
    with pytest.raises(BundleError) as caught:
        bundle.validate(env, "fn", bounds=bounds)
    assert str(caught.value) == (
        "edge.toml: Expected [env] names and values of at most 10 bytes together, got 13 bytes - at `$.env`;"
        " keep large values in files of the bundle (or raise the origin's --max-env-bytes)"
    )
    assert bundle.validate(env, "fn").env == {"KEY": "0123456789"}  # a node does not check them
    routes = _tar(("edge.toml", b'routes = ["/a", "/b", "/c"]\n'), ("main.py", HANDLER))
    with pytest.raises(BundleError) as caught:
        bundle.validate(routes, "fn", bounds=bounds)
    assert str(caught.value) == (
        "edge.toml: Expected at most 2 routes, got 3 - at `$.routes`; route a shared prefix instead of"
        " each path (or raise the origin's --max-routes)"
    )
    big = _tar(("edge.toml", b"# " + b"x" * 100 + b"\n"), ("main.py", HANDLER))
    with pytest.raises(BundleError) as caught:
        bundle.validate(big, "fn", bounds=bounds)
    assert str(caught.value) == (
        "edge.toml: Expected at most 100 bytes, got 103 bytes; keep large data in files of the bundle"
        " (or raise the origin's --max-manifest-bytes)"
    )
    fits = _tar(("edge.toml", b'routes = ["/a", "/b"]\n[env]\nK = "123456789"\n'), ("main.py", HANDLER))
    assert bundle.validate(fits, "fn", bounds=bounds).routes == ["/a", "/b"]


def test_extract_is_atomic_read_only_and_keeps_the_exec_bit(tmp_path: Path) -> None:
    data = bundle.pack(_function(tmp_path / "src" / "fn"))
    dest = tmp_path / "versions" / "v1"
    dest.parent.mkdir()
    assert bundle.extract(data, dest, "fn").routes == ["/x"]
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "edge.toml",
        "lib",
        "lib/__init__.py",
        "lib/tool.sh",
        "main.py",
    ]
    modes = {p.relative_to(dest).as_posix(): p.stat().st_mode & 0o777 for p in [dest, *dest.rglob("*")]}
    assert modes == {
        ".": 0o555,
        "edge.toml": 0o444,
        "lib": 0o555,
        "lib/__init__.py": 0o444,
        "lib/tool.sh": 0o555,
        "main.py": 0o444,
    }
    assert [p.name for p in dest.parent.iterdir()] == ["v1"]
    with pytest.raises(BundleError) as caught:
        bundle.extract(data, dest, "fn")
    assert str(caught.value) == f"{dest}: already exists; extract needs a new directory"


def test_extract_of_a_bad_bundle_leaves_nothing(tmp_path: Path) -> None:
    data = _tar(("edge.toml", b""), ("main.py", b""), ("../escape.py", b""))
    with pytest.raises(BundleError):
        bundle.extract(data, tmp_path / "v1", "fn")
    assert list(tmp_path.iterdir()) == []


def test_build_reports_a_failed_pip_install(tmp_path: Path) -> None:
    directory = _function(tmp_path / "fn")
    (directory / "requirements.txt").write_text(f"{tmp_path / 'no-such-project'}\n")
    with pytest.raises(BundleError) as caught:
        bundle.build(directory)
    assert str(caught.value).startswith(f"{directory / 'requirements.txt'}: pip install failed (exit 1):\n")


def test_build_without_requirements_is_pack(tmp_path: Path) -> None:
    directory = _function(tmp_path / "fn")
    assert bundle.build(directory) == bundle.pack(directory)
