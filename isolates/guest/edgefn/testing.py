"""Call a handler of any kind in-process, the way a node calls it, and look at the response.

For unit tests (pytest or anything else); nothing is mocked: the entrypoint is adapted to its kind
by the same adapter a node uses (`edgefn._kinds.adapt`), called with an `edgefn.Request`, awaited
on an event loop when it is async, and what it returns is turned into a response by the same
encoder (`edgefn._wire.encode`). Example::

    from edgefn.testing import TestClient, call

    from main import handler, app

    def test_hello():
        response = call(handler, "GET", "/hello", query={"name": "Ada"})
        assert response.status == 200
        assert response.text == "hello Ada"

    def test_asgi_app():
        with TestClient(app, kind="asgi") as client:  # lifespan startup ... shutdown
            assert client.post("/items", json={"id": 1}).json() == {"id": 1}

An exception in the handler (which a node would answer with 500) propagates to the test as that
exception; so does a return value the node could not send (TypeError, as the node's 500 says) and
an entrypoint that does not fit its kind (`edgefn._kinds.KindError`, the node's load error).

Standard library only, like the rest of the guest package; relative imports (this package is
`edgefn` inside isolates and `isolates.guest.edgefn` outside them).
"""

from __future__ import annotations

import json as _json
import sys
import time

from . import Context, Headers, Request
from ._kinds import Adapted, adapt
from ._wire import RESPONSE, STREAM, chunk, encode, header_pairs

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from asyncio import AbstractEventLoop
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from types import TracebackType
    from typing import Any, Self

    HeadersArg = Mapping[str, str] | Iterable[tuple[str, str]] | None
    QueryArg = str | Mapping[str, str | Sequence[str]]

__all__ = ["INVOKE_METHOD", "TestClient", "TestResponse", "call"]

# The method of a direct invocation (the Lambda invoke API); isolates/backends/__init__.py has the same.
INVOKE_METHOD = "<invoke>"
_SEQ = 1


class TestResponse:
    """What the node would send: status, headers (case-insensitive, repeated kept), body bytes.

    `chunks` holds the pieces of a streamed response in the order the handler produced them
    (empty pieces dropped, as the node sends none); for a whole response it is `[body]`.
    """

    __test__ = False  # not a pytest test class, whatever its name says
    __slots__ = ("body", "chunks", "headers", "status", "streamed")

    def __init__(
        self,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...],
        chunks: list[bytes],
        streamed: bool = False,
    ) -> None:
        self.status = status
        self.headers = Headers(headers)
        self.chunks = chunks
        self.body = b"".join(chunks)
        self.streamed = streamed

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode()

    def json(self) -> Any:
        """The body decoded as JSON; raises ValueError when it is not JSON."""
        return _json.loads(self.body)

    def __repr__(self) -> str:
        return f"TestResponse(status={self.status}, body={self.body[:60]!r})"


class TestClient:
    """One function as a node runs it: adapted once, its startup run, then any number of requests.

    Parameters
    ----------
    target: the entrypoint object (`main.handler`, `main.app`), as edge.toml's `entrypoint` names it.
    kind: edge.toml's `kind`: "edge" (default), "lambda", "openfaas", "asgi" or "wsgi".
    lambda_payload: edge.toml's `lambda_payload` for kind = "lambda": "2.0" (default) or "1.0".
    timeout_ms: the request deadline (`request.context.remaining_ms`); an async handler still
        running past it is cancelled and TimeoutError raised (a node answers 504). A sync handler
        is not interrupted here (a node interrupts it).
    memory_mb: what adapters are told the memory limit is (0: none, as in interpreter isolation).
    function, version: what `request.context` says.
    client: `request.client`, "host:port".

    Use it as a context manager: entering runs the kind's startup (an ASGI app's lifespan) and
    leaving runs its shutdown, both on the event loop the requests' async code runs on. Raises
    KindError when `target` does not fit `kind`.
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(
        self,
        target: Any,
        kind: str = "edge",
        *,
        lambda_payload: str = "2.0",
        timeout_ms: int = 30_000,
        memory_mb: int = 0,
        function: str = "test",
        version: str = "test",
        client: str = "127.0.0.1:50000",
    ) -> None:
        entrypoint = f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"
        options = {"lambda_payload": lambda_payload, "memory_mb": memory_mb, "timeout_ms": timeout_ms}
        self.adapted: Adapted = adapt(kind, target, options, entrypoint)
        self.kind = kind
        self.timeout_ms = timeout_ms
        self.function = function
        self.version = version
        self.client = client
        self._loop: AbstractEventLoop | None = None
        self._started = False
        self._ids = 0
        self._deadline = 0.0
        self._lambda_shaped: Callable[[], None] | None = self._warn_lambda_shaped if kind == "edge" else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Run the kind's startup (ASGI lifespan startup); a failure raises, as it fails a load."""
        if self._started:
            return
        if self.adapted.startup is not None:
            try:
                self._run(self.adapted.startup())
            except BaseException:
                self.close()
                raise
        self._started = True

    def close(self) -> None:
        """Run the kind's shutdown (ASGI lifespan shutdown) and close the event loop."""
        try:
            if self._started and self.adapted.shutdown is not None:
                self._run(self.adapted.shutdown())
        finally:
            self._started = False
            if self._loop is not None:
                _close(self._loop)
                self._loop = None

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        query: QueryArg = "",
        headers: HeadersArg = None,
        body: bytes | str = b"",
        json: Any = None,
    ) -> TestResponse:
        """Send one request; returns the response or raises what the handler raised.

        Parameters
        ----------
        method: the HTTP method (or INVOKE_METHOD for a Lambda invoke API call).
        path: the request path as the node passes it (`/NAME/...`); a `?query` part is split off.
        query: the query string, or a mapping of names to a value or a list of values.
        headers: a mapping, or (name, value) pairs to repeat a header. `host: localhost` and
            `content-length` are added unless given, as an HTTP client sends them.
        body: the request body (str is UTF-8 encoded).
        json: a value sent as the JSON body with `content-type: application/json`.
        """
        self.start()
        path, _, in_path = path.partition("?")
        query_string = _query_string(query) or in_path
        data = body.encode() if isinstance(body, str) else bytes(body)
        pairs = list(header_pairs(headers or ()))
        if json is not None:
            data = _json.dumps(json).encode()
            pairs.append((b"content-type", b"application/json"))
        names = {name for name, _ in pairs}
        if b"host" not in names:
            pairs.insert(0, (b"host", b"localhost"))
        if data and b"content-length" not in names:
            pairs.append((b"content-length", str(len(data)).encode()))
        self._ids += 1
        # One deadline for the handler and its streamed body, as on a node.
        deadline = self._deadline = time.monotonic() + self.timeout_ms / 1000
        context = Context(self.function, self.version, f"test-{self._ids:07x}", deadline)
        request = Request(method, path, query_string, Headers(tuple(pairs)), data, context, self.client)
        result = self._call(request)
        return self._response(result)

    def get(self, path: str = "/", **kwargs: Any) -> TestResponse:
        """A GET request (keyword arguments as `request` takes them)."""
        return self.request("GET", path, **kwargs)

    def head(self, path: str = "/", **kwargs: Any) -> TestResponse:
        """A HEAD request."""
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str = "/", **kwargs: Any) -> TestResponse:
        """A POST request."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str = "/", **kwargs: Any) -> TestResponse:
        """A PUT request."""
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str = "/", **kwargs: Any) -> TestResponse:
        """A PATCH request."""
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str = "/", **kwargs: Any) -> TestResponse:
        """A DELETE request."""
        return self.request("DELETE", path, **kwargs)

    def options(self, path: str = "/", **kwargs: Any) -> TestResponse:
        """An OPTIONS request."""
        return self.request("OPTIONS", path, **kwargs)

    def invoke(self, event: Any = None) -> TestResponse:
        """A direct invocation as the Lambda invoke API makes it (kind = "lambda"): `event` sent as JSON.

        The response is what `POST /2015-03-31/functions/NAME/invocations` answers: the handler's
        result as JSON, or an error object (with the X-Amz-Function-Error header) when it raised.
        """
        path = f"/2015-03-31/functions/{self.function}/invocations"
        return self.request(INVOKE_METHOD, path, json=event if event is not None else {})

    def _call(self, request: Request) -> Any:
        handler = self.adapted.handler
        if _is_async(handler):
            return self._run(handler(request), timed=True)
        result = handler(request)
        if type(result) not in (str, bytes, dict, list, tuple) and hasattr(result, "__await__"):
            result = self._run(result, timed=True)
        return result

    def _response(self, result: Any) -> TestResponse:
        message = encode(_SEQ, result, self._lambda_shaped)
        if message[0] == STREAM:
            return TestResponse(message[2], message[3], self._drain(message[4]), streamed=True)
        if message[0] != RESPONSE:
            raise RuntimeError(f"edgefn._wire.encode returned message kind {message[0]}; expected a response")
        return TestResponse(message[2], message[3], [message[4]])

    def _drain(self, body: Any) -> list[bytes]:
        """Every piece of a stream (a sync or async iterator of bytes or str), as the node sends them."""
        if hasattr(body, "__anext__"):

            async def collect() -> list[bytes]:
                return [chunk(piece) async for piece in body]

            pieces: list[bytes] = self._run(collect(), timed=True)
        else:
            pieces = [chunk(piece) for piece in body]
        return [piece for piece in pieces if piece]

    def _warn_lambda_shaped(self) -> None:
        # What the node logs once per isolate (pytest shows it with the test's captured stderr).
        self._lambda_shaped = None
        print(
            f"warning: function {self.function} returned a dict with a 'statusCode' key; it is sent as a"
            ' JSON body with status 200. If this is an AWS Lambda handler, set `kind = "lambda"` in'
            " edge.toml",
            file=sys.stderr,
        )

    def _run(self, awaitable: Any, timed: bool = False) -> Any:
        import asyncio

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        if timed:
            awaitable = _within(awaitable, self._deadline, self.timeout_ms)
        return self._loop.run_until_complete(awaitable)


def call(
    target: Any,
    method: str = "GET",
    path: str = "/",
    *,
    query: QueryArg = "",
    headers: HeadersArg = None,
    body: bytes | str = b"",
    json: Any = None,
    kind: str = "edge",
    lambda_payload: str = "2.0",
    client: str = "127.0.0.1:50000",
    timeout_ms: int = 30_000,
) -> TestResponse:
    """One request to `target` with a fresh TestClient (startup and shutdown around it).

    `call(handler, "POST", "/echo", json={"a": 1})`; the arguments are those of TestClient and
    TestClient.request. Raises what the handler raises.
    """
    with TestClient(target, kind, lambda_payload=lambda_payload, timeout_ms=timeout_ms, client=client) as tc:
        return tc.request(method, path, query=query, headers=headers, body=body, json=json)


async def _within(awaitable: Any, deadline: float, timeout_ms: int) -> Any:
    import asyncio

    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + deadline - time.monotonic()):
            return await awaitable
    except TimeoutError:
        raise TimeoutError(
            f"the handler ran past timeout_ms={timeout_ms}; a node answers 504 (function timed out)"
        ) from None


def _close(loop: AbstractEventLoop) -> None:
    """Close `loop` as asyncio.run does: what is still pending (an ASGI app's lifespan task after a
    failed startup, a stream left unfinished) is cancelled and let finish first."""
    import asyncio

    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def _query_string(query: QueryArg) -> str:
    if isinstance(query, str):
        return query.removeprefix("?")
    from urllib.parse import urlencode

    return urlencode(query, doseq=True)


def _is_async(handler: Any) -> bool:
    # As the isolate runtime tells: a coroutine function, or an object with `async def __call__`.
    target = handler if hasattr(handler, "__code__") else type(handler).__dict__.get("__call__")
    code = getattr(target, "__code__", None)
    return bool(code is not None and code.co_flags & 0x80)  # CO_COROUTINE
