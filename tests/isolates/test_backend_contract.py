"""The contract every isolate backend keeps, run against each one in `BACKENDS` through the pool."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
from node_harness import BOOM, CONTRACT, RUNAWAY, write_function

from edge.node.functions import content_version, isolate_spec
from isolates.backends import BACKENDS, ERROR, RESPONSE, STREAM, LoadError, StreamCut
from isolates.manifest import load_manifest
from isolates.pool import IsolatePool

TEXT = (b"content-type", b"text/plain; charset=utf-8")
JSON = (b"content-type", b"application/json")


@pytest.fixture(params=sorted(BACKENDS))
def isolation(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


class Calls:
    """Calls functions of a pool the way the node app does."""

    def __init__(self, pool: IsolatePool, lines: list[tuple[str, ...]]) -> None:
        self.pool = pool
        self.lines = lines

    async def call(
        self, name: str, query: str = "", body: bytes = b"", method: str = "GET"
    ) -> tuple[Any, ...]:
        function = self.pool.get(name)
        assert function is not None
        isolate = function.pick()
        assert isolate is not None, function.error
        headers = ((b"user-agent", b"contract"), (b"x-many", b"1"), (b"x-many", b"2"))
        deadline = time.monotonic() + function.timeout
        return await isolate.submit(method, "/p", query, headers, body, "req-1", deadline)


@contextlib.asynccontextmanager
async def pool_with(root: Path, *names: str) -> AsyncIterator[Calls]:
    lines: list[tuple[str, ...]] = []
    pool = IsolatePool(lambda *line: lines.append(line), warm_pool=0, abandon_after=0.5)
    try:
        for name in names:
            directory = root / name
            spec = isolate_spec(directory, load_manifest(directory), content_version(directory))
            await pool.deploy(spec.name, [(spec, 100)])
            # The backend the manifest names runs it, no other.
            function = pool.get(spec.name)
            assert function is not None
            isolate = function.pick()
            assert isolate is not None
            assert type(isolate).__module__ == BACKENDS[spec.isolation].partition(":")[0]
        yield Calls(pool, lines)
    finally:
        await pool.close(5.0)


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


def test_every_return_type(tmp_path: Path, isolation: str) -> None:
    write_function(tmp_path, "contract", CONTRACT, f'isolation = "{isolation}"\n')
    expected = {
        "str": (RESPONSE, 200, (TEXT,), b"hi"),
        "dict": (RESPONSE, 200, (JSON,), b'{"a":1}'),
        "tuple3": (RESPONSE, 418, (TEXT, (b"x-extra", b"1")), b"teapot"),
        "response": (RESPONSE, 202, ((b"content-type", b"text/csv"),), b"a,b"),
        "none": (RESPONSE, 200, (), b""),
        "badstatus": (ERROR, 500, "TypeError: handler returned status 1000; expected an int from 100 to 599"),
    }

    async def body() -> None:
        async with pool_with(tmp_path, "contract") as calls:
            for kind, reply in expected.items():
                got = await calls.call("contract", query=kind)
                assert (got[0], *got[2:]) == reply, kind

    run(body())


def test_request_fields_env_state_and_logs(tmp_path: Path, isolation: str) -> None:
    code = """
        import os

        calls = 0

        def handler(request):
            global calls
            calls += 1
            print("called", calls)
            return {
                "method": request.method, "path": request.path, "query": request.query_string,
                "ua": request.headers["User-Agent"], "many": request.headers.getall("x-many"),
                "body": request.text(), "id": request.context.request_id,
                "left": 0 < request.context.remaining_ms <= 5000,
                "env": dict(os.environ), "calls": calls,
            }
    """
    write_function(
        tmp_path, "fields", code, f'isolation = "{isolation}"\ntimeout_ms = 5000\n[env]\nA = "1"\n'
    )

    async def body() -> None:
        async with pool_with(tmp_path, "fields") as calls:
            await calls.call("fields")
            reply = await calls.call("fields", query="q=1", body=b"hi", method="POST")
            assert reply[0] == RESPONSE
            import json

            assert json.loads(reply[4]) == {
                "method": "POST",
                "path": "/p",
                "query": "q=1",
                "ua": "contract",
                "many": ["1", "2"],
                "body": "hi",
                "id": "req-1",
                "left": True,
                "env": {"A": "1"},
                "calls": 2,
            }
            await asyncio.sleep(0.1)
            assert ("fields", calls.lines[0][1], "stdout", "req-1", "called 1") == calls.lines[0]

    run(body())


def test_an_exception_is_a_500_and_the_next_request_is_served(tmp_path: Path, isolation: str) -> None:
    write_function(tmp_path, "boom", BOOM, f'isolation = "{isolation}"\n')

    async def body() -> None:
        async with pool_with(tmp_path, "boom") as calls:
            assert (await calls.call("boom", query="fail"))[2:] == (500, "ValueError: boom")
            assert (await calls.call("boom"))[4] == b'{"calls":2}'

    run(body())


def test_an_async_handler(tmp_path: Path, isolation: str) -> None:
    code = """
        import asyncio

        async def handler(request):
            await asyncio.sleep(0.05)
            return request.query_string
    """
    write_function(tmp_path, "later", code, f'isolation = "{isolation}"\n')

    async def body() -> None:
        async with pool_with(tmp_path, "later") as calls:
            replies = await asyncio.gather(*(calls.call("later", query=str(n)) for n in range(5)))
            assert [reply[4] for reply in replies] == [b"0", b"1", b"2", b"3", b"4"]

    run(body())


def test_a_runaway_handler_gets_504_and_the_function_keeps_serving(tmp_path: Path, isolation: str) -> None:
    write_function(tmp_path, "spin", RUNAWAY, f'isolation = "{isolation}"\ntimeout_ms = 200\n')

    async def body() -> None:
        async with pool_with(tmp_path, "spin") as calls:
            reply = await calls.call("spin", query="forever")
            assert reply[0] == ERROR
            assert reply[2:] == (504, "function spin timed out after 200 ms")
            for _ in range(50):
                reply = await calls.call("spin")
                if reply[0] == RESPONSE:
                    break
                await asyncio.sleep(0.1)
            assert reply[0] == RESPONSE

    run(body())


def test_a_missing_module_fails_the_load_with_its_reason(tmp_path: Path, isolation: str) -> None:
    write_function(tmp_path, "missing", "", f'isolation = "{isolation}"\nentrypoint = "nothere:handler"\n')

    async def body() -> None:
        with pytest.raises(LoadError) as caught:
            async with pool_with(tmp_path, "missing"):
                pass
        assert str(caught.value) == (
            "module not found: entrypoint 'nothere:handler' names module 'nothere', "
            "which is not in the function directory"
        )

    run(body())


STREAMING = """
    import asyncio
    import time

    from edgefn import Response

    def pieces():
        yield "one "
        time.sleep(0.02)
        yield b"two "
        time.sleep(0.02)
        yield "three"

    async def apieces():
        yield "one "
        await asyncio.sleep(0.02)
        yield b"two "
        await asyncio.sleep(0.02)
        yield "three"

    def failing():
        yield "before "
        time.sleep(0.02)
        raise ValueError("mid-stream")

    def failing_at_once():
        raise ValueError("before any piece")
        yield "never"

    def stuck():
        yield "before "
        time.sleep(0.02)
        time.sleep(3)  # in C: the watchdog cannot interrupt it
        yield "never"

    def flood():
        for _ in range(12):
            time.sleep(0.005)
            yield b"x" * (1 << 20)

    def handler(request):
        kind = request.query_string
        if kind == "sync":
            return Response(pieces(), 206, [("x-a", "1"), ("x-a", "2")])
        if kind == "async":
            return Response(apieces(), 206, [("x-a", "1"), ("x-a", "2")])
        if kind == "short":
            return iter([b"all ", b"at ", b"once"])
        if kind == "short-generator":
            return (piece for piece in ("all ", b"at ", "once"))
        return {"failing": failing, "at-once": failing_at_once, "stuck": stuck, "flood": flood}[kind]()
"""


async def read_stream(reply: tuple[Any, ...]) -> tuple[list[bytes], str]:
    """The pieces of a STREAM reply and how it ended ("" or the StreamCut message)."""
    assert reply[0] == STREAM, reply
    pieces: list[bytes] = []
    try:
        async for data in reply[4]:
            pieces.append(data)
    except StreamCut as exc:
        return pieces, str(exc)
    return pieces, ""


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_generator_streams_its_pieces(tmp_path: Path, isolation: str, flavour: str) -> None:
    write_function(tmp_path, "streams", STREAMING, f'isolation = "{isolation}"\n')

    async def body() -> None:
        async with pool_with(tmp_path, "streams") as calls:
            reply = await calls.call("streams", query=flavour)
            assert reply[2:4] == (206, (TEXT, (b"x-a", b"1"), (b"x-a", b"2")))
            pieces, cut = await read_stream(reply)
            assert (b"".join(pieces), cut) == (b"one two three", "")
            assert len(pieces) >= 2  # they came as made, not joined at the end

    run(body())


def test_a_stream_complete_in_one_batch_is_a_plain_response(tmp_path: Path, isolation: str) -> None:
    write_function(tmp_path, "streams", STREAMING, f'isolation = "{isolation}"\n')

    async def body() -> None:
        async with pool_with(tmp_path, "streams") as calls:
            for kind in ("short", "short-generator"):
                reply = await calls.call("streams", query=kind)
                assert reply == (RESPONSE, reply[1], 200, (TEXT,), b"all at once"), kind

    run(body())


def test_a_failing_stream_is_cut_off_and_one_failing_at_once_is_a_500(tmp_path: Path, isolation: str) -> None:
    write_function(tmp_path, "streams", STREAMING, f'isolation = "{isolation}"\n')

    async def body() -> None:
        async with pool_with(tmp_path, "streams") as calls:
            pieces, cut = await read_stream(await calls.call("streams", query="failing"))
            assert (b"".join(pieces), cut) == (b"before ", "ValueError: mid-stream")
            reply = await calls.call("streams", query="at-once")
            assert reply[0::2] == (ERROR, 500) and reply[3] == "ValueError: before any piece"
            assert (await calls.call("streams", query="short"))[4] == b"all at once"

    run(body())


def test_a_stream_stuck_past_its_deadline_is_cut_off_and_the_function_recovers(
    tmp_path: Path, isolation: str
) -> None:
    write_function(tmp_path, "streams", STREAMING, f'isolation = "{isolation}"\ntimeout_ms = 300\n')

    async def body() -> None:
        async with pool_with(tmp_path, "streams") as calls:
            started = time.monotonic()
            pieces, cut = await read_stream(await calls.call("streams", query="stuck"))
            # Cut at the deadline plus abandon_after (0.5 s), not when the sleep ends (3 s).
            assert time.monotonic() - started < 1.5
            assert (b"".join(pieces), cut) == (b"before ", "function streams timed out after 300 ms")
            for _ in range(50):
                reply = await calls.call("streams", query="short")
                if reply[0] == RESPONSE:
                    break
                await asyncio.sleep(0.1)
            assert reply[4] == b"all at once"

    run(body())


def test_a_stream_its_reader_falls_8_mib_behind_is_cut_off(tmp_path: Path, isolation: str) -> None:
    write_function(tmp_path, "streams", STREAMING, f'isolation = "{isolation}"\ntimeout_ms = 5000\n')

    async def body() -> None:
        async with pool_with(tmp_path, "streams") as calls:
            reply = await calls.call("streams", query="flood")
            await asyncio.sleep(0.5)  # not reading meanwhile
            pieces, cut = await read_stream(reply)
            assert cut == "the client fell more than 8 MiB behind the function"
            assert 8 << 20 <= len(b"".join(pieces)) < 12 << 20
            assert (await calls.call("streams", query="short"))[4] == b"all at once"

    run(body())
