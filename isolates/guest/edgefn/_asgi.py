"""`kind = "asgi"`: an ASGI 3 application (Starlette, FastAPI, Quart, Litestar...) as an edge handler.

Each request runs the app in its own task with an http scope built from the `Request`. The app's
first `http.response.body` decides the shape of the answer: with `more_body` false the handler
returns a whole `Response` (the node may cache it); otherwise a `Response` whose body is an async
iterator of the pieces the app sends while its task keeps running (StreamingResponse, SSE).
`receive()` gives the whole request body as one `http.request`, then waits until the response is
over (or the client is gone) and says `http.disconnect`; `send()` after that raises
`ClientDisconnected`, an OSError, as spec version 2.4 asks.

The lifespan protocol runs in `startup` and `shutdown` (the runtime calls them on the isolate's
loop; shutdown is given the function's timeout); an app that raises on the lifespan scope, or
returns without answering, has no lifespan, as uvicorn's `lifespan = "auto"` decides.
Not supported: ASGI 2 double callables, websockets (the node closes them),
`http.response.trailers` (ignored) and extensions (none are offered).

Known differences from a socket server: the request path reaches the isolate decoded, so
`raw_path` is that path percent-encoded again (an encoded "/" in the original comes back as "/").
The app runs in a task of its own, started eagerly inside the handler's step, so the watchdog
covers its code until it first waits; an app that spins after waiting is not interrupted (the node
answers 504 at the deadline and replaces the stuck isolate).

Standard library only; relative imports (this package is `edgefn` in isolates).
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections import deque

from . import Response
from ._kinds import Adapted, KindError, mismatch, positional

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any

    from . import Request

__all__ = ["ClientDisconnected", "LifespanFailed", "adapt"]

EXPECTED = "an ASGI 3 application: async def app(scope, receive, send)"
_ASGI = {"version": "3.0", "spec_version": "2.4"}
_CO_COROUTINE = 0x80
# Paths that percent-encoding leaves as they are (urllib.parse.quote's always-safe set and ours).
_RAW_SAFE = re.compile(r"[A-Za-z0-9_.\-~/:@!$&'()*+,;=]*")
_ASGI2 = (
    "; ASGI 2 applications (called with the scope, returning a coroutine function of "
    "(receive, send)) are not supported: wrap it with asgiref.compatibility.guarantee_single_callable "
    "or use a framework version that speaks ASGI 3"
)
_GONE = "the response is over: it was complete, or the client went away"
# The app's send() waits for the node to take its pieces once this many are queued.
_QUEUED = 2


class ClientDisconnected(OSError):
    """send() after the response is over or the client went away (ASGI spec 2.4)."""


class LifespanFailed(RuntimeError):
    """The app answered the lifespan protocol with `lifespan.startup.failed` (or `.shutdown.failed`)."""


def adapt(target: Any, options: dict[str, Any], entrypoint: str) -> Adapted:
    """An edge handler running `target` as an ASGI 3 app; raises KindError when it is not one."""
    application = _Application(_check(target, entrypoint), options.get("timeout_ms", 0) / 1000)
    return Adapted(application.handle, application.startup, application.shutdown)


def _check(target: Any, entrypoint: str) -> Callable[[Any, Any, Any], Awaitable[None]]:
    """`target` as something whose call with (scope, receive, send) gives a coroutine."""
    if isinstance(target, type):
        if hasattr(target, "__await__"):  # ASGI 3 as a class: the instance is awaited
            shape = positional(target.__init__)
            if shape is None or shape[0] - 1 <= 3 <= shape[1] - 1:

                async def instance(scope: Any, receive: Any, send: Any) -> None:
                    await target(scope, receive, send)

                return instance
        raise KindError(
            f"kind = 'asgi' expects {EXPECTED}; entrypoint {entrypoint!r} is the class "
            f"{target.__name__}, which looks like an ASGI 2 application{_ASGI2}"
        )
    shape = positional(target)
    if shape is None:  # functools.partial, a builtin...: called as it is
        return target  # type: ignore[no-any-return]
    required, maximum, names = shape
    if not required <= 3 <= maximum:
        if required == 1 and names[:1] == ("scope",):
            raise KindError(
                f"kind = 'asgi' expects {EXPECTED}; entrypoint {entrypoint!r} takes (scope), "
                f"which looks like an ASGI 2 application{_ASGI2}"
            )
        raise mismatch("asgi", EXPECTED, target, entrypoint)
    if not _is_coroutine_function(target):
        raise KindError(
            f"kind = 'asgi' expects {EXPECTED}; entrypoint {entrypoint!r} is not async: "
            "define it with `async def` (a WSGI application(environ, start_response) is "
            'kind = "wsgi")'
        )
    return target  # type: ignore[no-any-return]


def _is_coroutine_function(target: Any) -> bool:
    function = getattr(target, "__func__", target)  # a bound method's function
    if not hasattr(function, "__code__"):
        for klass in type(target).__mro__:
            if "__call__" in klass.__dict__:
                function = klass.__dict__["__call__"]
                break
        function = getattr(function, "__func__", function)  # staticmethod
    code = getattr(function, "__code__", None)
    return code is None or bool(code.co_flags & _CO_COROUTINE)


def scope_of(request: Request, state: dict[str, Any]) -> dict[str, Any]:
    """The ASGI http scope of `request`; `state` is what the lifespan left (copied per request)."""
    path = request.path
    if path.isascii() and _RAW_SAFE.fullmatch(path):
        raw_path = path.encode("ascii")
    else:
        from urllib.parse import quote

        raw_path = quote(path, safe="/:@!$&'()*+,;=~").encode("ascii")
    return {
        "type": "http",
        "asgi": _ASGI,
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "query_string": request.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.headers._pairs()],
        "client": _address(request.client),
        "server": _server(request.headers.get("host", "")),
        "state": dict(state),
    }


def _address(client: str) -> tuple[str, int] | None:
    host, _, port = client.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _server(host: str) -> tuple[str, int] | None:
    if not host:
        return None
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and not name.endswith(":"):
        return name.strip("[]"), int(port)
    return host.strip("[]"), 80


class _Application:
    """The adapted app: serves requests and runs the lifespan protocol."""

    __slots__ = ("_app", "_lifespan", "_running", "_shutdown_timeout", "state")

    def __init__(self, app: Callable[[Any, Any, Any], Awaitable[None]], shutdown_timeout: float) -> None:
        self._app = app
        self._shutdown_timeout = shutdown_timeout or 30.0
        self._lifespan: _Lifespan | None = None
        # Tasks of apps that answered and are still running (streaming, background work).
        self._running: set[asyncio.Task[None]] = set()
        self.state: dict[str, Any] = {}

    async def handle(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        exchange = _Exchange(request.body, loop)
        # Started eagerly: the app runs in its own task (anyio's cancel scopes want that) but at
        # once, inside this step; most apps answer without waiting, so neither side needs another
        # loop iteration, and the watchdog, armed for this step, covers the app's code too.
        task = asyncio.Task(
            self._app(scope_of(request, self.state), exchange.receive, exchange.send),  # type: ignore[arg-type]
            loop=loop,
            eager_start=True,
        )
        if task.done():
            exchange.finished(task)
        else:
            task.add_done_callback(exchange.finished)
        try:
            response = await exchange.head
        except BaseException:  # the deadline passed (or the app failed: then the task is done)
            task.cancel()
            raise
        if not task.done():
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return response

    async def startup(self) -> None:
        lifespan = _Lifespan(self._app, self.state)
        if await lifespan.start():
            self._lifespan = lifespan

    async def shutdown(self) -> None:
        """Let apps still running after their response finish (background tasks), then lifespan."""
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=self._shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._lifespan is not None:
            await asyncio.wait_for(self._lifespan.stop(), self._shutdown_timeout)


class _Exchange:
    """One request's receive() and send(), and what the handler waits for: the response's head."""

    __slots__ = ("_body", "_status", "_stream", "done", "head", "headers")

    def __init__(self, body: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self._body: bytes | None = body
        self._status = 0
        self._stream: _Stream | None = None
        self.headers: list[tuple[str, str]] = []
        # Resolves to the Response the handler returns, or to the app's exception.
        self.head: asyncio.Future[Response] = loop.create_future()
        # Set when the response is complete or the client went away.
        self.done = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        body = self._body
        if body is not None:
            self._body = None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if self.done.is_set():
                raise ClientDisconnected(_GONE)
            if not self._status:
                raise RuntimeError("the ASGI app sent http.response.body before http.response.start")
            body, more = message.get("body", b""), message.get("more_body", False)
            stream = self._stream
            if stream is None and not more:
                self.done.set()
                self.head.set_result(Response(body=bytes(body), status=self._status, headers=self.headers))
                return
            if stream is None:
                stream = self._stream = _Stream(self)
                self.head.set_result(Response(body=stream, status=self._status, headers=self.headers))
            stream.put(bytes(body))
            if not more:
                stream.end()
                self.done.set()
            else:
                await stream.drained()
        elif kind == "http.response.start":
            if self._status:
                raise RuntimeError("the ASGI app sent http.response.start twice")
            status = message["status"]
            if type(status) is not int or not 100 <= status <= 599:
                raise ValueError(
                    f"http.response.start has status {status!r}; expected an int from 100 to 599"
                )
            self._status = status
            self.headers = [
                (bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
                for n, v in message.get("headers", ())
            ]
        elif kind != "http.response.trailers":  # trailers: not sent (HTTP/1.1 clients rarely read them)
            raise RuntimeError(
                f"the ASGI app sent {kind!r}; an http scope takes http.response.start and .body"
            )

    def disconnect(self) -> None:
        """The client is gone (the node closed the stream): receive() and send() say so."""
        self.done.set()

    def finished(self, task: asyncio.Task[None]) -> None:
        """The app's task ended: fail the head or the stream if it ended too soon, else log an error."""
        error = None if task.cancelled() else task.exception()
        if not self.head.done():
            if task.cancelled():
                self.head.cancel()
            else:
                what = "completing" if self._status else "sending http.response.start for"
                self.head.set_exception(
                    error or RuntimeError(f"the ASGI app returned without {what} the response")
                )
        elif self._stream is not None and not self.done.is_set():
            self._stream.fail(
                error or RuntimeError("the ASGI app returned before its last http.response.body")
            )
        elif error is not None and not isinstance(error, ClientDisconnected):
            import traceback

            text = "".join(traceback.format_exception(error)).rstrip("\n")
            print(f"the ASGI app raised after its response was sent:\n{text}", file=sys.stderr)


class _Stream:
    """The body of a streamed response: an async iterator of the pieces the app sends."""

    __slots__ = ("_chunks", "_error", "_exchange", "_reader", "_writer")

    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange
        self._chunks: deque[bytes | None] = deque()  # None: the end
        self._error: BaseException | None = None
        self._reader: asyncio.Future[None] | None = None  # the node waits for a piece
        self._writer: asyncio.Future[None] | None = None  # the app waits for room

    def put(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append(chunk)
            self._wake_reader()

    def end(self) -> None:
        self._chunks.append(None)
        self._wake_reader()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._wake_reader()

    async def drained(self) -> None:
        """Wait while the node has not taken the pieces; raise ClientDisconnected once it is gone."""
        while len(self._chunks) >= _QUEUED and not self._exchange.done.is_set():
            self._writer = asyncio.get_running_loop().create_future()
            await self._writer
        if self._exchange.done.is_set():
            raise ClientDisconnected(_GONE)

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def _wake_writer(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.set_result(None)

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            except BaseException:  # cancelled at the deadline: nobody reads on, tell the app
                self._exchange.disconnect()
                self._wake_writer()
                raise
        chunk = self._chunks.popleft()
        self._wake_writer()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """The node stops reading (the client is gone, or the stream ended)."""
        self._exchange.disconnect()
        self._wake_writer()


class _Lifespan:
    """The lifespan protocol: one task running the app with the lifespan scope for the isolate's life."""

    __slots__ = ("_answer", "_app", "_inbox", "_scope", "_task")

    def __init__(self, app: Callable[[Any, Any, Any], Awaitable[None]], state: dict[str, Any]) -> None:
        self._app = app
        self._scope = {"type": "lifespan", "asgi": _ASGI, "state": state}
        self._inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._answer: asyncio.Future[tuple[str, str]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Run lifespan startup: True when the app completed it, False when it has no lifespan.

        Raises LifespanFailed when the app answers `lifespan.startup.failed`.
        """
        self._task = asyncio.get_running_loop().create_task(self._run())
        # An app that fails its lifespan often raises too, after saying so: retrieved here, not
        # reported again as "Task exception was never retrieved".
        self._task.add_done_callback(lambda task: task.cancelled() or task.exception())
        answer = await self._exchange("lifespan.startup")
        if answer is None:
            return False
        if answer[0] == "lifespan.startup.failed":
            await self._end()
            raise LifespanFailed(_failure(*answer))
        return True

    async def stop(self) -> None:
        answer = await self._exchange("lifespan.shutdown")
        await self._end()
        if answer is not None and answer[0] == "lifespan.shutdown.failed":
            raise LifespanFailed(_failure(*answer))

    async def _end(self) -> None:
        """Cancel an app still waiting on the lifespan scope: its loop is about to close."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait((task,), timeout=1.0)

    async def _exchange(self, event: str) -> tuple[str, str] | None:
        """Give the app `event`; its answer (type, message), None when the app ended instead."""
        task = self._task
        if task is None or task.done():
            return None
        self._answer = asyncio.get_running_loop().create_future()
        await self._inbox.put({"type": event})
        await asyncio.wait((self._answer, task), return_when=asyncio.FIRST_COMPLETED)
        if self._answer.done():
            return self._answer.result()
        error = None if task.cancelled() else task.exception()
        if error is not None and event == "lifespan.startup":
            print(
                f"ASGI lifespan: the app raised {type(error).__name__}: {error} on the lifespan scope; "
                "serving it without lifespan",
                file=sys.stderr,
            )
        elif error is not None:
            raise error
        return None

    async def _run(self) -> None:
        await self._app(self._scope, self._inbox.get, self._send)

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if not kind.startswith("lifespan.") or self._answer is None or self._answer.done():
            raise RuntimeError(f"the ASGI app sent {kind!r} out of turn on the lifespan scope")
        self._answer.set_result((kind, str(message.get("message", ""))))


def _failure(kind: str, message: str) -> str:
    """LifespanFailed's text: the message's last line (Starlette sends a whole traceback, logged)."""
    lines = [line for line in message.splitlines() if line.strip()]
    if len(lines) > 1:
        print(f"ASGI {kind}:\n{message.rstrip()}", file=sys.stderr)
    return f"the ASGI app sent {kind}: {lines[-1].strip()}" if lines else f"the ASGI app sent {kind}"
