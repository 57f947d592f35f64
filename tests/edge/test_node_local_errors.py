"""A local node's 503 bodies say what failed without the node's directories (its log keeps them)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.node_harness import NodeFactory, write_function


def test_load_errors_sent_to_clients_carry_no_server_paths(tmp_path: Path, start_node: NodeFactory) -> None:
    functions = tmp_path / "functions"
    write_function(functions, "good", "def handler(request):\n    return 'ok'\n")
    write_function(
        functions, "badtoml", "def handler(request):\n    return 'x'\n", manifest="timeout_ms = 0\n"
    )
    write_function(
        functions, "noimport", "import missing_module_xyz\n\ndef handler(request):\n    return 'x'\n"
    )
    node = start_node(functions)
    assert node.get("/good").body == b"ok"
    for name, expected in (
        ("badtoml", "badtoml/edge.toml: Expected `int` from 1 to 900000, got 0 - at `$.timeout_ms`"),
        ("noimport", "missing_module_xyz"),
    ):
        reply = node.get(f"/{name}")
        assert reply.status == 503
        error = json.loads(reply.body)["error"]
        assert expected in error
        assert str(tmp_path) not in error and str(tmp_path.resolve()) not in error, error
    # The operator's log has the whole path.
    assert str(functions) in node.log_text()
