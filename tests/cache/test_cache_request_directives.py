"""RFC 9111 §5.2.1: the request's own Cache-Control directives, on the fake clock."""

from __future__ import annotations

import asyncio

import pytest
from cache_fakes import Clock, Function, header, request

from cache import CacheResult, HttpCache


def after(
    cache: HttpCache, clock: Clock, seconds: float, directives: bytes, stored: bytes = b"max-age=60"
) -> tuple[CacheResult, Function]:
    """Store a response with `stored`, then ask `seconds` later with request `directives`."""
    function = Function(headers=[(b"cache-control", stored)], body=b"old")

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        clock.advance(seconds)
        function.body = b"new"
        return await cache.handle(request(headers=[(b"cache-control", directives)]), function)

    return asyncio.run(scenario()), function


@pytest.mark.parametrize(
    ("directives", "served"), [(b"max-age=20", True), (b"max-age=5", False), (b"max-age=x", False)]
)
def test_max_age_refuses_older_responses(
    cache: HttpCache, clock: Clock, directives: bytes, served: bool
) -> None:
    """§5.2.1.1 (an invalid value reads as the most restrictive, 0)."""
    result, _ = after(cache, clock, 10, directives)
    assert (result.cache_status, result.body) == (("HIT", b"old") if served else ("MISS", b"new"))
    if not served:
        assert header(result.headers, b"cache-status") == b"edge; fwd=request; fwd-status=200; stored; ttl=60"


@pytest.mark.parametrize(("directives", "served"), [(b"min-fresh=50", True), (b"min-fresh=51", False)])
def test_min_fresh_wants_that_much_freshness_left(
    cache: HttpCache, clock: Clock, directives: bytes, served: bool
) -> None:
    """§5.2.1.3: 50 s are left of 60 after 10."""
    result, _ = after(cache, clock, 10, directives)
    assert result.cache_status == ("HIT" if served else "MISS")


@pytest.mark.parametrize(
    ("directives", "served"), [(b"max-stale=30", True), (b"max-stale", True), (b"max-stale=4", False)]
)
def test_max_stale_accepts_a_stale_response_within_its_bound(
    cache: HttpCache, clock: Clock, directives: bytes, served: bool
) -> None:
    """§5.2.1.2: the response is 5 s stale; max-stale without a value takes any staleness."""
    result, function = after(cache, clock, 65, directives)
    assert (result.cache_status, result.body, function.calls) == (
        ("STALE", b"old", 1) if served else ("MISS", b"new", 2)
    )
    if served:
        assert header(result.headers, b"cache-status") == b"edge; hit; ttl=-5; detail=max-stale"


@pytest.mark.parametrize(
    "stored", [b"max-age=60, must-revalidate", b"s-maxage=60", b"max-age=60, proxy-revalidate"]
)
def test_max_stale_does_not_override_revalidation_directives(
    cache: HttpCache, clock: Clock, stored: bytes
) -> None:
    """§4.2.4: no stale response where must-revalidate, proxy-revalidate or s-maxage (§5.2.2.10) forbid it."""
    result, _ = after(cache, clock, 65, b"max-stale=30", stored)
    assert (result.cache_status, result.body) == ("MISS", b"new")


def test_max_age_bounds_max_stale_too(cache: HttpCache, clock: Clock) -> None:
    result, _ = after(cache, clock, 65, b"max-stale=30, max-age=62")
    assert result.cache_status == "MISS"


def test_only_if_cached_is_answered_from_the_cache(cache: HttpCache, clock: Clock) -> None:
    result, function = after(cache, clock, 10, b"only-if-cached")
    assert (result.cache_status, result.body, function.calls) == ("HIT", b"old", 1)


def test_only_if_cached_without_a_usable_response_is_504_and_never_runs_the_function(
    cache: HttpCache, clock: Clock
) -> None:
    """§5.2.1.7."""
    function = Function(headers=[(b"cache-control", b"max-age=60")])

    async def scenario() -> list[CacheResult]:
        asking = request(headers=[(b"cache-control", b"only-if-cached")])
        missing = await cache.handle(asking, function)
        function.calls = 0
        await cache.handle(request(), function)
        clock.advance(61)
        stale = await cache.handle(asking, function)
        return [missing, stale]

    missing, stale = asyncio.run(scenario())
    for result in (missing, stale):
        assert (result.status, result.body, result.cache_status) == (504, b"", "MISS")
        assert header(result.headers, b"cache-status") == b"edge; detail=only-if-cached"
    assert function.calls == 1  # only the plain request ran it


def test_a_request_max_age_does_not_get_a_stale_while_revalidate_answer(
    cache: HttpCache, clock: Clock
) -> None:
    result, _ = after(cache, clock, 65, b"max-age=100", b"max-age=60, stale-while-revalidate=60")
    assert (result.cache_status, result.body) == ("MISS", b"new")


@pytest.mark.parametrize(
    "extra",
    [(b"range", b"bytes=0-1"), (b"authorization", b"Bearer x"), (b"if-match", b'"a"')],
    ids=["range", "authorization", "if-match"],
)
def test_only_if_cached_never_runs_the_function_for_requests_the_cache_would_pass_on(
    cache: HttpCache, extra: tuple[bytes, bytes]
) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60")])
    asking = request(headers=[(b"cache-control", b"only-if-cached"), extra])
    result = asyncio.run(cache.handle(asking, function))
    assert (result.status, function.calls) == (504, 0)
