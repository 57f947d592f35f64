"""The node's ASGI app with the isolate hop taken out: how fast could the node be at best?

For `bench.py --ceiling` only, never for serving. The app is the node's own (`edge.app.create_app`
with the settings `ceiling_server` passes), so routing, request ids, the cache and response headers
all run; only `SubinterpreterIsolate.submit` is replaced by a canned "hello world" reply, either
already resolved (`instant`) or resolved one event-loop iteration later (`next_iteration`, the
least any cross-thread reply can cost). The gap between these rows and the real one is what the
isolate crossing costs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from edge.app import NodeApp, create_app
from isolates.backends import RESPONSE, Reply
from isolates.backends.subinterpreter import SubinterpreterIsolate

__all__ = ["instant", "next_iteration"]

_HELLO: Reply = (RESPONSE, 0, 200, ((b"content-type", b"text/plain; charset=utf-8"),), b"hello world")


def _instant(self: SubinterpreterIsolate, *request: Any) -> asyncio.Future[Reply]:
    future: asyncio.Future[Reply] = self._loop.create_future()
    future.set_result(_HELLO)
    return future


def _next_iteration(self: SubinterpreterIsolate, *request: Any) -> asyncio.Future[Reply]:
    future: asyncio.Future[Reply] = self._loop.create_future()
    self._loop.call_soon(future.set_result, _HELLO)
    return future


def instant() -> NodeApp:
    """Granian factory: the node app whose isolates answer before `submit` returns."""
    SubinterpreterIsolate.submit = _instant  # type: ignore[method-assign,assignment]
    return create_app()


def next_iteration() -> NodeApp:
    """Granian factory: the node app whose isolates answer at the next event-loop iteration."""
    SubinterpreterIsolate.submit = _next_iteration  # type: ignore[method-assign,assignment]
    return create_app()
