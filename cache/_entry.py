"""A stored response with everything a hit needs computed once, at store time."""

from __future__ import annotations

from dataclasses import dataclass

from cache._directives import entity_tags, http_date
from cache._request import RequestFlags
from cache.messages import CacheResult, CacheStatus, Headers

__all__ = ["METHOD_CLASS", "X_CACHE", "Entry", "EntryKey", "PrimaryKey", "primary_key"]

PrimaryKey = tuple[str, str, str, str, bytes]
"""(function, version, method class, path, raw query): one resource of one function version."""

EntryKey = tuple[PrimaryKey, tuple[bytes, ...]]
"""A primary key plus the request's values for the response's Vary header names."""

X_CACHE: dict[CacheStatus, tuple[bytes, bytes]] = {
    "HIT": (b"x-cache", b"HIT"),
    "MISS": (b"x-cache", b"MISS"),
    "STALE": (b"x-cache", b"STALE"),
    "BYPASS": (b"x-cache", b"BYPASS"),
}


@dataclass(slots=True, eq=False, kw_only=True)
class Entry:
    """One cached response; ages are `now - born`, all limits are ages in seconds."""

    key: EntryKey
    vary: tuple[bytes, ...]
    status: int
    headers: Headers
    body: bytes
    not_modified_headers: Headers
    born: float
    ttl: float
    swr_until: float
    sie_until: float
    public: bool
    etag: bytes | None
    last_modified: float | None
    tags: tuple[str, ...]
    size: int

    @property
    def function(self) -> str:
        """The function whose response this is."""
        return self.key[0][0]

    @property
    def path(self) -> str:
        """The request path the response was stored for."""
        return self.key[0][3]

    def respond(self, age: float, head: bool, flags: RequestFlags | None, status: CacheStatus) -> CacheResult:
        """The response to one request served from this entry: 304 when its conditions match."""
        age_header = (b"age", b"%d" % age if age > 0 else b"0")
        if flags is not None and flags.conditional and self.not_modified(flags):
            return CacheResult(304, [*self.not_modified_headers, age_header, X_CACHE[status]], b"", status)
        body = b"" if head else self.body
        return CacheResult(self.status, [*self.headers, age_header, X_CACHE[status]], body, status)

    def not_modified(self, flags: RequestFlags) -> bool:
        """True when the request's validators match (RFC 9110 §13.2.2 order, weak ETag comparison)."""
        if not 200 <= self.status < 300:
            return False
        if flags.if_none_match is not None:
            if flags.if_none_match.strip() == b"*":
                return True
            return self.etag is not None and self.etag in entity_tags(flags.if_none_match)
        if flags.if_modified_since is None or self.last_modified is None:
            return False
        since = http_date(flags.if_modified_since)
        return since is not None and self.last_modified <= since


METHOD_CLASS = "GET"
"""The only method class stored: HEAD is answered from GET entries, other methods are never stored."""


def primary_key(function: str, version: str, path: str, query: bytes) -> PrimaryKey:
    """The key of one resource of one function version."""
    return (function, version, METHOD_CLASS, path, query)
