"""A real node (`edge node`, granian in a subprocess) over HTTP: contract, isolation, errors, limits, CLI.

Most tests share one node whose functions directory holds a function per behaviour (starting a
node costs a second or two); tests that stop their node or need another CLI start their own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from node_harness import BOOM, CONTRACT, RUNAWAY, STUCK_IN_C, Node, Reply, write_function

from edge.node.functions import content_version
from loadtest._servers import ROOT, Server, free_port, wait_http

# The host environment of the shared node: secrets a function must never see, small limits.
NODE_ENV = {
    "EDGE_TOKEN": "secret",
    "SOME_SECRET": "x",
    "EDGE_MAX_BODY_BYTES": "1000",
    # Long enough that a stall of this VM does not pass for an isolate stuck in C.
    "EDGE_ABANDON_AFTER_MS": "600",
}
EDGE = [sys.executable, "-m", "edge"]
EVERY_FRONT_END = True  # its node tests run on both front ends (tests/conftest.py)
VALID_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

ENVIRONMENT = """
    import ctypes
    import os

    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    PROCESS = ["EDGE_TOKEN", "SOME_SECRET", "EDGE_NODE_SETTINGS_JSON", "WRITTEN_BY_ENVA", "WRITTEN_BY_ENVB"]

    def process_getenv(name):
        value = libc.getenv(name.encode())
        return value.decode() if value is not None else None

    def handler(request):
        seen = dict(os.environ)
        os.environ["WRITTEN_BY_" + request.context.function.upper()] = "x"
        return {
            "environ": seen,
            "getenv": [os.getenv("EDGE_TOKEN"), os.getenv("SOME_SECRET")],
            # The C environment of the process, which putenv would change for every function.
            "process": {name: process_getenv(name) for name in PROCESS},
        }
"""

STATE = """
    import util

    def handler(request):
        util.calls += 1
        return {"who": util.WHO, "calls": util.calls}
"""

FUNCTIONS: dict[str, tuple[str, str, dict[str, str]]] = {
    # name: (main.py, edge.toml, other files)
    "contract": (CONTRACT, "", {}),
    "state1": (STATE, "", {"util.py": "WHO = 'state1'\ncalls = 0\n"}),
    "state2": (STATE, "", {"util.py": "WHO = 'state2'\ncalls = 0\n"}),
    # They read the process's C environment through libc: ctypes must be granted.
    "enva": (ENVIRONMENT, '[env]\nGREETING = "hi"\n\n[permissions]\nctypes = true\n', {}),
    "envb": (ENVIRONMENT, "[permissions]\nctypes = true\n", {}),
    "wait": (
        """
        import asyncio

        async def handler(request):
            await asyncio.sleep(0.3)
            return {"id": request.context.request_id, "query": request.query_string}
        """,
        "",
        {},
    ),
    "boom": (
        BOOM,
        "",
        {},
    ),
    "slowboom": (
        """
        import asyncio

        async def handler(request):
            await asyncio.sleep(0.3)
            raise ValueError("boom")
        """,
        "",
        {},
    ),
    "spin": (RUNAWAY, "timeout_ms = 300\n", {}),
    "stuck": (STUCK_IN_C, "timeout_ms = 800\n", {}),
    "missing": ("def handler(request):\n    return 'unused'\n", 'entrypoint = "nothere:handler"\n', {}),
    "raising": ("raise RuntimeError('bad config')\n", "", {}),
    "badmanifest": ("def handler(request):\n    return 'unused'\n", 'timeout_ms = "fast"\n', {}),
    "routed": ("def handler(request):\n    return request.path\n", 'routes = ["/api/v2"]\n', {}),
    "talk": (
        """
        import logging
        import sys

        print("loading talk")

        def handler(request):
            print("hello", "there")
            print("to stderr", file=sys.stderr)
            logging.warning("careful")
            return "said"
        """,
        "",
        {},
    ),
    "size": (
        """
        def handler(request):
            return {"size": len(request.body), "id": request.context.request_id}
        """,
        "",
        {},
    ),
}

MISSING_ERROR = (
    "function missing failed to load: module not found: entrypoint 'nothere:handler' names module "
    "'nothere', which is not in the function directory"
)
RAISING_ERROR = "function raising failed to load: importing module 'main' raised RuntimeError: bad config"


@pytest.fixture(scope="module")
def functions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shared") / "functions"
    for name, (code, manifest, files) in FUNCTIONS.items():
        write_function(root, name, code, manifest, files)
    return root


def start_node(functions: Path, log: Path, env: dict[str, str] | None = None) -> Node:
    """`edge node --functions DIR` on a free port, once it answers /_edge/ready."""
    port = free_port()
    argv = [*EDGE, "node", "--functions", str(functions), "--port", str(port)]
    server = Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env, log_path=log)
    server.start(60)
    return Node(port, log, server)


@pytest.fixture(scope="module")
def node(functions: Path, front_end: str) -> Iterator[Node]:
    """The shared node: started once per front end, stopped (SIGTERM, then kill) at its end."""
    log = functions.parent / f"node-{front_end}.log"
    running = start_node(functions, log, {**NODE_ENV, "EDGE_INTERFACE": front_end})
    try:
        yield running
    finally:
        running.server.stop()


def parallel[T](calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls on threads released together; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def wait_for_log(node: Node, found: Callable[[str], bool], timeout: float = 5.0) -> str:
    """The node's log once `found(log)` is true (log lines may trail the response a little)."""
    deadline = time.monotonic() + timeout
    while True:
        text = node.log_text()
        if found(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"not in the node log within {timeout} s:\n{text}")
        time.sleep(0.02)


def error_of(reply: Reply) -> str:
    """The error message of a node error reply, checking the shape and the request id on the way."""
    assert reply.headers["content-type"] == "application/json"
    payload = reply.json()
    assert payload == {"error": payload["error"], "request_id": reply.headers["x-request-id"]}
    error: str = payload["error"]
    return error


def metric(node: Node, name: str) -> Any:
    return node.get("/_edge/metrics").json()[name]


# The function contract over HTTP.


@pytest.mark.parametrize(
    ("kind", "status", "content_type", "body"),
    [
        ("str", 200, "text/plain; charset=utf-8", b"hi"),
        ("bytes", 200, "application/octet-stream", b"\x00\x01"),
        ("dict", 200, "application/json", b'{"a":1}'),
        ("list", 200, "application/json", b'[1,"two"]'),
        ("tuple2", 201, "text/plain; charset=utf-8", b"created"),
        ("tuple3", 418, "text/plain; charset=utf-8", b"teapot"),
        ("response", 202, "text/csv", b"a,b"),
        ("none", 200, None, b""),
    ],
)
def test_return_types_become_http_responses(
    node: Node, kind: str, status: int, content_type: str | None, body: bytes
) -> None:
    reply = node.get(f"/contract?{kind}")
    assert (reply.status, reply.headers.get("content-type"), reply.body) == (status, content_type, body)
    assert reply.headers.get("x-extra") == ("1" if kind == "tuple3" else None)
    assert VALID_ID.fullmatch(reply.headers["x-request-id"])


def test_a_bad_return_value_is_a_500_naming_the_type(node: Node) -> None:
    reply = node.get("/contract?other")
    assert reply.status == 500
    assert error_of(reply) == (
        "TypeError: handler returned int; expected str, bytes, dict, list, "
        "a (body, status[, headers]) tuple or a Response"
    )


# Isolation.


def test_module_state_persists_and_same_named_modules_stay_apart(node: Node) -> None:
    assert node.get("/state1").json() == {"who": "state1", "calls": 1}
    assert node.get("/state1").json() == {"who": "state1", "calls": 2}
    assert node.get("/state2").json() == {"who": "state2", "calls": 1}
    assert node.get("/state1").json() == {"who": "state1", "calls": 3}


def test_a_function_sees_only_its_manifest_environment(node: Node) -> None:
    nothing = dict.fromkeys(
        ["EDGE_TOKEN", "SOME_SECRET", "EDGE_NODE_SETTINGS_JSON", "WRITTEN_BY_ENVA", "WRITTEN_BY_ENVB"]
    )
    first = node.get("/enva").json()
    assert first == {"environ": {"GREETING": "hi"}, "getenv": [None, None], "process": nothing}
    # enva wrote os.environ: envb sees neither its os.environ nor the process environment change.
    assert node.get("/envb").json() == {"environ": {}, "getenv": [None, None], "process": nothing}
    again = node.get("/enva").json()
    assert again == {
        "environ": {"GREETING": "hi", "WRITTEN_BY_ENVA": "x"},
        "getenv": [None, None],
        "process": nothing,
    }


# Concurrency and parallelism.


def test_an_async_handler_serves_concurrent_requests_at_once(node: Node) -> None:
    node.get("/wait?warm")
    started = time.monotonic()
    replies = parallel([lambda i=i: node.get(f"/wait?{i}") for i in range(10)])
    elapsed = time.monotonic() - started
    for i, reply in enumerate(replies):
        assert reply.status == 200
        assert reply.json() == {"id": reply.headers["x-request-id"], "query": str(i)}
    assert len({reply.headers["x-request-id"] for reply in replies}) == 10
    # One after another would take 3 s.
    assert elapsed < 1.0, elapsed


def test_an_exception_is_a_500_without_traceback_and_the_next_request_succeeds(node: Node) -> None:
    reply = node.get("/boom?fail")
    assert reply.status == 500
    request_id = reply.headers["x-request-id"]
    assert reply.json() == {"error": "ValueError: boom", "request_id": request_id}
    assert b"Traceback" not in reply.body
    marker = f" ERROR edge.function: [boom {request_id}] Traceback (most recent call last):\n"
    log = wait_for_log(node, lambda text: marker in text)
    traceback = log[log.index(marker) :]
    assert '    raise ValueError("boom")\nValueError: boom\n' in traceback
    assert node.get("/boom").json() == {"calls": 2}


def test_concurrent_identical_failing_requests_each_name_their_own_request_id(node: Node) -> None:
    # The three requests overlap (the handler sleeps 0.3 s first), so the cache collapses them.
    replies = parallel(
        [lambda i=i: node.get("/slowboom", headers={"x-request-id": f"collapsed-{i}"}) for i in range(3)]
    )
    for i, reply in enumerate(replies):
        assert reply.status == 500
        assert reply.headers["x-request-id"] == f"collapsed-{i}"
        assert reply.json() == {"error": "ValueError: boom", "request_id": f"collapsed-{i}"}


def test_a_runaway_python_loop_is_a_504_and_the_isolate_keeps_its_state(node: Node) -> None:
    started = time.monotonic()
    reply = node.get("/spin?forever")
    elapsed = time.monotonic() - started
    assert reply.status == 504
    assert error_of(reply) == "function spin timed out after 300 ms"
    assert 0.3 <= elapsed < 1.5, elapsed
    # The same isolate answers (a fresh one would say 1): the loop was interrupted inside it.
    assert node.get("/spin").json() == {"calls": 2}


def test_a_handler_stuck_in_c_is_a_504_and_a_fresh_isolate_takes_over(node: Node) -> None:
    assert node.get("/stuck").json() == {"calls": 1}
    abandoned = metric(node, "abandoned_isolates")
    reply = node.get("/stuck?sleep")
    assert reply.status == 504
    assert error_of(reply) == "function stuck timed out after 800 ms"
    started = time.monotonic()
    # Queued behind the stuck call, then moved to the replacement (EDGE_ABANDON_AFTER_MS=600).
    assert node.get("/stuck").json() == {"calls": 1}
    assert time.monotonic() - started < 1.5
    assert metric(node, "abandoned_isolates") == abandoned + 1
    assert node.get("/stuck").json() == {"calls": 2}


# Functions that cannot load.


@pytest.mark.parametrize(("name", "error"), [("missing", MISSING_ERROR), ("raising", RAISING_ERROR)])
def test_a_function_that_fails_to_import_answers_503_and_the_others_serve(
    node: Node, name: str, error: str
) -> None:
    for path in (f"/{name}", f"/{name}/sub?q=1"):
        reply = node.get(path, method="POST", body=b"{}")
        assert reply.status == 503
        assert error_of(reply) == error
    assert node.get("/contract?str").body == b"hi"
    load_error = error.replace(f"function {name} failed to load: ", f"function {name}: failed to load: ")
    assert f" ERROR edge.node: {load_error}\n" in node.log_text()


def test_the_import_traceback_is_in_the_log(node: Node) -> None:
    log = node.log_text()
    marker = " ERROR edge.function: [raising -] Traceback (most recent call last):\n"
    assert marker in log
    assert "\nRuntimeError: bad config\n" in log[log.index(marker) :]


def test_a_manifest_error_answers_503_with_the_manifest_message(node: Node, functions: Path) -> None:
    error = f"{functions}/badmanifest/edge.toml: Expected `int`, got `str` - at `$.timeout_ms`"
    reply = node.get("/badmanifest")
    assert reply.status == 503
    assert error_of(reply) == error
    assert node.get("/contract?str").body == b"hi"
    assert f" ERROR edge.node: function badmanifest: {error}\n" in node.log_text()


# The node's own answers.


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/nope", "no function serves /nope"),
        ("/", "no function serves /"),
        ("/api/v2x", "no function serves /api/v2x"),
        ("/_edge", "no function serves /_edge"),
        ("/_edge/nope", "no node endpoint /_edge/nope"),
    ],
)
def test_an_unknown_path_is_a_404(node: Node, path: str, error: str) -> None:
    reply = node.get(path)
    assert reply.status == 404
    assert error_of(reply) == error


def test_health(node: Node) -> None:
    reply = node.get("/_edge/health")
    assert (reply.status, reply.headers["content-type"], reply.json()) == (
        200,
        "application/json",
        {"status": "ok"},
    )


def test_metrics_count_the_batches_that_reached_isolates(node: Node) -> None:
    before = node.get("/_edge/metrics").json()
    for _ in range(3):
        assert node.get("/spin").status == 200
    after = node.get("/_edge/metrics").json()
    # One at a time: each request is a batch of its own, and waking the idle isolate is the rule.
    assert after["isolate_batches"] - before["isolate_batches"] == 3
    assert 1 <= after["isolate_wakes"] - before["isolate_wakes"] <= 3


def test_ready_lists_every_function_and_its_state(node: Node, functions: Path) -> None:
    reply = node.get("/_edge/ready")
    assert reply.status == 200
    expected: dict[str, Any] = {
        name: {"state": "serving", "versions": [content_version(functions / name)]}
        for name in FUNCTIONS
        if name not in {"missing", "raising", "badmanifest"}
    }
    expected["missing"] = {"state": "error", "error": MISSING_ERROR}
    expected["raising"] = {"state": "error", "error": RAISING_ERROR}
    expected["badmanifest"] = {
        "state": "error",
        "error": f"{functions}/badmanifest/edge.toml: Expected `int`, got `str` - at `$.timeout_ms`",
    }
    assert reply.json() == {"ready": True, "functions": expected, "source": str(functions)}


# Request bodies.


def test_a_body_up_to_the_limit_is_read(node: Node) -> None:
    assert node.get("/size", method="POST", body=b"x" * 1000).json()["size"] == 1000


def test_a_content_length_over_the_limit_is_a_413(node: Node) -> None:
    reply = node.get("/size", method="POST", body=b"x" * 1001)
    assert reply.status == 413
    assert error_of(reply) == "request body over the limit of 1000 bytes"


def post_raw(node: Node, head: bytes, *chunks: bytes) -> Reply:
    """Send a request head and some body bytes, never the end of the body; read the answer."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(head)
        for chunk in chunks:
            sock.sendall(chunk)
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())


def test_a_large_content_length_is_refused_before_the_body_arrives(node: Node) -> None:
    head = b"POST /size HTTP/1.1\r\nHost: node\r\nContent-Length: 50000000\r\n\r\n"
    reply = post_raw(node, head, b"x" * 100)
    assert reply.status == 413
    assert error_of(reply) == "request body over the limit of 1000 bytes"


def test_a_chunked_body_growing_past_the_limit_is_a_413_before_it_ends(node: Node) -> None:
    head = b"POST /size HTTP/1.1\r\nHost: node\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"258\r\n" + b"x" * 600 + b"\r\n"
    # 1200 bytes sent, the terminating chunk never: an answer proves the node did not wait for it.
    reply = post_raw(node, head, chunk, chunk)
    assert reply.status == 413
    assert error_of(reply) == "request body over the limit of 1000 bytes"


def test_a_chunked_body_under_the_limit_is_read(node: Node) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        connection.request("POST", "/size", body=iter([b"a" * 400, b"b" * 400]), encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["size"] == 800
    finally:
        connection.close()


# Request ids.


@pytest.mark.parametrize("given", ["abc-123", "a" * 128, "trace:01/ab+c=d@x.y_z"])
def test_a_valid_request_id_is_kept(node: Node, given: str) -> None:
    reply = node.get("/size", headers={"x-request-id": given})
    assert reply.headers["x-request-id"] == given
    assert reply.json() == {"size": 0, "id": given}


@pytest.mark.parametrize("given", ["abc 123", "a" * 129, "a,b", "<script>", ""])
def test_an_invalid_request_id_is_replaced(node: Node, given: str) -> None:
    reply = node.get("/size", headers={"x-request-id": given})
    replaced = reply.headers["x-request-id"]
    assert replaced != given
    assert VALID_ID.fullmatch(replaced)
    assert reply.json() == {"size": 0, "id": replaced}


def test_generated_request_ids_are_unique(node: Node) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    ids = []
    try:
        for i in range(100):
            connection.request("GET", f"/size?{i}")
            response = connection.getresponse()
            assert json.loads(response.read())["id"] == response.headers["x-request-id"]
            ids.append(response.headers["x-request-id"])
    finally:
        connection.close()
    assert len(set(ids)) == 100
    assert all(VALID_ID.fullmatch(request_id) for request_id in ids)


def test_node_errors_carry_the_given_request_id(node: Node) -> None:
    for path, status in (("/nope", 404), ("/missing", 503), ("/_edge/nope", 404)):
        reply = node.get(path, headers={"x-request-id": "given-1"})
        assert (reply.status, reply.headers["x-request-id"], reply.json()["request_id"]) == (
            status,
            "given-1",
            "given-1",
        )


# Routes from the manifest.


@pytest.mark.parametrize("path", ["/api/v2", "/api/v2/", "/api/v2/users", "/routed", "/routed/x"])
def test_a_manifest_route_serves_its_prefix(node: Node, path: str) -> None:
    reply = node.get(f"{path}?q=1")
    assert (reply.status, reply.body) == (200, path.encode())


# Output of functions.


def test_print_and_logging_reach_the_node_log_tagged(node: Node) -> None:
    assert node.get("/talk", headers={"x-request-id": "talk-1"}).body == b"said"
    expected = [
        " INFO edge.function: [talk -] loading talk\n",
        " INFO edge.function: [talk talk-1] hello there\n",
        " INFO edge.function: [talk talk-1] to stderr\n",
        " INFO edge.function: [talk talk-1] WARNING:root:careful\n",
    ]
    log = wait_for_log(node, lambda text: all(line in text for line in expected))
    positions = [log.index(line) for line in expected]
    assert positions == sorted(positions)


# Stopping.


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_node_cleanly_with_requests_in_flight(
    tmp_path: Path, signum: signal.Signals
) -> None:
    root = tmp_path / "functions"
    write_function(
        root,
        "inflight",
        """
        import asyncio

        async def handler(request):
            print("started", request.query_string)
            await asyncio.sleep(1)
            return "done " + request.query_string
        """,
    )
    node = start_node(root, tmp_path / "node.log")
    process = node.server.process
    assert process is not None
    with contextlib.ExitStack() as stack:
        stack.callback(node.server.stop)
        pool = stack.enter_context(ThreadPoolExecutor(3))
        replies = [pool.submit(node.get, f"/inflight?{i}") for i in range(3)]
        wait_for_log(node, lambda text: text.count("] started ") == 3)
        started = time.monotonic()
        process.send_signal(signum)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 10
        results = sorted(future.result().body for future in replies)
    assert results == [b"done 0", b"done 1", b"done 2"]


# The command line.


def clean_environment(**variables: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}, **variables}


def test_edge_node_prints_a_banner_then_serves(tmp_path: Path) -> None:
    root = tmp_path / "functions"
    write_function(root, "alpha", "def handler(request):\n    return 'a'\n")
    write_function(root, "beta", "def handler(request):\n    return 'b'\n", 'timeout_ms = "fast"\n')
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [*EDGE, "node", "--functions", str(root), "--port", str(port)],
            cwd=ROOT,
            env=clean_environment(),
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline().decode() for _ in range(4)]
        assert banner == [
            f"edge node: 2 function(s) from {root} on {base}\n",
            f"  curl {base}/alpha\n",
            f"  curl {base}/beta   (will answer 503: {root}/beta/edge.toml: "
            "Expected `int`, got `str` - at `$.timeout_ms`)\n",
            f"  curl {base}/_edge/ready\n",
        ]
        wait_http(f"{base}/_edge/ready", 30, process)
        assert wait_http(f"{base}/alpha", 5) == b"a"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.parametrize(
    ("arguments", "variables", "message"),
    [
        (
            ["--functions", "examples"],
            {"EDGE_PORT": "abc"},
            "environment variable EDGE_PORT='abc': Expected `int`, got `str`",
        ),
        (["--functions", "{tmp}/missing"], {}, "--functions {tmp}/missing: not a directory"),
        (
            ["--functions", "examples", "--port", "70000"],
            {},
            "command line: Expected `int` from 0 to 65535, got 70000 - at `$.port`",
        ),
        (
            ["--functions", "examples", "--config", "{tmp}/node.toml"],
            {},
            "{tmp}/node.toml: Expected `int` from 1 to 256, got 0 - at `$.workers`",
        ),
        (
            ["--functions", "examples"],
            {"EDGE_CONFIG": "{tmp}/absent.toml"},
            "{tmp}/absent.toml: cannot read the settings: No such file or directory",
        ),
        ([], {}, "no functions to serve: pass --functions DIR or --origin URL"),
    ],
)
def test_bad_settings_exit_2_with_the_exact_error(
    tmp_path: Path, arguments: list[str], variables: dict[str, str], message: str
) -> None:
    (tmp_path / "node.toml").write_text("workers = 0\n")
    tmp = str(tmp_path)
    done = subprocess.run(
        [*EDGE, "node", *(argument.format(tmp=tmp) for argument in arguments)],
        cwd=ROOT,
        env=clean_environment(**{k: v.format(tmp=tmp) for k, v in variables.items()}),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr.decode()) == (
        2,
        b"",
        f"error: {message.format(tmp=tmp)}\n",
    )
