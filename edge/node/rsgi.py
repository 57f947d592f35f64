"""The node's RSGI front end (granian's native interface): the default under `edge node`.

RSGI hands the app a scope object and a protocol object whose calls go straight to granian's
Rust side: no ASGI message dicts, and a whole response is one call. Its headers are `str`
pairs both ways, while the core (cache, isolates) works in bytes: the conversions go through
small memos, since the same header pairs recur request after request.

What RSGI cannot say, and what the node does instead:
- a request header whose value is not visible ASCII is not in the scope (granian leaves it out);
- a response header is sent as the UTF-8 of its value (bytes that are not UTF-8: of their
  latin-1 reading);
- a streamed response cannot be ended as incomplete (dropping the transport sends the final
  chunk). Over HTTP/1 the node shuts the client's TCP connection down instead, found among the
  worker's sockets by its two addresses, so the client sees the body end without its final
  chunk, as under ASGI. Over HTTP/2 (one connection carries other requests too) a cut-off
  stream is held open, unfinished, until the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, overload

from granian._granian import RSGIHTTPProtocol, RSGIProtocolClosed, RSGIProtocolError
from granian.rsgi import Scope

from edge.node.core import Headers, IncompleteBody, NodeCore, build_node
from edge.node.settings import NodeSettings
from isolates.backends import backend_factory
from isolates.pool import BackendLookup

__all__ = ["NodeRsgiApp", "create_app", "shut_down_connection"]

log = logging.getLogger("edge.node")

# Header pairs converted so far (each way); emptied when full, so rare values cannot pile up.
_MEMO_SIZE = 4096
_TO_BYTES: dict[tuple[str, str], tuple[bytes, bytes]] = {}
_TO_STR: dict[tuple[bytes, bytes], tuple[str, str]] = {}
_NAMES: dict[str, bytes] = {}


class NodeRsgiApp(NodeCore):
    """The RSGI application of one node worker process."""

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Granian calls this in the worker before serving: the lifespan start-up."""
        if loop.is_running():
            return  # granian's embedded server: edge/node/embedded.py awaits startup() itself
        try:
            loop.run_until_complete(self.startup())
        except Exception:
            log.exception("node start-up failed")
            raise

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Granian calls this once the worker stopped serving: the lifespan shutdown."""
        if not loop.is_running():  # else edge/node/embedded.py awaits shutdown() itself
            loop.run_until_complete(self.shutdown())

    def __rsgi__(self, scope: Scope, proto: Any) -> Coroutine[Any, Any, None]:
        # Not a coroutine itself: granian awaits the core's, one coroutine less per request.
        if scope.proto == "http":
            return self.handle(_RsgiExchange(scope, proto))
        return _refuse_websocket(proto)


async def _refuse_websocket(proto: Any) -> None:
    # Before an accept, the status is the HTTP one of the refusal (a WebSocket code would crash
    # granian's worker: it panics on a status that is not HTTP).
    proto.close(403)  # the node serves no WebSockets


class _RsgiExchange:
    """One RSGI HTTP request."""

    __slots__ = ("_proto", "_scope", "_transport", "client", "headers", "method", "path", "query")

    def __init__(self, scope: Scope, proto: RSGIHTTPProtocol) -> None:
        self.headers = _HeaderPairs(scope.headers)
        self.method = scope.method
        self.path = scope.path
        query = scope.query_string
        self.query = query.encode() if query else b""
        self.client = scope.client
        self._scope = scope  # for what only a request with a body or a stream needs
        self._proto = proto
        self._transport: Any = None

    def named(self) -> _HeaderNames:
        return _HeaderNames(self.headers.rsgi)

    async def read_body(self, limit: int) -> bytes | None:
        proto = self._proto
        chunks = []
        size = 0
        # Granian's body iterator turns a read error into an empty piece, and it ends a whole
        # body with one empty piece too: an empty piece followed by more is a broken body.
        # (HTTP/1 bodies carry no empty pieces of their own; HTTP/2's may, so there only a
        # Content-Length tells a cut-off body.)
        empty = False
        http2 = self._scope.http_version == "2"
        try:
            async for chunk in proto:
                if empty and not http2:
                    raise IncompleteBody
                if not chunk:
                    empty = True
                    continue
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
        except (RSGIProtocolClosed, RSGIProtocolError) as exc:
            raise IncompleteBody from exc
        return b"".join(chunks)

    def respond(self, status: int, headers: Headers, body: bytes, request_id: str) -> None:
        self._proto.response_bytes(status, _str_headers(headers, request_id), body)

    async def start_stream(self, status: int, headers: Headers, request_id: str) -> None:
        self._transport = self._proto.response_stream(status, _str_headers(headers, request_id))

    async def send_piece(self, data: bytes) -> None:
        # A client gone: the disconnect watch closes the stream.
        with contextlib.suppress(RSGIProtocolClosed, RSGIProtocolError):
            await self._transport.send_bytes(data)

    async def end_stream(self, complete: bool) -> None:
        if not complete:
            # Granian writes what it was given on its own threads, with no word of when: give it
            # a moment, so what the client gets ends where the function's stream broke.
            await asyncio.sleep(_FLUSH_S)
            http2 = self._scope.http_version == "2"
            if http2 or not shut_down_connection(self._scope.server, self.client):
                # Dropping the transport would send the final chunk; hold it until the client leaves.
                await self._proto.client_disconnect()
        self._transport = None  # the last reference: dropping it ends the response

    async def disconnected(self) -> None:
        await self._proto.client_disconnect()


# How long a cut-off stream's pieces get to reach the socket before its connection is shut down.
_FLUSH_S = 0.05
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class _HeaderPairs(Sequence[tuple[bytes, bytes]]):
    """The request's headers as the core's byte pairs, converted on first use (a cached answer
    never needs them)."""

    __slots__ = ("_pairs", "rsgi")

    def __init__(self, rsgi: Any) -> None:
        self.rsgi = rsgi
        self._pairs: Headers | None = None

    def _list(self) -> Headers:
        pairs = self._pairs
        if pairs is None:
            get = _TO_BYTES.get
            pairs = self._pairs = [get(pair) or _to_bytes(pair) for pair in self.rsgi.items()]
        return pairs

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._list())

    def __len__(self) -> int:
        return len(self._list())

    @overload
    def __getitem__(self, index: int) -> tuple[bytes, bytes]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[bytes, bytes]]: ...

    def __getitem__(self, index: int | slice) -> tuple[bytes, bytes] | Sequence[tuple[bytes, bytes]]:
        return self._list()[index]


class _HeaderNames:
    """The request's headers by name, looked up in granian's header map (a repeated name: its
    first value); iterating converts the names only."""

    __slots__ = ("_rsgi",)

    def __init__(self, rsgi: Any) -> None:
        self._rsgi = rsgi

    def get(self, name: bytes, /) -> bytes | None:
        value = self._rsgi.get(name.decode())
        return None if value is None else bytes(value, "utf-8")

    def __contains__(self, name: object, /) -> bool:
        return isinstance(name, bytes) and name.decode() in self._rsgi

    def __iter__(self) -> Iterator[bytes]:
        get = _NAMES.get
        names = self._rsgi.keys()
        return iter([get(name) or _name_to_bytes(name) for name in names])

    def __len__(self) -> int:
        return len(self._rsgi)


def _name_to_bytes(name: str) -> bytes:
    converted = name.encode()
    if len(_NAMES) >= _MEMO_SIZE:
        _NAMES.clear()
    _NAMES[name] = converted
    return converted


def shut_down_connection(server: str, client: str) -> bool:
    """Shut down this process's TCP connection from `client` to port `server` ("host:port" each,
    as RSGI gives them); False when there is none."""
    port = int(server.rpartition(":")[2])
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except (OSError, ValueError):  # closed meanwhile, or /proc/self/fd's own descriptor
            continue
        with sock:  # closes the duplicate only; shutdown acts on the connection itself
            try:
                if sock.family not in _TCP_FAMILIES or sock.getsockname()[1] != port:
                    continue
                host, peer_port = sock.getpeername()[:2]
            except OSError:  # a listening or unconnected socket
                continue
            if client in (f"{host}:{peer_port}", f"[{host}]:{peer_port}"):
                sock.shutdown(socket.SHUT_RDWR)
                return True
    return False


def _to_bytes(pair: tuple[str, str]) -> tuple[bytes, bytes]:
    converted = (pair[0].encode(), pair[1].encode())
    if len(_TO_BYTES) >= _MEMO_SIZE:
        _TO_BYTES.clear()
    _TO_BYTES[pair] = converted
    return converted


def _str_headers(headers: Headers, request_id: str) -> list[tuple[str, str]]:
    get = _TO_STR.get
    converted = [get(pair) or _to_str(pair) for pair in headers]
    converted.append(("x-request-id", request_id))
    return converted


def _to_str(pair: tuple[bytes, bytes]) -> tuple[str, str]:
    name, value = pair
    try:
        converted = (name.decode(), value.decode())
    except UnicodeDecodeError:
        converted = (name.decode("latin-1"), value.decode("latin-1"))
    if len(_TO_STR) >= _MEMO_SIZE:
        _TO_STR.clear()
    _TO_STR[pair] = converted
    return converted


def create_app(
    backends: BackendLookup = backend_factory,
    metrics: bool = True,
    *,
    settings: NodeSettings | None = None,
    recycle: Callable[[], None] | None = None,
) -> NodeRsgiApp:
    """Granian's factory for the RSGI front end (see `build_node`)."""
    return build_node(NodeRsgiApp, backends, metrics, settings=settings, recycle=recycle)
