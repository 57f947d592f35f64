"""Functions from local directories (`edge node --functions DIR`, `edge dev DIR...`).

`edge node` serves every subdirectory of its root that has an edge.toml, loaded once. In watch mode
(`edge dev`) each root is a function directory (it has an edge.toml) or a directory of them, and
the source polls their files every `interval` seconds and reloads only the function whose files
changed: its new version is started beside the old one and swapped in by the pool
(edge/node/functions.py names the version); a function that no longer loads answers 503 with
its error until it is fixed. Watch mode also keeps each function's `requirements.txt` installed
in its `.deps/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from edge.bundle import DEPS_DIR, BundleError, compile_bytecode, install_requirements, remove_tree
from edge.node.functions import FunctionDir, content_version, isolate_spec, scale_policy, scan_functions
from edge.node.guard import build_guard
from edge.node.source import NodeControl
from isolates.backends import IsolateSpec, LoadError
from isolates.instances import ScalePolicy
from isolates.manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest

__all__ = ["LocalSource", "function_dirs", "read_function", "sync_requirements"]

log = logging.getLogger("edge.node")

# Written into `.deps/` by watch mode: the sha256 of the requirements.txt it was installed from.
_REQUIREMENTS_STAMP = ".edge-requirements"
_UNWATCHED = ("__pycache__", ".git")


def function_dirs(roots: Sequence[Path]) -> list[Path]:
    """The function directories the roots name: a root with an edge.toml, else its subdirectories with one."""
    found: list[Path] = []
    for root in roots:
        if (root / MANIFEST_NAME).is_file():
            found.append(root)
        else:
            found.extend(sorted(p for p in root.iterdir() if (p / MANIFEST_NAME).is_file()))
    return found


def read_function(directory: Path) -> FunctionDir:
    """The function in `directory`: its manifest, or why it cannot be read."""
    try:
        manifest = load_manifest(directory)
    except ManifestError as exc:
        return FunctionDir(directory, directory.name, None, str(exc))
    return FunctionDir(directory, manifest.name, manifest, "")


def _signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of every file that makes the function, `.deps/` aside (pip writes there)."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if d not in _UNWATCHED and not d.startswith(DEPS_DIR)]
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            with contextlib.suppress(FileNotFoundError):  # removed while we looked: the next poll sees it
                info = os.stat(path)
                entries.append((path, info.st_mtime_ns, info.st_size))
    return tuple(sorted(entries))


def _clear_bytecode(directory: Path) -> None:
    """Remove the function's own `__pycache__`s: a .pyc written within the same second as an
    edit of the same size would pass Python's mtime check and run the old code."""
    for dirpath, dirnames, _ in os.walk(directory):
        if "__pycache__" in dirnames:
            shutil.rmtree(os.path.join(dirpath, "__pycache__"), ignore_errors=True)
        dirnames[:] = [d for d in dirnames if d != DEPS_DIR]


def sync_requirements(directory: Path) -> bool:
    """Install `requirements.txt` into `.deps/` unless it is installed already; True when pip ran.

    A `.deps/` installed from another requirements.txt is replaced whole (built beside it first);
    one that watch mode did not install is left alone. Raises BundleError with pip's output.
    """
    requirements = directory / "requirements.txt"
    deps = directory / DEPS_DIR
    stamp = deps / _REQUIREMENTS_STAMP
    if not requirements.is_file():
        if stamp.is_file():
            remove_tree(deps)
        return False
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()
    with contextlib.suppress(OSError):
        if stamp.read_text().strip() == wanted:
            return False
    staging = Path(tempfile.mkdtemp(prefix=f"{DEPS_DIR}.", suffix=".tmp", dir=directory))
    try:
        install_requirements(requirements, staging)
        (staging / _REQUIREMENTS_STAMP).write_text(wanted + "\n")
        if deps.exists():
            remove_tree(deps)
        staging.rename(deps)
    finally:
        remove_tree(staging)
    return True


def _guard(app: NodeControl, directory: Path, manifest: Manifest, version: str) -> bool:
    """Set the version's [auth]/[cors] guard before it serves; False (the function fails) when unusable."""
    try:
        guard = build_guard(manifest, directory, {}, str(directory / MANIFEST_NAME))
    except ManifestError as exc:
        log.error("function %s: %s", manifest.name, exc)
        app.pool.fail(manifest.name, str(exc))
        return False
    if guard is not None:
        app.guards[version] = guard
    return True


class _Watched(NamedTuple):
    """What watch mode last loaded from one function directory."""

    name: str
    signature: tuple[tuple[str, int, int], ...]
    routes: tuple[str, ...]


class LocalSource:
    """Loads every function directory under the roots at start-up; in watch mode, again on change."""

    def __init__(self, roots: str | Sequence[str], *, watch: bool = False, interval: float = 0.2) -> None:
        self.roots = [Path(roots)] if isinstance(roots, str) else [Path(root) for root in roots]
        self.watch = watch
        self.interval = interval
        self._app: NodeControl | None = None
        self._watched: dict[Path, _Watched] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self, app: NodeControl) -> None:
        """Start an isolate per function; a function that fails is reported and answers 503."""
        self._app = app
        if not self.watch:
            await self._start_once(app)
            return
        for directory in function_dirs(self.roots):
            await self._reload(directory)
        self._set_routes()
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _start_once(self, app: NodeControl) -> None:
        pool = app.pool
        routes: list[tuple[str, str]] = []
        launches = []
        seen: dict[str, Path] = {}
        # `edge node --functions DIR`: DIR's subdirectories, as its banner lists them.
        for found in [found for root in self.roots for found in scan_functions(root)]:
            if found.name in seen:
                error = (
                    f"{found.directory}: function name {found.name!r} is already used by {seen[found.name]}"
                )
                log.error("%s", error)
                continue
            seen[found.name] = found.directory
            routes.append((f"/{found.name}", found.name))
            if found.manifest is None:
                log.error("function %s: %s", found.name, found.error)
                pool.fail(found.name, found.error)
                continue
            routes.extend((route, found.name) for route in found.manifest.routes)
            app.cache_ttls[found.name] = found.manifest.cache.ttl
            spec = isolate_spec(found.directory, found.manifest, content_version(found.directory))
            if not _guard(app, found.directory, found.manifest, spec.version):
                continue
            policy = scale_policy(found.manifest, app.settings.scale)
            if app.settings.preload:
                launches.append(self._launch(app, spec.name, spec, policy))
            else:
                pool.register_lazy(spec, policy)
        app.set_routes(routes)
        await asyncio.gather(*launches)

    async def _launch(self, app: NodeControl, name: str, spec: IsolateSpec, policy: ScalePolicy) -> bool:
        started = time.perf_counter()
        try:
            await app.pool.deploy(name, [(spec, 100)], [policy])
        except LoadError as exc:
            log.error("function %s: failed to load: %s", name, exc)
            await app.pool.remove(name)  # watch mode: the old version stops answering too
            app.pool.fail(name, f"function {name} failed to load: {exc}", spec.timeout_ms / 1000)
            return False
        elapsed = (time.perf_counter() - started) * 1000
        log.info("function %s: serving version %s (loaded in %.1f ms)", name, spec.version[:12], elapsed)
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._rescan()
            except Exception:  # a bad moment on disk must not end the watching
                log.exception("watching %s", ", ".join(map(str, self.roots)))

    async def _rescan(self) -> None:
        present = function_dirs([root for root in self.roots if root.is_dir()])
        changed = False
        for directory in present:
            watched = self._watched.get(directory)
            if watched is None or watched.signature != _signature(directory):
                await self._reload(directory)
                changed = True
        for directory in [d for d in self._watched if d not in present]:
            name = self._watched.pop(directory).name
            log.info("function %s: %s is gone; removed", name, directory)
            await self._control().pool.remove(name)
            changed = True
        if changed:
            self._set_routes()

    def _control(self) -> NodeControl:
        if self._app is None:
            raise RuntimeError("the local source is used before start()")
        return self._app

    async def _reload(self, directory: Path) -> None:
        """(Re)load one function directory in watch mode; its old version serves until the new one is up."""
        app = self._control()
        signature = _signature(directory)
        found = read_function(directory)
        previous = self._watched.get(directory)
        owner = next((d for d, w in self._watched.items() if w.name == found.name and d != directory), None)
        if owner is not None:
            log.error("%s: function name %r is already used by %s", directory, found.name, owner)
            self._watched[directory] = _Watched("", signature, ())
            return
        if previous is not None and previous.name and previous.name != found.name:
            await app.pool.remove(previous.name)
        if previous is not None:
            log.info("function %s: %s changed, reloading", found.name, directory)
        self._watched[directory] = _Watched(found.name, signature, ())
        if found.manifest is None:
            log.error("function %s: %s", found.name, found.error)
            await app.pool.remove(found.name)
            app.pool.fail(found.name, found.error)
            return
        self._watched[directory] = _Watched(found.name, signature, tuple(found.manifest.routes))
        try:
            if await asyncio.to_thread(sync_requirements, directory):
                log.info("function %s: installed %s into %s", found.name, "requirements.txt", DEPS_DIR)
        except BundleError as exc:
            log.error("function %s: %s", found.name, exc)
            await app.pool.remove(found.name)
            app.pool.fail(found.name, f"function {found.name}: {exc}", found.manifest.timeout_ms / 1000)
            return
        _clear_bytecode(directory)
        problem = compile_bytecode(directory)
        if problem:
            log.info("function %s: %s", found.name, problem)
        app.cache_ttls[found.name] = found.manifest.cache.ttl
        spec = isolate_spec(directory, found.manifest, content_version(directory))
        if not _guard(app, directory, found.manifest, spec.version):
            await app.pool.remove(found.name)
            return
        await self._launch(app, found.name, spec, scale_policy(found.manifest, app.settings.scale))
        serving = {version for function in app.pool.functions.values() for version in function.versions}
        for version in [version for version in app.guards if version not in serving]:
            del app.guards[version]  # an edited version's guard goes once the pool switched away

    def _set_routes(self) -> None:
        routes: list[tuple[str, str]] = []
        for watched in sorted(self._watched.values()):
            if watched.name:
                routes.append((f"/{watched.name}", watched.name))
                routes.extend((route, watched.name) for route in watched.routes)
        self._control().set_routes(routes)

    async def stop(self) -> None:
        """Stop watching (nothing else runs in the background for local directories)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def status(self) -> dict[str, Any]:
        """The source, for /_edge/ready."""
        source = str(self.roots[0]) if len(self.roots) == 1 else [str(root) for root in self.roots]
        return {"source": source, **({"watching": True} if self.watch else {})}
