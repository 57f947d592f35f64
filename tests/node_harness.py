"""Test helpers shared by every tier: function directories on disk, HTTP requests, node handles."""

from __future__ import annotations

import http.client
import json
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from loadtest._servers import Server

# The node's front ends (its `interface` setting). A test module that sets `EVERY_FRONT_END = True`
# runs each of its tests that use the `front_end` fixture (start_node does) once per front end.
FRONT_ENDS = ("rsgi", "asgi")
DEFAULT_FRONT_END = "rsgi"


class Reply(NamedTuple):
    """An HTTP response, read whole."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def write_function(
    root: Path, name: str, code: str, manifest: str = "", files: dict[str, str] | None = None
) -> Path:
    """Create `root/name` with an edge.toml and main.py (dedented), plus `files` (relative paths)."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "edge.toml").write_text(textwrap.dedent(manifest))
    (directory / "main.py").write_text(textwrap.dedent(code))
    for filename, text in (files or {}).items():
        (directory / filename).parent.mkdir(parents=True, exist_ok=True)
        (directory / filename).write_text(textwrap.dedent(text))
    return directory


def request(
    port: int,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP/1.1 request to 127.0.0.1:port."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


class Node(NamedTuple):
    """A running node: its port, its log file and the server handle."""

    port: int
    log: Path
    server: Server

    def get(self, path: str, **kwargs: Any) -> Reply:
        return request(self.port, path, **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


NodeFactory = Callable[..., Node]


# A handler that returns each kind of value the contract allows, chosen by the query string.
CONTRACT = """
    from edgefn import Response

    def handler(request):
        kind = request.query_string
        if kind == "str":
            return "hi"
        if kind == "bytes":
            return b"\\x00\\x01"
        if kind == "dict":
            return {"a": 1}
        if kind == "list":
            return [1, "two"]
        if kind == "tuple2":
            return ("created", 201)
        if kind == "tuple3":
            return ("teapot", 418, {"X-Extra": "1"})
        if kind == "response":
            return Response(b"a,b", status=202, headers={"Content-Type": "text/csv"})
        if kind == "none":
            return None
        if kind == "bad":
            return 42
        if kind == "badstatus":
            return ("x", 1000)
        return 42
"""

# Counts its calls; `?forever` spins in Python until the watchdog interrupts it.
RUNAWAY = """
    calls = 0

    def handler(request):
        global calls
        calls += 1
        while request.query_string == "forever":
            pass
        return {"calls": calls}
"""

# Counts its calls; `?fail` raises ValueError("boom").
BOOM = """
    calls = 0

    def handler(request):
        global calls
        calls += 1
        if request.query_string == "fail":
            raise ValueError("boom")
        return {"calls": calls}
"""

# Counts its calls; `?sleep` blocks in C (time.sleep), where nothing can interrupt it.
STUCK_IN_C = """
    import time

    calls = 0

    def handler(request):
        global calls
        calls += 1
        if request.query_string == "sleep":
            time.sleep(3)
        return {"calls": calls}
"""


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `condition` every 0.1 s until it returns something true (OSError and ValueError count
    as not yet: a node restarting refuses connections); that value, or AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (OSError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")
