"""The asgi and wsgi adapters in-process: scope and environ building, result conversion, lifespan,
streaming, closing, and the signature checks' messages. Tiny hand-written apps; the frameworks
run on a real node in tests/edge/test_kind_frameworks.py."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from isolates.guest.edgefn import Context, Headers, Request, Response
from isolates.guest.edgefn._asgi import ClientDisconnected, LifespanFailed
from isolates.guest.edgefn._kinds import Adapted, KindError, adapt
from isolates.guest.edgefn._wire import RESPONSE, encode

OPTIONS = {"lambda_payload": "2.0", "memory_mb": 0, "timeout_ms": 1000}


def make_request(
    method: str = "GET",
    path: str = "/fn/a b/é",
    query: str = "x=1&y=%20",
    headers: tuple[tuple[bytes, bytes], ...] = (
        (b"host", b"example.com:8080"),
        (b"X-A", b"1"),
        (b"x-a", b"2"),
    ),
    body: bytes = b"",
    client: str = "10.0.0.1:5555",
) -> Request:
    return Request(method, path, query, Headers(headers), body, Context("fn", "v1", "req-1", 0.0), client)


def asgi(app: Any) -> Adapted:
    return adapt("asgi", app, OPTIONS, "main:app")


def wsgi(app: Any) -> Adapted:
    return adapt("wsgi", app, OPTIONS, "main:app")


async def respond(send: Any, body: bytes = b"ok", status: int = 200) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
    )
    await send({"type": "http.response.body", "body": body})


async def collect(body: Any) -> list[bytes]:
    return [piece async for piece in body]


# --- asgi: the scope --------------------------------------------------------------------------


def test_asgi_scope_follows_the_spec() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await respond(send)

    asyncio.run(asgi(app).handler(make_request()))
    assert seen == [
        {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/fn/a b/é",
            "raw_path": b"/fn/a%20b/%C3%A9",
            "query_string": b"x=1&y=%20",
            "root_path": "",
            "headers": [(b"host", b"example.com:8080"), (b"x-a", b"1"), (b"x-a", b"2")],
            "client": ("10.0.0.1", 5555),
            "server": ("example.com", 8080),
            "state": {},
        }
    ]


@pytest.mark.parametrize(
    ("client", "host", "expected_client", "expected_server"),
    [
        ("[::1]:4000", b"[::1]:9000", ("::1", 4000), ("::1", 9000)),
        ("::1:4000", b"example.com", ("::1", 4000), ("example.com", 80)),
        ("", b"", None, None),
    ],
)
def test_asgi_client_and_server_addresses(
    client: str, host: bytes, expected_client: Any, expected_server: Any
) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await respond(send)

    headers = ((b"host", host),) if host else ()
    asyncio.run(asgi(app).handler(make_request(client=client, headers=headers)))
    assert (seen[0]["client"], seen[0]["server"]) == (expected_client, expected_server)


def test_asgi_receive_gives_the_body_then_waits_for_the_end_then_disconnect() -> None:
    events: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        events.append(await receive())
        waiting = asyncio.ensure_future(receive())
        await asyncio.sleep(0.01)
        events.append(("waiting", not waiting.done()))
        await respond(send, b"done")
        events.append(await waiting)

    async def main() -> Response:
        response = await asgi(app).handler(make_request(method="POST", body=b"payload"))
        await asyncio.sleep(0.01)
        return response

    response = asyncio.run(main())
    assert response.body == b"done"
    assert events == [
        {"type": "http.request", "body": b"payload", "more_body": False},
        ("waiting", True),
        {"type": "http.disconnect"},
    ]


# --- asgi: results ----------------------------------------------------------------------------


def test_asgi_whole_response_is_a_plain_response() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/csv"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b"a,b"})

    response = asyncio.run(asgi(app).handler(make_request()))
    assert (response.status, response.headers, response.body) == (
        201,
        [("content-type", "text/csv"), ("set-cookie", "a=1"), ("set-cookie", "b=2")],
        b"a,b",
    )
    assert encode(7, response) == (
        RESPONSE,
        7,
        201,
        ((b"content-type", b"text/csv"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")),
        b"a,b",
    )


def test_asgi_streamed_response_yields_pieces_as_the_app_sends_them() -> None:
    log: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for number in range(3):
            log.append(f"sent {number}")
            await send(
                {"type": "http.response.body", "body": f"data: {number}\n\n".encode(), "more_body": True}
            )
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def main() -> list[str]:
        response = await asgi(app).handler(make_request())
        assert (response.status, response.headers) == (200, [("content-type", "text/event-stream")])
        assert log == ["sent 0"]  # the handler returned after the first piece, the app runs on
        async for piece in response.body:
            log.append(f"got {piece!r}")
        return log

    assert asyncio.run(main()) == [
        "sent 0",
        "got b'data: 0\\n\\n'",
        "sent 1",
        "got b'data: 1\\n\\n'",
        "sent 2",
        "got b'data: 2\\n\\n'",
    ]


def test_asgi_closing_the_stream_disconnects_the_app() -> None:
    events: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200})
        try:
            for _ in range(100):
                await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        except ClientDisconnected as exc:
            events.append(f"ClientDisconnected: {exc}")
        events.append(await receive())

    async def main() -> None:
        response = await asgi(app).handler(make_request())
        stream = response.body
        assert await anext(stream) == b"tick"
        await stream.aclose()
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert events == [
        "ClientDisconnected: the response is over: it was complete, or the client went away",
        {"type": "http.disconnect"},
    ]


def test_asgi_stream_cancelled_at_the_deadline_disconnects_the_app() -> None:
    events: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        events.append(await receive())
        events.append(await receive())

    async def main() -> None:
        response = await asgi(app).handler(make_request())
        stream = response.body
        assert await anext(stream) == b"first"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await anext(stream)
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert events == [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]


def test_asgi_error_before_the_response_propagates() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("no database")

    with pytest.raises(ValueError, match=r"^no database$"):
        asyncio.run(asgi(app).handler(make_request()))


def test_asgi_error_after_start_before_body_propagates() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        raise ValueError("half way")

    with pytest.raises(ValueError, match=r"^half way$"):
        asyncio.run(asgi(app).handler(make_request()))


@pytest.mark.parametrize(
    ("started", "message"),
    [
        (False, "the ASGI app returned without sending http.response.start for the response"),
        (True, "the ASGI app returned without completing the response"),
    ],
)
def test_asgi_app_that_returns_without_answering(started: bool, message: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if started:
            await send({"type": "http.response.start", "status": 200})

    with pytest.raises(RuntimeError) as caught:
        asyncio.run(asgi(app).handler(make_request()))
    assert str(caught.value) == message


def test_asgi_error_mid_stream_ends_the_stream_with_it() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await asyncio.sleep(0)
        raise ValueError("broken stream")

    async def main() -> list[bytes]:
        response = await asgi(app).handler(make_request())
        pieces = [await anext(response.body)]
        with pytest.raises(ValueError, match=r"^broken stream$"):
            await anext(response.body)
        return pieces

    assert asyncio.run(main()) == [b"one"]


def test_asgi_app_that_stops_streaming_without_the_last_body() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})

    async def main() -> None:
        response = await asgi(app).handler(make_request())
        await collect(response.body)

    with pytest.raises(RuntimeError, match=r"^the ASGI app returned before its last http\.response\.body$"):
        asyncio.run(main())


def test_asgi_handler_cancelled_at_the_deadline_cancels_the_app() -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await asgi(app).handler(make_request())
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert events == ["cancelled"]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            {"type": "http.response.body", "body": b"x"},
            "the ASGI app sent http.response.body before http.response.start",
        ),
        (
            {"type": "websocket.send", "text": "x"},
            "the ASGI app sent 'websocket.send'; an http scope takes http.response.start and .body",
        ),
    ],
)
def test_asgi_messages_out_of_turn(message: dict[str, Any], error: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(message)

    with pytest.raises(RuntimeError) as caught:
        asyncio.run(asgi(app).handler(make_request()))
    assert str(caught.value) == error


def test_asgi_trailers_are_ignored() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.body", "body": b"body"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"1")]})

    assert asyncio.run(asgi(app).handler(make_request())).body == b"body"


# --- asgi: lifespan ---------------------------------------------------------------------------


def lifespan_app(log: list[str], fail: str = "") -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                log.append(message["type"])
                if message["type"] == "lifespan.startup":
                    if fail == "startup":
                        await send(
                            {"type": "lifespan.startup.failed", "message": "Traceback...\nOSError: no db"}
                        )
                        raise OSError("no db")
                    scope["state"]["db"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if fail == "shutdown":
                        await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})
                        return
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        log.append(f"request sees {scope['state']}")
        scope["state"]["db"] = "changed by a request"
        await respond(send)

    return app


def test_asgi_lifespan_state_reaches_every_request_as_a_copy() -> None:
    log: list[str] = []
    adapted = asgi(lifespan_app(log))

    async def main() -> None:
        assert adapted.startup is not None and adapted.shutdown is not None
        await adapted.startup()
        await adapted.handler(make_request())
        await adapted.handler(make_request())
        await adapted.shutdown()

    asyncio.run(main())
    assert log == [
        "lifespan.startup",
        "request sees {'db': 'connected'}",
        "request sees {'db': 'connected'}",
        "lifespan.shutdown",
    ]


def test_asgi_lifespan_startup_failed_is_a_load_error_with_its_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    adapted = asgi(lifespan_app([], fail="startup"))
    assert adapted.startup is not None
    with pytest.raises(LifespanFailed) as caught:
        asyncio.run(adapted.startup())
    assert str(caught.value) == "the ASGI app sent lifespan.startup.failed: OSError: no db"
    assert capsys.readouterr().err == "ASGI lifespan.startup.failed:\nTraceback...\nOSError: no db\n"


def test_asgi_lifespan_app_still_waiting_after_startup_failed_is_cancelled() -> None:
    log: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        try:
            await receive()
        except asyncio.CancelledError:
            log.append("cancelled")
            raise

    adapted = asgi(app)
    assert adapted.startup is not None
    with pytest.raises(LifespanFailed, match=r"^the ASGI app sent lifespan\.startup\.failed: no database$"):
        asyncio.run(adapted.startup())
    assert log == ["cancelled"]


def test_asgi_lifespan_shutdown_failed_raises() -> None:
    adapted = asgi(lifespan_app([], fail="shutdown"))

    async def main() -> None:
        assert adapted.startup is not None and adapted.shutdown is not None
        await adapted.startup()
        await adapted.shutdown()

    with pytest.raises(LifespanFailed, match=r"^the ASGI app sent lifespan\.shutdown\.failed: flush failed$"):
        asyncio.run(main())


def test_asgi_background_work_after_the_response_finishes_before_shutdown() -> None:
    log: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            log.append("lifespan shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        await respond(send, b"answered")
        await asyncio.sleep(0.02)  # Starlette's BackgroundTask runs here
        log.append("background done")

    adapted = asgi(app)

    async def main() -> None:
        assert adapted.startup is not None and adapted.shutdown is not None
        await adapted.startup()
        response = await adapted.handler(make_request())
        log.append(f"response {response.body!r}")
        await adapted.shutdown()

    asyncio.run(main())
    assert log == ["response b'answered'", "background done", "lifespan shutdown"]


def test_asgi_app_that_raises_on_lifespan_has_none(capsys: pytest.CaptureFixture[str]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise TypeError(f"only http, not {scope['type']}")
        await respond(send, b"served")

    adapted = asgi(app)

    async def main() -> bytes:
        assert adapted.startup is not None and adapted.shutdown is not None
        await adapted.startup()
        response = await adapted.handler(make_request())
        await adapted.shutdown()
        return response.body

    assert asyncio.run(main()) == b"served"
    assert capsys.readouterr().err == (
        "ASGI lifespan: the app raised TypeError: only http, not lifespan on the lifespan scope; "
        "serving it without lifespan\n"
    )


def test_asgi_app_that_returns_on_lifespan_has_none(capsys: pytest.CaptureFixture[str]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await respond(send, b"served")

    adapted = asgi(app)

    async def main() -> None:
        assert adapted.startup is not None and adapted.shutdown is not None
        await adapted.startup()
        await adapted.shutdown()

    asyncio.run(main())
    assert capsys.readouterr().err == ""


# --- asgi: signature checks -------------------------------------------------------------------


def test_asgi_accepts_a_coroutine_function_an_async_callable_and_an_awaitable_class() -> None:
    class Instance:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await respond(send, b"instance")

    class Awaitable:
        def __init__(self, scope: Any, receive: Any, send: Any) -> None:
            self.send = send

        def __await__(self) -> Any:
            return respond(self.send, b"class").__await__()

    assert asyncio.run(asgi(Instance()).handler(make_request())).body == b"instance"
    assert asyncio.run(asgi(Awaitable).handler(make_request())).body == b"class"


def test_asgi_refuses_an_edge_handler_with_the_fix() -> None:
    def handler(request: Any) -> str:
        return "hi"

    with pytest.raises(KindError) as caught:
        asgi(handler)
    assert str(caught.value) == (
        "kind = 'asgi' expects an ASGI 3 application: async def app(scope, receive, send); "
        "entrypoint 'main:app' takes (request): this looks like an edge handler(request): "
        'set `kind = "edge"` (the default) in edge.toml'
    )


def test_asgi_refuses_a_sync_function() -> None:
    def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(KindError) as caught:
        asgi(app)
    assert str(caught.value) == (
        "kind = 'asgi' expects an ASGI 3 application: async def app(scope, receive, send); "
        "entrypoint 'main:app' is not async: define it with `async def` "
        '(a WSGI application(environ, start_response) is kind = "wsgi")'
    )


ASGI2 = (
    "ASGI 2 applications (called with the scope, returning a coroutine function of (receive, send)) are not "
    "supported: wrap it with asgiref.compatibility.guarantee_single_callable or use a framework version that "
    "speaks ASGI 3"
)


def test_asgi_refuses_asgi2_double_callables() -> None:
    class App:
        def __init__(self, scope: Any) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            pass

    def app(scope: Any) -> Any:
        return App(scope)

    with pytest.raises(KindError) as caught:
        asgi(App)
    assert str(caught.value) == (
        "kind = 'asgi' expects an ASGI 3 application: async def app(scope, receive, send); "
        f"entrypoint 'main:app' is the class App, which looks like an ASGI 2 application; {ASGI2}"
    )
    with pytest.raises(KindError) as caught:
        asgi(app)
    assert str(caught.value) == (
        "kind = 'asgi' expects an ASGI 3 application: async def app(scope, receive, send); "
        f"entrypoint 'main:app' takes (scope), which looks like an ASGI 2 application; {ASGI2}"
    )


def test_asgi_accepts_a_starlette_app() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse(f"hello {request.path_params['name']}")

    adapted = asgi(Starlette(routes=[Route("/fn/{name}", home)]))

    async def main() -> Response:
        assert adapted.startup is not None and adapted.shutdown is not None
        await adapted.startup()
        response = await adapted.handler(make_request(path="/fn/ada"))
        await adapted.shutdown()
        return response

    response = asyncio.run(main())
    assert (response.status, response.body) == (200, b"hello ada")


# --- wsgi: the environ ------------------------------------------------------------------------


def test_wsgi_environ_follows_pep_3333() -> None:
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ)
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()]

    headers = (
        (b"host", b"example.com:8080"),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", b"3"),
        (b"accept", b"text/html"),
        (b"Accept", b"application/json"),
        (b"x_forwarded_for", b"spoofed"),
    )
    response = wsgi(app).handler(make_request(method="POST", headers=headers, body=b"a=1"))
    assert response.body == b"a=1"
    environ = dict(seen[0])
    assert isinstance(environ.pop("wsgi.input"), io.BytesIO)
    assert environ.pop("wsgi.errors") is sys.stderr
    assert environ == {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/fn/a b/Ã©",  # the UTF-8 bytes of "é" as latin-1
        "QUERY_STRING": "x=1&y=%20",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": "3",
        "HTTP_HOST": "example.com:8080",
        "HTTP_ACCEPT": "text/html,application/json",
        "SERVER_NAME": "example.com",
        "SERVER_PORT": "8080",
        "REMOTE_ADDR": "10.0.0.1",
        "REMOTE_PORT": "5555",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }


def test_wsgi_environ_without_host_body_or_client() -> None:
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ)
        start_response("204 No Content", [])
        return []

    response = wsgi(app).handler(make_request(headers=(), client=""))
    assert response.status == 204
    environ = seen[0]
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("localhost", "80")
    assert not {"CONTENT_LENGTH", "CONTENT_TYPE", "REMOTE_ADDR", "REMOTE_PORT"} & environ.keys()


# --- wsgi: results ----------------------------------------------------------------------------


class Closing:
    """A WSGI iterable with close(), recording what happened to it."""

    def __init__(self, pieces: list[bytes], log: list[str], fail_at: int = -1) -> None:
        self.pieces, self.log, self.fail_at = pieces, log, fail_at

    def __iter__(self) -> Iterator[bytes]:
        for index, piece in enumerate(self.pieces):
            if index == self.fail_at:
                raise ValueError("broken iterable")
            self.log.append(f"yield {piece!r}")
            yield piece

    def close(self) -> None:
        self.log.append("close")


def test_wsgi_list_is_a_whole_response() -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response(
            "201 Created", [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
        )
        return [b"a", b"b"]

    response = wsgi(app).handler(make_request())
    assert (response.status, response.headers, response.body) == (
        201,
        [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
        b"ab",
    )


def test_wsgi_iterable_with_content_length_is_joined_and_closed() -> None:
    log: list[str] = []

    def app(environ: Any, start_response: Any) -> Closing:
        start_response("200 OK", [("Content-Length", "4")])
        return Closing([b"ab", b"", b"cd"], log)

    response = wsgi(app).handler(make_request())
    assert response.body == b"abcd"
    assert log == ["yield b'ab'", "yield b''", "yield b'cd'", "close"]


def test_wsgi_iterable_without_content_length_is_streamed_and_closed_at_the_end() -> None:
    log: list[str] = []

    def app(environ: Any, start_response: Any) -> Closing:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([b"one", b"", b"two"], log)

    response = wsgi(app).handler(make_request())
    assert (response.status, response.headers, log) == (200, [("Content-Type", "text/plain")], [])
    assert list(response.body) == [b"one", b"two"]
    assert log == ["yield b'one'", "yield b''", "yield b'two'", "close"]


def test_wsgi_stream_closed_early_closes_the_iterable_even_before_it_started() -> None:
    log: list[str] = []

    def app(environ: Any, start_response: Any) -> Closing:
        start_response("200 OK", [])
        return Closing([b"one", b"two"], log)

    response = wsgi(app).handler(make_request())
    response.body.close()
    assert log == ["close"]
    assert list(response.body) == []
    assert log == ["close"]


def test_wsgi_error_mid_stream_closes_and_raises() -> None:
    log: list[str] = []

    def app(environ: Any, start_response: Any) -> Closing:
        start_response("200 OK", [])
        return Closing([b"one", b"two"], log, fail_at=1)

    body = wsgi(app).handler(make_request()).body
    assert next(body) == b"one"
    with pytest.raises(ValueError, match=r"^broken iterable$"):
        next(body)
    assert log == ["yield b'one'", "close"]


def test_wsgi_start_response_called_with_the_first_piece() -> None:
    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"late"
        yield b" start"

    response = wsgi(app).handler(make_request())
    assert (response.status, list(response.body)) == (200, [b"late", b" start"])


def test_wsgi_empty_generator_is_a_whole_response() -> None:
    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("304 Not Modified", [])
        yield b""

    response = wsgi(app).handler(make_request())
    assert (response.status, response.body) == (304, b"")


def test_wsgi_write_callable_goes_first() -> None:
    def whole(environ: Any, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"written ")
        return [b"returned"]

    def streamed(environ: Any, start_response: Any) -> Iterator[bytes]:
        write = start_response("200 OK", [])
        write(b"written ")
        yield b"yielded"
        write(b" more")

    assert wsgi(whole).handler(make_request()).body == b"written returned"
    assert list(wsgi(streamed).handler(make_request()).body) == [b"written ", b"yielded", b" more"]


def test_wsgi_exc_info_replaces_the_status_before_the_head_is_sent() -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-A", "1")])
        try:
            raise ValueError("template broke")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]

    response = wsgi(app).handler(make_request())
    assert (response.status, response.headers, response.body) == (
        500,
        [("Content-Type", "text/plain")],
        b"error page",
    )


def test_wsgi_exc_info_after_the_head_was_sent_reraises() -> None:
    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first"
        try:
            raise ValueError("too late")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    body = wsgi(app).handler(make_request()).body
    assert next(body) == b"first"
    with pytest.raises(ValueError, match=r"^too late$"):
        next(body)


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        ("200", [], "start_response() status '200'; expected a str like '200 OK'"),
        (200, [], "start_response() status 200; expected a str like '200 OK'"),
        ("200 OK", [("X-A", 1)], "start_response() header ('X-A', 1); expected a (name, value) tuple of str"),
    ],
)
def test_wsgi_bad_start_response_arguments(status: Any, headers: Any, error: str) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return []

    with pytest.raises((TypeError, ValueError)) as caught:
        wsgi(app).handler(make_request())
    assert str(caught.value) == error


def test_wsgi_app_errors_propagate_and_close_the_iterable() -> None:
    log: list[str] = []

    def no_start(environ: Any, start_response: Any) -> Closing:
        return Closing([b"body"], log)

    def twice(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("200 OK", [])
        return []

    with pytest.raises(
        RuntimeError, match=r"^the WSGI app yielded its body before calling start_response\(\)$"
    ):
        wsgi(no_start).handler(make_request())
    assert log == ["yield b'body'", "close"]
    with pytest.raises(RuntimeError, match=r"^start_response\(\) called a second time without exc_info$"):
        wsgi(twice).handler(make_request())


# --- wsgi: signature checks -------------------------------------------------------------------


def test_wsgi_refuses_an_edge_handler_with_the_fix() -> None:
    def handler(request: Any) -> str:
        return "hi"

    with pytest.raises(KindError) as caught:
        wsgi(handler)
    assert str(caught.value) == (
        "kind = 'wsgi' expects a WSGI application: app(environ, start_response); entrypoint 'main:app' "
        'takes (request): this looks like an edge handler(request): set `kind = "edge"` (the default) '
        "in edge.toml"
    )


def test_wsgi_refuses_an_asgi_app_with_the_fix() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    async def environ_app(environ: Any, start_response: Any) -> None:
        pass

    with pytest.raises(KindError) as caught:
        wsgi(app)
    assert str(caught.value) == (
        "kind = 'wsgi' expects a WSGI application: app(environ, start_response); entrypoint 'main:app' "
        "takes (scope, receive, send): this looks like an ASGI application(scope, receive, send): "
        'set `kind = "asgi"` in edge.toml'
    )
    with pytest.raises(KindError) as caught:
        wsgi(environ_app)
    assert str(caught.value) == (
        "kind = 'wsgi' expects a WSGI application: app(environ, start_response); entrypoint 'main:app' "
        'is `async def`: a WSGI application is synchronous (an ASGI application is kind = "asgi")'
    )


def test_wsgi_runs_a_flask_app() -> None:
    from flask import Flask, request

    app = Flask(__name__)

    @app.post("/fn/form")
    def form() -> dict[str, Any]:
        return {"fields": request.form.to_dict(flat=False), "path": request.path}

    headers = ((b"host", b"example.com"), (b"content-type", b"application/x-www-form-urlencoded"))
    response = wsgi(app).handler(
        make_request(method="POST", path="/fn/form", headers=headers, body=b"a=1&a=2")
    )
    assert (response.status, response.body) == (200, b'{"fields":{"a":["1","2"]},"path":"/fn/form"}\n')
