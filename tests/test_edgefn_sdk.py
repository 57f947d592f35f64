"""`edgefn` outside isolates and `edgefn.testing`: a handler of every kind called in-process the way
a node calls it, and the same handler's answers compared with a real node's."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from node_harness import CONTRACT, NodeFactory, write_function

import edgefn
import edgefn.testing
from edgefn import Request, Response
from edgefn.testing import INVOKE_METHOD, TestClient, TestResponse, call
from isolates.guest import edgefn as guest
from isolates.guest.edgefn import testing as guest_testing
from isolates.guest.edgefn._kinds import KindError


def test_the_package_is_the_guest_package() -> None:
    assert edgefn.testing.__all__ == ["INVOKE_METHOD", "TestClient", "TestResponse", "call"]
    assert edgefn.Request is guest.Request
    assert edgefn.testing.call is guest_testing.call


def _echo(request: Request) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path,
        "query_string": request.query_string,
        "query": request.query,
        "args": request.args,
        "headers": dict(request.headers),
        "tags": request.headers.getall("x-tag"),
        "body": request.text(),
        "client": request.client,
        "function": request.context.function,
        "request_id": request.context.request_id,
        "remaining_ok": 0 < request.context.remaining_ms <= 5000,
    }


def test_the_request_the_handler_sees() -> None:
    response = call(
        _echo,
        "PUT",
        "/echo/items?ignored=1",
        query={"a": ["1", "2"], "b": "x y"},
        headers=[("X-Tag", "one"), ("X-Tag", "two")],
        json={"k": 1},
        client="10.0.0.1:4000",
        timeout_ms=5000,
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "method": "PUT",
        "path": "/echo/items",
        "query_string": "a=1&a=2&b=x+y",
        "query": {"a": ["1", "2"], "b": ["x y"]},
        "args": {"a": "1", "b": "x y"},
        "headers": {
            "host": "localhost",
            "x-tag": "one, two",
            "content-type": "application/json",
            "content-length": "8",
        },
        "tags": ["one", "two"],
        "body": '{"k": 1}',
        "client": "10.0.0.1:4000",
        "function": "test",
        "request_id": "test-0000001",
        "remaining_ok": True,
    }


def test_query_in_the_path_and_a_given_host() -> None:
    response = call(_echo, path="/echo?x=1", headers={"Host": "example.test"}, body="raw")
    seen = response.json()
    assert (seen["query_string"], seen["headers"]["host"], seen["body"]) == ("x=1", "example.test", "raw")
    assert seen["headers"]["content-length"] == "3"


def _returns(request: Request) -> Any:
    kind = request.query_string
    if kind == "str":
        return "hi"
    if kind == "bytes":
        return b"\x00\x01"
    if kind == "cookies":
        return ("made", 201, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    if kind == "response":
        return Response(b"a,b", 202, {"Content-Type": "text/csv"})
    return 42


@pytest.mark.parametrize(
    ("query", "status", "headers", "body"),
    [
        ("str", 200, [("content-type", "text/plain; charset=utf-8")], b"hi"),
        ("bytes", 200, [("content-type", "application/octet-stream")], b"\x00\x01"),
        (
            "cookies",
            201,
            [("content-type", "text/plain; charset=utf-8"), ("set-cookie", "a=1"), ("set-cookie", "b=2")],
            b"made",
        ),
        ("response", 202, [("content-type", "text/csv")], b"a,b"),
    ],
)
def test_what_a_handler_returns(query: str, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    response = call(_returns, query=query)
    pairs = [(name, value) for name in response.headers for value in response.headers.getall(name)]
    assert (response.status, pairs, response.body, response.chunks) == (status, headers, body, [body])
    assert not response.streamed


def test_a_return_value_the_node_cannot_send_raises_its_type_error() -> None:
    with pytest.raises(TypeError) as caught:
        call(_returns, query="bad")
    assert str(caught.value) == (
        "handler returned int; expected str, bytes, dict, list, a (body, status[, headers]) tuple"
        " or a Response"
    )


def test_an_exception_in_the_handler_propagates() -> None:
    def handler(request: Request) -> str:
        raise ValueError(f"boom at {request.path}")

    with pytest.raises(ValueError, match=r"^boom at /x$"):
        call(handler, path="/x")


def test_an_entrypoint_of_the_wrong_kind_is_the_load_error() -> None:
    def handler(event: Any, context: Any) -> None:
        pass

    with pytest.raises(KindError) as caught:
        TestClient(handler)
    assert str(caught.value) == (
        "kind = 'edge' expects handler(request); entrypoint "
        "'test_edgefn_sdk:test_an_entrypoint_of_the_wrong_kind_is_the_load_error.<locals>.handler' takes "
        '(event, context): this looks like a Lambda handler(event, context): set `kind = "lambda"` (or '
        '`kind = "openfaas"` for an OpenFaaS python3-http handle(event, context)) in edge.toml'
    )


def test_async_handlers_share_one_loop_and_module_state() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def handler(request: Request) -> dict[str, int]:
        await asyncio.sleep(0)
        loops.append(asyncio.get_running_loop())
        return {"calls": len(loops)}

    def awaitable(request: Request) -> Any:
        return handler(request)

    with TestClient(handler) as client:
        assert [client.get().json() for _ in range(3)] == [{"calls": 1}, {"calls": 2}, {"calls": 3}]
    assert len(set(loops)) == 1
    assert call(awaitable).json() == {"calls": 4}


def test_an_async_handler_past_its_timeout() -> None:
    async def handler(request: Request) -> str:
        await asyncio.sleep(5)
        return "late"

    with pytest.raises(TimeoutError) as caught:
        call(handler, timeout_ms=50)
    assert str(caught.value) == "the handler ran past timeout_ms=50; a node answers 504 (function timed out)"


def _lines(request: Request) -> Iterator[str | bytes]:
    yield "one\n"
    yield b""
    yield b"two\n"


async def _async_lines(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for number in range(3):
            await asyncio.sleep(0)
            yield f"{number};".encode()

    return Response(body(), 206, [("Content-Type", "text/csv"), ("X-Part", "1"), ("X-Part", "2")])


def test_a_streamed_response_keeps_its_pieces() -> None:
    response = call(_lines)
    assert (response.status, response.streamed, response.chunks, response.text) == (
        200,
        True,
        [b"one\n", b"two\n"],
        "one\ntwo\n",
    )
    assert response.headers["content-type"] == "text/plain; charset=utf-8"

    response = call(_async_lines)
    assert (response.status, response.chunks, response.body) == (206, [b"0;", b"1;", b"2;"], b"0;1;2;")
    assert (response.headers["content-type"], response.headers.getall("x-part")) == ("text/csv", ["1", "2"])


def test_a_streamed_piece_of_the_wrong_type_raises_the_nodes_type_error() -> None:
    def handler(request: Request) -> Iterator[Any]:
        yield "fine"
        yield 3

    with pytest.raises(TypeError) as caught:
        call(handler)
    assert str(caught.value) == "streamed response yielded int; expected bytes or str"


def test_an_async_stream_past_the_deadline() -> None:
    async def handler(request: Request) -> AsyncIterator[str]:
        yield "first"
        await asyncio.sleep(5)
        yield "never"

    with pytest.raises(TimeoutError, match=r"^the handler ran past timeout_ms=100; "):
        call(handler, timeout_ms=100)


def test_an_edge_handler_returning_a_lambda_result_warns_once(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(request: Request) -> dict[str, Any]:
        return {"statusCode": 201, "body": "x"}

    with TestClient(handler, function="shop") as client:
        first, second = client.get(), client.get()
    assert (first.status, first.json(), second.json()) == (
        200,
        {"statusCode": 201, "body": "x"},
        first.json(),
    )
    assert capsys.readouterr().err == (
        "warning: function shop returned a dict with a 'statusCode' key; it is sent as a JSON body with"
        ' status 200. If this is an AWS Lambda handler, set `kind = "lambda"` in edge.toml\n'
    )


def _lambda(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    if "rawPath" not in event:  # a direct invocation: the event is what was sent
        return {"echo": event, "function": context.function_name}
    return {
        "statusCode": 418,
        "headers": {"content-type": "application/json"},
        "cookies": ["a=1", "b=2"],
        "body": json.dumps(
            {
                "path": event["rawPath"],
                "query": event["queryStringParameters"],
                "method": event["requestContext"]["http"]["method"],
                "body": event.get("body"),
                "remaining": context.get_remaining_time_in_millis() > 0,
            }
        ),
    }


def test_lambda_kind_over_http_and_the_invoke_api() -> None:
    with TestClient(_lambda, kind="lambda", function="orders") as client:
        response = client.post("/orders/new", query="id=7", json={"n": 1})
        assert (response.status, response.headers.getall("set-cookie")) == (418, ["a=1", "b=2"])
        assert response.json() == {
            "path": "/orders/new",
            "query": {"id": "7"},
            "method": "POST",
            "body": '{"n": 1}',
            "remaining": True,
        }
        invoked = client.invoke({"x": 1})
        assert (invoked.status, invoked.json()) == (200, {"echo": {"x": 1}, "function": "orders"})
        failed = client.invoke({"fail": True})
        assert (failed.status, failed.headers["x-amz-function-error"]) == (200, "Unhandled")
        assert failed.json()["errorMessage"] == "asked to fail"
    assert INVOKE_METHOD == "<invoke>"


def test_lambda_payload_1() -> None:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "body": json.dumps([event["httpMethod"], event["path"]])}

    response = call(handler, "DELETE", "/a/b", kind="lambda", lambda_payload="1.0")
    assert response.json() == ["DELETE", "/a/b"]


def test_openfaas_kind() -> None:
    def handle(event: Any, context: Any) -> dict[str, Any]:
        return {"statusCode": 201, "body": f"{event.method} {event.path} {event.query['q']} {event.body!r}"}

    response = call(handle, "POST", "/fn", query="q=1", body=b"hi", kind="openfaas")
    assert (response.status, response.text) == (201, "POST /fn 1 b'hi'")


class _Lifespan:
    """A plain ASGI app that records its lifespan and answers with what it has seen."""

    def __init__(self, fail_startup: bool = False) -> None:
        self.events: list[str] = []
        self.fail_startup = fail_startup

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    if self.fail_startup:
                        await send({"type": "lifespan.startup.failed", "message": "no database"})
                    else:
                        await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.events.append(f"{scope['method']} {scope['path']}")
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"got " + body, "more_body": True})
        await send({"type": "http.response.body", "body": b"!"})


def test_asgi_kind_runs_lifespan_around_requests() -> None:
    app = _Lifespan()
    with TestClient(app, kind="asgi") as client:
        assert app.events == ["lifespan.startup"]
        response = client.post("/items", body=b"data")
        assert (response.status, response.body) == (200, b"got data!")
    assert app.events == ["lifespan.startup", "POST /items", "lifespan.shutdown"]


def test_a_failed_asgi_startup_raises_and_leaves_nothing_pending() -> None:
    with pytest.raises(Exception, match="no database") as caught:
        call(_Lifespan(fail_startup=True), kind="asgi")
    del caught  # its traceback holds the frames
    gc.collect()  # a lifespan task left on the closed loop would complain here (an unraisable warning)


def test_wsgi_kind() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length)
        start_response("202 Accepted", [("Content-Type", "text/plain"), ("Set-Cookie", "s=1")])
        return [environ["REQUEST_METHOD"].encode(), b" ", environ["QUERY_STRING"].encode(), b" ", data]

    response = call(app, "PATCH", "/w", query="a=1", body="x", kind="wsgi")
    assert (response.status, response.body, response.headers["set-cookie"]) == (202, b"PATCH a=1 x", "s=1")


def test_testresponse_is_not_collected() -> None:
    assert TestResponse.__test__ is False
    assert TestClient.__test__ is False


CONTRACT_QUERIES = ["str", "bytes", "dict", "list", "tuple2", "tuple3", "response", "none"]


def test_the_same_answers_as_a_real_node(tmp_path: Path, start_node: NodeFactory) -> None:
    write_function(tmp_path, "contract", CONTRACT)
    node = start_node(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(_dedent(CONTRACT), "contract", "exec"), namespace)
    for query in CONTRACT_QUERIES:
        over_http = node.get(f"/contract?{query}")
        in_process = call(namespace["handler"], path="/contract", query=query)
        assert (in_process.status, in_process.body) == (over_http.status, over_http.body), query
        assert in_process.headers.get("content-type") == over_http.headers.get("content-type"), query
        assert in_process.headers.get("x-extra") == over_http.headers.get("x-extra"), query


def _dedent(code: str) -> str:
    import textwrap

    return textwrap.dedent(code)


def test_base64_bodies_reach_lambda_handlers_decoded_by_them() -> None:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raw = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()
        return {"statusCode": 200, "body": raw.hex()}

    response = call(handler, "POST", "/b", body=b"\xff\x00", kind="lambda")
    assert response.text == "ff00"
