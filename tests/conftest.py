"""Shared fixtures: real node processes over HTTP on loopback (helpers live in node_harness)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_harness import DEFAULT_FRONT_END, FRONT_ENDS, Node, NodeFactory

from loadtest._servers import Server, free_port


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """In a module with `EVERY_FRONT_END = True`, tests that use `front_end` run once per front end."""
    if "front_end" in metafunc.fixturenames and getattr(metafunc.module, "EVERY_FRONT_END", False):
        metafunc.parametrize("front_end", FRONT_ENDS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def front_end(request: pytest.FixtureRequest) -> str:
    """The `interface` of this module's nodes: the default, or each of FRONT_ENDS in turn."""
    return str(getattr(request, "param", DEFAULT_FRONT_END))


@pytest.fixture
def start_node(tmp_path: Path, front_end: str) -> Iterator[NodeFactory]:
    """Start `edge node --functions DIR` as a subprocess; every node is stopped on teardown."""
    servers: list[Server] = []

    def start(functions: Path, env: dict[str, str] | None = None, timeout: float = 60.0) -> Node:
        port = free_port()
        log = tmp_path / f"node-{port}.log"
        argv = [sys.executable, "-m", "edge", "node", "--functions", str(functions), "--port", str(port)]
        env = {"EDGE_INTERFACE": front_end, **(env or {})}
        server = Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env, log_path=log)
        servers.append(server)
        server.start(timeout)
        return Node(port, log, server)

    yield start
    for server in servers:
        server.stop()
