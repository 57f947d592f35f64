"""RFC 9110 §14: one byte range answered from a stored full response (206, or 416)."""

from __future__ import annotations

import asyncio

import pytest
from cache_fakes import Clock, Function, header, request

from cache import CacheResult, HttpCache

BODY = b"0123456789"
STORED = [(b"cache-control", b"max-age=60"), (b"etag", b'"v1"'), (b"content-length", b"10")]


def ranged(
    cache: HttpCache, *asking: tuple[bytes, bytes], method: str = "GET"
) -> tuple[CacheResult, Function]:
    function = Function(headers=STORED, body=BODY)

    async def scenario() -> CacheResult:
        await cache.handle(request(), function)
        return await cache.handle(request(method=method, headers=asking), function)

    return asyncio.run(scenario()), function


@pytest.mark.parametrize(
    ("spec", "content_range", "body"),
    [
        (b"bytes=0-3", b"bytes 0-3/10", b"0123"),
        (b"bytes=7-", b"bytes 7-9/10", b"789"),
        (b"bytes=-2", b"bytes 8-9/10", b"89"),
        (b"bytes=5-100", b"bytes 5-9/10", b"56789"),
        (b"bytes=-50", b"bytes 0-9/10", BODY),
        (b"Bytes = 1-1", b"bytes 1-1/10", b"1"),
    ],
)
def test_one_range_is_answered_206_from_the_stored_body(
    cache: HttpCache, spec: bytes, content_range: bytes, body: bytes
) -> None:
    """§14.1.2 range forms, §14.4 Content-Range, §15.3.7 206."""
    result, function = ranged(cache, (b"range", spec))
    assert (result.status, result.body, result.cache_status, function.calls) == (206, body, "HIT", 1)
    assert header(result.headers, b"content-range") == content_range
    assert header(result.headers, b"content-length") == b"%d" % len(body)
    assert header(result.headers, b"etag") == b'"v1"'


@pytest.mark.parametrize("spec", [b"bytes=10-", b"bytes=-0", b"bytes=20-30"])
def test_an_unsatisfiable_range_is_416_with_the_length(cache: HttpCache, spec: bytes) -> None:
    """§15.5.17: 416 with Content-Range: bytes */length."""
    result, _ = ranged(cache, (b"range", spec))
    assert (result.status, result.body) == (416, b"")
    assert header(result.headers, b"content-range") == b"bytes */10"


@pytest.mark.parametrize("spec", [b"items=0-1", b"bytes=3-1", b"bytes=a-b", b"bytes=-"])
def test_a_range_in_another_unit_or_invalid_is_ignored(cache: HttpCache, spec: bytes) -> None:
    """§14.2: the server may ignore such a Range and send the whole representation."""
    result, _ = ranged(cache, (b"range", spec))
    assert (result.status, result.body, result.cache_status) == (200, BODY, "HIT")


@pytest.mark.parametrize(
    ("if_range", "status"),
    [(b'"v1"', 206), (b'"v0"', 200), (b'W/"v1"', 200), (b"Tue, 14 Nov 2023 22:13:20 GMT", 200)],
)
def test_if_range_applies_the_range_only_for_the_same_strong_etag(
    cache: HttpCache, if_range: bytes, status: int
) -> None:
    """§13.1.5: a weak tag or a date (the entry has no strong date validator) means the whole response."""
    result, _ = ranged(cache, (b"range", b"bytes=0-0"), (b"if-range", if_range))
    assert result.status == status


def test_head_ignores_range(cache: HttpCache) -> None:
    result, _ = ranged(cache, (b"range", b"bytes=0-0"), method="HEAD")
    assert (result.status, result.body) == (200, b"")


def test_a_range_without_a_fresh_entry_goes_to_the_function(cache: HttpCache, clock: Clock) -> None:
    function = Function(206, [(b"content-range", b"bytes 0-0/10")], b"0")

    async def scenario() -> CacheResult:
        return await cache.handle(request(headers=[(b"range", b"bytes=0-0")]), function)

    result = asyncio.run(scenario())
    assert (result.status, result.cache_status, function.sent, len(cache)) == (206, "BYPASS", [None], 0)
