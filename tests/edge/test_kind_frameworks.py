"""Frameworks on a real node over HTTP: the Starlette and Flask examples in interpreter isolates,
the FastAPI example in a process isolate (and its load error in an interpreter isolate), raw ASGI
and WSGI apps that show what the scope and environ hold, and the asgi kind's load errors.

The examples are copied to a temp directory and their `.deps/` filled from this venv by
tests/frameworks.py (no network), as `edge deploy` would from requirements.txt.
"""

from __future__ import annotations

import http.client
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from frameworks import install
from node_harness import Node, Reply, write_function

from loadtest._servers import ROOT, Server, free_port

EDGE = [sys.executable, "-m", "edge"]
NODE_ENV = {"EDGE_ABANDON_AFTER_MS": "300", "EDGE_WARM_POOL": "1"}

ASGI_SCOPE = """
    import json

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        request = await receive()
        shown = {
            key: scope[key]
            for key in ("http_version", "method", "scheme", "path", "root_path", "client", "server")
        }
        shown["raw_path"] = scope["raw_path"].decode()
        shown["query_string"] = scope["query_string"].decode()
        shown["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"] if k.startswith(b"x-")]
        shown["body"] = request["body"].decode()
        body = json.dumps(shown).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
"""

WSGI_ENVIRON = """
    import json

    def app(environ, start_response):
        shown = {key: value for key, value in environ.items() if isinstance(value, str)}
        shown["body"] = environ["wsgi.input"].read().decode()
        body = json.dumps(shown).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
"""

# `?spin` loops in Python until the watchdog interrupts it at the deadline.
ASGI_SPIN = """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while scope["query_string"] == b"spin":
            pass
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"still serving"})
"""

WSGI_SPIN = """
    def app(environ, start_response):
        while environ["QUERY_STRING"] == "spin":
            pass
        start_response("200 OK", [])
        return [b"still serving"]
"""

# Endless streams: what each app learns when the node cuts its stream off at the deadline.
ASGI_ENDLESS = """
    import asyncio

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"tick\\n", "more_body": True})
                await asyncio.sleep(0.05)
        except OSError as exc:
            print(f"asgi app told: {type(exc).__name__}: {exc}")
"""

WSGI_ENDLESS = """
    import time

    class Ticks:
        def __iter__(self):
            while True:
                time.sleep(0.05)
                yield b"tick\\n"

        def close(self):
            print("wsgi iterable closed")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Ticks()
"""

STARTUP_FAILS = """
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
"""


@pytest.fixture(scope="module")
def functions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("frameworks") / "functions"
    for example, framework in (
        ("starlette-app", "starlette"),
        ("flask-app", "flask"),
        ("fastapi-app", "fastapi"),
    ):
        shutil.copytree(ROOT / "examples" / example, root / example, ignore=shutil.ignore_patterns(".deps"))
        install(root / example, framework)
    # The FastAPI example as it would be without `isolation = "process"`.
    shutil.copytree(root / "fastapi-app", root / "fastapi-interpreter")
    manifest = root / "fastapi-interpreter" / "edge.toml"
    manifest.write_text(manifest.read_text().replace('isolation = "process"', 'isolation = "interpreter"'))
    write_function(root, "asgi-scope", ASGI_SCOPE, 'kind = "asgi"\n')
    write_function(root, "wsgi-environ", WSGI_ENVIRON, 'kind = "wsgi"\n')
    write_function(root, "asgi-spin", ASGI_SPIN, 'kind = "asgi"\ntimeout_ms = 300\n')
    write_function(root, "wsgi-spin", WSGI_SPIN, 'kind = "wsgi"\ntimeout_ms = 300\n')
    write_function(root, "asgi-endless", ASGI_ENDLESS, 'kind = "asgi"\ntimeout_ms = 400\n')
    write_function(root, "wsgi-endless", WSGI_ENDLESS, 'kind = "wsgi"\ntimeout_ms = 400\n')
    write_function(root, "startup-fails", STARTUP_FAILS, 'kind = "asgi"\n')
    write_function(root, "edge-as-asgi", "def app(request):\n    return 'hi'\n", 'kind = "asgi"\n')
    return root


@pytest.fixture(scope="module")
def node(functions: Path) -> Iterator[Node]:
    port = free_port()
    log = functions.parent / "node.log"
    argv = [*EDGE, "node", "--functions", str(functions), "--port", str(port)]
    server = Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=NODE_ENV, log_path=log)
    server.start(60)
    try:
        yield Node(port, log, server)
    finally:
        server.stop()


def error_of(reply: Reply) -> str:
    """The message of a node error reply, checking its JSON shape and request id."""
    assert reply.headers["content-type"] == "application/json"
    payload = reply.json()
    assert payload == {"error": payload["error"], "request_id": reply.headers["x-request-id"]}
    error: str = payload["error"]
    return error


def timed_lines(port: int, path: str) -> tuple[Reply, list[float]]:
    """GET `path`; the reply and when (seconds after the head) each line of its body arrived."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        started = time.monotonic()
        lines, times = [], []
        while line := response.readline():
            lines.append(line)
            times.append(time.monotonic() - started)
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, headers, b"".join(lines)), times
    finally:
        connection.close()


# --- Starlette (interpreter) ------------------------------------------------------------------


def test_starlette_route_sees_the_lifespan_state(node: Node) -> None:
    reply = node.get("/starlette-app/?name=Ada")
    assert (reply.status, reply.body) == (200, b"hello from the lifespan, Ada")
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"


def test_starlette_path_parameter(node: Node) -> None:
    first, second = node.get("/starlette-app/items/7").json(), node.get("/starlette-app/items/8").json()
    assert (first["id"], first["name"], second["id"]) == (7, "item 7", 8)
    # Set once by the lifespan at startup, the same for every request of the isolate.
    assert first["started_at"] == second["started_at"] < time.time()
    assert node.get("/starlette-app/items/seven").status == 404


def test_starlette_streaming_response_arrives_as_it_is_sent(node: Node) -> None:
    reply, times = timed_lines(node.port, "/starlette-app/events?count=3")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert reply.headers["transfer-encoding"] == "chunked"
    assert reply.body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    # The app sleeps 0.2 s between events: they were not held back until the end.
    assert times[-1] - times[0] >= 0.3


# --- Flask (interpreter) ----------------------------------------------------------------------


def test_flask_routes_and_json(node: Node) -> None:
    reply = node.get("/flask-app/?name=Ada")
    assert (reply.status, reply.body, reply.headers["content-type"]) == (
        200,
        b"hello, Ada",
        "text/html; charset=utf-8",
    )
    assert node.get("/flask-app/users/3").json() == {"id": 3, "name": "user 3"}
    missing = node.get("/flask-app/nowhere")
    assert missing.status == 404
    assert b"Not Found" in missing.body


def test_flask_form_post(node: Node) -> None:
    reply = node.get(
        "/flask-app/form",
        method="POST",
        body=b"color=red&color=blue&size=L",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.json() == {"fields": {"color": ["red", "blue"], "size": ["L"]}}


def test_flask_generator_response_is_streamed(node: Node) -> None:
    reply, times = timed_lines(node.port, "/flask-app/stream?count=3")
    assert reply.status == 200
    assert reply.headers["transfer-encoding"] == "chunked"
    assert reply.body == b"line 0\nline 1\nline 2\n"
    assert times[-1] - times[0] >= 0.3


# --- FastAPI (process; not in an interpreter) -------------------------------------------------


def test_fastapi_pydantic_model_post_in_a_process_isolate(node: Node) -> None:
    created = node.get(
        "/fastapi-app/items",
        method="POST",
        body=b'{"name": "pen", "price": 2.5, "tags": ["office"]}',
        headers={"Content-Type": "application/json"},
    )
    assert (created.status, created.json()) == (
        201,
        {"id": 1, "name": "pen", "price": 2.5, "tags": ["office"]},
    )
    assert node.get("/fastapi-app/items/1").json() == {"name": "pen", "price": 2.5, "tags": ["office"]}
    assert node.get("/fastapi-app/items/2").json() == {"detail": "no item 2"}
    invalid = node.get(
        "/fastapi-app/items",
        method="POST",
        body=b'{"name": "", "price": -1}',
        headers={"Content-Type": "application/json"},
    )
    assert invalid.status == 422
    assert [error["loc"] for error in invalid.json()["detail"]] == [["body", "name"], ["body", "price"]]


def test_fastapi_in_an_interpreter_isolate_fails_to_load_saying_to_use_a_process(node: Node) -> None:
    reply = node.get("/fastapi-interpreter/items/1")
    assert reply.status == 503
    assert error_of(reply) == (
        "function fastapi-interpreter failed to load: importing module 'main' raised ImportError: "
        "module pydantic_core._pydantic_core does not support loading in subinterpreters; this C "
        'extension cannot load in an interpreter isolate: set `isolation = "process"` in edge.toml'
    )


# --- what raw apps see --------------------------------------------------------------------------


def test_asgi_scope_over_http(node: Node) -> None:
    reply = node.get(
        "/asgi-scope/a%20b/caf%C3%A9?q=1&q=%202", method="POST", body=b"hi", headers={"X-One": "1"}
    )
    shown = reply.json()
    assert shown.pop("client")[0] == "127.0.0.1"
    assert shown == {
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/asgi-scope/a b/café",
        "root_path": "",
        "server": ["127.0.0.1", node.port],
        "raw_path": "/asgi-scope/a%20b/caf%C3%A9",
        "query_string": "q=1&q=%202",
        "headers": [["x-one", "1"]],
        "body": "hi",
    }


def test_wsgi_environ_over_http(node: Node) -> None:
    reply = node.get(
        "/wsgi-environ/caf%C3%A9?q=1",
        method="PUT",
        body=b"payload",
        headers={"Content-Type": "text/plain", "X-One": "1"},
    )
    shown = reply.json()
    assert shown.pop("REMOTE_ADDR") == "127.0.0.1"
    assert shown.pop("REMOTE_PORT").isdigit()
    assert {key: value for key, value in shown.items() if not key.startswith("HTTP_")} == {
        "REQUEST_METHOD": "PUT",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/wsgi-environ/cafÃ©",
        "QUERY_STRING": "q=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "7",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(node.port),
        "wsgi.url_scheme": "http",
        "body": "payload",
    }
    assert shown["HTTP_X_ONE"] == "1"


@pytest.mark.parametrize("name", ["asgi-spin", "wsgi-spin"])
def test_an_app_spinning_past_its_deadline_is_a_504_and_the_isolate_serves_on(node: Node, name: str) -> None:
    reply = node.get(f"/{name}?spin")
    assert reply.status == 504
    assert error_of(reply) == f"function {name} timed out after 300 ms"
    assert node.get(f"/{name}").body == b"still serving"


@pytest.mark.parametrize(
    ("name", "told"),
    [
        ("asgi-endless", "asgi app told: ClientDisconnected: the response is over"),
        ("wsgi-endless", "wsgi iterable closed"),
    ],
)
def test_a_stream_cut_off_at_the_deadline_tells_the_app(node: Node, name: str, told: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        connection.request("GET", f"/{name}")
        response = connection.getresponse()
        assert response.status == 200
        assert response.readline() == b"tick\n"
        with pytest.raises(http.client.IncompleteRead):  # cut off: no last chunk
            response.read()
    finally:
        connection.close()
    deadline = time.monotonic() + 5
    while told not in node.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert told in node.log_text()


# --- load errors --------------------------------------------------------------------------------


def test_lifespan_startup_failed_is_the_load_error(node: Node) -> None:
    reply = node.get("/startup-fails")
    assert reply.status == 503
    assert error_of(reply) == (
        "function startup-fails failed to load: startup failed: LifespanFailed: the ASGI app sent "
        "lifespan.startup.failed: database unreachable"
    )


def test_an_edge_handler_as_kind_asgi_fails_to_load_with_the_fix(node: Node) -> None:
    reply = node.get("/edge-as-asgi")
    assert reply.status == 503
    assert error_of(reply) == (
        "function edge-as-asgi failed to load: kind = 'asgi' expects an ASGI 3 application: "
        "async def app(scope, receive, send); entrypoint 'main:app' takes (request): this looks like an "
        'edge handler(request): set `kind = "edge"` (the default) in edge.toml'
    )
