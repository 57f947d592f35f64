"""The node's ASGI app in-process with real isolates: the response cache in front of functions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from node_harness import write_function

from cache import CacheSettings
from edge.node.app import NodeApp
from edge.node.local import LocalSource
from edge.node.settings import NodeSettings


class Clock:
    """A wall clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Client:
    """Calls the app the way granian does: scope, receive, send."""

    def __init__(self, app: NodeApp) -> None:
        self.app = app

    async def get(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        raw_path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "method": method,
            "path": raw_path,
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        start, body = sent
        return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body["body"]


@asynccontextmanager
async def node(root: Path, clock: Clock, **settings: Any) -> AsyncIterator[Client]:
    app = NodeApp(NodeSettings(functions=str(root), warm_pool=0, **settings), LocalSource(str(root)), clock)
    await app.startup()
    try:
        yield Client(app)
    finally:
        await app.shutdown()


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


COUNTING = """
    import asyncio

    calls = 0

    async def handler(request):
        global calls
        if request.path.endswith("/count"):
            return {"calls": calls}
        calls += 1
        mode = request.query_string
        if mode == "slow":
            await asyncio.sleep(0.2)
        if mode == "fail" and calls > 1:
            raise RuntimeError("backend down")
        if mode == "hang" and calls > 1:
            await asyncio.sleep(10)
        headers = {"cache-control": "max-age=60, stale-if-error=300", "cache-tag": "t1"}
        return (f"call {calls}", 200, headers)
"""


def test_hit_carries_age_and_x_cache_and_never_runs_the_function(tmp_path: Path) -> None:
    write_function(tmp_path, "fn", COUNTING)
    clock = Clock()

    async def body() -> None:
        async with node(tmp_path, clock) as client:
            status, headers, first = await client.get("/fn/a")
            assert (status, headers["x-cache"], first) == (200, "MISS", b"call 1")
            clock.now += 7
            status, headers, again = await client.get("/fn/a")
            assert (status, headers["x-cache"], headers["age"], again) == (200, "HIT", "7", b"call 1")
            assert headers["x-request-id"]
            assert "cache-tag" not in headers
            assert json.loads((await client.get("/fn/count"))[2]) == {"calls": 1}

    run(body())


def test_fifty_concurrent_misses_run_the_function_once(tmp_path: Path) -> None:
    write_function(tmp_path, "fn", COUNTING)

    async def body() -> None:
        async with node(tmp_path, Clock()) as client:
            replies = await asyncio.gather(*(client.get("/fn/a?slow") for _ in range(50)))
            assert {reply[2] for reply in replies} == {b"call 1"}
            assert len({reply[1]["x-request-id"] for reply in replies}) == 50
            assert json.loads((await client.get("/fn/count"))[2]) == {"calls": 1}

    run(body())


def test_stale_if_error_covers_a_raising_function(tmp_path: Path) -> None:
    write_function(tmp_path, "fn", COUNTING)
    clock = Clock()

    async def body() -> None:
        async with node(tmp_path, clock) as client:
            assert (await client.get("/fn/a?fail"))[2] == b"call 1"
            clock.now += 120  # stale, inside stale-if-error=300
            status, headers, stale = await client.get("/fn/a?fail")
            assert (status, headers["x-cache"], stale) == (200, "STALE", b"call 1")
            clock.now += 600  # past the window: the error goes through
            status, headers, error = await client.get("/fn/a?fail")
            assert status == 500
            assert json.loads(error)["error"] == "RuntimeError: backend down"

    run(body())


def test_stale_if_error_covers_a_timeout(tmp_path: Path) -> None:
    write_function(tmp_path, "fn", COUNTING, "timeout_ms = 200\n")
    clock = Clock()

    async def body() -> None:
        async with node(tmp_path, clock) as client:
            assert (await client.get("/fn/a?hang"))[2] == b"call 1"
            clock.now += 120
            status, headers, stale = await client.get("/fn/a?hang")
            assert (status, headers["x-cache"], stale) == (200, "STALE", b"call 1")

    run(body())


def test_a_new_version_never_serves_the_old_versions_content(tmp_path: Path) -> None:
    write_function(tmp_path, "fn", COUNTING)
    clock = Clock()

    async def body() -> None:
        app = NodeApp(NodeSettings(functions=str(tmp_path), warm_pool=0), LocalSource(str(tmp_path)), clock)
        await app.startup()
        try:
            client = Client(app)
            assert (await client.get("/fn/a"))[1]["x-cache"] == "MISS"
            assert (await client.get("/fn/a"))[1]["x-cache"] == "HIT"
            write_function(tmp_path, "fn", COUNTING.replace("call {calls}", "v2 call {calls}"))
            await app.source.start(app)  # the source deploys the changed directory: a new version
            _status, headers, fresh = await client.get("/fn/a")
            assert (headers["x-cache"], fresh) == ("MISS", b"v2 call 1")
        finally:
            await app.shutdown()

    run(body())


def test_purge_orders_remove_entries(tmp_path: Path) -> None:
    write_function(tmp_path, "fn", COUNTING)

    async def body() -> None:
        async with node(tmp_path, Clock()) as client:
            for path in ("/fn/a", "/fn/b/x", "/fn/c"):
                await client.get(path)
            app = client.app
            assert app.purge("fn", "path", "/fn/a") == 1
            assert app.purge("fn", "prefix", "/fn/b") == 1
            assert app.purge("fn", "tag", "t1") == 1
            assert (await client.get("/fn/c"))[1]["x-cache"] == "MISS"
            assert app.purge("fn", "all", "") == 1
            assert app.purge("fn", "all", "") == 0

    run(body())


def test_cache_can_be_switched_off(tmp_path: Path) -> None:
    write_function(tmp_path, "fn", COUNTING)

    async def body() -> None:
        async with node(tmp_path, Clock(), cache=CacheSettings(enabled=False)) as client:
            assert (await client.get("/fn/a"))[2] == b"call 1"
            _status, headers, again = await client.get("/fn/a")
            assert (again, "x-cache" in headers) == (b"call 2", False)

    run(body())


def test_dynamic_content_is_never_shared_between_concurrent_requests(tmp_path: Path) -> None:
    write_function(
        tmp_path,
        "dyn",
        """
        import asyncio

        calls = 0

        async def handler(request):
            global calls
            calls += 1
            mine = calls
            await asyncio.sleep(0.05)
            return f"call {mine}"
        """,
    )

    async def body() -> None:
        async with node(tmp_path, Clock()) as client:
            first = await asyncio.gather(*(client.get("/dyn") for _ in range(10)))
            later = await asyncio.gather(*(client.get("/dyn") for _ in range(10)))  # under hit-for-pass
            bodies = [reply[2] for reply in [*first, *later]]
            assert sorted(bodies) == sorted(f"call {n}".encode() for n in range(1, 21))
            assert {reply[1]["x-cache"] for reply in [*first, *later]} == {"MISS"}

    run(body())
