"""What the request's own headers ask of the cache; parsed only when such a header is present."""

from __future__ import annotations

from collections.abc import Sequence

from cache._directives import parse_cache_control

__all__ = ["SPECIAL_HEADERS", "RequestFlags"]

_CONDITIONS = frozenset({b"if-none-match", b"if-modified-since"})
# Preconditions and ranges the cache does not evaluate: such requests go straight to the function.
_PASSTHROUGH = frozenset({b"range", b"if-range", b"if-match", b"if-unmodified-since"})

SPECIAL_HEADERS = frozenset({b"cache-control", b"authorization", *_CONDITIONS, *_PASSTHROUGH})
"""Request headers that change how the cache treats a request; without them a GET is plain."""


class RequestFlags:
    """The parsed request headers that matter to the cache."""

    __slots__ = ("authorized", "if_modified_since", "if_none_match", "no_cache", "no_store", "passthrough")

    def __init__(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.authorized = False
        self.no_cache = False
        self.no_store = False
        self.passthrough = False
        self.if_none_match: bytes | None = None
        self.if_modified_since: bytes | None = None
        cache_control: list[bytes] = []
        none_match: list[bytes] = []
        for name, value in headers:
            if name == b"cache-control":
                cache_control.append(value)
            elif name == b"authorization":
                self.authorized = True
            elif name == b"if-none-match":
                none_match.append(value)
            elif name == b"if-modified-since":
                self.if_modified_since = self.if_modified_since or value
            elif name in _PASSTHROUGH:
                self.passthrough = True
        if none_match:
            self.if_none_match = b",".join(none_match)
        if cache_control:
            directives = parse_cache_control(b",".join(cache_control))
            self.no_cache = "no-cache" in directives
            self.no_store = "no-store" in directives

    @property
    def skips_lookup(self) -> bool:
        """True when the stored response must not be used at all (request no-cache/no-store, ranges)."""
        return self.no_cache or self.no_store or self.passthrough

    @property
    def conditional(self) -> bool:
        """True for If-None-Match / If-Modified-Since requests."""
        return self.if_none_match is not None or self.if_modified_since is not None
