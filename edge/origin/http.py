"""Just enough ASGI for the origin: a request wrapper, responses, JSON bodies."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from edge.control.messages import ErrorBody
from edge.origin.service import ApiError
from edge.origin.store import TokenRecord

__all__ = [
    "Disconnected",
    "Receive",
    "Request",
    "Response",
    "Scope",
    "Send",
    "error_response",
    "json_response",
    "send_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_MAX_JSON_BODY = 1024 * 1024


class Disconnected(Exception):
    """The client went away before the whole request body arrived."""


class Request:
    """One HTTP request: method, path, query, headers, path parameters and the body stream."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        self.query = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        self.headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }
        self.params: dict[str, str] = {}
        self.role: str | None = None
        # The stored bearer token, once the app checked it.
        self.token: TokenRecord | None = None

    def bearer(self) -> str | None:
        """The bearer token from `Authorization`, or None."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    def content_length(self) -> int | None:
        """The declared body length; raises ApiError 400 when it is not a number."""
        value = self.headers.get("content-length")
        if value is None:
            return None
        if not value.isdigit():
            raise ApiError(400, f"Content-Length: Expected a number of bytes, got {value!r}")
        return int(value)

    async def stream(self) -> AsyncIterator[bytes]:
        """The body in chunks; raises Disconnected when the client leaves or the body is short."""
        expected = self.content_length()
        received = 0
        while True:
            try:
                message = await self._receive()
            except Exception as exc:
                raise Disconnected(str(exc)) from None
            if message["type"] == "http.disconnect":
                raise Disconnected("client disconnected")
            chunk: bytes = message.get("body", b"")
            received += len(chunk)
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                break
        if expected is not None and received != expected:
            raise Disconnected(f"body ended after {received} of {expected} bytes")

    async def json[T](self, type_: type[T]) -> T:
        """The body decoded as `type_`; raises ApiError 400 naming the bad field."""
        parts = []
        size = 0
        async for chunk in self.stream():
            size += len(chunk)
            if size > _MAX_JSON_BODY:
                raise ApiError(413, f"request body: Expected at most {_MAX_JSON_BODY} bytes of JSON")
            parts.append(chunk)
        try:
            return msgspec.json.decode(b"".join(parts), type=type_)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ApiError(400, f"request body: {exc}") from None


@dataclass
class Response:
    """A complete response; `chunks` streams a large body instead of `body`."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: Callable[[], AsyncIterator[bytes]] | None = None
    length: int | None = None


def json_response(value: object, status: int = 200) -> Response:
    """`value` (a Struct or list of Structs) as JSON."""
    return Response(status, msgspec.json.encode(value))


def error_response(status: int, message: str) -> Response:
    """`{"error": message}` with `status`."""
    headers = [("www-authenticate", "Bearer")] if status == 401 else []
    return Response(status, msgspec.json.encode(ErrorBody(error=message)), headers=headers)


async def send_response(send: Send, response: Response) -> None:
    """Send `response` over ASGI."""
    headers = [(b"content-type", response.content_type.encode())]
    headers += [(k.encode(), v.encode()) for k, v in response.headers]
    if response.status == 204:
        headers = []
    elif response.chunks is None:
        headers.append((b"content-length", str(len(response.body)).encode()))
    elif response.length is not None:
        headers.append((b"content-length", str(response.length).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if response.chunks is None or response.status == 204:
        await send({"type": "http.response.body", "body": b"" if response.status == 204 else response.body})
        return
    async for chunk in response.chunks():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
