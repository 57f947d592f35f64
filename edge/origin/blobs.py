"""The content-addressed blob store: bundles named by their sha256, written via temp file + rename.

`Blobs` is the seam; `BlobStore` keeps them in a local directory, `edge.origin.s3blobs.S3BlobStore`
in an S3-compatible bucket (`--blobs s3://bucket/prefix`). Both receive an upload into a local
temp file first (it is validated there), and both hand out a local file to serve.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = [
    "BlobStore",
    "Blobs",
    "BlobsUnavailable",
    "CorruptBlob",
    "Upload",
    "check_blobs_url",
    "check_s3_credentials",
    "is_digest",
]

_DIGEST = re.compile(r"[0-9a-f]{64}")


def check_blobs_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket[/prefix]`; raises ValueError saying what is expected."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            f"--blobs: Expected s3://bucket[/prefix] (or nothing, for the data directory), got {url!r}"
        )
    return parts.netloc, parts.path.strip("/")


# Where an S3 bucket's credentials come from: the origin's environment, never an argument.
S3_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def check_s3_credentials(url: str, environ: Mapping[str, str]) -> None:
    """Raise ValueError unless `environ` holds the bucket's credentials (without them the S3
    client would go looking for a cloud's instance metadata service)."""
    missing = [name for name in S3_CREDENTIALS if not environ.get(name)]
    if missing:
        raise ValueError(
            f"--blobs {url}: Expected the bucket's credentials in the environment, got no"
            f" {' and no '.join(missing)}; set {' and '.join(S3_CREDENTIALS)} for the origin"
        )


def is_digest(value: str) -> bool:
    """Whether `value` is a lowercase sha256 hex digest."""
    return _DIGEST.fullmatch(value) is not None


class Upload:
    """A blob being received into a temp file; nothing is visible until `BlobStore.commit`."""

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(prefix="upload-", dir=directory)
        self.path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append a chunk of the body."""
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Flush to disk and return the digest."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        """Throw the partial upload away."""
        self._file.close()
        self.path.unlink(missing_ok=True)


class CorruptBlob(Exception):
    """A stored blob whose bytes do not have the sha256 it is stored under."""


class BlobsUnavailable(Exception):
    """The blob store could not be reached or refused the request; the message says which and why."""


class Blobs(Protocol):
    """Where bundles live, by their sha256 digest."""

    def upload(self) -> Upload:
        """Called per deploy request: a temp file to receive the body into."""

    def commit(self, upload: Upload, digest: str) -> None:
        """Called once the upload is finished and validated: store it under `digest` (blocking);
        raises BlobsUnavailable when the store cannot take it."""

    def fetch(self, digest: str) -> Path | None:
        """A local file holding the blob (None when it is not stored); raises CorruptBlob when the
        stored bytes are not what the digest says, BlobsUnavailable when the store cannot be read
        (blocking)."""

    def exists(self, digest: str) -> bool:
        """Whether a blob is stored under `digest`."""

    def digests(self) -> set[str]:
        """Every stored digest."""

    def clear_uploads(self) -> None:
        """Called at start-up: delete partial uploads a previous run left behind."""

    def collect(self, keep: set[str]) -> list[str]:
        """Called after every release change: delete blobs not in `keep` that are older than the
        store's grace period (another origin's upload may not be recorded yet); returns them."""


class BlobStore:
    """`root/<2 hex>/<64 hex>` files, plus `root/tmp/` for uploads in progress.

    With `grace_s` (origins sharing a database and this directory), a blob no version refers to
    is kept until it is that many seconds old: another origin may have stored it and not yet
    recorded the version."""

    def __init__(self, root: Path, grace_s: float = 0.0) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.grace_s = grace_s

    def path(self, digest: str) -> Path:
        """Where the blob with this digest lives (whether or not it exists)."""
        if not is_digest(digest):
            raise ValueError(f"blob digest: Expected 64 lowercase hex digits, got {digest!r}")
        return self.root / digest[:2] / digest

    def upload(self) -> Upload:
        """Start receiving a blob."""
        return Upload(self.tmp)

    def commit(self, upload: Upload, digest: str) -> None:
        """Move a finished upload into place under its digest (atomic rename)."""
        target = self.path(digest)
        target.parent.mkdir(exist_ok=True)
        os.chmod(upload.path, 0o644)
        os.replace(upload.path, target)

    def fetch(self, digest: str) -> Path | None:
        """The blob's file, or None when it is not stored (the node checks the digest itself)."""
        path = self.path(digest)
        return path if path.exists() else None

    def exists(self, digest: str) -> bool:
        """Whether a blob is stored under `digest`."""
        return self.path(digest).exists()

    def read(self, digest: str) -> bytes | None:
        """The blob's bytes, or None when it is not stored."""
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def digests(self) -> set[str]:
        """Every stored digest."""
        return {p.name for p in self.root.glob("??/*") if is_digest(p.name)}

    def clear_uploads(self) -> None:
        """Delete partial uploads a previous run left behind (at start-up, before any upload)."""
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def collect(self, keep: set[str]) -> list[str]:
        """Delete every blob not in `keep` (and past the grace period); returns the deleted digests."""
        before = time.time() - self.grace_s
        deleted = []
        for digest in sorted(self.digests() - keep):
            path = self.path(digest)
            try:
                if self.grace_s and path.stat().st_mtime > before:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            deleted.append(digest)
        return deleted
