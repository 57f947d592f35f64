"""The node's app in-process, watching a function directory (`edge dev`): an edit that adds,
changes or removes `[auth]` takes effect with the new version, and only serving versions keep a guard."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from node_harness import write_function

from edge.node.app import NodeApp
from edge.node.local import LocalSource
from edge.node.settings import NodeSettings

KEY = "k3y-0123456789abcdef"
AUTH = f'[auth]\ntype = "token"\nkeys_sha256 = ["{hashlib.sha256(KEY.encode()).hexdigest()}"]\n'


async def status(app: NodeApp, headers: dict[str, str] | None = None) -> int:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/fn",
        "query_string": b"",
        "headers": [(name.encode(), value.encode()) for name, value in (headers or {}).items()],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


async def until(app: NodeApp, wanted: int, headers: dict[str, str] | None = None) -> None:
    """Poll until the app answers `wanted` (the watcher polls every 50 ms); at most 10 s."""
    async with asyncio.timeout(10):
        while await status(app, headers) != wanted:
            await asyncio.sleep(0.02)


def test_editing_auth_in_watch_mode_swaps_the_guard(tmp_path: Path) -> None:
    directory = write_function(tmp_path, "fn", "def handler(request):\n    return 'hi'\n")

    async def body() -> None:
        source = LocalSource([str(directory)], watch=True, interval=0.05)
        app = NodeApp(NodeSettings(functions=str(tmp_path), warm_pool=0), source)
        await app.startup()
        try:
            assert await status(app) == 200
            assert app.guards == {}
            (directory / "edge.toml").write_text(AUTH)
            await until(app, 401)
            assert await status(app, {"authorization": f"Bearer {KEY}"}) == 200
            assert len(app.guards) == 1
            (directory / "edge.toml").write_text(AUTH.replace('type = "token"', 'type = "basic"'))
            await until(app, 503)  # a broken edit: the function reports it, nothing is left open
            (directory / "edge.toml").write_text("")
            await until(app, 200)
            assert app.guards == {}
        finally:
            await app.shutdown()

    asyncio.run(body())
