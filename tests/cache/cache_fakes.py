"""Fakes shared by the cache tests: a clock, a counting function, a request builder."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from cache import CachedRequest, CacheSettings, HttpCache

START = 1_700_000_000.0
DATE = b"Tue, 14 Nov 2023 22:13:20 GMT"  # START as an HTTP date


class Clock:
    """A wall clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Spawned(list[Coroutine[Any, Any, None]]):
    """A spawn seam that keeps background coroutines until the test runs them."""

    def __call__(self, coroutine: Coroutine[Any, Any, None], /) -> None:
        self.append(coroutine)

    async def run_all(self) -> None:
        while self:
            await self.pop(0)


class Function:
    """A fake function: counts invocations, answers a set response, may raise or wait on a gate."""

    def __init__(
        self,
        status: int = 200,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"hello",
        *,
        error: Exception | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.status = status
        self.headers = list(headers)
        self.body = body
        self.error = error
        self.gate = gate
        self.calls = 0
        self.sent: list[list[tuple[bytes, bytes]] | None] = []
        """The headers each call was given (None: the request's own)."""

    async def __call__(
        self, headers: list[tuple[bytes, bytes]] | None = None, /
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self.calls += 1
        self.sent.append(headers)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.status, list(self.headers), self.body


def request(
    path: str = "/page",
    *,
    method: str = "GET",
    headers: Sequence[tuple[bytes, bytes]] = (),
    query: bytes = b"",
    function: str = "fn",
    version: str = "v1",
    default_ttl: int = 0,
) -> CachedRequest:
    """A request to the fake function."""
    return CachedRequest(function, version, method, path, query, list(headers), default_ttl)


def make_cache(clock: Clock, spawned: Spawned | None = None, **settings: Any) -> HttpCache:
    """A cache on the fake clock; background refreshes go to `spawned`."""
    return HttpCache(
        CacheSettings(**settings), timer=clock, spawn=spawned if spawned is not None else Spawned()
    )


def header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of a header, or None."""
    return next((value for key, value in headers if key == name), None)
