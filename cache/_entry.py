"""A stored response with everything a hit needs computed once, at store time."""

from __future__ import annotations

from dataclasses import dataclass

from cache._dates import http_date
from cache._directives import entity_tags
from cache._range import byte_range
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
    "REVALIDATED": (b"x-cache", b"REVALIDATED"),
}

_X_HIT = X_CACHE["HIT"]
_REPLACED_BY_RANGE = frozenset({b"content-length", b"content-range"})


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
    revalidate: bool
    """Once stale, only a successful revalidation may answer: a request's max-stale does not apply."""
    public: bool
    etag: bytes | None
    """The opaque tag, for weak comparison."""
    strong_etag: bytes | None
    """The ETag as sent when it is strong, for If-Range."""
    last_modified: float | None
    validators: Headers
    """If-None-Match / If-Modified-Since to revalidate with (RFC 9111 §4.3.1); empty without validators."""
    tags: tuple[str, ...]
    size: int
    hit_memo: tuple[int, tuple[bytes, bytes], tuple[bytes, bytes]] | None = None
    """(whole seconds of age, its Age header, its Cache-Status header): the last hit's, reused."""

    @property
    def function(self) -> str:
        """The function whose response this is."""
        return self.key[0][0]

    @property
    def path(self) -> str:
        """The request path the response was stored for."""
        return self.key[0][3]

    def hit(self, age: float, head: bool, status_prefix: bytes) -> CacheResult:
        """A fresh hit for a plain request; its Age and Cache-Status are built once per second of age."""
        seconds = int(age) if age > 0 else 0
        memo = self.hit_memo
        if memo is None or memo[0] != seconds:
            ttl = b"%s%d" % (status_prefix, int(self.ttl) - seconds)
            memo = self.hit_memo = (seconds, (b"age", b"%d" % seconds), (b"cache-status", ttl))
        headers = [*self.headers, memo[1], _X_HIT, memo[2]]
        return CacheResult(self.status, headers, b"" if head else self.body, "HIT")

    def respond(
        self,
        age: float,
        head: bool,
        flags: RequestFlags | None,
        status: CacheStatus,
        cache_status: tuple[bytes, bytes],
    ) -> CacheResult:
        """The response to one request served from this entry: 304 when its conditions match."""
        age_header = (b"age", b"%d" % age if age > 0 else b"0")
        if flags is not None:
            if flags.conditional and self.not_modified(flags, self.born + age):
                headers = [*self.not_modified_headers, age_header, X_CACHE[status], cache_status]
                return CacheResult(304, headers, b"", status)
            if flags.range is not None and not head and self.status == 200:
                return self.ranged(flags, [age_header, X_CACHE[status], cache_status], status)
        body = b"" if head else self.body
        return CacheResult(
            self.status, [*self.headers, age_header, X_CACHE[status], cache_status], body, status
        )

    def ranged(self, flags: RequestFlags, extra: Headers, status: CacheStatus) -> CacheResult:
        """A single byte range of the stored body: 206, or 416 when unsatisfiable (RFC 9110 §14)."""
        if flags.if_range is not None and (self.strong_etag is None or flags.if_range != self.strong_etag):
            # RFC 9110 §13.1.5: the representation changed (or the validator is a date): send it all.
            return CacheResult(self.status, [*self.headers, *extra], self.body, status)
        length = len(self.body)
        wanted = byte_range(flags.range or b"", length)
        if wanted is None:
            return CacheResult(self.status, [*self.headers, *extra], self.body, status)
        headers = [pair for pair in self.headers if pair[0] not in _REPLACED_BY_RANGE]
        if not wanted:
            headers.append((b"content-range", b"bytes */%d" % length))
            return CacheResult(416, [*headers, (b"content-length", b"0"), *extra], b"", status)
        headers.append((b"content-range", b"bytes %d-%d/%d" % (wanted.start, wanted.stop - 1, length)))
        headers.append((b"content-length", b"%d" % len(wanted)))
        return CacheResult(206, [*headers, *extra], self.body[wanted.start : wanted.stop], status)

    def not_modified(self, flags: RequestFlags, now: float) -> bool:
        """True when the request's validators match (RFC 9110 §13.2.2 order, weak ETag comparison)."""
        if not 200 <= self.status < 300:
            return False
        if flags.if_none_match is not None:
            if flags.if_none_match.strip() == b"*":
                return True
            return self.etag is not None and self.etag in entity_tags(flags.if_none_match)
        if flags.if_modified_since is None or self.last_modified is None:
            return False
        since = http_date(flags.if_modified_since, now)
        return since is not None and self.last_modified <= since


METHOD_CLASS = "GET"
"""The only method class stored: HEAD is answered from GET entries, other methods are never stored."""


def primary_key(function: str, version: str, path: str, query: bytes) -> PrimaryKey:
    """The key of one resource of one function version."""
    return (function, version, METHOD_CLASS, path, query)
