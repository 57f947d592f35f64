"""One contract for the origin's blob stores: the data directory and a real S3-compatible server."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from backends import S3_ENV, S3Server, s3

from edge.origin.blobs import Blobs, BlobStore, BlobsUnavailable, CorruptBlob, check_blobs_url
from loadtest._servers import free_port

__all__ = ["s3"]


def _put(blobs: Blobs, data: bytes) -> str:
    upload = blobs.upload()
    upload.write(data)
    digest = upload.finish()
    blobs.commit(upload, digest)
    return digest


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)


def _open(kind: str, root: Path, request: pytest.FixtureRequest, grace_s: float = 0.0) -> Blobs:
    if kind == "local":
        return BlobStore(root, grace_s=grace_s)
    from edge.origin.s3blobs import S3BlobStore

    server: S3Server = request.getfixturevalue("s3")
    bucket = getattr(request.node, "_bucket", None) or server.bucket()
    request.node._bucket = bucket
    return S3BlobStore(f"s3://{bucket}/bundles", root, server.endpoint, grace_s=grace_s)


KINDS = ["local", pytest.param("s3", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("kind", KINDS)
def test_put_fetch_exists_and_list(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    blobs = _open(kind, tmp_path / "one", request)
    digest = _put(blobs, b"bundle bytes")
    assert digest == hashlib.sha256(b"bundle bytes").hexdigest()
    assert blobs.exists(digest) and not blobs.exists("0" * 64)
    assert blobs.digests() == {digest}
    assert blobs.fetch("0" * 64) is None
    # Another origin with an empty cache of its own reads the same blob (S3), or the same directory.
    other = _open(kind, tmp_path / ("two" if kind == "s3" else "one"), request)
    path = other.fetch(digest)
    assert path is not None and path.read_bytes() == b"bundle bytes"


@pytest.mark.parametrize("kind", KINDS)
def test_collect_keeps_what_is_referenced_and_what_is_fresh(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fresh_kept = _open(kind, tmp_path / "blobs", request, grace_s=3600)
    old, kept = _put(fresh_kept, b"old"), _put(fresh_kept, b"kept")
    assert fresh_kept.collect({kept}) == []  # both younger than the grace period
    assert fresh_kept.digests() == {old, kept}
    no_grace = _open(kind, tmp_path / "blobs", request)
    assert no_grace.collect({kept}) == [old]
    assert no_grace.digests() == {kept}
    assert no_grace.fetch(old) is None


@pytest.mark.parametrize("kind", KINDS)
def test_clear_uploads_drops_partial_ones(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    blobs = _open(kind, tmp_path / "blobs", request)
    upload = blobs.upload()
    upload.write(b"half")
    upload.finish()  # what a previous run, killed mid-upload, left on disk
    blobs.clear_uploads()
    assert not upload.path.exists()
    assert blobs.digests() == set()


@pytest.mark.postgres
def test_an_s3_object_that_does_not_match_its_digest_is_refused(
    s3: S3Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import obstore
    from obstore.store import S3Store

    bucket = s3.bucket()
    digest = hashlib.sha256(b"the real bundle").hexdigest()
    raw = S3Store(
        bucket,
        endpoint=s3.endpoint,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
        region="us-east-1",
    )
    obstore.put(raw, f"bundles/{digest}", b"something else")
    from edge.origin.s3blobs import S3BlobStore

    blobs = S3BlobStore(f"s3://{bucket}/bundles", tmp_path / "cache", s3.endpoint)
    with pytest.raises(CorruptBlob) as refused:
        blobs.fetch(digest)
    actual = hashlib.sha256(b"something else").hexdigest()
    assert str(refused.value) == (
        f"s3://{bucket}/bundles: the object bundles/{digest} has sha256 {actual}, not the digest it is"
        " stored under; delete it and deploy that version again"
    )
    assert not (tmp_path / "cache" / digest[:2] / digest).exists()  # nothing unverified is served


def test_local_grace_is_measured_from_the_file_time(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path, grace_s=60)
    digest = _put(blobs, b"x")
    assert blobs.collect(set()) == []
    past = time.time() - 61
    os.utime(tmp_path / digest[:2] / digest, (past, past))
    assert blobs.collect(set()) == [digest]


@pytest.mark.parametrize(
    ("url", "expected"),
    [("s3://bucket", ("bucket", "")), ("s3://bucket/a/b/", ("bucket", "a/b"))],
)
def test_blob_urls(url: str, expected: tuple[str, str]) -> None:
    assert check_blobs_url(url) == expected


def test_a_blob_url_that_is_not_s3_is_refused() -> None:
    with pytest.raises(ValueError) as bad:
        check_blobs_url("gs://bucket")
    assert str(bad.value) == (
        "--blobs: Expected s3://bucket[/prefix] (or nothing, for the data directory), got 'gs://bucket'"
    )


def test_an_s3_store_that_cannot_be_reached_says_so(tmp_path: Path) -> None:
    from edge.origin.s3blobs import S3BlobStore

    endpoint = f"http://127.0.0.1:{free_port()}"
    blobs = S3BlobStore("s3://bundles/edge", tmp_path, endpoint)
    upload = blobs.upload()
    upload.write(b"bundle")
    digest = upload.finish()
    started = time.monotonic()
    with pytest.raises(BlobsUnavailable) as refused:
        blobs.commit(upload, digest)
    assert time.monotonic() - started < 30  # retried a little, not for minutes
    assert str(refused.value).startswith(f"s3://bundles/edge at {endpoint}: cannot store {digest}: ")
    with pytest.raises(BlobsUnavailable) as unread:
        blobs.fetch("0" * 64)
    assert str(unread.value).startswith(f"s3://bundles/edge at {endpoint}: cannot read {'0' * 64}: ")
