"""The node's HTTP response cache (RFC 9111 subset) on cachetools; never imports `edge` or `isolates`."""

from cache.http_cache import PASS, HttpCache, Pass
from cache.messages import (
    CachedRequest,
    CacheResult,
    CacheStatus,
    Headers,
    Invoke,
    Response,
    Spawn,
    Streamed,
    Timer,
)
from cache.settings import CacheSettings
from cache.stats import CacheStats

__all__ = [
    "PASS",
    "CacheResult",
    "CacheSettings",
    "CacheStats",
    "CacheStatus",
    "CachedRequest",
    "Headers",
    "HttpCache",
    "Invoke",
    "Pass",
    "Response",
    "Spawn",
    "Streamed",
    "Timer",
]
