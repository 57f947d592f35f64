"""The plain values that cross the cache's boundary: the request, the response, the seams."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Literal, Protocol

import msgspec

__all__ = [
    "CacheResult",
    "CacheStatus",
    "CachedRequest",
    "Headers",
    "Invoke",
    "Response",
    "Spawn",
    "Streamed",
    "Timer",
]

Headers = list[tuple[bytes, bytes]]
"""Header pairs with lowercase names, as ASGI carries them."""

Response = tuple[int, Headers, bytes]
"""What a function answers: status, headers, body."""


class Invoke(Protocol):
    """Runs the function for the request being handled; may raise (timeout, isolate down, Streamed)."""

    def __call__(self, headers: Headers | None = None, /) -> Awaitable[Response]:
        """Called once per miss; `headers`, when given, replace the request's headers.

        The cache passes them to revalidate a stale entry (RFC 9111 §4.3.1): the client's request
        headers without its conditions and ranges, plus the entry's If-None-Match and
        If-Modified-Since. A 304 the cache cannot use leads to a second, unconditional call.
        """
        ...


class Streamed(Exception):
    """Raised by an `Invoke` whose response streams: the cache neither stores it nor shares it
    with collapsed requests, and `handle` raises it on for the caller to send `reply` itself.

    `close()` drops the stream when nobody will send it (a background refresh).
    """

    def __init__(self, reply: Any, close: Callable[[], object]) -> None:
        super().__init__("the response streams")
        self.reply = reply
        self.close = close


Timer = Callable[[], float]
"""Wall-clock seconds since the epoch (`time.time`): compared with `Date` and `Expires` headers."""

CacheStatus = Literal["HIT", "MISS", "STALE", "BYPASS", "REVALIDATED"]


class Spawn(Protocol):
    """Schedules a background revalidation (stale-while-revalidate)."""

    def __call__(self, coroutine: Coroutine[Any, Any, None], /) -> object:
        """Called once per refresh, inside the event loop; must run the coroutine to completion soon."""
        ...


class CachedRequest(msgspec.Struct, frozen=True, gc=False):
    """One request as the cache sees it; cheap to build from an ASGI scope."""

    function: str
    version: str
    method: str
    path: str
    query: bytes
    headers: Sequence[tuple[bytes, bytes]]
    default_ttl: int = 0


class CacheResult(msgspec.Struct, frozen=True, gc=False):
    """The response to send: `headers` already carry `x-cache` and `cache-status` (RFC 9211), and
    `age` when served from the cache."""

    status: int
    headers: Headers
    body: bytes
    cache_status: CacheStatus
