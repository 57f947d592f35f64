"""The cache's configuration: a msgspec struct checked when it is built or decoded."""

from __future__ import annotations

import msgspec

__all__ = ["CacheSettings"]


class CacheSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How much the node's response cache may hold; sizes are in bytes."""

    enabled: bool = True
    max_bytes: int = 64 * 1024 * 1024
    max_object_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_object_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Expected an int >= 1, got {value!r} - at `$.{name}`")
        if self.max_object_bytes > self.max_bytes:
            raise ValueError(
                f"Expected at most max_bytes ({self.max_bytes}), got {self.max_object_bytes!r}"
                " - at `$.max_object_bytes`"
            )
