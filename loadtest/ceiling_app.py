"""The node's ASGI app with the isolate hop taken out: how fast could the node be at best?

For `bench.py --ceiling` only, never for serving. The app is the node's own (`edge.node.app.create_app`
with the settings `ceiling_server` passes), so routing, request ids, the cache and response headers
all run; only the isolate backend is a canned one (given to the app as its backend factory, like
any backend): every isolate answers "hello world", either already resolved (`instant`) or resolved
one event-loop iteration later (`next_iteration`, the least any cross-thread reply can cost). The
gap between these rows and the real one is what the isolate crossing costs.
"""

from __future__ import annotations

import asyncio

from edge.node.app import NodeApp, create_app
from isolates.backends import (
    RESPONSE,
    Backend,
    BackendFactory,
    BackendOptions,
    FixedStandby,
    Isolate,
    IsolateSpec,
    LogSink,
    OnStuck,
    Reply,
    RequestHeaders,
)

__all__ = ["CannedBackend", "instant", "next_iteration"]

_HELLO: Reply = (RESPONSE, 0, 200, ((b"content-type", b"text/plain; charset=utf-8"),), b"hello world")


class CannedIsolate:
    """An isolate that runs nothing: every request gets the canned hello reply."""

    recovers = True
    is_async = False
    batches = 0
    wakes = 0
    pending = 0

    def __init__(self, loop: asyncio.AbstractEventLoop, spec: IsolateSpec, at_once: bool) -> None:
        self.spec = spec
        self._loop = loop
        self._at_once = at_once
        self._ready: asyncio.Future[None] = loop.create_future()
        self._ready.set_result(None)

    @property
    def ready(self) -> asyncio.Future[None]:
        return self._ready

    @property
    def alive(self) -> bool:
        return True

    def submit(
        self,
        method: str,
        path: str,
        query: str,
        headers: RequestHeaders,
        body: bytes,
        request_id: str,
        deadline: float,
        client: str = "",
    ) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = self._loop.create_future()
        if self._at_once:
            future.set_result(_HELLO)
        else:
            self._loop.call_soon(future.set_result, _HELLO)
        return future

    async def close(self, timeout: float) -> bool:
        return True


class CannedBackend(FixedStandby):
    """A backend whose isolates answer with the canned reply (`at_once` or one iteration later)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, at_once: bool) -> None:
        self._loop = loop
        self._at_once = at_once

    def take(self, spec: IsolateSpec, on_stuck: OnStuck | None, expect_async: bool = False) -> Isolate:
        return CannedIsolate(self._loop, spec, self._at_once)

    def refill(self) -> None:
        pass

    def saw_async(self) -> None:
        pass

    async def close(self, timeout: float) -> None:
        pass


def _canned(at_once: bool) -> BackendFactory:
    def factory(loop: asyncio.AbstractEventLoop, log_sink: LogSink, options: BackendOptions) -> Backend:
        return CannedBackend(loop, at_once)

    return factory


def instant() -> NodeApp:
    """Granian factory: the node app whose isolates answer before `submit` returns."""
    return create_app(backends=lambda isolation: _canned(at_once=True))


def next_iteration() -> NodeApp:
    """Granian factory: the node app whose isolates answer at the next event-loop iteration."""
    return create_app(backends=lambda isolation: _canned(at_once=False))
