"""The seam between the node's app and where its functions come from (a directory, the origin).

A source sees the app only through `NodeControl`, so the sources (local.py, sync.py) do not
import the app and the app imports them only to pick one (`create_app`): no import circle.
"""

from __future__ import annotations

from typing import Any, Protocol

from edge.control.messages import FunctionStats
from edge.node.guard import Guard
from edge.node.settings import NodeSettings
from isolates.pool import IsolatePool

__all__ = ["FunctionSource", "NodeControl"]


class NodeControl(Protocol):
    """What a function source may use of the node's app (NodeApp implements it)."""

    settings: NodeSettings
    # Seconds a function's responses stay fresh when they say nothing (manifest `[cache] ttl`).
    cache_ttls: dict[str, int]
    # Version -> its [auth]/[cors]; set before the version serves (edge/node/guard.py).
    guards: dict[str, Guard]
    # True once start-up finished (every initial function was tried).
    ready: bool

    @property
    def pool(self) -> IsolatePool:
        """The isolates of this worker; raises RuntimeError before lifespan startup."""
        ...

    def set_routes(self, routes: Any) -> None:
        """Called with (path prefix, function name) pairs: they replace the routing table."""
        ...

    def purge(self, function: str, kind: str, value: str) -> int:
        """Called per purge order from the origin; returns how many cached responses went."""
        ...

    def function_stats(self) -> list[FunctionStats]:
        """Called per report to the origin: each function version's traffic on this node."""
        ...


class FunctionSource(Protocol):
    """Where the node's functions come from (a local directory, or the origin)."""

    async def start(self, app: NodeControl) -> None:
        """Called in lifespan startup: deploy the initial functions into `app.pool`, set routes."""
        ...

    async def stop(self) -> None:
        """Called in lifespan shutdown, before the isolates are stopped."""
        ...

    def status(self) -> dict[str, Any]:
        """Extra fields for `/_edge/ready` (e.g. the applied revision)."""
        ...
