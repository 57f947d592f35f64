"""The cache's configuration: a msgspec struct checked when it is built or decoded."""

from __future__ import annotations

import re

import msgspec

__all__ = ["CacheSettings"]

_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+.^_`|~0-9A-Za-z:/-]*")  # RFC 8941 §3.3.4 sf-token


class CacheSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How much the node's response cache may hold (sizes in bytes) and how it names itself."""

    enabled: bool = True
    max_bytes: int = 64 * 1024 * 1024
    max_object_bytes: int = 1024 * 1024
    name: str = "edge"
    """This cache's name in the Cache-Status response field (RFC 9211 §2)."""
    heuristic_fraction: float = 0.1
    """Heuristic freshness (RFC 9111 §4.2.2): this share of the time since Last-Modified; 0: off."""
    heuristic_max_seconds: int = 86_400
    """The cap on a heuristic freshness lifetime."""

    def __post_init__(self) -> None:
        if type(self.name) is not str or _TOKEN.fullmatch(self.name) is None:
            raise ValueError(
                "Expected a Structured Fields token (a letter or *, then letters, digits and"
                f" !#$%&'*+-.^_`|~:/), got {self.name!r} - at `$.name`"
            )
        fraction = self.heuristic_fraction
        if type(fraction) not in (int, float) or not 0 <= fraction <= 1:
            raise ValueError(f"Expected a number from 0 to 1, got {fraction!r} - at `$.heuristic_fraction`")
        if type(self.heuristic_max_seconds) is not int or self.heuristic_max_seconds < 0:
            raise ValueError(
                f"Expected an int >= 0, got {self.heuristic_max_seconds!r} - at `$.heuristic_max_seconds`"
            )
        for name in ("max_bytes", "max_object_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Expected an int >= 1, got {value!r} - at `$.{name}`")
        if self.max_object_bytes > self.max_bytes:
            raise ValueError(
                f"Expected at most max_bytes ({self.max_bytes}), got {self.max_object_bytes!r}"
                " - at `$.max_object_bytes`"
            )
