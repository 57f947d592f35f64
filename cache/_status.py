"""The cache's member of the Cache-Status response field (RFC 9211 §2), one per response."""

from __future__ import annotations

__all__ = ["CACHE_STATUS", "CacheStatusField"]

CACHE_STATUS = b"cache-status"


class CacheStatusField:
    """Builds this cache's Cache-Status members; `name` is an sf-token (checked in CacheSettings)."""

    __slots__ = ("hit_prefix", "name")

    def __init__(self, name: str) -> None:
        self.name = name.encode("ascii")
        self.hit_prefix = self.name + b"; hit; ttl="

    def hit(self, ttl: float) -> tuple[bytes, bytes]:
        """A fresh hit with `ttl` seconds of freshness left (RFC 9211 §2.1, §2.7)."""
        return (CACHE_STATUS, b"%s%d" % (self.hit_prefix, ttl))

    def stale(self, ttl: float, detail: bytes) -> tuple[bytes, bytes]:
        """A stale hit (negative `ttl`), `detail` saying what allowed it (RFC 9211 §2.8)."""
        return (CACHE_STATUS, b"%s%d; detail=%s" % (self.hit_prefix, ttl, detail))

    def forward(
        self,
        fwd: bytes | None,
        *,
        status: int = 0,
        stored: bool = False,
        collapsed: bool = False,
        ttl: float | None = None,
        detail: bytes | None = None,
    ) -> tuple[bytes, bytes]:
        """A response that was not a hit: why the request went forward (RFC 9211 §2.2-2.6)."""
        value = self.name
        if fwd is not None:
            value += b"; fwd=" + fwd
        if status:
            value += b"; fwd-status=%d" % status
        if stored:
            value += b"; stored"
        if collapsed:
            value += b"; collapsed"
        if ttl is not None:
            value += b"; ttl=%d" % ttl
        if detail is not None:
            value += b"; detail=" + detail
        return (CACHE_STATUS, value)
