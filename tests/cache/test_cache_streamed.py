"""Streamed responses (`invoke` raises Streamed): never stored, never shared, handed back to the caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cache_fakes import Clock, Function, Spawned, request

from cache import PASS, HttpCache, Streamed


class StreamingFunction:
    """Answers every call with its own stream (the reply is the call's number)."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.gate = gate
        self.calls = 0
        self.closed: list[int] = []

    async def __call__(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self.calls += 1
        number = self.calls
        if self.gate is not None:
            await self.gate.wait()
        raise Streamed(number, lambda: self.closed.append(number))


async def streamed_reply(cache: HttpCache, function: StreamingFunction) -> Any:
    with pytest.raises(Streamed) as caught:
        await cache.handle(request(), function)
    return caught.value.reply


def test_concurrent_misses_that_stream_each_invoke_and_get_their_own_stream(cache: HttpCache) -> None:
    gate = asyncio.Event()
    function = StreamingFunction(gate)

    async def scenario() -> list[Any]:
        tasks = [asyncio.create_task(streamed_reply(cache, function)) for _ in range(5)]
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)

    replies = asyncio.run(scenario())
    assert (function.calls, sorted(replies), len(cache)) == (5, [1, 2, 3, 4, 5], 0)
    assert cache.stats.collapsed == 0


def test_a_streamed_resource_goes_under_hit_for_pass(cache: HttpCache) -> None:
    function = StreamingFunction()
    asyncio.run(streamed_reply(cache, function))
    assert cache.lookup("fn", "v1", "GET", "/page", b"", [], ()) is PASS


def test_a_stale_entry_does_not_stand_in_for_a_streamed_response(cache: HttpCache, clock: Clock) -> None:
    stored = Function(headers=[(b"cache-control", b"max-age=10, stale-if-error=60")], body=b"old")
    asyncio.run(cache.handle(request(), stored))
    clock.advance(20)
    assert asyncio.run(streamed_reply(cache, StreamingFunction())) == 1


def test_a_background_refresh_that_streams_closes_its_stream(
    cache: HttpCache, clock: Clock, spawned: Spawned
) -> None:
    stored = Function(headers=[(b"cache-control", b"max-age=10, stale-while-revalidate=30")], body=b"old")
    asyncio.run(cache.handle(request(), stored))
    clock.advance(20)
    function = StreamingFunction()
    result = asyncio.run(cache.handle(request(), function))
    assert (result.body, result.cache_status) == (b"old", "STALE")
    asyncio.run(spawned.run_all())
    assert (function.calls, function.closed, cache.stats.refresh_failures) == (1, [1], 0)
