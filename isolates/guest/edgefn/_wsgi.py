"""`kind = "wsgi"`: a WSGI application (Flask, Bottle, Django's WSGI handler) as an edge handler.

The PEP 3333 environ is built from the `Request`; `start_response` handles `exc_info` and returns
the legacy `write()` callable. What the app returns becomes a whole `Response` (the node may cache
it) when its headers have a Content-Length or the iterable is a list or tuple; otherwise a
streamed `Response` whose body iterates the app's iterable as the node sends it. The iterable's
`close()` is always called: after joining it, at the end of the stream, or when the node closes
the stream early (the client went away).

Request headers whose names contain "_" are left out of the environ, as gunicorn and nginx do:
`X_User` and `X-User` would both become HTTP_X_USER, and a client could pass one for the other.

Standard library only; relative imports (this package is `edgefn` in isolates).
"""

from __future__ import annotations

import sys
from io import BytesIO

from . import Response
from ._kinds import Adapted, KindError, mismatch, positional

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

    from . import Request

__all__ = ["adapt", "environ_of"]

EXPECTED = "a WSGI application: app(environ, start_response)"
_CO_COROUTINE = 0x80
# Request headers the environ carries as CONTENT_TYPE/CONTENT_LENGTH, not HTTP_*.
_CONTENT = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
# Header name as received -> its environ key (see _key).
_KEYS: dict[bytes, str] = {}


def adapt(target: Any, options: dict[str, Any], entrypoint: str) -> Adapted:
    """An edge handler running `target` as a WSGI app; raises KindError when it is not one."""
    shape = positional(target)
    if shape is not None and not shape[0] <= 2 <= shape[1]:
        raise mismatch("wsgi", EXPECTED, target, entrypoint)
    if shape is not None and _is_coroutine_function(target):
        raise KindError(
            f"kind = 'wsgi' expects {EXPECTED}; entrypoint {entrypoint!r} is `async def`: "
            'a WSGI application is synchronous (an ASGI application is kind = "asgi")'
        )
    return Adapted(_Application(target).handle)


def _is_coroutine_function(target: Any) -> bool:
    function = getattr(target, "__func__", target)
    if not hasattr(function, "__code__"):  # a callable instance: its class's __call__
        function = next(
            (k.__dict__["__call__"] for k in type(target).__mro__ if "__call__" in k.__dict__), None
        )
    code = getattr(function, "__code__", None)
    return code is not None and bool(code.co_flags & _CO_COROUTINE)


def environ_of(request: Request) -> dict[str, Any]:
    """The PEP 3333 environ of `request`."""
    body = request.body
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        # PEP 3333: native strings holding the bytes as latin-1; the node decoded UTF-8.
        "PATH_INFO": request.path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": request.query_string,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        # The node read the whole body (a chunked one too): reading wsgi.input to its end is safe.
        "wsgi.input_terminated": True,
    }
    keys = _KEYS
    for name, value in request.headers._pairs():
        key = keys.get(name)
        if key is None:
            key = _key(name)
        if not key:
            continue
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    if body or "CONTENT_LENGTH" in environ:
        environ["CONTENT_LENGTH"] = str(len(body))
    host = environ.get("HTTP_HOST", "")
    name, colon, port = host.rpartition(":")
    if not (colon and port.isdigit() and not name.endswith(":")):
        name, port = host, "80"
    environ["SERVER_NAME"] = name.strip("[]") or "localhost"
    environ["SERVER_PORT"] = port
    if request.client:
        address, _, remote_port = request.client.rpartition(":")
        environ["REMOTE_ADDR"] = address.strip("[]")
        environ["REMOTE_PORT"] = remote_port
    return environ


def _key(name: bytes) -> str:
    """The environ key of a request header ("" to leave it out), remembered for the next request."""
    lowered = name.lower()
    if b"_" in lowered:
        key = ""
    else:
        key = _CONTENT.get(lowered) or "HTTP_" + lowered.decode("latin-1").upper().replace("-", "_")
    if len(_KEYS) < 512:  # the usual header names; a client sending made-up ones does not grow it
        _KEYS[name] = key
    return key


class _Application:
    """The adapted app: one call per request."""

    __slots__ = ("_app",)

    def __init__(self, app: Callable[[dict[str, Any], Any], Iterable[bytes]]) -> None:
        self._app = app

    def handle(self, request: Request) -> Response:
        start = _StartResponse()
        result = self._app(environ_of(request), start)
        streamed = False
        try:
            if isinstance(result, list | tuple):
                return start.whole(result)
            iterator = iter(result)
            first: bytes | None = b""
            if start.status == 0:  # PEP 3333: start_response may come with the first piece
                first = _first(iterator, start)
                if first is None:
                    return start.whole(())
            if any(name.lower() == "content-length" for name, _ in start.headers):
                return start.whole(_chain(first, iterator))
            start.sent = streamed = True
            body = _Body(start, first, iterator, result)
            return Response(body=body, status=start.status, headers=start.headers)
        finally:
            if not streamed:
                _close(result)


def _first(iterator: Iterator[bytes], start: _StartResponse) -> bytes | None:
    """The first non-empty piece (start_response is called by then); None when there is none."""
    for piece in iterator:
        if piece:
            start.check()
            return piece
    return None


def _chain(first: bytes, iterator: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from iterator


class _StartResponse:
    """The `start_response` callable: keeps the status, headers and what `write()` was given."""

    __slots__ = ("headers", "sent", "status", "written")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.written: list[bytes] = []
        # True once the head went to the node: a later start_response(exc_info) re-raises.
        self.sent = False

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no cycle through the traceback
        elif self.status:
            raise RuntimeError("start_response() called a second time without exc_info")
        code = status[:3] if isinstance(status, str) else ""
        if not (code.isdigit() and len(status) > 4 and status[3] == " " and 100 <= int(code) <= 599):
            raise ValueError(f"start_response() status {status!r}; expected a str like '200 OK'")
        for header in headers:
            if not (type(header) is tuple and len(header) == 2 and all(type(p) is str for p in header)):
                raise TypeError(f"start_response() header {header!r}; expected a (name, value) tuple of str")
        self.status = int(code)
        self.headers = list(headers)
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's legacy write(): its data goes before what the iterable yields next."""
        if not self.status:
            raise RuntimeError("write() called before start_response()")
        if data:
            self.written.append(bytes(data))

    def check(self) -> None:
        if not self.status:
            raise RuntimeError("the WSGI app yielded its body before calling start_response()")

    def whole(self, pieces: Iterable[bytes]) -> Response:
        """The complete response, the iterable's pieces joined after what write() was given."""
        data = b"".join(pieces)
        self.check()
        if self.written:
            data = b"".join(self.written) + data
        return Response(body=data, status=self.status, headers=self.headers)


class _Body:
    """A streamed body: what write() was given, then the iterable's pieces; closes the iterable."""

    __slots__ = ("_finished", "_iterator", "_pending", "_result", "_start")

    def __init__(self, start: _StartResponse, first: bytes, iterator: Iterator[bytes], result: Any) -> None:
        self._start = start
        self._pending = [*start.written, first] if first else list(start.written)
        start.written.clear()
        self._iterator = iterator
        self._result = result
        self._finished = False

    def __iter__(self) -> _Body:
        return self

    def __next__(self) -> bytes:
        written, pending = self._start.written, self._pending
        while not pending:
            if self._finished:
                raise StopIteration
            try:
                piece = next(self._iterator)
            except StopIteration:
                piece = b""
                self._finish()
            except BaseException:  # the app failed: the node cuts the stream off
                self.close()
                raise
            if written:
                pending.extend(written)
                written.clear()
            if piece:
                pending.append(piece)
        return pending.pop(0)

    def close(self) -> None:
        """The node stops reading (the client went away): nothing more is sent; the iterable closes."""
        self._pending.clear()
        self._finish()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            _close(self._result)


def _close(result: Any) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()
