"""Shipping a worker's function and access log lines to the origin (`edge logs`).

The app calls `emit(...)` for every line (an append: it never blocks the request path) and
starts/stops one `LogShipper` per worker in origin mode. This is the seam: until the shipper is
built, lines are not collected and nothing is shipped.
"""

from __future__ import annotations

from edge.node.settings import NodeSettings

__all__ = ["LogShipper", "emit"]


class LogShipper:
    """Collects this worker's lines and posts them to the origin in batches."""

    def __init__(self, settings: NodeSettings, node_id: str = "") -> None:
        self.settings = settings
        self.node_id = node_id

    def add(
        self, stream: str, function: str, version: str, request_id: str, line: str, trace_id: str
    ) -> None:
        """Keep one line for the next batch."""

    async def start(self) -> None:
        """Called in lifespan startup (origin mode)."""

    async def stop(self) -> None:
        """Called in lifespan shutdown: ship what is left, briefly."""


# The worker's shipper, once started (None: lines are not shipped, e.g. local mode).
shipper: LogShipper | None = None


def emit(stream: str, function: str, version: str, request_id: str, line: str, trace_id: str = "") -> None:
    """Hand one line to the worker's shipper, if there is one (called per line: keep it cheap)."""
    if shipper is not None:
        shipper.add(stream, function, version, request_id, line, trace_id)
