"""The content-addressed blob store: bundles named by their sha256, written via temp file + rename."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

__all__ = ["BlobStore", "Upload", "is_digest"]

_DIGEST = re.compile(r"[0-9a-f]{64}")


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


class BlobStore:
    """`root/<2 hex>/<64 hex>` files, plus `root/tmp/` for uploads in progress."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

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
        """Delete every blob not in `keep`; returns the deleted digests."""
        deleted = sorted(self.digests() - keep)
        for digest in deleted:
            self.path(digest).unlink(missing_ok=True)
        return deleted
