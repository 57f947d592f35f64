"""Conditional requests answered 304 from fresh entries, HEAD from GET entries, and Vary."""

from __future__ import annotations

import asyncio

import pytest
from cache_fakes import DATE, Clock, Function, header, request

from cache import CacheResult, HttpCache

LAST_MODIFIED = b"Mon, 13 Nov 2023 10:00:00 GMT"
STORED = [
    (b"content-type", b"text/plain"),
    (b"content-length", b"5"),
    (b"cache-control", b"max-age=60"),
    (b"etag", b'W/"abc"'),
    (b"last-modified", LAST_MODIFIED),
    (b"date", DATE),
    (b"vary", b"accept-encoding"),
]


def ask(cache: HttpCache, clock: Clock, *conditions: tuple[bytes, bytes], method: str = "GET") -> CacheResult:
    """Store STORED, then send one request with the given headers 10 s later."""
    function = Function(headers=STORED)

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        clock.advance(10)
        return await cache.handle(request(method=method, headers=conditions), function)

    result = asyncio.run(scenario())
    assert function.calls == 1
    return result


@pytest.mark.parametrize("if_none_match", [b'"abc"', b'W/"abc"', b'"x", W/"abc"', b'"x",  "abc" , "y"', b"*"])
def test_if_none_match_is_answered_304_with_weak_comparison(
    cache: HttpCache, clock: Clock, if_none_match: bytes
) -> None:
    result = ask(cache, clock, (b"if-none-match", if_none_match))
    assert (result.status, result.body, result.cache_status) == (304, b"", "HIT")
    assert result.headers == [
        (b"cache-control", b"max-age=60"),
        (b"etag", b'W/"abc"'),
        (b"last-modified", LAST_MODIFIED),
        (b"date", DATE),
        (b"vary", b"accept-encoding"),
        (b"age", b"10"),
        (b"x-cache", b"HIT"),
        (b"cache-status", b"edge; hit; ttl=50"),
    ]


def test_a_non_matching_if_none_match_gets_the_full_response(cache: HttpCache, clock: Clock) -> None:
    result = ask(cache, clock, (b"if-none-match", b'"other"'))
    assert (result.status, result.body, result.cache_status) == (200, b"hello", "HIT")


@pytest.mark.parametrize(
    ("since", "status"),
    [(LAST_MODIFIED, 304), (b"Tue, 14 Nov 2023 00:00:00 GMT", 304), (b"Sun, 12 Nov 2023 00:00:00 GMT", 200)],
)
def test_if_modified_since_compares_with_last_modified(
    cache: HttpCache, clock: Clock, since: bytes, status: int
) -> None:
    assert ask(cache, clock, (b"if-modified-since", since)).status == status


def test_if_modified_since_is_ignored_when_if_none_match_is_present(cache: HttpCache, clock: Clock) -> None:
    result = ask(cache, clock, (b"if-none-match", b'"other"'), (b"if-modified-since", LAST_MODIFIED))
    assert result.status == 200


def test_a_conditional_request_for_a_stale_entry_is_judged_against_the_refreshed_one(
    cache: HttpCache, clock: Clock
) -> None:
    function = Function(headers=STORED)

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        clock.advance(61)
        return await cache.handle(request(headers=[(b"if-none-match", b'"abc"')]), function)

    result = asyncio.run(scenario())
    assert (result.status, result.cache_status, function.calls) == (304, "MISS", 2)
    # The function was asked with the entry's validators, not the client's.
    assert function.sent[1] == [(b"if-none-match", b'W/"abc"'), (b"if-modified-since", LAST_MODIFIED)]


def test_head_is_answered_from_a_get_entry_without_body(cache: HttpCache, clock: Clock) -> None:
    result = ask(cache, clock, method="HEAD")
    assert (result.status, result.body, result.cache_status) == (200, b"", "HIT")
    assert header(result.headers, b"content-length") == b"5"


def test_a_head_response_is_not_stored_for_get(cache: HttpCache) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60")], body=b"")

    async def scenario() -> list[tuple[str, bytes]]:
        head = await cache.handle(request(method="HEAD"), function)
        function.body = b"full"
        get = await cache.handle(request(), function)
        return [(head.cache_status, head.body), (get.cache_status, get.body)]

    assert asyncio.run(scenario()) == [("MISS", b""), ("MISS", b"full")]


def test_vary_keeps_a_separate_entry_per_request_header_value(cache: HttpCache) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"vary", b"Accept-Language")])

    async def get(language: bytes) -> tuple[str, bytes]:
        function.body = b"body " + language
        result = await cache.handle(request(headers=[(b"accept-language", language)]), function)
        return result.cache_status, result.body

    async def scenario() -> list[tuple[str, bytes]]:
        return [await get(b"de"), await get(b"en"), await get(b"de"), await get(b"en")]

    assert asyncio.run(scenario()) == [
        ("MISS", b"body de"),
        ("MISS", b"body en"),
        ("HIT", b"body de"),
        ("HIT", b"body en"),
    ]
    assert function.calls == 2


def test_vary_treats_a_missing_header_as_its_own_variant(cache: HttpCache) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"vary", b"accept-language")])

    async def scenario() -> list[str]:
        first = await cache.handle(request(headers=[(b"accept-language", b"de")]), function)
        second = await cache.handle(request(), function)
        return [first.cache_status, second.cache_status]

    assert asyncio.run(scenario()) == ["MISS", "MISS"]


def test_vary_star_is_not_stored(cache: HttpCache) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"vary", b"accept-language, *")])

    async def scenario() -> list[str]:
        return [(await cache.handle(request(), function)).cache_status for _ in range(2)]

    assert asyncio.run(scenario()) == ["MISS", "MISS"]
    assert len(cache) == 0


@pytest.mark.parametrize(
    "extra", [(b"range", b"bytes=0-1,3-4"), (b"if-match", b'"abc"'), (b"if-unmodified-since", LAST_MODIFIED)]
)
def test_multiple_ranges_and_unevaluated_preconditions_go_to_the_function(
    cache: HttpCache, clock: Clock, extra: tuple[bytes, bytes]
) -> None:
    function = Function(headers=STORED)

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        return await cache.handle(request(headers=[extra]), function)

    assert asyncio.run(scenario()).cache_status == "BYPASS"
    assert function.calls == 2


def test_a_response_varying_on_other_headers_replaces_the_old_variants(cache: HttpCache) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"vary", b"accept-language")])
    asking = request(headers=[(b"accept-language", b"de"), (b"accept-encoding", b"gzip")])

    async def scenario() -> list[str]:
        first = await cache.handle(asking, function)
        function.headers = [(b"cache-control", b"max-age=60"), (b"vary", b"accept-encoding")]
        english = request(headers=[(b"accept-language", b"en"), (b"accept-encoding", b"gzip")])
        second = await cache.handle(english, function)
        third = await cache.handle(asking, function)  # same encoding: the new variant answers
        return [first.cache_status, second.cache_status, third.cache_status]

    assert asyncio.run(scenario()) == ["MISS", "MISS", "HIT"]
    assert len(cache) == 1


def test_requests_that_differ_only_in_whitespace_or_coding_case_share_a_variant(cache: HttpCache) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=60"), (b"vary", b"Accept-Encoding")])

    async def scenario() -> list[str]:
        asking = [b"gzip, br", b"GZIP,br", b"gzip ,  BR", b"br"]
        return [
            (await cache.handle(request(headers=[(b"accept-encoding", value)]), function)).cache_status
            for value in asking
        ]

    assert asyncio.run(scenario()) == ["MISS", "HIT", "HIT", "MISS"]


@pytest.mark.parametrize(
    "since",
    [b"Mon, 13 Nov 23 10:00:00 GMT", b"Mon, 13 Nov 2023 10:00:00 UTC", LAST_MODIFIED + b", " + LAST_MODIFIED],
    ids=["two-digit-year", "utc", "list"],
)
def test_an_if_modified_since_that_is_no_single_http_date_is_ignored(
    cache: HttpCache, clock: Clock, since: bytes
) -> None:
    """RFC 9110 §13.1.3: an invalid or list-valued If-Modified-Since is ignored: the full response."""
    assert ask(cache, clock, (b"if-modified-since", since)).status == 200
