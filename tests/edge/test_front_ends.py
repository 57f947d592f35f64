"""What the two front ends (RSGI, the default; ASGI) do alike, and the little RSGI cannot say."""

from __future__ import annotations

import http.client
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_harness import Node, write_function

from loadtest._servers import Server, free_port
from loadtest.bench import BROWSER_HEADERS

# Every test runs on both front ends (tests/conftest.py).
EVERY_FRONT_END = True

CACHED = """
    import itertools

    from edgefn import Response

    renders = itertools.count(1)

    def handler(request):
        return Response(f"render {next(renders)}", headers={"cache-control": "public, max-age=600"})
"""

# Echoes the request headers it got; answers with a header whose value is not ASCII.
HEADERS = """
    from edgefn import Response

    def handler(request):
        body = dict(request.headers.items())
        return Response(body, headers={"x-greeting": "caf\\u00e9"})
"""


def _start(root: Path, env: dict[str, str]) -> Node:
    port = free_port()
    log = root.parent / f"node-{port}.log"
    argv = [sys.executable, "-m", "edge", "node", "--functions", str(root), "--port", str(port)]
    server = Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env, log_path=log)
    server.env.pop("EDGE_INTERFACE", None)
    server.env.update(env)
    server.start(60)
    return Node(port, log, server)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, front_end: str) -> Iterator[Node]:
    root = tmp_path_factory.mktemp(f"front-{front_end}") / "functions"
    write_function(root, "cached", CACHED)
    write_function(root, "headers", HEADERS)
    running = _start(root, {"EDGE_INTERFACE": front_end})
    try:
        yield running
    finally:
        running.server.stop()


def _browser_headers() -> dict[str, str]:
    return dict(header.split(": ", 1) for header in BROWSER_HEADERS)


def test_a_hit_with_browser_headers_is_served_from_the_cache(node: Node) -> None:
    first = node.get("/cached?browser", headers=_browser_headers())
    again = node.get("/cached?browser", headers=_browser_headers())
    assert (first.status, first.body, first.headers["x-cache"]) == (200, b"render 1", "MISS")
    assert (again.status, again.body, again.headers["x-cache"]) == (200, b"render 1", "HIT")
    assert again.headers["cache-control"] == "public, max-age=600"
    assert again.headers["age"] == "0"
    assert again.headers["x-request-id"] != first.headers["x-request-id"]


def test_a_head_hit_has_no_body(node: Node) -> None:
    node.get("/cached?head")
    reply = node.get("/cached?head", method="HEAD")
    assert (reply.status, reply.body, reply.headers["x-cache"]) == (200, b"", "HIT")


def test_a_given_request_id_comes_back_on_a_hit(node: Node) -> None:
    node.get("/cached?ids")
    reply = node.get("/cached?ids", headers={"x-request-id": "client-chosen-1"})
    assert (reply.headers["x-cache"], reply.headers["x-request-id"]) == ("HIT", "client-chosen-1")


def test_the_function_sees_every_request_header_lower_cased(node: Node) -> None:
    seen = node.get("/headers", headers=_browser_headers()).json()
    expected = {name.lower(): value for name, value in _browser_headers().items()}
    assert {name: seen[name] for name in expected} == expected


def _raw_response(node: Node, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received and (chunk := sock.recv(65536)):
            received += chunk
        return received.partition(b"\r\n\r\n")[0]


def test_a_response_header_that_is_not_ascii(node: Node, front_end: str) -> None:
    """The guest encodes header values as latin-1: ASGI sends those bytes; RSGI takes only str,
    and sends the UTF-8 of what the bytes say as latin-1."""
    head = _raw_response(node, b"GET /headers HTTP/1.1\r\nHost: test\r\n\r\n")
    sent = {"asgi": b"x-greeting: caf\xe9", "rsgi": b"x-greeting: caf\xc3\xa9"}[front_end]
    assert sent in head.split(b"\r\n")


def test_a_request_header_that_is_not_ascii(node: Node, front_end: str) -> None:
    """ASGI hands the function every header; granian's RSGI scope leaves out values that are not
    visible ASCII."""
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=5)
    try:
        connection.putrequest("GET", "/headers")
        connection.putheader("x-plain", "ascii")
        connection.putheader("x-name", "caf\xe9".encode("latin-1"))
        connection.endheaders()
        seen = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    assert seen["x-plain"] == "ascii"
    assert seen.get("x-name") == {"asgi": "caf\xe9", "rsgi": None}[front_end]


def test_a_websocket_upgrade_is_refused_and_the_worker_serves_on(node: Node) -> None:
    request = (
        b"GET /headers HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert _raw_response(node, request).partition(b"\r\n")[0] == b"HTTP/1.1 403 Forbidden"
    assert "Unexpected exit from worker" not in node.log_text()
    assert node.get("/cached?after-websocket").status == 200


def test_the_default_front_end_is_rsgi(tmp_path: Path) -> None:
    """Without `interface`, `edge node` serves RSGI: a header only RSGI leaves out is missing."""
    root = tmp_path / "functions"
    write_function(root, "headers", HEADERS)
    default = _start(root, {})
    try:
        assert default.get("/headers", headers={"x-name": "caf\xe9"}).json().get("x-name") is None
    finally:
        default.server.stop()
