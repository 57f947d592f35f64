"""The origin's settings, handed from the CLI to the granian worker through one env variable."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from edge.bundle import Limits, ManifestBounds

__all__ = ["SETTINGS_ENV", "OriginSettings", "settings_from_env"]

SETTINGS_ENV = "EDGE_ORIGIN_SETTINGS"


class OriginSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where the origin keeps its data and how it treats versions, nodes and purges."""

    data_dir: str = ".edge/origin"
    # "" for SQLite in the data directory, or postgresql://[user@]host[:port]/dbname (shared).
    database: str = ""
    # "" for the data directory's blobs/, or s3://bucket[/prefix] (shared), at `blobs_endpoint`
    # for an S3-compatible server other than AWS.
    blobs: str = ""
    blobs_endpoint: str = ""
    keep_versions: int = 10
    heartbeat_interval_s: float = 10.0
    live_intervals: float = 3.0
    purge_keep: int = 1000
    purge_retention_s: float = 7 * 24 * 3600.0
    max_poll_s: float = 60.0
    default_poll_s: float = 25.0
    limits: Limits = Limits()
    bounds: ManifestBounds = ManifestBounds()
    # Seconds between fetches of every `[auth] jwks_url` in use (0: only when a version is deployed).
    jwks_refresh_s: float = 3600.0

    @property
    def data(self) -> Path:
        """The data directory as a path."""
        return Path(self.data_dir)


def settings_from_env(environ: dict[str, str] | None = None) -> OriginSettings:
    """Read and remove the settings the CLI put in the environment; defaults when absent."""
    env = os.environ if environ is None else environ
    raw = env.pop(SETTINGS_ENV, None)
    if raw is None:
        return OriginSettings()
    try:
        return msgspec.json.decode(raw, type=OriginSettings)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"${SETTINGS_ENV}: {exc}") from None
