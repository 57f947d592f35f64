"""Request collapsing: concurrent misses for one key share one invocation when that is correct."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from cache_fakes import Clock, Function, request

from cache import PASS, CachedRequest, CacheResult, HttpCache, Invoke


async def concurrently(
    cache: HttpCache, gate: asyncio.Event, calls: Sequence[tuple[CachedRequest, Invoke]]
) -> list[CacheResult]:
    """Start every request, let them all reach the cache, then open the gate."""
    tasks = [asyncio.create_task(cache.handle(req, invoke)) for req, invoke in calls]
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    return await asyncio.gather(*tasks)


def test_fifty_concurrent_misses_invoke_once(cache: HttpCache) -> None:
    gate = asyncio.Event()
    function = Function(headers=[(b"cache-control", b"max-age=60")], body=b"shared", gate=gate)

    async def scenario() -> list[CacheResult]:
        return await concurrently(cache, gate, [(request(), function)] * 50)

    results = asyncio.run(scenario())
    assert function.calls == 1
    assert {(r.status, r.body, r.cache_status) for r in results} == {(200, b"shared", "MISS")}
    assert len({id(r.headers) for r in results}) == 50  # nobody shares a mutable list
    assert (cache.stats.misses, cache.stats.collapsed, cache.stats.stores) == (50, 49, 1)


def test_waiters_share_a_response_that_is_not_stored(cache: HttpCache) -> None:
    gate = asyncio.Event()
    function = Function(500, [], b"boom", gate=gate)

    async def scenario() -> list[CacheResult]:
        return await concurrently(cache, gate, [(request(), function)] * 10)

    results = asyncio.run(scenario())
    assert (function.calls, len(cache)) == (1, 0)
    assert {(r.status, r.body) for r in results} == {(500, b"boom")}


@pytest.mark.parametrize(
    "headers",
    [
        [(b"cache-control", b"private, max-age=60")],
        [(b"cache-control", b"no-store")],
        [(b"set-cookie", b"id=1")],
    ],
    ids=["private", "no-store", "set-cookie"],
)
def test_waiters_invoke_on_their_own_when_the_response_is_private(
    cache: HttpCache, headers: list[tuple[bytes, bytes]]
) -> None:
    gate = asyncio.Event()
    function = Function(headers=headers, gate=gate)

    async def scenario() -> list[CacheResult]:
        return await concurrently(cache, gate, [(request(), function)] * 50)

    results = asyncio.run(scenario())
    assert function.calls == 50
    assert {r.cache_status for r in results} == {"MISS"}
    assert cache.stats.collapsed == 0


def test_waiters_whose_vary_values_differ_invoke_on_their_own(cache: HttpCache) -> None:
    gate = asyncio.Event()
    vary = [(b"cache-control", b"max-age=60"), (b"vary", b"accept-language")]
    german, english = Function(headers=vary, body=b"de", gate=gate), Function(headers=vary, body=b"en")

    def asking(language: bytes) -> CachedRequest:
        return request(headers=[(b"accept-language", language)])

    async def scenario() -> list[CacheResult]:
        calls: list[tuple[CachedRequest, Invoke]] = [(asking(b"de"), german), (asking(b"en"), english)]
        return await concurrently(cache, gate, [*calls, (asking(b"de"), german)])

    results = asyncio.run(scenario())
    assert [r.body for r in results] == [b"de", b"en", b"de"]
    assert (german.calls, english.calls, cache.stats.collapsed) == (1, 1, 1)


def test_waiters_see_the_leaders_exception(cache: HttpCache) -> None:
    gate = asyncio.Event()
    function = Function(error=TimeoutError("function timed out"), gate=gate)

    async def scenario() -> list[CacheResult | BaseException]:
        tasks = [asyncio.create_task(cache.handle(request(), function)) for _ in range(10)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert function.calls == 1
    assert all(isinstance(r, TimeoutError) for r in results)


def test_waiters_collapse_behind_a_new_leader_when_the_leader_is_cancelled(cache: HttpCache) -> None:
    stuck = Function(gate=asyncio.Event())
    gate = asyncio.Event()
    others = Function(headers=[(b"cache-control", b"max-age=60")], body=b"mine", gate=gate)

    async def scenario() -> list[CacheResult]:
        leader = asyncio.create_task(cache.handle(request(), stuck))
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(cache.handle(request(), others)) for _ in range(3)]
        await asyncio.sleep(0)
        leader.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await leader
        return await asyncio.gather(*waiters)

    results = asyncio.run(scenario())
    assert [r.body for r in results] == [b"mine"] * 3
    assert (stuck.calls, others.calls) == (1, 1)


def test_a_cancelled_waiter_does_not_disturb_the_flight(cache: HttpCache) -> None:
    gate = asyncio.Event()
    function = Function(headers=[(b"cache-control", b"max-age=60")], gate=gate)

    async def scenario() -> CacheResult:
        leader = asyncio.create_task(cache.handle(request(), function))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(cache.handle(request(), function))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.sleep(0)
        gate.set()
        return await leader

    assert asyncio.run(scenario()).cache_status == "MISS"
    assert function.calls == 1


def test_a_head_waiter_gets_the_get_leaders_headers_without_body(cache: HttpCache) -> None:
    gate = asyncio.Event()
    function = Function(headers=[(b"cache-control", b"max-age=60")], body=b"full", gate=gate)

    async def scenario() -> list[CacheResult]:
        return await concurrently(cache, gate, [(request(), function), (request(method="HEAD"), function)])

    get, head = asyncio.run(scenario())
    assert (get.body, head.body, head.status, function.calls) == (b"full", b"", 200, 1)


def test_conditional_misses_are_not_collapsed(cache: HttpCache) -> None:
    gate = asyncio.Event()
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"etag", b'"a"')], gate=gate)
    conditional = request(headers=[(b"if-none-match", b'"a"')])

    async def scenario() -> list[CacheResult]:
        return await concurrently(cache, gate, [(request(), function), (conditional, function)])

    asyncio.run(scenario())
    assert function.calls == 2


def test_waiters_invoke_on_their_own_for_dynamic_content(cache: HttpCache) -> None:
    gate = asyncio.Event()
    function = Function(200, [], b"dynamic", gate=gate)  # no freshness: not storable

    async def scenario() -> list[CacheResult]:
        return await concurrently(cache, gate, [(request(), function)] * 10)

    results = asyncio.run(scenario())
    assert (function.calls, len(cache), cache.stats.collapsed) == (10, 0, 0)
    assert {(r.status, r.body, r.cache_status) for r in results} == {(200, b"dynamic", "MISS")}


def test_after_a_response_that_cannot_be_stored_requests_skip_collapsing(
    cache: HttpCache, clock: Clock
) -> None:
    gate = asyncio.Event()
    gate.set()
    dynamic = Function(200, [], b"dynamic", gate=gate)

    async def scenario() -> None:
        await cache.handle(request(), dynamic)
        flights: list[int] = []

        async def watching() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            flights.append(len(cache._flights))  # no flight is led while the pass mark holds
            return await dynamic()

        await asyncio.gather(*(cache.handle(request(), watching) for _ in range(5)))
        assert flights == [0] * 5
        clock.now += 31  # the mark expires: the next miss leads a flight again
        await cache.handle(request(), watching)
        assert flights[-1] == 1

    asyncio.run(scenario())
    assert dynamic.calls == 7


def test_lookup_answers_pass_under_a_pass_mark_and_passed_ends_it_when_caching_is_asked_for(
    cache: HttpCache,
) -> None:
    dynamic = Function(200, [(b"content-type", b"text/plain")], b"dynamic")
    parts = ("fn", "v1", "GET", "/a", b"", [(b"host", b"x")], {b"host": b"x"})
    assert cache.lookup(*parts) is None  # nothing known yet: handle() decides
    asyncio.run(cache.handle(request("/a"), dynamic))
    assert cache.lookup(*parts) is PASS
    assert cache.lookup("fn", "v1", "GET", "/a", b"", [], {b"authorization": b"x"}) is None  # not plain

    plain = cache.passed("fn", "v1", "/a", b"", 0, (200, [(b"content-type", b"text/plain")], b"d"), False)
    assert (plain.status, plain.headers, plain.body, plain.cache_status) == (
        200,
        [
            (b"content-type", b"text/plain"),
            (b"x-cache", b"MISS"),
            (b"cache-status", b"edge; fwd=uri-miss; fwd-status=200; detail=pass"),
        ],
        b"d",
        "MISS",
    )
    assert cache.lookup(*parts) is PASS  # still dynamic: the mark stays

    tagged = [(b"cache-control", b"max-age=60"), (b"cache-tag", b"t")]
    result = cache.passed("fn", "v1", "/a", b"", 0, (200, tagged, b"now cacheable"), True)
    assert (result.headers[:2], result.body) == (
        [(b"cache-control", b"max-age=60"), (b"x-cache", b"MISS")],
        b"",
    )
    assert cache.lookup(*parts) is None  # the mark is gone: handle() will store the next one
