"""The byte bound, object size limit, purges by path, prefix, tag and function, and the counters."""

from __future__ import annotations

import asyncio

import pytest
from cache_fakes import Clock, Function, header, make_cache, request

from cache import CacheResult, HttpCache

FRESH = (b"cache-control", b"max-age=60")


def get(cache: HttpCache, *paths: str, function: str = "fn", **kw: object) -> list[str]:
    """GET each path once (with a fresh, tag-less response) and report the cache statuses."""
    fake = Function(headers=[FRESH])

    async def scenario() -> list[str]:
        return [
            (await cache.handle(request(path, function=function, **kw), fake)).cache_status  # type: ignore[arg-type]
            for path in paths
        ]

    return asyncio.run(scenario())


def test_the_byte_bound_evicts_the_least_recently_used_entry(clock: Clock) -> None:
    cache = make_cache(clock, max_bytes=3000, max_object_bytes=3000)
    function = Function(headers=[FRESH], body=b"x" * 1000)  # 1343 bytes each, with bookkeeping

    async def scenario() -> list[str]:
        seen: list[str] = []
        for path in ("/a", "/b", "/a", "/c", "/a", "/b"):
            seen.append((await cache.handle(request(path), function)).cache_status)
        return seen

    assert asyncio.run(scenario()) == ["MISS", "MISS", "HIT", "MISS", "HIT", "MISS"]
    assert cache.stats.evictions == 2
    assert cache.stats.bytes == 2 * 1343 <= 3000
    assert (cache.stats.entries, len(cache)) == (2, 2)


def test_an_object_over_max_object_bytes_is_not_stored(clock: Clock) -> None:
    cache = make_cache(clock, max_bytes=10_000, max_object_bytes=1000)
    big, small = Function(headers=[FRESH], body=b"x" * 1000), Function(headers=[FRESH], body=b"x" * 500)

    async def scenario() -> list[str]:
        results = [await cache.handle(request("/big"), big) for _ in range(2)]
        results += [await cache.handle(request("/small"), small) for _ in range(2)]
        return [r.cache_status for r in results]

    assert asyncio.run(scenario()) == ["MISS", "MISS", "MISS", "HIT"]
    assert (big.calls, cache.stats.stores, cache.stats.evictions) == (2, 1, 0)


def test_purge_path_removes_every_query_version_and_variant_of_that_path_only(cache: HttpCache) -> None:
    get(cache, "/p", query=b"a=1")
    get(cache, "/p", query=b"a=2")
    get(cache, "/p", version="v2")
    get(cache, "/p/sub", "/other")
    get(cache, "/p", function="neighbour")
    assert cache.purge_path("fn", "/p") == 3
    assert cache.purge_path("fn", "/p") == 0
    assert get(cache, "/p", query=b"a=1") == ["MISS"]
    assert get(cache, "/p", version="v2") == ["MISS"]
    assert get(cache, "/p/sub", "/other") == ["HIT", "HIT"]
    assert get(cache, "/p", function="neighbour") == ["HIT"]


def test_purge_path_removes_vary_variants(cache: HttpCache) -> None:
    function = Function(headers=[FRESH, (b"vary", b"accept-language")])

    async def scenario() -> None:
        for language in (b"de", b"en", b"fr"):
            await cache.handle(request(headers=[(b"accept-language", language)]), function)

    asyncio.run(scenario())
    assert cache.purge_path("fn", "/page") == 3
    assert len(cache) == 0


@pytest.mark.parametrize("prefix", ["/blog", "/blog/"])
def test_purge_prefix_is_segment_aware(cache: HttpCache, prefix: str) -> None:
    get(cache, "/blog", "/blog/a", "/blog/a/b", "/blogger", "/")
    assert cache.purge_prefix("fn", prefix) == 3
    assert cache.purge_prefix("fn", prefix) == 0
    assert get(cache, "/blog", "/blog/a", "/blog/a/b", "/blogger", "/") == [
        "MISS",
        "MISS",
        "MISS",
        "HIT",
        "HIT",
    ]


def test_purge_prefix_slash_removes_the_whole_function(cache: HttpCache) -> None:
    get(cache, "/", "/a", "/a/b")
    get(cache, "/a", function="neighbour")
    assert cache.purge_prefix("fn", "/") == 3
    assert len(cache) == 1


def tagged(cache: HttpCache, path: str, *headers: tuple[bytes, bytes], function: str = "fn") -> CacheResult:
    fake = Function(headers=[FRESH, *headers])
    return asyncio.run(cache.handle(request(path, function=function), fake))


def test_purge_tag_uses_cache_tag_and_surrogate_key(cache: HttpCache) -> None:
    tagged(cache, "/one", (b"cache-tag", b"news, sport"))
    tagged(cache, "/two", (b"surrogate-key", b"news  weather"))
    tagged(cache, "/three", (b"cache-tag", b"sport"), (b"surrogate-key", b"local,weather"))
    tagged(cache, "/four", (b"cache-tag", b"news"), function="neighbour")
    assert cache.purge_tag("fn", "weather") == 2
    assert get(cache, "/one", "/two", "/three") == ["HIT", "MISS", "MISS"]
    assert cache.purge_tag("fn", "news") == 1
    assert cache.purge_tag("fn", "news") == 0
    assert cache.purge_tag("fn", "News") == 0
    assert get(cache, "/four", function="neighbour") == ["HIT"]


def test_tag_headers_are_not_sent_to_clients(cache: HttpCache) -> None:
    miss = tagged(cache, "/one", (b"cache-tag", b"news"), (b"surrogate-key", b"a b"))
    hit = tagged(cache, "/one", (b"cache-tag", b"news"))
    for result in (miss, hit):
        assert header(result.headers, b"cache-tag") is None
        assert header(result.headers, b"surrogate-key") is None
    assert [hit.cache_status, header(hit.headers, b"cache-control")] == ["HIT", b"max-age=60"]


def test_purge_all_removes_one_function_in_every_version(cache: HttpCache) -> None:
    get(cache, "/a", "/b")
    get(cache, "/a", version="v2")
    get(cache, "/a", function="neighbour")
    assert cache.purge_all("fn") == 3
    assert cache.purge_all("fn") == 0
    assert cache.purge_all("nobody") == 0
    assert get(cache, "/a", function="neighbour") == ["HIT"]
    assert (cache.stats.purged, len(cache)) == (3, 1)


def test_a_purge_during_an_invocation_keeps_its_response_out_of_the_cache(cache: HttpCache) -> None:
    gate = asyncio.Event()
    function = Function(headers=[FRESH], gate=gate)

    async def scenario() -> None:
        pending = asyncio.create_task(cache.handle(request(), function))
        await asyncio.sleep(0)
        cache.purge_tag("fn", "anything")
        gate.set()
        assert (await pending).cache_status == "MISS"

    asyncio.run(scenario())
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.purge_path("fn", "page"), "purge_path: expected a path starting with '/', got 'page'"),
        (lambda c: c.purge_prefix("fn", ""), "purge_prefix: expected a path starting with '/', got ''"),
        (
            lambda c: c.purge_tag("fn", "a b"),
            "purge_tag: expected one tag without spaces or commas, got 'a b'",
        ),
        (lambda c: c.purge_tag("fn", ""), "purge_tag: expected one tag without spaces or commas, got ''"),
    ],
)
def test_purge_arguments_are_checked(cache: HttpCache, call: object, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        call(cache)  # type: ignore[operator]
    assert str(raised.value) == message


def test_stats_count_every_outcome(cache: HttpCache, clock: Clock) -> None:
    get(cache, "/a", "/a")
    get(cache, "/b", method="POST")
    assert cache.stats.as_dict() == {
        "hits": 1,
        "misses": 1,
        "stale": 0,
        "bypass": 1,
        "collapsed": 0,
        "refreshes": 0,
        "refresh_failures": 0,
        "revalidated": 0,
        "stores": 1,
        "evictions": 0,
        "purged": 0,
        "bytes": cache.stats.bytes,
        "entries": 1,
    }
    assert cache.stats.bytes > 0
