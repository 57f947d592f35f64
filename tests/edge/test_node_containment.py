"""A real node (granian subprocess): an interpreter-mode function is refused the node's secrets and exits.

Each refusal reaches the client as the exception's text, which names the permission to grant;
after a refused `os._exit` the node and its other functions still serve. And one request of an
async function cannot time out another one of the same isolate.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from node_harness import Node, NodeFactory, write_function

SPY = """
    import os
    import subprocess

    def _read(path):
        with open(path, "rb") as file:
            return len(file.read())

    PROBES = {
        "environ": lambda: _read("/proc/self/environ"),
        "cmdline": lambda: _read("/proc/self/cmdline"),
        "data": lambda: _read(os.environ["DATA"] + "/applied.json"),
        "queues": lambda: __import__("_interpqueues").list_all(),
        "exit": lambda: os._exit(1),
        "subprocess": lambda: subprocess.run(["true"]).returncode,
        "ctypes": lambda: __import__("ctypes").CDLL(None).getpid(),
    }

    def handler(request):
        try:
            return f"ok: {PROBES[request.query_string]()!r}"
        except BaseException as exc:
            return f"{type(exc).__name__}: {exc}"
"""

TIMED = """
    import asyncio
    import time

    async def handler(request):
        if request.query_string == "sleep":
            await asyncio.sleep(5)
        elif request.query_string == "spin":
            until = time.monotonic() + 0.5
            while time.monotonic() < until:
                pass
        return request.query_string
"""

ENDS = "it would end the node's process and every function in it"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("node-data")
    (data / "applied.json").write_text('{"env": {"SECRET": "x"}}')
    return data


@pytest.fixture
def node(tmp_path: Path, start_node: NodeFactory, data_dir: Path) -> Node:
    functions = tmp_path / "functions"
    write_function(functions, "spy", SPY, f'[env]\nDATA = "{data_dir}"\n')
    write_function(functions, "hello", "def handler(request):\n    return 'hello'\n")
    write_function(functions, "timed", TIMED, "timeout_ms = 1000\n")
    return start_node(functions, env={"EDGE_DATA": str(data_dir), "EDGE_TOKEN": "node-secret"})


def test_a_spy_is_refused_with_the_permission_named(node: Node, data_dir: Path) -> None:
    def spy(query: str) -> str:
        reply = node.get(f"/spy?{query}")
        assert reply.status == 200, reply
        return reply.body.decode()

    memory = "the node's process memory and environment are off limits"
    assert spy("environ") == f"PermissionError: function spy may not open '/proc/self/environ': {memory}"
    assert spy("cmdline") == f"PermissionError: function spy may not open '/proc/self/cmdline': {memory}"
    assert spy("data") == (
        f"PermissionError: function spy may not open '{data_dir}/applied.json': "
        "the node's data directories are off limits"
    )
    assert spy("queues") == (
        "ModuleNotFoundError: function spy may not import '_interpqueues': "
        "the node's internals are off limits"
    )
    assert spy("subprocess") == (
        "PermissionError: function spy may not start a process: "
        "subprocess is not allowed: grant it with [permissions] subprocess = true in edge.toml"
    )
    assert spy("ctypes") == (
        "ModuleNotFoundError: function spy may not import 'ctypes': "
        "ctypes is not allowed: grant it with [permissions] ctypes = true in edge.toml"
    )


def test_os_exit_leaves_the_node_and_every_function_serving(node: Node) -> None:
    for _ in range(3):
        reply = node.get("/spy?exit")
        assert reply.body.decode() == f"PermissionError: function spy may not call os._exit: {ENDS}"
    assert node.server.process is not None and node.server.process.poll() is None
    assert node.get("/hello").body == b"hello"
    assert node.get("/spy?cmdline").status == 200


def test_an_async_request_past_its_deadline_leaves_the_others_of_its_isolate_alone(node: Node) -> None:
    assert node.get("/timed?warm").body == b"warm"
    for _ in range(2):
        with ThreadPoolExecutor(2) as pool:
            sleeper = pool.submit(node.get, "/timed?sleep")
            time.sleep(0.8)
            # Spins from 0.8 to 1.3 s, through the sleeper's deadline (1.0 s; the watchdog's 1.05 s).
            spinner = pool.submit(node.get, "/timed?spin")
            assert spinner.result().status == 200
            assert spinner.result().body == b"spin"
            assert sleeper.result().status == 504
            assert sleeper.result().json()["error"] == "function timed timed out after 1000 ms"
