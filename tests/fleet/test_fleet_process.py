"""A process-isolated function deployed through the origin, on a node whose state directory is
given as a relative path (as `make run` does): the child finds its bundle in its own mount view."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fleet_harness import REPO, Fleet, Node, run_edge, wait_for

CODE = """\
import os

def handler(request):
    return {"uid": os.getuid()}
"""


def test_a_process_function_from_the_origin_serves_with_a_relative_state_directory(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the node runs in REPO; its --data is relative to it
    origin = fleet.start_origin()
    data = Path(os.path.relpath(tmp_path / "relative-node", REPO))
    node = Node(origin, origin.node_token(), data, tmp_path / "relative-node.log", None)
    fleet.nodes.append(node)
    node.start()
    directory = tmp_path / "proc"
    directory.mkdir()
    (directory / "edge.toml").write_text('name = "proc"\nisolation = "process"\n')
    (directory / "main.py").write_text(CODE)
    result = run_edge("deploy", str(directory), "--wait", env=origin.env())
    assert result.returncode == 0, result.stderr
    reply = wait_for(lambda: (r := node.get("/proc")).status == 200 and r, 20, "/proc served")
    # Confined to its own uid when the node is root (CI is).
    assert reply.json()["uid"] != 0 or os.geteuid() != 0
    assert node.ready()["functions"]["proc"]["state"] == "serving"
