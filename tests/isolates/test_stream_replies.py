"""The host side of streamed replies without an isolate: StreamReplies fed messages by hand."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from isolates.backends import RESPONSE, STREAM, Stream, StreamCut, StreamReplies

HEADERS = ((b"content-type", b"text/plain"),)


async def drain(stream: Stream) -> tuple[list[bytes], str]:
    pieces: list[bytes] = []
    try:
        async for data in stream:
            pieces.append(data)
    except StreamCut as exc:
        return pieces, str(exc)
    return pieces, ""


def replies(limit: int = 1 << 20, grace: float = 1.0) -> tuple[StreamReplies, list[float]]:
    overdue: list[float] = []
    return StreamReplies(asyncio.get_running_loop(), grace, overdue.append, limit), overdue


def test_a_stream_complete_in_its_first_batch_is_joined_into_a_response() -> None:
    async def body() -> None:
        streams, _ = replies()
        streams.start(1, 200, HEADERS)
        streams.chunk(1, b"a", True)
        streams.chunk(1, b"b", True)
        streams.chunk(1, b"", False)
        assert streams.settle() == [(RESPONSE, 1, 200, HEADERS, b"ab")]
        assert len(streams) == 0

    asyncio.run(body())


def test_a_stream_that_goes_on_is_read_as_its_pieces_arrive() -> None:
    async def body() -> None:
        streams, _ = replies()
        streams.start(1, 200, HEADERS)
        streams.chunk(1, b"a", True)
        [reply] = streams.settle()
        assert reply[:4] == (STREAM, 1, 200, HEADERS)
        stream: Stream = reply[4]
        streams.opened(1, stream, time.monotonic() + 10)
        assert await anext(stream) == b"a"
        streams.chunk(1, b"b", True)
        streams.chunk(1, b"c", True)
        assert await anext(stream) == b"bc"  # what waited is joined
        streams.chunk(1, b"", False)
        assert await drain(stream) == ([], "")
        assert len(streams) == 0
        streams.chunk(1, b"late", True)  # a piece for a stream that ended is dropped

    asyncio.run(body())


def test_an_error_before_the_stream_was_answered_is_a_plain_error() -> None:
    async def body() -> None:
        streams, _ = replies()
        streams.start(1, 200, HEADERS)
        streams.chunk(1, b"a", True)
        assert streams.error(1, "ValueError: x") is False
        assert streams.settle() == []

    asyncio.run(body())


def test_an_error_after_it_was_answered_cuts_the_stream_off() -> None:
    async def body() -> None:
        streams, _ = replies()
        streams.start(1, 200, HEADERS)
        streams.chunk(1, b"a", True)
        [reply] = streams.settle()
        streams.opened(1, reply[4], time.monotonic() + 10)
        assert streams.error(1, "ValueError: x") is True
        assert streams.error(2, "not a stream") is False
        assert await drain(reply[4]) == ([b"a"], "ValueError: x")

    asyncio.run(body())


def test_a_stream_read_too_slowly_is_cut_off_past_the_limit() -> None:
    async def body() -> None:
        streams, _ = replies(limit=1 << 20)
        streams.start(1, 200, HEADERS)
        [reply] = streams.settle()
        streams.opened(1, reply[4], time.monotonic() + 10)
        streams.chunk(1, b"x" * (1 << 20), True)
        streams.chunk(1, b"y", True)
        pieces, cut = await drain(reply[4])
        assert len(b"".join(pieces)) == (1 << 20) + 1
        assert cut == "the client fell more than 1 MiB behind the function"

    asyncio.run(body())


def test_a_stream_still_open_past_deadline_and_grace_is_cut_off_and_reported() -> None:
    async def body() -> None:
        streams, overdue = replies(grace=0.05)
        streams.timeout_message = "function f timed out after 10 ms"
        streams.start(1, 200, HEADERS)
        [reply] = streams.settle()
        streams.opened(1, reply[4], time.monotonic() + 0.01)
        assert await drain(reply[4]) == ([], "function f timed out after 10 ms")
        assert len(overdue) == 1 and overdue[0] <= asyncio.get_running_loop().time() - 0.05

    asyncio.run(body())


def test_cut_all_ends_every_open_stream() -> None:
    async def body() -> None:
        streams, _ = replies()
        opened: list[Any] = []
        for seq in (1, 2):
            streams.start(seq, 200, HEADERS)
        for reply in streams.settle():
            streams.opened(reply[1], reply[4], time.monotonic() + 10)
            opened.append(reply[4])
        streams.start(3, 200, HEADERS)  # started, not settled: dropped too
        assert streams.cut_all("its isolate stopped") == 2
        assert [await drain(stream) for stream in opened] == [([], "its isolate stopped")] * 2
        assert streams.settle() == []

    asyncio.run(body())


def test_a_closed_stream_ends_its_reader_and_drops_what_comes() -> None:
    async def body() -> None:
        stream = Stream(asyncio.get_running_loop())
        reader = asyncio.create_task(drain(stream))
        await asyncio.sleep(0)
        stream.close()
        assert await reader == ([], "")
        assert stream.feed(b"x" * 100, True) is True
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

    asyncio.run(body())
