"""RFC 9111 §4.3: stale entries with validators are revalidated, and a 304 updates them."""

from __future__ import annotations

import asyncio

import pytest
from cache_fakes import DATE, Clock, Function, Spawned, header, request

from cache import CacheResult, HttpCache

LAST_MODIFIED = b"Mon, 13 Nov 2023 10:00:00 GMT"
TAGGED = [(b"cache-control", b"max-age=10"), (b"etag", b'"v1"'), (b"content-length", b"5")]


def revalidate(
    cache: HttpCache,
    clock: Clock,
    function: Function,
    not_modified: list[tuple[bytes, bytes]],
    after: float = 15,
) -> CacheResult:
    """Store the function's response, let it go stale, then answer the next request with a 304."""

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        clock.advance(after)
        function.status, function.headers, function.body = 304, not_modified, b""
        return await cache.handle(request(), function)

    return asyncio.run(scenario())


def test_a_stale_entry_with_an_etag_is_revalidated_with_if_none_match(cache: HttpCache, clock: Clock) -> None:
    """§4.3.1: the stored ETag goes out as If-None-Match; §4.3.4: a 304 makes the entry usable."""
    function = Function(headers=TAGGED)
    result = revalidate(cache, clock, function, [(b"etag", b'"v1"')])
    assert (result.status, result.body, result.cache_status) == (200, b"hello", "REVALIDATED")
    assert header(result.headers, b"x-cache") == b"REVALIDATED"
    assert header(result.headers, b"cache-status") == b"edge; fwd=stale; fwd-status=304; stored; ttl=10"
    assert function.sent == [None, [(b"if-none-match", b'"v1"')]]
    assert (cache.stats.revalidated, cache.stats.stores) == (1, 2)


def test_the_client_s_own_conditions_and_ranges_are_replaced_by_the_entry_s_validators(
    cache: HttpCache, clock: Clock
) -> None:
    function = Function(headers=[(b"cache-control", b"max-age=10"), (b"last-modified", LAST_MODIFIED)])

    async def scenario() -> None:
        await cache.handle(request(), function)
        clock.advance(15)
        function.status, function.headers = 304, []
        asking = [(b"accept", b"text/html"), (b"if-modified-since", DATE), (b"if-none-match", b'"x"')]
        await cache.handle(request(headers=asking), function)

    asyncio.run(scenario())
    assert function.sent[1] == [(b"accept", b"text/html"), (b"if-modified-since", LAST_MODIFIED)]


def test_a_304_replaces_the_stored_header_fields_but_not_the_body_s_length_or_type(
    cache: HttpCache, clock: Clock
) -> None:
    """§3.2, §4.3.4: the 304's fields replace the stored ones; Content-Length and -Type stay the body's."""
    function = Function(headers=[*TAGGED, (b"x-version", b"1"), (b"content-type", b"text/html")])
    update = [
        (b"etag", b'"v1"'),
        (b"cache-control", b"max-age=100"),
        (b"x-version", b"2"),
        (b"content-length", b"0"),
        (b"content-type", b"application/octet-stream"),
    ]

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        clock.advance(15)
        function.status, function.headers, function.body = 304, update, b""
        await cache.handle(request(), function)
        clock.advance(90)  # fresh for 100 s from the 304
        return await cache.handle(request(), function)

    hit = asyncio.run(scenario())
    assert (hit.cache_status, hit.body, function.calls) == ("HIT", b"hello", 2)
    assert header(hit.headers, b"x-version") == b"2"
    assert header(hit.headers, b"content-length") == b"5"
    assert header(hit.headers, b"content-type") == b"text/html"
    assert header(hit.headers, b"cache-control") == b"max-age=100"


def test_a_304_without_date_does_not_inherit_the_old_date_s_age(cache: HttpCache, clock: Clock) -> None:
    """RFC 9110 §6.6.1: the cache dates a 304 that has no Date, so the update starts fresh."""
    function = Function(headers=[*TAGGED, (b"date", DATE)])

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        clock.advance(100)
        function.status, function.headers = 304, [(b"etag", b'"v1"')]
        await cache.handle(request(), function)
        clock.advance(5)
        return await cache.handle(request(), function)

    hit = asyncio.run(scenario())
    assert (hit.cache_status, header(hit.headers, b"age")) == ("HIT", b"5")


def test_a_304_for_another_etag_leads_to_an_unconditional_request(cache: HttpCache, clock: Clock) -> None:
    """§4.3.4: a 304 that selects no stored response cannot answer; the cache asks again in full."""
    function = Function(headers=TAGGED)
    calls: list[list[tuple[bytes, bytes]] | None] = []

    async def origin(
        headers: list[tuple[bytes, bytes]] | None = None, /
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        calls.append(headers)
        if headers is not None:
            return 304, [(b"etag", b'"v2"')], b""
        return 200, [(b"cache-control", b"max-age=10"), (b"etag", b'"v2"')], b"second"

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        clock.advance(15)
        return await cache.handle(request(), origin)

    result = asyncio.run(scenario())
    assert (result.status, result.body, result.cache_status) == (200, b"second", "MISS")
    assert calls == [[(b"if-none-match", b'"v1"')], None]


def test_a_changed_resource_answers_the_revalidation_in_full_and_replaces_the_entry(
    cache: HttpCache, clock: Clock
) -> None:
    function = Function(headers=TAGGED)

    async def scenario() -> list[tuple[str, bytes]]:
        await cache.handle(request(), function)
        clock.advance(15)
        function.headers, function.body = [(b"cache-control", b"max-age=10"), (b"etag", b'"v2"')], b"fresh"
        changed = await cache.handle(request(), function)
        again = await cache.handle(request(), function)
        return [(changed.cache_status, changed.body), (again.cache_status, again.body)]

    assert asyncio.run(scenario()) == [("MISS", b"fresh"), ("HIT", b"fresh")]


@pytest.mark.parametrize(
    "cache_control",
    [b"max-age=10, must-revalidate", b"max-age=10, proxy-revalidate", b"no-cache", b'no-cache="x-user"'],
)
def test_revalidation_directives_revalidate_instead_of_fetching_again(
    cache: HttpCache, clock: Clock, cache_control: bytes
) -> None:
    """§5.2.2.2, §5.2.2.8, §5.2.2.4 (with or without field names): stale means a conditional request."""
    function = Function(headers=[(b"cache-control", cache_control), (b"etag", b'"v1"')])
    result = revalidate(cache, clock, function, [(b"etag", b'"v1"')])
    assert (result.cache_status, result.body) == ("REVALIDATED", b"hello")
    assert function.sent[1] == [(b"if-none-match", b'"v1"')]


def test_a_no_cache_response_is_revalidated_on_every_request(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[(b"cache-control", b"no-cache"), (b"etag", b'"v1"')])

    async def scenario() -> list[str]:
        await cache.handle(request(), function)
        function.status, function.headers = 304, [(b"etag", b'"v1"')]
        return [(await cache.handle(request(), function)).cache_status for _ in range(3)]

    assert asyncio.run(scenario()) == ["REVALIDATED"] * 3
    assert function.calls == 4


def test_a_request_no_cache_revalidates_a_fresh_entry(cache: HttpCache, clock: Clock) -> None:
    """§5.2.1.4: the client wants validation at the origin, which a conditional request gives."""
    function = Function(headers=TAGGED)

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        function.status, function.headers = 304, [(b"etag", b'"v1"')]
        return await cache.handle(request(headers=[(b"cache-control", b"no-cache")]), function)

    result = asyncio.run(scenario())
    assert (result.cache_status, result.body) == ("REVALIDATED", b"hello")
    assert header(result.headers, b"cache-status") == b"edge; fwd=request; fwd-status=304; stored; ttl=10"


def test_a_304_that_forbids_storing_answers_once_and_drops_the_entry(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=TAGGED)
    result = revalidate(cache, clock, function, [(b"etag", b'"v1"'), (b"cache-control", b"no-store")])
    assert (result.status, result.body, result.cache_status) == (200, b"hello", "REVALIDATED")
    assert len(cache) == 0


def test_a_revalidated_entry_keeps_its_purge_tags(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=[*TAGGED, (b"cache-tag", b"news")])
    revalidate(cache, clock, function, [(b"etag", b'"v1"')])
    assert cache.purge_tag("fn", "news") == 1


def test_a_client_condition_is_answered_from_the_revalidated_entry(cache: HttpCache, clock: Clock) -> None:
    function = Function(headers=TAGGED)

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        clock.advance(15)
        function.status, function.headers = 304, [(b"etag", b'"v1"')]
        return await cache.handle(request(headers=[(b"if-none-match", b'"v1"')]), function)

    result = asyncio.run(scenario())
    assert (result.status, result.body, result.cache_status) == (304, b"", "REVALIDATED")


def test_stale_while_revalidate_refreshes_in_the_background_with_a_conditional_request(
    cache: HttpCache, clock: Clock, spawned: Spawned
) -> None:
    function = Function(
        headers=[(b"cache-control", b"max-age=10, stale-while-revalidate=30"), (b"etag", b'"v1"')]
    )

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        clock.advance(15)
        function.status, function.headers = 304, [(b"etag", b'"v1"')]
        assert (await cache.handle(request(), function)).cache_status == "STALE"
        await spawned.run_all()
        return await cache.handle(request(), function)

    result = asyncio.run(scenario())
    assert (result.cache_status, result.body) == ("HIT", b"hello")
    assert (function.sent[1], cache.stats.revalidated) == ([(b"if-none-match", b'"v1"')], 1)


def test_a_collapsed_waiter_gets_the_revalidated_response(cache: HttpCache, clock: Clock) -> None:
    gate = asyncio.Event()
    function = Function(headers=TAGGED)

    async def scenario() -> list[CacheResult]:
        await cache.handle(request(), function)
        clock.advance(15)
        function.status, function.headers, function.gate = 304, [(b"etag", b'"v1"')], gate
        tasks = [asyncio.create_task(cache.handle(request(), function)) for _ in range(3)]
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert [(r.status, r.body) for r in results] == [(200, b"hello")] * 3
    assert function.calls == 2
    assert [header(r.headers, b"cache-status") for r in results][1:] == [
        b"edge; fwd=stale; fwd-status=304; stored; collapsed; ttl=10"
    ] * 2
