"""The baselines: bare granian apps answering "hello world", nothing else (`app`: ASGI, `rsgi_app`: RSGI)."""

from __future__ import annotations

from typing import Any

_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every HTTP request with 200 "hello world"; complete the lifespan handshake."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"hello world"})


class _BareRsgi:
    """The same answer on granian's native RSGI interface."""

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        proto.response_bytes(200, _STR_HEADERS, b"hello world")


_STR_HEADERS = [("content-type", "text/plain; charset=utf-8")]
rsgi_app = _BareRsgi()
