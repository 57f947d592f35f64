"""Bodies are whole or the handler does not run: cut-off and malformed bodies over a real node."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_harness import Node, NodeFactory, write_function

# Every test runs on both front ends (tests/conftest.py).
EVERY_FRONT_END = True

# Counts the requests that reached it and the body sizes it saw.
COUNTER = """
    seen = []

    def handler(request):
        if request.method == "POST":
            seen.append(len(request.body))
        return {"seen": seen}
"""


@pytest.fixture
def node(tmp_path: Path, start_node: NodeFactory) -> Iterator[Node]:
    root = tmp_path / "functions"
    write_function(root, "count", COUNTER)
    yield start_node(root)


def _raw(port: int, data: bytes, close_write: bool) -> bytes:
    """Send raw bytes on one connection; read what comes back until the server closes or 2 s pass."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if close_write is False and b"\r\n\r\n" in received and received.endswith(b"}"):
                    break
        except TimeoutError:
            pass
        return received


def _metric(node: Node, name: str) -> int:
    value: int = node.get("/_edge/metrics").json()[name]
    return value


def _seen(node: Node) -> list[int]:
    seen: list[int] = node.get("/count").json()["seen"]
    return seen


HEAD = b"POST /count HTTP/1.1\r\nHost: test\r\n"


@pytest.mark.parametrize(
    "chunked",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"-5\r\nabc\r\n0\r\n\r\n", b"5\r\nabc\r\n0\r\n\r\n"],
    ids=["not-hex", "negative", "size-mismatch"],
)
def test_an_invalid_chunked_body_gets_400_and_never_reaches_the_handler(node: Node, chunked: bytes) -> None:
    before = _metric(node, "incomplete_bodies")
    reply = _raw(node.port, HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked, close_write=False)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request"
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"] == "request body incomplete or malformed: expected a valid chunked body"
    assert _seen(node) == []
    assert _metric(node, "incomplete_bodies") == before + 1


def test_a_body_cut_off_before_its_content_length_never_reaches_the_handler(node: Node) -> None:
    before = _metric(node, "incomplete_bodies")
    _raw(node.port, HEAD + b"Content-Length: 1000\r\n\r\n0123456789", close_write=True)
    deadline = time.monotonic() + 5
    while _metric(node, "incomplete_bodies") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(node, "incomplete_bodies") == before + 1
    assert _seen(node) == []


def test_a_client_gone_mid_body_gets_nothing_and_the_node_keeps_serving(node: Node) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=2.0) as sock:
        sock.sendall(HEAD + b"Content-Length: 100\r\n\r\nabc")
    deadline = time.monotonic() + 5
    while _metric(node, "incomplete_bodies") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(node, "incomplete_bodies") == 1
    assert node.get("/count", method="POST", body=b"whole").status == 200
    assert _seen(node) == [5]


def test_a_non_numeric_content_length_is_a_400(node: Node) -> None:
    reply = _raw(node.port, HEAD + b"Content-Length: 1x\r\n\r\n1x", close_write=False)
    # granian's parser may refuse it before the app sees it; either way it is a 400, never a call.
    assert reply.startswith(b"HTTP/1.1 400")
    assert _seen(node) == []


def test_a_whole_body_still_reaches_the_handler(node: Node) -> None:
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    reply = _raw(node.port, chunked, close_write=False)
    assert reply.startswith(b"HTTP/1.1 200")
    assert node.get("/count", method="POST", body=b"x" * 10).status == 200
    assert _seen(node) == [5, 10]
    assert _metric(node, "incomplete_bodies") == 0
