"""A real node serving interpreter and process functions: a process function's crash, wedge or
memory blow-up costs only its own request, and the node and every other function keep serving."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_harness import Node, NodeFactory, Reply, write_function

from loadtest._servers import ROOT, Server, free_port

EDGE = [sys.executable, "-m", "edge"]
NODE_ENV = {"EDGE_ABANDON_AFTER_MS": "300", "EDGE_WARM_POOL": "1"}
PROCESS = 'isolation = "process"\n'

WHO = """
    import os

    def handler(request):
        return {"pid": os.getpid(), "parent": os.getppid(), "uid": os.getuid()}
"""

CRASH = """
    import ctypes
    import os
    import time

    def handler(request):
        if request.query_string == "exit":
            os._exit(3)
        if request.query_string == "segfault":
            ctypes.string_at(0)
        if request.query_string == "sleep":
            time.sleep(30)
        return {"pid": os.getpid()}
"""

HOG = """
    chunks = []

    def handler(request):
        if request.query_string == "hog":
            while True:
                chunks.append(b"x" * (10 << 20))
        return {"chunks": len(chunks)}
"""


def error_of(reply: Reply) -> str:
    """The message of a node error reply, checking its JSON shape and request id."""
    assert reply.headers["content-type"] == "application/json"
    payload = reply.json()
    assert payload == {"error": payload["error"], "request_id": reply.headers["x-request-id"]}
    error: str = payload["error"]
    return error


@pytest.fixture(scope="module")
def functions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("process") / "functions"
    write_function(root, "hello", "def handler(request):\n    return 'hello'\n")
    write_function(root, "who", WHO, PROCESS)
    write_function(root, "crash", CRASH, PROCESS)
    write_function(root, "stuck", CRASH, PROCESS + "timeout_ms = 400\n")
    write_function(root, "hog", HOG, PROCESS + "memory_mb = 64\n")
    numpy_stats = root / "numpy-stats"
    shutil.copytree(ROOT / "examples" / "numpy-stats", numpy_stats)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    subprocess.run(
        [*pip, "--target", str(numpy_stats / ".deps"), "-r", str(numpy_stats / "requirements.txt")],
        check=True,
    )
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


def test_a_process_function_serves_beside_an_interpreter_function(node: Node) -> None:
    assert node.get("/hello").body == b"hello"
    who = node.get("/who").json()
    assert who["uid"] != 0 or os.geteuid() != 0
    assert who["pid"] != node.server.pid


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("exit", "function crash crashed (exit status 3)"),
        ("segfault", "function crash crashed (signal SIGSEGV)"),
    ],
)
def test_a_crash_is_a_502_and_the_node_and_the_other_functions_keep_serving(
    node: Node, query: str, error: str
) -> None:
    before = node.get("/crash").json()["pid"]
    reply = node.get(f"/crash?{query}")
    assert reply.status == 502
    assert error_of(reply) == error
    assert node.get("/hello").body == b"hello"
    assert node.get("/who").status == 200
    assert node.get("/crash").json()["pid"] != before


def test_a_process_stuck_past_its_deadline_is_a_504_and_is_replaced(node: Node) -> None:
    before = node.get("/stuck").json()["pid"]
    started = time.monotonic()
    reply = node.get("/stuck?sleep")
    assert reply.status == 504
    assert error_of(reply) == "function stuck timed out after 400 ms"
    assert node.get("/hello").body == b"hello"
    # Killed 300 ms (EDGE_ABANDON_AFTER_MS) after the deadline; a new child answers.
    assert node.get("/stuck").json()["pid"] != before
    assert time.monotonic() - started < 3.0
    assert not os.path.exists(f"/proc/{before}")


def test_past_memory_mb_a_process_is_a_503_naming_the_limit_and_is_replaced(node: Node) -> None:
    reply = node.get("/hog?hog")
    assert reply.status == 503
    assert error_of(reply) == "function hog exceeded its memory limit of 64 MiB"
    assert node.get("/hello").body == b"hello"
    assert node.get("/hog").json() == {"chunks": 0}


def test_the_numpy_example_answers_from_a_process(node: Node) -> None:
    reply = node.get("/numpy-stats?x=1,2,3,4")
    assert reply.status == 200
    stats = reply.json()
    assert stats["numpy"].startswith("2.")
    assert {key: stats[key] for key in ("n", "mean", "median")} == {"n": 4, "mean": 2.5, "median": 2.5}


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_stopping_the_node_leaves_no_child_behind(tmp_path: Path, start_node: NodeFactory) -> None:
    write_function(tmp_path / "functions", "who", WHO, PROCESS)
    node = start_node(tmp_path / "functions", env=NODE_ENV)
    child = node.get("/who").json()["pid"]
    node.server.stop()
    assert _gone(child)


@pytest.mark.parametrize("supervise", ["true", "false"])
def test_a_worker_killed_outright_takes_its_children_with_it(
    supervise: str, tmp_path: Path, start_node: NodeFactory
) -> None:
    write_function(tmp_path / "functions", "who", WHO, PROCESS)
    node = start_node(tmp_path / "functions", env={**NODE_ENV, "EDGE_SUPERVISE": supervise})
    who = node.get("/who").json()
    # The worker process is the child's parent: granian's main process is the worker's, or the
    # node serves in one process.
    assert (who["parent"] != node.server.pid) == (supervise == "true")
    os.kill(who["parent"], signal.SIGKILL)
    assert _gone(who["pid"])
