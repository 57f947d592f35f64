"""The byte-bounded LRU of entries, with the indexes that Vary lookups and purges need."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cachetools import LRUCache

from cache._directives import vary_values
from cache._entry import Entry, EntryKey, PrimaryKey
from cache.stats import CacheStats

__all__ = ["EntryStore", "FlightKey"]

FlightKey = tuple[PrimaryKey, tuple[bytes, ...] | None]
"""An entry key, or (primary, None) while the resource's Vary header names are not known yet."""


def _entry_size(entry: Entry) -> int:
    return entry.size


class _LRU(LRUCache[EntryKey, Entry]):
    """An `LRUCache` weighed in bytes that reports what it evicts to make room."""

    def __init__(self, max_bytes: int, evicted: Callable[[Entry], None]) -> None:
        super().__init__(max_bytes, getsizeof=_entry_size)
        self._evicted = evicted

    def popitem(self) -> tuple[EntryKey, Entry]:
        """Evict the least recently used entry (called by `LRUCache` when it needs room)."""
        key, entry = super().popitem()
        self._evicted(entry)
        return key, entry


class _Resource:
    """The stored variants of one primary key and the Vary names that tell them apart."""

    __slots__ = ("bare_key", "keys", "vary")

    def __init__(self, primary: PrimaryKey, vary: tuple[bytes, ...]) -> None:
        self.vary = vary
        self.bare_key: EntryKey = (primary, ())
        self.keys: set[EntryKey] = set()


class EntryStore:
    """Entries by key, least recently used evicted first once `max_bytes` would be exceeded."""

    def __init__(self, max_bytes: int, max_object_bytes: int, stats: CacheStats) -> None:
        self._lru = _LRU(max_bytes, self._evicted)
        self._max_object_bytes = max_object_bytes
        self._stats = stats
        self._resources: dict[PrimaryKey, _Resource] = {}
        self._paths: dict[str, dict[str, set[PrimaryKey]]] = {}
        self._tags: dict[tuple[str, str], set[EntryKey]] = {}

    def __len__(self) -> int:
        return len(self._lru)

    def get(self, primary: PrimaryKey, headers: Sequence[tuple[bytes, bytes]]) -> Entry | None:
        """The entry for a request, marked most recently used; None when there is none."""
        resource = self._resources.get(primary)
        if resource is None:
            return None
        key = (primary, vary_values(resource.vary, headers)) if resource.vary else resource.bare_key
        try:
            return self._lru[key]
        except KeyError:
            return None

    def knows(self, primary: PrimaryKey) -> bool:
        """True when some variant of the resource is stored (a miss is then a Vary miss)."""
        return primary in self._resources

    def flight_key(self, primary: PrimaryKey, headers: Sequence[tuple[bytes, bytes]]) -> FlightKey:
        """The key under which concurrent misses for this request are collapsed."""
        resource = self._resources.get(primary)
        if resource is None:
            return (primary, None)
        return (primary, vary_values(resource.vary, headers))

    def put(self, entry: Entry) -> bool:
        """Store an entry, replacing its key's; False when it is larger than `max_object_bytes`."""
        if entry.size > self._max_object_bytes:
            return False
        primary = entry.key[0]
        resource = self._resources.get(primary)
        if resource is not None and resource.vary != entry.vary:
            # Variants told apart by other header names can no longer be selected (RFC 9111 §4.1).
            self.remove_resource(primary)
        self.discard(entry.key)
        self._lru[entry.key] = entry  # may evict, which unindexes: look the resource up afterwards
        resource = self._resources.get(primary)
        if resource is None:
            resource = self._resources[primary] = _Resource(primary, entry.vary)
            self._paths.setdefault(entry.function, {}).setdefault(entry.path, set()).add(primary)
        resource.keys.add(entry.key)
        for tag in entry.tags:
            self._tags.setdefault((entry.function, tag), set()).add(entry.key)
        self._stats.stores += 1
        self._measure()
        return True

    def discard(self, key: EntryKey) -> int:
        """Remove one entry if present; returns how many were removed (0 or 1)."""
        entry = self._lru.pop(key, None)
        if entry is None:
            return 0
        self._unindex(entry)
        self._measure()
        return 1

    def remove_resource(self, primary: PrimaryKey) -> int:
        """Remove every Vary variant of a primary key; returns how many were removed."""
        resource = self._resources.get(primary)
        if resource is None:
            return 0
        return sum(self.discard(key) for key in list(resource.keys))

    def purge_path(self, function: str, path: str) -> int:
        """Remove a function's entries for one path: every version, query string and variant."""
        primaries = self._paths.get(function, {}).get(path, ())
        return self._purged(sum(self.remove_resource(primary) for primary in list(primaries)))

    def purge_prefix(self, function: str, prefix: str) -> int:
        """Remove a function's entries whose path is `prefix` or lies below it, segment-wise."""
        base = prefix.rstrip("/")
        paths = self._paths.get(function, {})
        below = [path for path in paths if path == base or path.startswith(base + "/")]
        primaries = [primary for path in below for primary in paths[path]]
        return self._purged(sum(self.remove_resource(primary) for primary in primaries))

    def purge_tag(self, function: str, tag: str) -> int:
        """Remove a function's entries that carried `tag`."""
        keys = list(self._tags.get((function, tag), ()))
        return self._purged(sum(self.discard(key) for key in keys))

    def purge_all(self, function: str) -> int:
        """Remove every entry of a function."""
        paths = self._paths.get(function, {})
        primaries = [primary for primaries in paths.values() for primary in primaries]
        return self._purged(sum(self.remove_resource(primary) for primary in primaries))

    def _purged(self, count: int) -> int:
        self._stats.purged += count
        return count

    def _evicted(self, entry: Entry) -> None:
        self._unindex(entry)
        self._stats.evictions += 1

    def _unindex(self, entry: Entry) -> None:
        primary = entry.key[0]
        resource = self._resources.get(primary)
        if resource is not None:
            resource.keys.discard(entry.key)
            if not resource.keys:
                del self._resources[primary]
                paths = self._paths[entry.function]
                primaries = paths[entry.path]
                primaries.discard(primary)
                if not primaries:
                    del paths[entry.path]
                    if not paths:
                        del self._paths[entry.function]
        for tag in entry.tags:
            keys = self._tags.get((entry.function, tag))
            if keys is not None:
                keys.discard(entry.key)
                if not keys:
                    del self._tags[(entry.function, tag)]

    def _measure(self) -> None:
        self._stats.bytes = int(self._lru.currsize)
        self._stats.entries = len(self._lru)
