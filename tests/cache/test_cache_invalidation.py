"""RFC 9111 §4.4: a successful unsafe request invalidates its URL and same-origin Location URLs."""

from __future__ import annotations

import asyncio

import pytest
from cache_fakes import Function, request

from cache import HttpCache

HOST = (b"host", b"edge.example:8000")


def stored_after_post(cache: HttpCache, status: int, location: tuple[bytes, bytes]) -> list[str]:
    """Store /fn/page, /fn/other and /fn/other?x=1, POST /fn/page answering `location`; what is left."""
    fresh = Function(headers=[(b"cache-control", b"max-age=60")])

    async def scenario() -> list[str]:
        for path, query in (("/fn/page", b""), ("/fn/other", b""), ("/fn/other", b"x=1")):
            await cache.handle(request(path, query=query), fresh)
        await cache.handle(request("/fn/page", method="POST", headers=[HOST]), Function(status, [location]))
        left = []
        for path, query in (("/fn/other", b""), ("/fn/other", b"x=1")):
            result = await cache.handle(request(path, query=query), fresh)
            left.append(f"{path}?{query.decode()} {result.cache_status}")
        return left

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    ("location", "left"),
    [
        ((b"location", b"/fn/other"), ["/fn/other? MISS", "/fn/other?x=1 HIT"]),
        ((b"location", b"other?x=1"), ["/fn/other? HIT", "/fn/other?x=1 MISS"]),
        (
            (b"content-location", b"http://edge.example:8000/fn/other"),
            ["/fn/other? MISS", "/fn/other?x=1 HIT"],
        ),
        ((b"location", b"https://EDGE.example:8000/fn/other"), ["/fn/other? MISS", "/fn/other?x=1 HIT"]),
        ((b"location", b"http://elsewhere.example/fn/other"), ["/fn/other? HIT", "/fn/other?x=1 HIT"]),
        ((b"location", b"ftp://edge.example:8000/fn/other"), ["/fn/other? HIT", "/fn/other?x=1 HIT"]),
    ],
    ids=["path", "relative", "absolute", "other-scheme-same-host", "other-origin", "not-http"],
)
def test_location_and_content_location_of_the_same_origin_are_invalidated(
    cache: HttpCache, location: tuple[bytes, bytes], left: list[str]
) -> None:
    assert stored_after_post(cache, 201, location) == left


def test_an_error_invalidates_nothing(cache: HttpCache) -> None:
    assert stored_after_post(cache, 400, (b"location", b"/fn/other")) == [
        "/fn/other? HIT",
        "/fn/other?x=1 HIT",
    ]


def test_the_target_uri_itself_is_invalidated(cache: HttpCache) -> None:
    fresh = Function(headers=[(b"cache-control", b"max-age=60")])

    async def scenario() -> str:
        await cache.handle(request("/fn/page"), fresh)
        await cache.handle(request("/fn/page", method="DELETE"), Function(204))
        return (await cache.handle(request("/fn/page"), fresh)).cache_status

    assert asyncio.run(scenario()) == "MISS"
