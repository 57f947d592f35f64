"""The node's ASGI front end: each ASGI request becomes an `Exchange` for the core (core.py).

The reference front end: it runs under any ASGI server, and the in-process tests drive it.
Under `edge node`, granian serves the RSGI one (rsgi.py) unless `interface = "asgi"`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from edge.node.core import (
    SETTINGS_VARIABLE,
    Headers,
    IncompleteBody,
    NodeCore,
    backend_options,
    build_node,
    scrub_environment,
)
from edge.node.settings import NodeSettings
from edge.node.source import FunctionSource
from isolates.backends import backend_factory
from isolates.pool import BackendLookup

__all__ = [
    "SETTINGS_VARIABLE",
    "FunctionSource",
    "NodeApp",
    "backend_options",
    "create_app",
    "scrub_environment",
]

log = logging.getLogger("edge.node")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class NodeApp(NodeCore):
    """The ASGI application of one node worker process."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            exchange = _AsgiExchange(scope, receive, send)
            await self.handle(exchange)
            answer = exchange.answer
            if answer is not None:
                await send(answer)
                await send({"type": "http.response.body", "body": exchange.body})
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("node start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _AsgiExchange:
    """One ASGI HTTP request; a plain answer is kept and sent once the core returns."""

    __slots__ = ("_receive", "_send", "answer", "body", "client", "headers", "method", "path", "query")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope["query_string"]
        self.headers: Headers = scope["headers"]
        client = scope.get("client")
        self.client = f"{client[0]}:{client[1]}" if client else ""
        self._receive = receive
        self._send = send
        self.answer: dict[str, Any] | None = None
        self.body = b""

    async def read_body(self, limit: int) -> bytes | None:
        chunks = []
        size = 0
        receive = self._receive
        while True:
            message = await receive()
            # Granian reports a cut-off body and an invalid chunked encoding as a disconnect.
            if message["type"] != "http.request":
                raise IncompleteBody
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def named(self) -> dict[bytes, bytes]:
        # One C-level pass over the headers instead of a Python loop (repeated names: last wins).
        return dict(self.headers)

    def respond(self, status: int, headers: Headers, body: bytes, request_id: str) -> None:
        headers = [*headers, (b"x-request-id", request_id.encode())]
        self.answer = {"type": "http.response.start", "status": status, "headers": headers}
        self.body = body

    async def start_stream(self, status: int, headers: Headers, request_id: str) -> None:
        headers = [*headers, (b"x-request-id", request_id.encode())]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def send_piece(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end_stream(self, complete: bool) -> None:
        # Without its last message the server ends the response abnormally (no final chunk).
        if complete:
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def disconnected(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass


def create_app(
    backends: BackendLookup = backend_factory,
    metrics: bool = True,
    *,
    settings: NodeSettings | None = None,
    recycle: Callable[[], None] | None = None,
) -> NodeApp:
    """Granian's factory for the ASGI front end (see `build_node`).

    `backends` picks each isolation level's backend (a benchmark passes a canned one); `metrics`
    False counts nothing per request (loadtest/metrics_cost.py's baseline)."""
    return build_node(NodeApp, backends, metrics, settings=settings, recycle=recycle)
