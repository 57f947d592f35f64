"""Which function a request path goes to: `/<name>` and everything under it, plus manifest routes."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["RESERVED_PREFIX", "Router"]

RESERVED_PREFIX = "/_edge/"


class Router:
    """Longest path-prefix match on whole segments; immutable, rebuilt when functions change."""

    __slots__ = ("_by_first", "_fallback", "_prefixes")

    def __init__(self, routes: Iterable[tuple[str, str]]) -> None:
        """`routes` are (prefix, function name) pairs; a later duplicate prefix wins."""
        by_prefix = {prefix.rstrip("/") or "/": name for prefix, name in routes}
        self._fallback = by_prefix.pop("/", None)
        # Single-segment prefixes (the common case, `/<name>`) are found with one dict lookup.
        self._by_first = {p: n for p, n in by_prefix.items() if p.count("/") == 1}
        self._prefixes = sorted(
            ((p, n) for p, n in by_prefix.items() if p not in self._by_first), key=lambda item: -len(item[0])
        )

    def match(self, path: str) -> str | None:
        """The function for `path`, or None."""
        for prefix, name in self._prefixes:
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return name
        end = path.find("/", 1)
        return self._by_first.get(path if end < 0 else path[:end], self._fallback)
