"""stale-while-revalidate (one background refresh) and stale-if-error (raise, 5xx), on a fake clock."""

from __future__ import annotations

import asyncio

import pytest
from cache_fakes import Clock, Function, Spawned, make_cache, request

from cache import CacheResult, CacheSettings, HttpCache

SWR = [(b"cache-control", b"max-age=10, stale-while-revalidate=30")]
SIE = [(b"cache-control", b"max-age=10, stale-if-error=60")]


def test_stale_while_revalidate_serves_at_once_and_refreshes_exactly_once(
    cache: HttpCache, clock: Clock, spawned: Spawned
) -> None:
    function = Function(headers=SWR, body=b"old")

    async def scenario() -> None:
        await cache.handle(request(), function)
        function.body = b"new"
        clock.advance(15)
        served = [await cache.handle(request(), function) for _ in range(5)]
        assert {(r.cache_status, r.body, (b"age", b"15") in r.headers) for r in served} == {
            ("STALE", b"old", True)
        }
        assert (function.calls, len(spawned)) == (1, 1)
        await spawned.run_all()
        assert function.calls == 2
        clock.advance(1)
        after = await cache.handle(request(), function)
        assert (after.cache_status, after.body) == ("HIT", b"new")

    asyncio.run(scenario())
    assert (cache.stats.stale, cache.stats.refreshes, cache.stats.hits) == (5, 1, 1)


def test_requests_during_a_running_refresh_start_no_second_one(
    cache: HttpCache, clock: Clock, spawned: Spawned
) -> None:
    gate = asyncio.Event()
    function = Function(headers=SWR)

    async def scenario() -> None:
        await cache.handle(request(), function)
        function.gate = gate
        clock.advance(15)
        await cache.handle(request(), function)
        refresh = asyncio.create_task(spawned.run_all())
        await asyncio.sleep(0)
        assert function.calls == 2  # the refresh is waiting inside the function
        results = [await cache.handle(request(), function) for _ in range(3)]
        assert [r.cache_status for r in results] == ["STALE"] * 3
        gate.set()
        await refresh
        assert (function.calls, len(spawned)) == (2, 0)

    asyncio.run(scenario())


def test_beyond_the_swr_window_the_function_runs_before_answering(
    cache: HttpCache, clock: Clock, spawned: Spawned
) -> None:
    function = Function(headers=SWR, body=b"old")

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        function.body = b"new"
        clock.advance(41)
        return await cache.handle(request(), function)

    result = asyncio.run(scenario())
    assert (result.cache_status, result.body, function.calls, len(spawned)) == ("MISS", b"new", 2, 0)


def test_the_default_spawner_runs_the_refresh_as_a_task(clock: Clock) -> None:
    cache = HttpCache(CacheSettings(), timer=clock)
    function = Function(headers=SWR, body=b"old")

    async def scenario() -> bytes:
        await cache.handle(request(), function)
        function.body = b"new"
        clock.advance(15)
        assert (await cache.handle(request(), function)).cache_status == "STALE"
        for _ in range(3):
            await asyncio.sleep(0)
        await cache.aclose()
        return (await cache.handle(request(), function)).body

    assert asyncio.run(scenario()) == b"new"
    assert function.calls == 2


def test_a_failed_background_refresh_keeps_the_stale_entry(
    cache: HttpCache, clock: Clock, spawned: Spawned
) -> None:
    function = Function(headers=SWR, body=b"old")

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        function.error = TimeoutError("function timed out")
        clock.advance(15)
        await cache.handle(request(), function)
        await spawned.run_all()
        return await cache.handle(request(), function)

    result = asyncio.run(scenario())
    assert (result.cache_status, result.body) == ("STALE", b"old")
    assert (cache.stats.refreshes, cache.stats.refresh_failures) == (2, 1)


@pytest.mark.parametrize("cache_control", [b"must-revalidate", b"proxy-revalidate", b"no-cache"])
def test_revalidation_directives_forbid_serving_stale(clock: Clock, cache_control: bytes) -> None:
    cache = make_cache(clock)
    directives = b"max-age=10, stale-while-revalidate=30, stale-if-error=30, " + cache_control
    function = Function(headers=[(b"cache-control", directives)])

    async def scenario() -> list[str]:
        await cache.handle(request(), function)
        clock.advance(15)
        revalidated = await cache.handle(request(), function)
        function.error = TimeoutError("function timed out")
        clock.advance(15)
        with pytest.raises(TimeoutError):
            await cache.handle(request(), function)
        return [revalidated.cache_status]

    assert asyncio.run(scenario()) == ["MISS"]


@pytest.mark.parametrize(
    "failure",
    [TimeoutError("function timed out"), ConnectionResetError("isolate down"), 500, 503, 504],
    ids=["timeout", "isolate-down", "500", "503", "504"],
)
def test_stale_if_error_serves_the_stale_entry_when_the_function_fails(
    cache: HttpCache, clock: Clock, failure: Exception | int
) -> None:
    function = Function(headers=SIE, body=b"good")

    async def scenario() -> list[CacheResult]:
        await cache.handle(request(), function)
        if isinstance(failure, int):
            function.status, function.headers, function.body = failure, [], b"error"
        else:
            function.error = failure
        clock.advance(69)
        stale = await cache.handle(request(), function)
        function.status, function.headers, function.body, function.error = 200, SIE, b"better", None
        recovered = await cache.handle(request(), function)
        return [stale, recovered]

    stale, recovered = asyncio.run(scenario())
    assert (stale.status, stale.body, stale.cache_status) == (200, b"good", "STALE")
    assert (b"age", b"69") in stale.headers
    assert (b"x-cache", b"STALE") in stale.headers
    assert (recovered.body, recovered.cache_status) == (b"better", "MISS")  # the error was not stored


def test_beyond_the_stale_if_error_window_the_exception_is_raised(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=SIE)

    async def scenario() -> None:
        await cache.handle(request(), function)
        function.error = TimeoutError("function timed out")
        clock.advance(71)
        await cache.handle(request(), function)

    with pytest.raises(TimeoutError, match="function timed out"):
        asyncio.run(scenario())


def test_beyond_the_stale_if_error_window_the_error_response_is_returned(
    cache: HttpCache, clock: Clock
) -> None:
    function = Function(headers=SIE)

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        function.status, function.headers, function.body = 504, [], b"gateway timeout"
        clock.advance(71)
        return await cache.handle(request(), function)

    result = asyncio.run(scenario())
    assert (result.status, result.body, result.cache_status) == (504, b"gateway timeout", "MISS")


def test_without_stale_if_error_the_failure_is_returned(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=10")])

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        function.status, function.headers = 500, []
        clock.advance(11)
        return await cache.handle(request(), function)

    assert asyncio.run(scenario()).status == 500


def test_a_superseding_uncacheable_response_drops_the_stale_entry(
    cache: HttpCache, clock: Clock, spawned: Spawned
) -> None:
    function = Function(headers=SWR, body=b"old")

    async def scenario() -> list[str]:
        await cache.handle(request(), function)
        function.headers = [(b"cache-control", b"no-store")]
        clock.advance(15)
        first = await cache.handle(request(), function)
        await spawned.run_all()
        second = await cache.handle(request(), function)
        return [first.cache_status, second.cache_status]

    assert asyncio.run(scenario()) == ["STALE", "MISS"]
    assert len(cache) == 0


def test_an_error_with_explicit_freshness_does_not_replace_the_stale_entry(
    cache: HttpCache, clock: Clock
) -> None:
    function = Function(headers=SIE, body=b"good")

    async def scenario() -> list[tuple[str, bytes]]:
        await cache.handle(request(), function)
        function.status, function.headers, function.body = 503, [(b"cache-control", b"max-age=60")], b"down"
        clock.advance(20)
        results = [await cache.handle(request(), function) for _ in range(2)]
        return [(r.cache_status, r.body) for r in results]

    assert asyncio.run(scenario()) == [("STALE", b"good"), ("STALE", b"good")]
