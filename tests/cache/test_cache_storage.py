"""What is stored and for how long: Age, Expires, cookies, hop-by-hop fields, private fields, heuristics."""

from __future__ import annotations

import asyncio
import email.utils

import pytest
from cache_fakes import DATE, START, Clock, Function, header, make_cache, request

from cache import CacheResult, HttpCache


def http_date(timestamp: float) -> bytes:
    return email.utils.formatdate(timestamp, usegmt=True).encode()


def statuses(
    cache: HttpCache, clock: Clock, function: Function, steps: list[float], **kw: object
) -> list[str]:
    async def scenario() -> list[str]:
        seen: list[str] = []
        for step in steps:
            clock.advance(step)
            seen.append((await cache.handle(request(**kw), function)).cache_status)  # type: ignore[arg-type]
        return seen

    return asyncio.run(scenario())


def miss_then_hit(cache: HttpCache, function: Function) -> tuple[CacheResult, CacheResult]:
    async def scenario() -> tuple[CacheResult, CacheResult]:
        return await cache.handle(request(), function), await cache.handle(request(), function)

    return asyncio.run(scenario())


# Age (RFC 9111 §5.1, §4.2.3)


def test_a_list_valued_age_counts_with_its_first_member(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=7260"), (b"age", b"7200, 0")])
    miss, _ = miss_then_hit(cache, function)
    assert header(miss.headers, b"age") == b"7200"
    assert statuses(cache, clock, function, [58, 2]) == ["HIT", "MISS"]


def test_an_invalid_age_is_ignored_and_not_passed_on(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"age", b"soon")])
    miss, hit = miss_then_hit(cache, function)
    assert (header(miss.headers, b"age"), header(hit.headers, b"age")) == (None, b"0")
    assert statuses(cache, clock, function, [59]) == ["HIT"]


# Expires (RFC 9111 §5.3, §4.2.1) and Date (RFC 9110 §6.6.1)


@pytest.mark.parametrize(
    "expires",
    [
        b"Tue, 14 Nov 23 22:14:20 GMT",  # a two-digit year
        b"Tue, 14 Nov 2023 22:14:20 UTC",
        b"Tue, 14 Nov 2023 22:14:20 AEST",
        b"Tue 14 Nov 2023 22:14:20 GMT",
        b"Tue,  14 Nov 2023 22:14:20 GMT",
        b"Tue, 14-Nov-2023 22:14:20 GMT",
        b"Tue, 14 Nov 2023 22.14.20 GMT",
    ],
)
def test_an_expires_that_is_no_http_date_means_already_expired(
    cache: HttpCache, clock: Clock, expires: bytes
) -> None:
    function = Function(headers=[(b"date", DATE), (b"expires", expires)])
    assert statuses(cache, clock, function, [0, 1], default_ttl=600) == ["MISS", "MISS"]
    assert len(cache) == 0


@pytest.mark.parametrize(
    "expires", [b"Tuesday, 14-Nov-23 22:14:20 GMT", b"Tue Nov 14 22:14:20 2023"], ids=["rfc850", "asctime"]
)
def test_expires_in_the_obsolete_formats_is_honoured(cache: HttpCache, clock: Clock, expires: bytes) -> None:
    function = Function(headers=[(b"date", DATE), (b"expires", expires)])  # 60 s after DATE
    assert statuses(cache, clock, function, [0, 59, 2]) == ["MISS", "HIT", "MISS"]


def test_two_expires_fields_make_the_response_stale(cache: HttpCache, clock: Clock) -> None:
    later = http_date(START + 60)
    function = Function(headers=[(b"expires", later), (b"expires", later)])
    assert statuses(cache, clock, function, [0, 1]) == ["MISS", "MISS"]


def test_an_invalid_date_is_ignored_rather_than_aging_the_response(cache: HttpCache, clock: Clock) -> None:
    function = Function(
        headers=[(b"cache-control", b"max-age=60"), (b"date", b"Tue, 14 Nov 23 00:00:00 GMT")]
    )
    assert statuses(cache, clock, function, [0, 59]) == ["MISS", "HIT"]


# Set-Cookie (RFC 9111 §7.3 and §3.1; see cache/README.md)

COOKIE = (b"set-cookie", b"session=alice")


@pytest.mark.parametrize(
    "freshness",
    [
        [(b"cache-control", b"public, max-age=60")],
        [(b"cache-control", b"s-maxage=60")],
        [(b"cdn-cache-control", b"max-age=60")],
    ],
    ids=["public", "s-maxage", "cdn-cache-control"],
)
def test_an_explicitly_shared_response_with_a_cookie_is_stored_without_it(
    cache: HttpCache, freshness: list[tuple[bytes, bytes]]
) -> None:
    function = Function(headers=[*freshness, COOKIE])
    miss, hit = miss_then_hit(cache, function)
    assert header(miss.headers, b"set-cookie") == b"session=alice"  # the client that caused the miss
    assert (hit.cache_status, header(hit.headers, b"set-cookie")) == ("HIT", None)


@pytest.mark.parametrize(
    ("headers", "default_ttl"),
    [
        ([(b"cache-control", b"max-age=60")], 0),
        ([], 60),
        ([(b"last-modified", b"Mon, 13 Nov 2023 10:00:00 GMT")], 0),
    ],
    ids=["max-age", "default-ttl", "heuristic"],
)
def test_a_response_with_a_cookie_and_no_explicit_shared_caching_is_not_stored(
    cache: HttpCache, clock: Clock, headers: list[tuple[bytes, bytes]], default_ttl: int
) -> None:
    function = Function(headers=[*headers, COOKIE])
    assert statuses(cache, clock, function, [0, 1], default_ttl=default_ttl) == ["MISS", "MISS"]


def test_collapsed_waiters_never_get_the_leader_s_cookie(cache: HttpCache) -> None:
    gate = asyncio.Event()
    function = Function(headers=[(b"cache-control", b"public, max-age=60"), COOKIE], gate=gate)

    async def scenario() -> list[CacheResult]:
        tasks = [asyncio.create_task(cache.handle(request(), function)) for _ in range(3)]
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert [header(r.headers, b"set-cookie") for r in results] == [b"session=alice", None, None]
    assert function.calls == 1


# Fields that are never stored (RFC 9111 §3.1, RFC 9110 §7.6.1) and private="field" (§5.2.2.7)


def test_hop_by_hop_fields_and_those_named_in_connection_are_not_stored(cache: HttpCache) -> None:
    function = Function(
        headers=[
            (b"cache-control", b"max-age=60"),
            (b"connection", b"X-Hop, keep-alive"),
            (b"x-hop", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-authenticate", b"Basic"),
            (b"x-kept", b"1"),
        ]
    )
    miss, hit = miss_then_hit(cache, function)
    assert header(miss.headers, b"x-hop") == b"1"
    names = [name for name, _ in hit.headers]
    assert names == [b"cache-control", b"x-kept", b"age", b"x-cache", b"cache-status"]


def test_private_with_field_names_stores_the_response_without_those_fields(cache: HttpCache) -> None:
    function = Function(headers=[(b"cache-control", b'max-age=60, private="X-User"'), (b"x-user", b"alice")])
    miss, hit = miss_then_hit(cache, function)
    assert header(miss.headers, b"x-user") == b"alice"
    assert (hit.cache_status, header(hit.headers, b"x-user")) == ("HIT", None)


# Heuristic freshness (RFC 9111 §4.2.2)

MODIFIED = http_date(START - 1000)


def test_last_modified_gives_a_tenth_of_its_age_as_heuristic_freshness(
    cache: HttpCache, clock: Clock
) -> None:
    function = Function(headers=[(b"last-modified", MODIFIED), (b"date", DATE)])
    assert statuses(cache, clock, function, [0, 99, 2]) == ["MISS", "HIT", "MISS"]


def test_the_heuristic_fraction_and_cap_are_settings(clock: Clock) -> None:
    cache = make_cache(clock, heuristic_fraction=0.5, heuristic_max_seconds=300)
    function = Function(headers=[(b"last-modified", MODIFIED)])
    assert statuses(cache, clock, function, [0, 299, 2]) == ["MISS", "HIT", "MISS"]  # 500 s capped at 300


def test_a_heuristic_fraction_of_zero_turns_heuristics_off(clock: Clock) -> None:
    cache = make_cache(clock, heuristic_fraction=0)
    function = Function(headers=[(b"last-modified", MODIFIED)])
    assert statuses(cache, clock, function, [0, 1]) == ["MISS", "MISS"]


@pytest.mark.parametrize(("status", "stored"), [(200, True), (404, True), (302, False), (500, False)])
def test_only_heuristically_cacheable_statuses_get_heuristic_freshness(
    cache: HttpCache, clock: Clock, status: int, stored: bool
) -> None:
    function = Function(status, [(b"last-modified", MODIFIED)])
    assert statuses(cache, clock, function, [0, 1]) == ["MISS", "HIT" if stored else "MISS"]


def test_the_function_s_default_ttl_wins_over_the_heuristic(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[(b"last-modified", MODIFIED)])
    assert statuses(cache, clock, function, [0, 9, 2], default_ttl=10) == ["MISS", "HIT", "MISS"]


def test_an_invalid_last_modified_gives_no_heuristic_freshness(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[(b"last-modified", b"yesterday")])
    assert statuses(cache, clock, function, [0, 1]) == ["MISS", "MISS"]
