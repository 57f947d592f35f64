"""Counters the cache keeps for the node's metrics endpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["CacheStats"]


@dataclass(slots=True)
class CacheStats:
    """Running totals since start; `bytes` and `entries` are the store's current size."""

    hits: int = 0
    misses: int = 0
    stale: int = 0
    bypass: int = 0
    collapsed: int = 0
    """Misses answered by another request's invocation (also counted in `misses`)."""
    refreshes: int = 0
    """Background revalidations started for stale-while-revalidate."""
    refresh_failures: int = 0
    revalidated: int = 0
    """Stale entries a 304 from the function made fresh again (also counted in `misses`)."""
    stores: int = 0
    evictions: int = 0
    purged: int = 0
    bytes: int = 0
    entries: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name, for rendering as metrics."""
        return asdict(self)
