"""Streamed responses end to end: a real node over HTTP, in interpreter and process isolates.

A handler that returns a generator, an async generator or a Response whose body is an iterator
is sent chunked as its pieces come; a short one that is complete at once is a plain response.
"""

from __future__ import annotations

import http.client
import sys
import time
from collections.abc import Iterator

import pytest
from node_harness import Node, write_function

from loadtest._servers import Server, free_port

# Every test runs on both front ends (tests/conftest.py).
EVERY_FRONT_END = True

PROCESS = 'isolation = "process"\n'
NODE_ENV = {"EDGE_ABANDON_AFTER_MS": "300", "EDGE_WARM_POOL": "1"}

STREAMS = """
    import asyncio
    import time

    from edgefn import Response

    def pieces(n):
        for i in range(n):
            time.sleep(0.05)
            yield f"piece {i}\\n"

    async def apieces(n):
        for i in range(n):
            await asyncio.sleep(0.05)
            yield f"piece {i}\\n".encode()

    def sse():
        yield "data: first\\n\\n"
        time.sleep(1)
        yield "data: second\\n\\n"

    def failing():
        yield "part one\\n"
        time.sleep(0.05)
        raise ValueError("broken stream")

    def endless():
        while True:
            time.sleep(0.05)
            yield "tick\\n"

    def short():
        yield "short "
        yield b"and "
        yield "whole"

    def wrong():
        try:
            yield "fine\\n"
            time.sleep(0.05)
            yield 42
            yield "never"
        finally:
            print("wrong closed")

    def handler(request):
        kind = request.query_string
        if kind == "sync":
            return pieces(4)
        if kind == "sse":
            return Response(sse(), headers={"Content-Type": "text/event-stream"})
        if kind == "response":
            headers = [("X-Kind", "iterator"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
            return Response(pieces(3), status=201, headers=headers)
        if kind == "failing":
            return failing()
        if kind == "endless":
            return endless()
        if kind == "short":
            return Response(short(), headers={"Cache-Control": "max-age=60"})
        if kind == "short-list":
            return Response(iter([b"short ", b"and ", b"whole"]), headers={"Cache-Control": "max-age=60"})
        if kind == "cached":
            return Response(pieces(2), headers={"Cache-Control": "max-age=60"})
        if kind == "wrong":
            return wrong()
        if kind == "async-from-sync":
            return apieces(2)
        return "plain"
"""

ASYNC_STREAMS = """
    import asyncio

    from edgefn import Response

    async def pieces(n):
        for i in range(n):
            await asyncio.sleep(0.05)
            yield f"piece {i}\\n"

    async def sse():
        yield "data: first\\n\\n"
        await asyncio.sleep(1)
        yield "data: second\\n\\n"

    async def short():
        yield "short "
        yield "and whole"

    async def endless():
        while True:
            await asyncio.sleep(0.05)
            yield "tick\\n"

    async def wrong():
        try:
            yield "fine\\n"
            await asyncio.sleep(0.05)
            yield 42
            yield "never"
        finally:
            print("wrong closed")

    async def handler(request):
        kind = request.query_string
        if kind == "sync":
            return pieces(4)
        if kind == "sse":
            return Response(sse(), headers={"Content-Type": "text/event-stream"})
        if kind == "short":
            return Response(short(), headers={"Cache-Control": "max-age=60"})
        if kind == "endless":
            return endless()
        if kind == "wrong":
            return wrong()
        return "plain"
"""

LAMBDA_SHAPED = """
    def handler(request):
        return {"statusCode": 200, "body": "hi"}
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, front_end: str) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("streaming") / "functions"
    write_function(root, "streams", STREAMS, "timeout_ms = 2000\n")
    write_function(root, "astreams", ASYNC_STREAMS, "timeout_ms = 2000\n")
    write_function(root, "pstreams", STREAMS, PROCESS + "timeout_ms = 2000\n")
    write_function(root, "pastreams", ASYNC_STREAMS, PROCESS + "timeout_ms = 2000\n")
    write_function(root, "lambdaish", LAMBDA_SHAPED)
    port = free_port()
    log = root.parent / "node.log"
    argv = [sys.executable, "-m", "edge", "node", "--functions", str(root), "--port", str(port)]
    env = {**NODE_ENV, "EDGE_INTERFACE": front_end}
    server = Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env, log_path=log)
    server.start(60)
    try:
        yield Node(port, log, server)
    finally:
        server.stop()


class Streamed:
    """A response read piece by piece, with the time each piece arrived (from the request)."""

    def __init__(self, node: Node, path: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        self.started = time.monotonic()
        self.connection.request("GET", path)
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = {name.lower(): value for name, value in self.response.getheaders()}
        self.pieces: list[tuple[float, bytes]] = []

    def read_all(self) -> bytes:
        """Read to the end (raises http.client.IncompleteRead when the response is cut off)."""
        try:
            while data := self.response.read1(65536):
                self.pieces.append((time.monotonic() - self.started, data))
            return b"".join(data for _, data in self.pieces)
        finally:
            self.connection.close()


def logged(node: Node, text: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while text not in node.log_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


NAMES = {"interpreter": ("streams", "astreams"), "process": ("pstreams", "pastreams")}


@pytest.mark.parametrize("isolation", ["interpreter", "process"])
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_generator_streams_chunked_in_order(node: Node, isolation: str, flavour: str) -> None:
    name = NAMES[isolation][flavour == "async"]
    streamed = Streamed(node, f"/{name}?sync")
    assert streamed.status == 200
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in streamed.headers
    assert streamed.headers["content-type"] == "text/plain; charset=utf-8"
    assert streamed.read_all() == b"piece 0\npiece 1\npiece 2\npiece 3\n"
    # The pieces came as they were made (50 ms apart), not all at the end.
    assert len(streamed.pieces) >= 3


@pytest.mark.parametrize("isolation", ["interpreter", "process"])
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_server_sent_events_reach_the_client_before_the_handler_finishes(
    node: Node, isolation: str, flavour: str
) -> None:
    name = NAMES[isolation][flavour == "async"]
    streamed = Streamed(node, f"/{name}?sse")
    assert streamed.headers["content-type"] == "text/event-stream"
    assert streamed.read_all() == b"data: first\n\ndata: second\n\n"
    (first_at, first), (second_at, second) = streamed.pieces
    assert (first, second) == (b"data: first\n\n", b"data: second\n\n")
    # The handler sleeps 1 s between the events: the first arrived long before that.
    assert first_at < 0.5
    assert second_at >= 1.0


def test_a_response_with_an_iterator_body_keeps_its_status_and_headers(node: Node) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        connection.request("GET", "/streams?response")
        response = connection.getresponse()
        assert response.status == 201
        assert response.getheader("x-kind") == "iterator"
        assert response.headers.get_all("set-cookie") == ["a=1", "b=2"]
        assert response.getheader("transfer-encoding") == "chunked"
        assert response.read() == b"piece 0\npiece 1\npiece 2\n"
    finally:
        connection.close()


@pytest.mark.parametrize("name", ["streams", "pstreams"])
def test_a_generator_raising_mid_stream_cuts_the_response_off(node: Node, name: str) -> None:
    streamed = Streamed(node, f"/{name}?failing")
    assert streamed.status == 200
    with pytest.raises(http.client.IncompleteRead):
        streamed.read_all()
    assert b"".join(data for _, data in streamed.pieces) == b"part one\n"
    assert logged(node, f"[{name} {streamed.headers['x-request-id']}] Traceback")
    assert logged(
        node,
        f"request {streamed.headers['x-request-id']}: streamed response cut off: ValueError: broken stream",
    )
    assert node.get(f"/{name}").body == b"plain"


@pytest.mark.parametrize("name", ["streams", "astreams", "pstreams"])
def test_a_piece_that_is_not_bytes_or_str_cuts_the_stream_naming_its_type(node: Node, name: str) -> None:
    streamed = Streamed(node, f"/{name}?wrong")
    with pytest.raises(http.client.IncompleteRead):
        streamed.read_all()
    assert b"".join(data for _, data in streamed.pieces) == b"fine\n"
    request_id = streamed.headers["x-request-id"]
    assert logged(
        node,
        f"request {request_id}: streamed response cut off: "
        "TypeError: streamed response yielded int; expected bytes or str",
    )
    # The generator was closed (its `finally` ran) rather than left suspended.
    assert logged(node, f"[{name} {request_id}] wrong closed")


@pytest.mark.parametrize("name", ["streams", "astreams", "pstreams", "pastreams"])
def test_a_stream_past_the_function_timeout_is_cut_off(node: Node, name: str) -> None:
    streamed = Streamed(node, f"/{name}?endless")
    with pytest.raises(http.client.IncompleteRead):
        streamed.read_all()
    elapsed = time.monotonic() - streamed.started
    assert 2.0 <= elapsed < 3.5
    assert b"".join(data for _, data in streamed.pieces).startswith(b"tick\ntick\n")
    assert logged(
        node,
        f"request {streamed.headers['x-request-id']}: streamed response cut off: "
        f"function {name} timed out after 2000 ms",
    )
    assert node.get(f"/{name}").body == b"plain"


SHORT = ["/streams?short", "/streams?short-list", "/astreams?short", "/pstreams?short", "/pastreams?short"]


@pytest.mark.parametrize("path", SHORT)
def test_a_short_stream_arrives_as_a_plain_response_and_is_cached(node: Node, path: str) -> None:
    reply = node.get(path)
    assert reply.status == 200
    assert "transfer-encoding" not in reply.headers
    assert reply.headers["content-length"] == str(len(reply.body))
    assert reply.body == b"short and whole"
    assert reply.headers["x-cache"] == "MISS"
    assert node.get(path).headers["x-cache"] == "HIT"


def test_a_streamed_response_is_not_served_from_the_cache(node: Node) -> None:
    first = Streamed(node, "/streams?cached")
    assert first.headers["transfer-encoding"] == "chunked"
    assert first.read_all() == b"piece 0\npiece 1\n"
    again = Streamed(node, "/streams?cached")
    assert again.headers["transfer-encoding"] == "chunked"
    assert "x-cache" not in again.headers or again.headers["x-cache"] != "HIT"
    assert again.read_all() == b"piece 0\npiece 1\n"


def test_a_sync_handler_may_return_an_async_generator(node: Node) -> None:
    streamed = Streamed(node, "/streams?async-from-sync")
    assert streamed.read_all() == b"piece 0\npiece 1\n"


def test_an_edge_handler_returning_a_lambda_shaped_dict_warns_once(node: Node) -> None:
    for _ in range(3):
        reply = node.get("/lambdaish")
        assert reply.json() == {"statusCode": 200, "body": "hi"}
    warning = (
        "warning: function lambdaish returned a dict with a 'statusCode' key; it is sent as a JSON body"
        ' with status 200. If this is an AWS Lambda handler, set `kind = "lambda"` in edge.toml'
    )
    assert logged(node, warning)
    assert node.log_text().count(warning) == 1


@pytest.mark.parametrize("name", ["astreams", "pstreams"])
def test_the_node_stops_sending_to_a_client_that_went_away(node: Node, name: str) -> None:
    streamed = Streamed(node, f"/{name}?endless")
    assert streamed.response.read1(65536).startswith(b"tick")
    refused = node.log_text().count("ASGI transport error")
    streamed.connection.close()
    # The function ticks every 50 ms for 2 s more; the node sends none of it to the closed
    # connection (granian logs each send to a closed one).
    time.sleep(1.0)
    assert node.log_text().count("ASGI transport error") - refused <= 1
    assert node.get(f"/{name}").body == b"plain"
    assert node.get("/streams?sync").body == b"piece 0\npiece 1\npiece 2\npiece 3\n"
