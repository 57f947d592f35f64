"""Freshness and storability: RFC 9111 for a shared cache, checked on an injected clock."""

from __future__ import annotations

import asyncio
import email.utils

import pytest
from cache_fakes import DATE, START, Clock, Function, header, request

from cache import HttpCache


def http_date(timestamp: float) -> bytes:
    return email.utils.formatdate(timestamp, usegmt=True).encode()


def statuses(
    cache: HttpCache, function: Function, clock: Clock, steps: list[float], **kw: object
) -> list[str]:
    """Advance the clock by each step and report the cache status of one GET after each."""

    async def scenario() -> list[str]:
        seen: list[str] = []
        for step in steps:
            clock.advance(step)
            seen.append((await cache.handle(request(**kw), function)).cache_status)  # type: ignore[arg-type]
        return seen

    return asyncio.run(scenario())


def test_a_fresh_response_is_served_from_the_cache_with_age_and_x_cache(
    cache: HttpCache, clock: Clock
) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=100")], body=b"first")

    async def scenario() -> None:
        miss = await cache.handle(request(), function)
        assert (miss.status, miss.body, miss.cache_status) == (200, b"first", "MISS")
        assert header(miss.headers, b"x-cache") == b"MISS"
        assert header(miss.headers, b"age") is None
        function.body = b"second"
        clock.advance(42.7)
        hit = await cache.handle(request(), function)
        assert (hit.status, hit.body, hit.cache_status) == (200, b"first", "HIT")
        assert hit.headers == [
            (b"cache-control", b"max-age=100"),
            (b"age", b"42"),
            (b"x-cache", b"HIT"),
            (b"cache-status", b"edge; hit; ttl=58"),
        ]

    asyncio.run(scenario())
    assert function.calls == 1
    assert (cache.stats.hits, cache.stats.misses, cache.stats.stores) == (1, 1, 1)


def test_s_maxage_wins_over_max_age_and_expires(cache: HttpCache, clock: Clock) -> None:
    cc = (b"cache-control", b"max-age=10, s-maxage=100")
    function = Function(headers=[cc, (b"date", DATE), (b"expires", http_date(START + 1000))])
    assert statuses(cache, function, clock, [0, 50, 49, 2]) == ["MISS", "HIT", "HIT", "MISS"]


def test_max_age_wins_over_expires(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=100"), (b"expires", http_date(START + 10))])
    assert statuses(cache, function, clock, [0, 50, 49, 2]) == ["MISS", "HIT", "HIT", "MISS"]


def test_expires_counts_from_date_and_date_sets_the_age(cache: HttpCache, clock: Clock) -> None:
    # Generated 30 s ago with 60 s to live: 30 s left, and hits say so in Age.
    function = Function(headers=[(b"date", http_date(START - 30)), (b"expires", http_date(START + 30))])

    async def scenario() -> None:
        await cache.handle(request(), function)
        clock.advance(29)
        hit = await cache.handle(request(), function)
        assert (hit.cache_status, header(hit.headers, b"age")) == ("HIT", b"59")
        clock.advance(2)
        assert (await cache.handle(request(), function)).cache_status == "MISS"

    asyncio.run(scenario())


def test_expires_without_date_counts_from_now(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[(b"expires", http_date(START + 60))])
    assert statuses(cache, function, clock, [0, 59, 2]) == ["MISS", "HIT", "MISS"]


def test_an_invalid_expires_means_already_expired_and_blocks_default_ttl(
    cache: HttpCache, clock: Clock
) -> None:
    function = Function(headers=[(b"expires", b"0")])
    assert statuses(cache, function, clock, [0, 1], default_ttl=60) == ["MISS", "MISS"]


def test_an_upstream_age_header_shortens_freshness(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=100"), (b"age", b"95")])

    async def scenario() -> None:
        miss = await cache.handle(request(), function)
        assert header(miss.headers, b"age") == b"95"  # passed on (RFC 9111 §5.1)
        clock.advance(4)
        hit = await cache.handle(request(), function)
        assert header(hit.headers, b"age") == b"99"
        clock.advance(2)
        assert (await cache.handle(request(), function)).cache_status == "MISS"

    asyncio.run(scenario())


@pytest.mark.parametrize("cache_control", [b"no-store, max-age=60", b"private, max-age=60"])
def test_no_store_and_private_responses_are_not_stored(
    cache: HttpCache, clock: Clock, cache_control: bytes
) -> None:
    function = Function(headers=[(b"cache-control", cache_control)])
    assert statuses(cache, function, clock, [0, 1], default_ttl=60) == ["MISS", "MISS"]
    assert (function.calls, cache.stats.stores, len(cache)) == (2, 0, 0)


def test_a_set_cookie_response_is_not_stored(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"set-cookie", b"session=1")])
    assert statuses(cache, function, clock, [0, 1]) == ["MISS", "MISS"]


def test_a_no_cache_response_is_stored_but_never_served_without_invoking(
    cache: HttpCache, clock: Clock
) -> None:
    function = Function(headers=[(b"cache-control", b"no-cache, max-age=60, stale-while-revalidate=60")])
    assert statuses(cache, function, clock, [0, 1, 1], default_ttl=60) == ["MISS", "MISS", "MISS"]
    assert (function.calls, cache.stats.stores, len(cache)) == (3, 3, 1)


def test_a_request_no_cache_goes_to_the_function_and_refreshes_the_entry(cache: HttpCache) -> None:
    """RFC 9111 §5.2.1.4: no stored response without validation; without validators: a full fetch."""
    function = Function(headers=[(b"cache-control", b"max-age=60")], body=b"old")

    async def scenario() -> None:
        await cache.handle(request(), function)
        function.body = b"new"
        fetched = await cache.handle(request(headers=[(b"cache-control", b"no-cache")]), function)
        assert (fetched.cache_status, fetched.body, header(fetched.headers, b"cache-status")) == (
            "MISS",
            b"new",
            b"edge; fwd=request; fwd-status=200; stored; ttl=60",
        )
        hit = await cache.handle(request(), function)
        assert (hit.cache_status, hit.body) == ("HIT", b"new")

    asyncio.run(scenario())
    assert function.calls == 2


def test_a_request_no_store_may_be_answered_from_the_cache_but_stores_nothing(cache: HttpCache) -> None:
    """RFC 9111 §5.2.1.5: nothing of this exchange is stored; a stored response may still answer."""
    function = Function(headers=[(b"cache-control", b"max-age=60")], body=b"old")
    no_store = [(b"cache-control", b"no-store")]

    async def scenario() -> None:
        miss = await cache.handle(request("/new", headers=no_store), function)
        assert (miss.cache_status, len(cache)) == ("MISS", 0)
        await cache.handle(request(), function)
        function.body = b"new"
        hit = await cache.handle(request(headers=no_store), function)
        assert (hit.cache_status, hit.body) == ("HIT", b"old")

    asyncio.run(scenario())
    assert function.calls == 2


AUTH = (b"authorization", b"Bearer secret")
# What the node's [auth] check puts on a request it authenticated (an API key in x-api-key, say):
# RFC 9111 3.5 treats it as it treats Authorization.
IDENTITY = (b"x-edge-auth-subject", b"key:3f9c0a1b2d4e")


@pytest.mark.parametrize("credential", [AUTH, IDENTITY], ids=["authorization", "node-auth-identity"])
@pytest.mark.parametrize(
    ("cache_control", "served"),
    [
        (b"max-age=60", False),
        (b"public, max-age=60", True),
        (b"s-maxage=60", True),
        (b"max-age=60, must-revalidate", True),
    ],
)
def test_authorized_requests_are_served_only_public_s_maxage_or_must_revalidate_entries(
    cache: HttpCache, cache_control: bytes, served: bool, credential: tuple[bytes, bytes]
) -> None:
    function = Function(headers=[(b"cache-control", cache_control)])

    async def scenario() -> str:
        await cache.handle(request(), function)
        return (await cache.handle(request(headers=[credential]), function)).cache_status

    assert asyncio.run(scenario()) == ("HIT" if served else "BYPASS")
    assert function.calls == (1 if served else 2)


@pytest.mark.parametrize("credential", [AUTH, IDENTITY], ids=["authorization", "node-auth-identity"])
@pytest.mark.parametrize(("cache_control", "stored"), [(b"max-age=60", False), (b"public, max-age=60", True)])
def test_responses_to_authorized_requests_are_stored_only_when_public(
    cache: HttpCache, cache_control: bytes, stored: bool, credential: tuple[bytes, bytes]
) -> None:
    function = Function(headers=[(b"cache-control", cache_control)])

    async def scenario() -> list[str]:
        first = await cache.handle(request(headers=[credential]), function)
        second = await cache.handle(request(), function)
        return [first.cache_status, second.cache_status]

    assert asyncio.run(scenario()) == ["BYPASS", "HIT" if stored else "MISS"]


@pytest.mark.parametrize(
    ("status", "cache_control", "stored"),
    [
        (404, None, True),
        (410, None, True),
        (302, None, False),
        (500, None, False),
        (302, b"max-age=60", True),
        (500, b"max-age=60", True),
        (206, b"max-age=60", False),
    ],
)
def test_only_heuristically_cacheable_statuses_are_stored_without_explicit_freshness(
    cache: HttpCache, clock: Clock, status: int, cache_control: bytes | None, stored: bool
) -> None:
    headers = [] if cache_control is None else [(b"cache-control", cache_control)]
    function = Function(status, headers)
    second = "HIT" if stored else "MISS"
    assert statuses(cache, function, clock, [0, 1], default_ttl=60) == ["MISS", second]


def test_default_ttl_applies_only_when_the_response_says_nothing(cache: HttpCache, clock: Clock) -> None:
    silent = Function(headers=[(b"content-type", b"text/plain")])
    assert statuses(cache, silent, clock, [0, 59, 2], path="/silent", default_ttl=60) == [
        "MISS",
        "HIT",
        "MISS",
    ]
    public = Function(headers=[(b"cache-control", b"public")])
    assert statuses(cache, public, clock, [0, 59, 2], path="/public", default_ttl=60) == [
        "MISS",
        "HIT",
        "MISS",
    ]
    explicit = Function(headers=[(b"cache-control", b"max-age=5")])
    assert statuses(cache, explicit, clock, [0, 4, 2], path="/explicit", default_ttl=60) == [
        "MISS",
        "HIT",
        "MISS",
    ]
    no_cache = Function(headers=[(b"cache-control", b"no-cache")])
    assert statuses(cache, no_cache, clock, [0, 1], path="/no-cache", default_ttl=60) == ["MISS", "MISS"]


def test_without_freshness_or_default_ttl_nothing_is_stored(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[(b"content-type", b"text/plain")])
    assert statuses(cache, function, clock, [0, 1]) == ["MISS", "MISS"]
    assert len(cache) == 0


def test_a_new_function_version_never_serves_the_old_versions_content(cache: HttpCache) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60")], body=b"v1")

    async def scenario() -> None:
        await cache.handle(request(version="v1"), function)
        function.body = b"v2"
        fresh = await cache.handle(request(version="v2"), function)
        assert (fresh.cache_status, fresh.body) == ("MISS", b"v2")
        old = await cache.handle(request(version="v1"), function)
        assert (old.cache_status, old.body) == ("HIT", b"v1")

    asyncio.run(scenario())


def test_the_query_string_is_part_of_the_key(cache: HttpCache) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60")])

    async def scenario() -> list[str]:
        results = [await cache.handle(request(query=query), function) for query in (b"a=1", b"a=2", b"a=1")]
        return [result.cache_status for result in results]

    assert asyncio.run(scenario()) == ["MISS", "MISS", "HIT"]


def test_other_methods_bypass_and_a_successful_unsafe_one_invalidates_its_url(cache: HttpCache) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60")])

    async def scenario() -> list[str]:
        methods = ["GET", "OPTIONS", "GET", "POST", "GET"]
        return [(await cache.handle(request(method=method), function)).cache_status for method in methods]

    assert asyncio.run(scenario()) == ["MISS", "BYPASS", "HIT", "BYPASS", "MISS"]


def test_a_disabled_cache_invokes_every_time(clock: Clock) -> None:
    from cache_fakes import make_cache

    cache = make_cache(clock, enabled=False)
    function = Function(headers=[(b"cache-control", b"max-age=60")])
    assert statuses(cache, function, clock, [0, 1]) == ["BYPASS", "BYPASS"]
    assert function.calls == 2
