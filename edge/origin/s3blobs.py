"""Bundles in an S3-compatible bucket (`--blobs s3://bucket/prefix`), shared by several origins.

Objects are `<prefix>/<64 hex>`. A blob fetched to be served is checked against its digest and
kept in the local cache directory (the data directory's `blobs/`), so each origin downloads a
version once. Credentials come from the environment the S3 way (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION), never from an argument. The client is `obstore` (Rust's
object_store: no Python dependencies, typed).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from edge.origin.blobs import (
    BlobStore,
    BlobsUnavailable,
    CorruptBlob,
    Upload,
    check_blobs_url,
    check_s3_credentials,
    is_digest,
)

__all__ = ["DEFAULT_GRACE_S", "S3BlobStore"]

# Seconds an unreferenced blob is kept: an origin stores a blob before it records the version, and
# another origin collecting at that moment must not take it away.
DEFAULT_GRACE_S = 600.0


class S3BlobStore:
    """Blobs as objects in a bucket, with a verified local copy of each one served."""

    def __init__(self, url: str, cache: Path, endpoint: str = "", grace_s: float = DEFAULT_GRACE_S) -> None:
        bucket, prefix = check_blobs_url(url)
        check_s3_credentials(url, os.environ)
        self.url = url
        self.grace_s = grace_s
        self._prefix = f"{prefix}/" if prefix else ""
        self._endpoint = endpoint
        self._local = BlobStore(cache)  # uploads in progress and the verified copies
        config: dict[str, str | bool] = {}
        if endpoint:
            config["endpoint"] = endpoint
            config["virtual_hosted_style_request"] = False
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self._store = S3Store(
            bucket,
            region=region,
            client_options={"allow_http": endpoint.startswith("http://"), "timeout": "60s"},
            # A store that is down fails a request within seconds, not object_store's 3 minutes.
            retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=10)},
            **config,  # type: ignore[arg-type]
        )

    def _key(self, digest: str) -> str:
        if not is_digest(digest):
            raise ValueError(f"blob digest: Expected 64 lowercase hex digits, got {digest!r}")
        return self._prefix + digest

    def upload(self) -> Upload:
        """A local temp file to receive the body into."""
        return self._local.upload()

    def commit(self, upload: Upload, digest: str) -> None:
        """Put the finished upload into the bucket, then keep it as the local copy."""
        try:
            obstore.put(self._store, self._key(digest), upload.path)
        except (BaseError, OSError) as exc:
            raise self._unavailable(f"cannot store {digest}", exc) from None
        self._local.commit(upload, digest)

    def fetch(self, digest: str) -> Path | None:
        """The verified local copy, downloaded first when this origin has none."""
        cached = self._local.fetch(digest)
        if cached is not None:
            return cached
        try:
            data = obstore.get(self._store, self._key(digest)).bytes()
        except FileNotFoundError:
            return None
        except (BaseError, OSError) as exc:
            raise self._unavailable(f"cannot read {digest}", exc) from None
        upload = self._local.upload()
        try:
            upload.write(bytes(data))
            actual = upload.finish()
            if actual != digest:
                raise CorruptBlob(
                    f"{self.url}: the object {self._key(digest)} has sha256 {actual}, not the digest it"
                    " is stored under; delete it and deploy that version again"
                )
        except BaseException:
            upload.discard()
            raise
        self._local.commit(upload, digest)
        return self._local.path(digest)

    def _unavailable(self, what: str, exc: BaseException) -> BlobsUnavailable:
        reason = str(exc).split("\n", 1)[0] or type(exc).__name__
        endpoint = f" at {self._endpoint}" if self._endpoint else ""
        return BlobsUnavailable(f"{self.url}{endpoint}: {what}: {reason}")

    def exists(self, digest: str) -> bool:
        """Whether the bucket holds the blob."""
        try:
            obstore.head(self._store, self._key(digest))
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> set[str]:
        """Every digest under the prefix."""
        found = set()
        for batch in obstore.list(self._store, self._prefix or None):
            for meta in batch:
                name = meta["path"].rsplit("/", 1)[-1]
                if is_digest(name):
                    found.add(name)
        return found

    def clear_uploads(self) -> None:
        """Delete partial uploads a previous run left in the local cache."""
        self._local.clear_uploads()

    def collect(self, keep: set[str]) -> list[str]:
        """Delete objects not in `keep` older than the grace period, and local copies not in `keep`."""
        before = time.time() - self.grace_s
        deleted = []
        for batch in obstore.list(self._store, self._prefix or None):
            for meta in batch:
                name = meta["path"].rsplit("/", 1)[-1]
                if is_digest(name) and name not in keep and meta["last_modified"].timestamp() <= before:
                    deleted.append(name)
        if deleted:
            obstore.delete(self._store, [self._key(digest) for digest in deleted])
        for digest in self._local.digests() - keep:
            self._local.path(digest).unlink(missing_ok=True)
        return sorted(deleted)
