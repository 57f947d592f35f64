"""Function directories on disk: finding them, naming their versions, describing how to run them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

from edge.node.settings import ScaleSettings
from isolates.backends import IsolateSpec
from isolates.instances import ScalePolicy
from isolates.manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest

__all__ = ["FunctionDir", "content_version", "isolate_spec", "scale_policy", "scan_functions"]

_SKIP_DIRS = {"__pycache__", ".git"}


class FunctionDir(NamedTuple):
    """A directory with an `edge.toml`: its manifest, or why the manifest cannot be used."""

    directory: Path
    name: str
    manifest: Manifest | None
    error: str


def scan_functions(root: Path) -> list[FunctionDir]:
    """Every direct subdirectory of `root` that has an `edge.toml`, sorted by name."""
    found = []
    for directory in sorted(p for p in root.iterdir() if (p / MANIFEST_NAME).is_file()):
        try:
            manifest = load_manifest(directory)
        except ManifestError as exc:
            found.append(FunctionDir(directory, directory.name, None, str(exc)))
        else:
            found.append(FunctionDir(directory, manifest.name, manifest, ""))
    return found


def content_version(directory: Path) -> str:
    """sha256 over the directory's file names and contents: same files, same version."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for filename in sorted(f for f in filenames if not f.endswith(".pyc")):
            path = Path(dirpath, filename)
            digest.update(str(path.relative_to(directory)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def isolate_spec(directory: Path, manifest: Manifest, version: str) -> IsolateSpec:
    """How to run one version of a function that lives in `directory`."""
    return IsolateSpec(
        name=manifest.name,
        version=version,
        directory=str(directory.resolve()),
        module=manifest.module,
        attribute=manifest.attribute,
        timeout_ms=manifest.timeout_ms,
        env=tuple(sorted(manifest.env.items())),
        isolation=manifest.isolation,
        permissions=manifest.permissions,
        memory_mb=manifest.memory_mb,
        kind=manifest.kind,
        lambda_payload=manifest.lambda_payload,
    )


def scale_policy(manifest: Manifest, defaults: ScaleSettings) -> ScalePolicy:
    """How the function's instances scale: its manifest's `[scale]`, the node's `[scale]` for the rest."""
    scale = manifest.scale

    def pick[T](value: T | None, default: T) -> T:
        return default if value is None else value

    # A key the manifest sets wins over the node's default of the other one (min <= max).
    high = max(pick(scale.max_instances, defaults.max_instances), scale.min_instances or 0)
    low = min(pick(scale.min_instances, defaults.min_instances), high)
    queue_timeout_ms = pick(scale.queue_timeout_ms, defaults.queue_timeout_ms)
    return ScalePolicy(
        min_instances=low,
        max_instances=high,
        concurrency=scale.concurrency or 0,
        threadsafe=pick(scale.threadsafe, defaults.threadsafe),
        async_concurrency=defaults.concurrency,
        max_queue=pick(scale.max_queue, defaults.max_queue),
        queue_timeout=queue_timeout_ms / 1000,
        idle_timeout=pick(scale.idle_timeout_s, defaults.idle_timeout_s),
    )
