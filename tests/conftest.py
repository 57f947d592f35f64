"""Shared fixtures: real node processes over HTTP on loopback (helpers live in node_harness)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_harness import Node, NodeFactory

from loadtest._servers import Server, free_port


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[NodeFactory]:
    """Start `edge node --functions DIR` as a subprocess; every node is stopped on teardown."""
    servers: list[Server] = []

    def start(functions: Path, env: dict[str, str] | None = None, timeout: float = 60.0) -> Node:
        port = free_port()
        log = tmp_path / f"node-{port}.log"
        argv = [sys.executable, "-m", "edge", "node", "--functions", str(functions), "--port", str(port)]
        server = Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env, log_path=log)
        servers.append(server)
        server.start(timeout)
        return Node(port, log, server)

    yield start
    for server in servers:
        server.stop()
