"""Uploads: bundle validation answers 400 with exact messages; nothing partial is ever stored."""

from __future__ import annotations

import os
import socket
import tarfile
import time
from pathlib import Path

import pytest
from origin_harness import Origin, file_member, good_members, tar_gz, write_function

from edge import bundle
from edge.control.client import OriginError


def _blobs(origin: Origin) -> set[str]:
    return {p.name for p in (origin.data / "blobs").glob("??/*")}


def _reject(origin: Origin, data: bytes, name: str = "badfn") -> OriginError:
    with pytest.raises(OriginError) as caught:
        origin.admin().deploy(name, data)
    return caught.value


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


BAD_BUNDLES = [
    pytest.param(
        [file_member("edge.toml", b"timeout_ms = 'soon'\n"), file_member("main.py", b"")],
        "edge.toml: Expected `int`, got `str` - at `$.timeout_ms`",
        id="manifest-type",
    ),
    pytest.param(
        [file_member("edge.toml", b'routes = ["/_edge/x"]\n'), file_member("main.py", b"")],
        "edge.toml: Expected a path prefix starting with '/' (not under /_edge), got '/_edge/x'"
        " - at `$.routes[0]`",
        id="manifest-route",
    ),
    pytest.param(
        [file_member("main.py", b"")],
        "edge.toml: missing; a bundle needs a manifest at its top level",
        id="no-manifest",
    ),
    pytest.param(
        [file_member("edge.toml", b""), file_member("main.py", b"def handler(:\n")],
        "main.py:1: SyntaxError: invalid syntax",
        id="syntax-error",
    ),
    pytest.param(
        [
            file_member("edge.toml", b""),
            file_member("main.py", b""),
            file_member("lib/util.py", b"x = 1\n\n  y = 2\n"),
        ],
        "lib/util.py:3: IndentationError: unexpected indent",
        id="syntax-error-in-package",
    ),
    pytest.param(
        [file_member("edge.toml", b'entrypoint = "app:run"\n'), file_member("main.py", b"")],
        "edge.toml: entrypoint module `app` is not in the bundle (expected app.py or app/__init__.py)"
        " - at `$.entrypoint`",
        id="entrypoint-missing",
    ),
    pytest.param(
        [*good_members("badfn"), file_member("/etc/cron.d/evil", b"x")],
        "/etc/cron.d/evil: absolute paths are not allowed in a bundle",
        id="absolute",
    ),
    pytest.param(
        [*good_members("badfn"), file_member("lib/../../evil.py", b"x")],
        "lib/../../evil.py: '..' path components are not allowed in a bundle",
        id="dotdot",
    ),
    pytest.param(
        [*good_members("badfn"), _special("link", tarfile.SYMTYPE, "/etc/passwd")],
        "link: symbolic links are not allowed in a bundle",
        id="symlink",
    ),
    pytest.param(
        [*good_members("badfn"), _special("hard", tarfile.LNKTYPE, "main.py")],
        "hard: hard links are not allowed in a bundle",
        id="hardlink",
    ),
    pytest.param(
        [*good_members("badfn"), _special("null", tarfile.CHRTYPE)],
        "null: device and fifo files are not allowed in a bundle",
        id="device",
    ),
    pytest.param(
        [*good_members("badfn"), _special("pipe", tarfile.FIFOTYPE)],
        "pipe: device and fifo files are not allowed in a bundle",
        id="fifo",
    ),
    pytest.param(
        [*good_members("badfn"), file_member("a", b"file"), file_member("a/b", b"under it")],
        "a/b: collides with the file a: a bundle cannot hold both a file a and a member under a/;"
        " rename one of them",
        id="colliding-members",
    ),
    pytest.param(
        [file_member("edge.toml", b'[env]\nBIG = "' + b"x" * 70_000 + b'"\n'), good_members("badfn")[1]],
        "edge.toml: Expected [env] names and values of at most 65536 bytes together, got 70003 bytes"
        " - at `$.env`; keep large values in files of the bundle (or raise the origin's --max-env-bytes)",
        id="env-bytes",
    ),
    pytest.param(
        [
            file_member(
                "edge.toml", ("routes = [" + ", ".join(f'"/r{i}"' for i in range(1001)) + "]\n").encode()
            ),
            good_members("badfn")[1],
        ],
        "edge.toml: Expected at most 1000 routes, got 1001 - at `$.routes`; route a shared prefix instead"
        " of each path (or raise the origin's --max-routes)",
        id="route-count",
    ),
    pytest.param(
        [file_member("edge.toml", b"# " + b"x" * 300_000 + b"\n"), good_members("badfn")[1]],
        "edge.toml: Expected at most 262144 bytes, got 300003 bytes; keep large data in files of the"
        " bundle (or raise the origin's --max-manifest-bytes)",
        id="manifest-bytes",
    ),
    pytest.param(
        [*good_members("badfn"), file_member("zeros.bin", bytes(1_000_001))],
        "bundle unpacks to more than 1000000 bytes; that is the limit",
        id="zip-bomb",
    ),
]


@pytest.mark.parametrize(("members", "message"), BAD_BUNDLES)
def test_bad_bundle_is_rejected_with_400(origin: Origin, members: list, message: str) -> None:
    before = _blobs(origin)
    error = _reject(origin, tar_gz(*members))
    assert (error.status, error.message) == (400, message)
    assert _blobs(origin) == before
    assert "badfn" not in [f.name for f in origin.admin().functions()]


def test_not_a_tarball(origin: Origin) -> None:
    error = _reject(origin, b"hello, world")
    assert (error.status, error.message) == (
        400,
        "bundle is not a valid tar.gz archive: Not a gzipped file (b'he')",
    )


def test_manifest_name_must_match_the_deployed_name(origin: Origin) -> None:
    error = _reject(origin, tar_gz(*good_members("other")), name="badfn")
    assert (error.status, error.message) == (
        400,
        "edge.toml: Expected the name `badfn` the bundle is deployed as, got 'other' - at `$.name`",
    )


def test_oversize_bundle_is_refused_from_its_content_length(origin: Origin) -> None:
    error = _reject(origin, tar_gz(*good_members("badfn"), file_member("noise", os.urandom(300_000))))
    assert error.status == 400
    assert error.message.startswith("bundle is ")
    assert error.message.endswith(" bytes compressed; the limit is 200000")


def test_a_large_oversize_upload_still_gets_the_400_message(origin: Origin) -> None:
    error = _reject(origin, os.urandom(8_000_000))
    assert (error.status, error.message) == (400, "bundle is 8000000 bytes compressed; the limit is 200000")


def test_interrupted_upload_leaves_nothing(origin: Origin, tmp_path: Path) -> None:
    data = bundle.pack(write_function(tmp_path / "halfway"))
    before = _blobs(origin)
    with socket.create_connection(("127.0.0.1", origin.port)) as sock:
        head = (
            "POST /v1/functions/halfway/versions HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {origin.admin_token}\r\n"
            "Content-Type: application/gzip\r\nContent-Length: 100000\r\n\r\n"
        )
        sock.sendall(head.encode() + data[: len(data) // 2])
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while list((origin.data / "blobs" / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((origin.data / "blobs" / "tmp").iterdir()) == []
    assert _blobs(origin) == before
    assert "halfway" not in [f.name for f in origin.admin().functions()]
    # The origin is still fine, and the whole body goes through afterwards.
    assert origin.admin().deploy("halfway", data).version == bundle.digest(data)
