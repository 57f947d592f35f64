"""Functions from a local directory (`edge node --functions DIR`): each subdirectory with an edge.toml."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from edge.node.functions import content_version, isolate_spec, scan_functions
from edge.node.source import NodeControl
from isolates.backends import IsolateSpec, LoadError

__all__ = ["LocalSource"]

log = logging.getLogger("edge.node")


class LocalSource:
    """Loads every function directory under `root` once, at start-up."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    async def start(self, app: NodeControl) -> None:
        """Start an isolate per function; a function that fails is reported and answers 503."""
        pool = app.pool
        routes: list[tuple[str, str]] = []
        launches = []
        seen: dict[str, Path] = {}
        for found in scan_functions(self.root):
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
            if app.settings.preload:
                launches.append(self._launch(app, spec.name, spec))
            else:
                pool.register_lazy(spec)
        app.set_routes(routes)
        await asyncio.gather(*launches)

    async def _launch(self, app: NodeControl, name: str, spec: IsolateSpec) -> None:
        started = time.perf_counter()
        try:
            await app.pool.deploy(name, [(spec, 100)])
        except LoadError as exc:
            log.error("function %s: failed to load: %s", name, exc)
            app.pool.fail(name, f"function {name} failed to load: {exc}", spec.timeout_ms / 1000)
        else:
            elapsed = (time.perf_counter() - started) * 1000
            log.info("function %s: serving version %s (loaded in %.1f ms)", name, spec.version[:12], elapsed)

    async def stop(self) -> None:
        """Nothing runs in the background for a local directory."""

    def status(self) -> dict[str, Any]:
        """The source, for /_edge/ready."""
        return {"source": str(self.root)}
