"""RFC 9211: every response carries this cache's Cache-Status member beside x-cache."""

from __future__ import annotations

import asyncio

import pytest
from cache_fakes import Clock, Function, Spawned, header, make_cache, request

from cache import CacheResult, CacheSettings, HttpCache

FRESH = (b"cache-control", b"max-age=60")


def cache_status(result: CacheResult) -> bytes | None:
    return header(result.headers, b"cache-status")


def test_a_hit_says_hit_and_the_freshness_left(cache: HttpCache, clock: Clock) -> None:
    """§2.1 hit, §2.7 ttl."""
    function = Function(headers=[FRESH])

    async def scenario() -> list[bytes | None]:
        miss = await cache.handle(request(), function)
        clock.advance(20.5)
        hit = await cache.handle(request(), function)
        return [cache_status(miss), cache_status(hit)]

    assert asyncio.run(scenario()) == [
        b"edge; fwd=uri-miss; fwd-status=200; stored; ttl=60",
        b"edge; hit; ttl=40",
    ]


def test_lookup_hits_carry_it_too(cache: HttpCache, clock: Clock) -> None:
    asyncio.run(cache.handle(request(), Function(headers=[FRESH])))
    clock.advance(1)
    hit = cache.lookup("fn", "v1", "GET", "/page", b"", [], ())
    assert isinstance(hit, CacheResult)
    assert hit.headers[-3:] == [(b"age", b"1"), (b"x-cache", b"HIT"), (b"cache-status", b"edge; hit; ttl=59")]


def test_a_response_that_is_not_stored_says_so(cache: HttpCache) -> None:
    result = asyncio.run(cache.handle(request(), Function(headers=[(b"cache-control", b"no-store")])))
    assert cache_status(result) == b"edge; fwd=uri-miss; fwd-status=200"


def test_a_miss_for_another_variant_is_a_vary_miss(cache: HttpCache) -> None:
    """§2.2 fwd=vary-miss: the resource is stored, not for this request's Accept-Language."""
    function = Function(headers=[FRESH, (b"vary", b"accept-language")])

    async def scenario() -> bytes | None:
        await cache.handle(request(headers=[(b"accept-language", b"de")]), function)
        return cache_status(await cache.handle(request(headers=[(b"accept-language", b"en")]), function))

    assert asyncio.run(scenario()) == b"edge; fwd=vary-miss; fwd-status=200; stored; ttl=60"


def test_stale_answers_say_what_allowed_them(cache: HttpCache, clock: Clock, spawned: Spawned) -> None:
    """§2.8 detail; a negative ttl is staleness (§2.7); stale-if-error went forward (fwd=stale)."""
    swr = Function(headers=[(b"cache-control", b"max-age=10, stale-while-revalidate=60")])
    sie = Function(headers=[(b"cache-control", b"max-age=10, stale-if-error=60")])

    async def scenario() -> list[bytes | None]:
        await cache.handle(request("/swr"), swr)
        await cache.handle(request("/sie"), sie)
        clock.advance(15)
        sie.status = 503
        return [
            cache_status(await cache.handle(request("/swr"), swr)),
            cache_status(await cache.handle(request("/sie"), sie)),
        ]

    assert asyncio.run(scenario()) == [
        b"edge; hit; ttl=-5; detail=stale-while-revalidate",
        b"edge; fwd=stale; fwd-status=503; ttl=-5; detail=stale-if-error",
    ]


def test_collapsed_waiters_say_collapsed(cache: HttpCache) -> None:
    """§2.6 collapsed."""
    gate = asyncio.Event()
    function = Function(headers=[FRESH], gate=gate)

    async def scenario() -> list[CacheResult]:
        tasks = [asyncio.create_task(cache.handle(request(), function)) for _ in range(2)]
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)

    leader, waiter = asyncio.run(scenario())
    assert cache_status(leader) == b"edge; fwd=uri-miss; fwd-status=200; stored; ttl=60"
    assert cache_status(waiter) == b"edge; fwd=uri-miss; fwd-status=200; stored; collapsed; ttl=60"


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("POST", [], b"edge; fwd=method; fwd-status=200"),
        ("GET", [(b"if-match", b'"a"')], b"edge; fwd=bypass; fwd-status=200"),
        ("GET", [(b"authorization", b"Bearer x")], b"edge; fwd=bypass; fwd-status=200"),
    ],
)
def test_requests_the_cache_does_not_serve_say_why(
    cache: HttpCache, method: str, headers: list[tuple[bytes, bytes]], expected: bytes
) -> None:
    """§2.2: fwd=method for unsafe methods, fwd=bypass for requests the cache leaves alone."""
    result = asyncio.run(cache.handle(request(method=method, headers=headers), Function()))
    assert cache_status(result) == expected


def test_the_name_is_a_setting_and_upstream_members_come_first(clock: Clock) -> None:
    """§2: each cache appends its member; the one nearest the origin comes first."""
    cache = make_cache(clock, name="node-7.eu")
    function = Function(headers=[FRESH, (b"cache-status", b"origin-cache; hit")])

    async def scenario() -> list[tuple[bytes, bytes]]:
        await cache.handle(request(), function)
        hit = await cache.handle(request(), function)
        return [pair for pair in hit.headers if pair[0] == b"cache-status"]

    assert asyncio.run(scenario()) == [
        (b"cache-status", b"origin-cache; hit"),
        (b"cache-status", b"node-7.eu; hit; ttl=60"),
    ]


@pytest.mark.parametrize("name", ["", "7-eleven", "edge cache", 'a"b'])
def test_a_name_that_is_no_token_is_refused(name: str) -> None:
    with pytest.raises(ValueError) as raised:
        CacheSettings(name=name)
    assert str(raised.value) == (
        "Expected a Structured Fields token (a letter or *, then letters, digits and"
        f" !#$%&'*+-.^_`|~:/), got {name!r} - at `$.name`"
    )
