"""RFC 9213: CDN-Cache-Control takes precedence over Cache-Control and Expires for this cache."""

from __future__ import annotations

import asyncio
import email.utils

import pytest
from cache_fakes import START, Clock, Function, header, request

from cache import CacheResult, HttpCache
from cache._directives import parse_targeted


def statuses(cache: HttpCache, clock: Clock, function: Function, steps: list[float]) -> list[str]:
    async def scenario() -> list[str]:
        seen: list[str] = []
        for step in steps:
            clock.advance(step)
            seen.append((await cache.handle(request(), function)).cache_status)
        return seen

    return asyncio.run(scenario())


def test_cdn_cache_control_max_age_wins_over_cache_control(cache: HttpCache, clock: Clock) -> None:
    """§2.1: the targeted field's directives replace Cache-Control's for the targeted cache."""
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"cdn-cache-control", b"max-age=600")])
    assert statuses(cache, clock, function, [0, 599, 2]) == ["MISS", "HIT", "MISS"]


def test_cache_control_no_store_does_not_stop_a_cdn_cache_control_max_age(
    cache: HttpCache, clock: Clock
) -> None:
    """§2.1's example: no-store for every other cache, ten minutes for the CDN."""
    function = Function(headers=[(b"cache-control", b"no-store"), (b"cdn-cache-control", b"max-age=600")])
    assert statuses(cache, clock, function, [0, 1]) == ["MISS", "HIT"]


@pytest.mark.parametrize("targeted", [b"no-store", b"private", b"max-age=60, no-store"])
def test_cdn_cache_control_no_store_or_private_keeps_the_response_out(
    cache: HttpCache, clock: Clock, targeted: bytes
) -> None:
    function = Function(headers=[(b"cache-control", b"public, max-age=60"), (b"cdn-cache-control", targeted)])
    assert statuses(cache, clock, function, [0, 1]) == ["MISS", "MISS"]


def test_cdn_cache_control_makes_expires_inoperative(cache: HttpCache, clock: Clock) -> None:
    expires = email.utils.formatdate(START + 600, usegmt=True).encode()
    function = Function(headers=[(b"expires", expires), (b"cdn-cache-control", b"must-revalidate")])
    assert statuses(cache, clock, function, [0, 1]) == ["MISS", "MISS"]


@pytest.mark.parametrize("invalid", [b"max-age=60,,", b"Max-Age=600", b"", b"max-age=(600"])
def test_an_invalid_or_empty_cdn_cache_control_is_ignored(
    cache: HttpCache, clock: Clock, invalid: bytes
) -> None:
    """§2.2: a field that does not parse as a Dictionary is ignored: Cache-Control applies."""
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"cdn-cache-control", invalid)])
    assert statuses(cache, clock, function, [0, 59, 2]) == ["MISS", "HIT", "MISS"]


def test_a_decimal_max_age_is_not_a_lifetime(cache: HttpCache, clock: Clock) -> None:
    """§2.2: a directive of another type than its own is not coerced; invalid freshness is stale."""
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"cdn-cache-control", b"max-age=60.5")])
    assert statuses(cache, clock, function, [0, 1]) == ["MISS", "MISS"]


def test_the_last_occurrence_of_a_directive_wins_and_parameters_are_ignored() -> None:
    assert parse_targeted(b'max-age=10;x=1, max-age=100, no-cache=("a" "b"), private, x=?0') == {
        "max-age": "100",
        "no-cache": "a, b",
        "private": None,
    }


def test_cdn_cache_control_is_forwarded_downstream_on_misses_and_hits(cache: HttpCache) -> None:
    """A CDN in front of the edge is targeted too (RFC 9213 lets the cache forward the field)."""
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"cdn-cache-control", b"max-age=600")])

    async def scenario() -> list[CacheResult]:
        return [await cache.handle(request(), function) for _ in range(2)]

    for result in asyncio.run(scenario()):
        assert header(result.headers, b"cdn-cache-control") == b"max-age=600"
        assert header(result.headers, b"cache-control") == b"max-age=60"


def test_cdn_cache_control_alone_does_not_share_responses_to_authorized_requests(cache: HttpCache) -> None:
    """RFC 9111 §3.5: only public, s-maxage and must-revalidate do that, in whichever field."""
    function = Function(headers=[(b"cdn-cache-control", b"max-age=600")])

    async def scenario() -> list[str]:
        await cache.handle(request(), function)
        asking = request(headers=[(b"authorization", b"Bearer x")])
        return [(await cache.handle(asking, function)).cache_status]

    assert asyncio.run(scenario()) == ["BYPASS"]
