"""Which function a request path goes to: `/<name>` and everything under it, plus manifest routes."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["RESERVED_PREFIX", "Router"]

RESERVED_PREFIX = "/_edge/"
_MEMO_SIZE = 4096


class Router:
    """Longest path-prefix match on whole segments; immutable, rebuilt when functions change."""

    __slots__ = ("_by_first", "_fallback", "_memo", "_prefixes")

    def __init__(self, routes: Iterable[tuple[str, str]]) -> None:
        """`routes` are (prefix, function name) pairs; a later duplicate prefix wins."""
        by_prefix = {prefix.rstrip("/") or "/": name for prefix, name in routes}
        self._fallback = by_prefix.pop("/", None)
        # Single-segment prefixes (the common case, `/<name>`) are found with one dict lookup.
        self._by_first = {p: n for p, n in by_prefix.items() if p.count("/") == 1}
        self._prefixes = sorted(
            ((p, n) for p, n in by_prefix.items() if p not in self._by_first), key=lambda item: -len(item[0])
        )
        # Paths seen before, answered with one dict lookup (a router is rebuilt, never changed).
        self._memo: dict[str, str | None] = {}

    def match(self, path: str) -> str | None:
        """The function for `path`, or None."""
        try:
            return self._memo[path]
        except KeyError:
            pass
        name = self._match(path)
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[path] = name
        return name

    def _match(self, path: str) -> str | None:
        for prefix, name in self._prefixes:
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return name
        end = path.find("/", 1)
        return self._by_first.get(path if end < 0 else path[:end], self._fallback)
