"""What the request's own headers ask of the cache; parsed only when such a header is present."""

from __future__ import annotations

from collections.abc import Sequence

from cache._directives import MAX_DELTA, delta_seconds, parse_cache_control

__all__ = ["AUTHENTICATED", "CONDITIONAL_FIELDS", "SPECIAL_HEADERS", "RequestFlags"]

AUTHENTICATED = frozenset({b"authorization", b"x-edge-auth-subject"})
"""Fields that mark an authenticated request (RFC 9111 3.5 applies): `Authorization`, and the
identity the node's [auth] check puts on a request it let through, whatever header carried the
credential (an API key in `x-api-key` is as personal as one in `Authorization`)."""

_CONDITIONS = frozenset({b"if-none-match", b"if-modified-since"})
# Preconditions the cache does not evaluate: such requests go straight to the function.
_PASSTHROUGH = frozenset({b"if-match", b"if-unmodified-since"})
_RANGES = frozenset({b"range", b"if-range"})

SPECIAL_HEADERS = frozenset({b"cache-control", *AUTHENTICATED, *_CONDITIONS, *_PASSTHROUGH, *_RANGES})
"""Request headers that change how the cache treats a request; without them a GET is plain."""

CONDITIONAL_FIELDS = frozenset({*_CONDITIONS, *_PASSTHROUGH, *_RANGES})
"""Fields a revalidation leaves out of the client's request: it asks for the whole stored response."""


class RequestFlags:
    """The parsed request headers that matter to the cache (RFC 9111 §5.2.1 directives among them)."""

    __slots__ = (
        "authorized",
        "if_modified_since",
        "if_none_match",
        "if_range",
        "max_age",
        "max_stale",
        "min_fresh",
        "no_cache",
        "no_store",
        "only_if_cached",
        "passthrough",
        "range",
    )

    def __init__(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.authorized = False
        self.no_cache = False
        self.no_store = False
        self.only_if_cached = False
        self.passthrough = False
        self.max_age: int | None = None
        self.min_fresh: int | None = None
        self.max_stale: int | None = None
        self.if_none_match: bytes | None = None
        self.if_modified_since: bytes | None = None
        self.range: bytes | None = None
        self.if_range: bytes | None = None
        cache_control: list[bytes] = []
        none_match: list[bytes] = []
        since: list[bytes] = []
        ranges: list[bytes] = []
        for name, value in headers:
            if name == b"cache-control":
                cache_control.append(value)
            elif name in AUTHENTICATED:
                self.authorized = True
            elif name == b"if-none-match":
                none_match.append(value)
            elif name == b"if-modified-since":
                since.append(value)
            elif name == b"range":
                ranges.append(value)
            elif name == b"if-range":
                self.if_range = value.strip()
            elif name in _PASSTHROUGH:
                self.passthrough = True
        if none_match:
            self.if_none_match = b",".join(none_match)
        if len(since) == 1:  # RFC 9110 §13.1.3: a list-valued If-Modified-Since is ignored
            self.if_modified_since = since[0]
        if len(ranges) > 1 or (ranges and b"," in ranges[0]):
            self.passthrough = True  # several ranges (multipart/byteranges) are the function's to answer
        elif ranges:
            self.range = ranges[0]
        else:
            self.if_range = None  # RFC 9110 §13.1.5: If-Range without Range is ignored
        if cache_control:
            directives = parse_cache_control(b",".join(cache_control))
            self.no_cache = "no-cache" in directives
            self.no_store = "no-store" in directives
            self.only_if_cached = "only-if-cached" in directives
            if "max-age" in directives:  # an invalid value asks for the most restrictive reading
                self.max_age = delta_seconds(directives["max-age"]) or 0
            if "min-fresh" in directives:
                self.min_fresh = delta_seconds(directives["min-fresh"]) or 0
            if "max-stale" in directives:  # without a value: any staleness (RFC 9111 §5.2.1.2)
                argument = directives["max-stale"]
                self.max_stale = MAX_DELTA if argument is None else delta_seconds(argument) or 0

    @property
    def conditional(self) -> bool:
        """True for If-None-Match / If-Modified-Since requests."""
        return self.if_none_match is not None or self.if_modified_since is not None

    def accepts(self, age: float, ttl: float) -> bool:
        """True when a response of `age` with freshness lifetime `ttl` is fresh enough for this request."""
        if age >= ttl:
            return False
        if self.max_age is not None and age > self.max_age:
            return False
        return self.min_fresh is None or ttl - age >= self.min_fresh

    def accepts_stale(self, age: float, ttl: float) -> bool:
        """True when the request's max-stale takes a stale response of `age` (RFC 9111 §5.2.1.2)."""
        if self.max_stale is None or (self.max_age is not None and age > self.max_age):
            return False
        return age < ttl + self.max_stale
