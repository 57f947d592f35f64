"""Async handlers share their isolate's thread: a deadline stops only the request that passed it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from node_harness import write_function
from test_isolate_pool import Harness, harness

TIMED = """
    import asyncio
    import time

    cancelled = 0

    async def handler(request):
        global cancelled
        kind = request.query_string
        if kind == "sleep":
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:  # by asyncio.timeout, through _Deadline
                cancelled += 1
                raise
            return "slept"
        if kind == "cancelled":
            return str(cancelled)
        if kind == "spin":
            until = time.monotonic() + 0.3
            while time.monotonic() < until:
                pass
            return "spun"
        if kind == "nap":
            await asyncio.sleep(0.4)
            return "napped"
        if kind == "forever":  # blocks the loop in its second step
            await asyncio.sleep(0)
            while True:
                pass
        if kind == "hog":  # blocks the loop in its first step
            while True:
                pass
        return "ok"
"""


def submit(h: Harness, query: str, timeout: float) -> asyncio.Future[Any]:
    function = h.pool.get("timed")
    assert function is not None
    isolate = function.pick()
    assert isolate is not None
    h.count += 1
    return isolate.submit("GET", "/", query, (), b"", f"req-{h.count}", time.monotonic() + timeout)


def test_a_request_past_its_deadline_does_not_interrupt_another_one(tmp_path: Path) -> None:
    write_function(tmp_path, "timed", TIMED, "timeout_ms = 200\n")

    async def body() -> None:
        async with harness(tmp_path, "timed") as h:
            for _ in range(3):
                # A waits past its deadline (0.2 s) while B blocks the loop for 0.3 s with its
                # own, later deadline: A's deadline must not land in B's busy loop.
                sleeper = submit(h, "sleep", 0.2)
                spinner = submit(h, "spin", 2.0)
                reply = await spinner
                assert reply[0] == 0, reply
                assert reply[2:] == (200, ((b"content-type", b"text/plain; charset=utf-8"),), b"spun")
                assert (await sleeper)[2:] == (504, "function timed timed out after 200 ms")
            assert (await submit(h, "", 1.0))[4] == b"ok"
            # The guest cancelled each sleeper itself (no task is left waiting out its 5 s).
            assert (await submit(h, "cancelled", 1.0))[4] == b"3"
            assert h.pool.abandoned == 0

    asyncio.run(body())


def test_a_handler_blocking_the_loop_past_its_deadline_is_interrupted_alone(tmp_path: Path) -> None:
    write_function(tmp_path, "timed", TIMED, "timeout_ms = 200\n")

    async def body() -> None:
        async with harness(tmp_path, "timed", abandon_after=1.0) as h:
            napper = submit(h, "nap", 2.0)
            stuck = submit(h, "forever", 0.2)
            assert (await stuck)[2:] == (504, "function timed timed out after 200 ms")
            assert (await submit(h, "hog", 0.1))[2:] == (504, "function timed timed out after 200 ms")
            # The napping request of the same isolate finishes normally, and the isolate serves on
            # (the guest interrupted the loop itself: nothing was abandoned).
            assert (await napper)[4] == b"napped"
            started = time.monotonic()
            assert (await submit(h, "", 1.0))[4] == b"ok"
            assert time.monotonic() - started < 0.5
            assert h.pool.abandoned == 0

    asyncio.run(body())
