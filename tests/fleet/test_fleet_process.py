"""A process-isolated function deployed through the origin, on a node whose state directory is
given as a relative path (as `make run` does): the child finds its bundle in its own mount view."""

from __future__ import annotations

import os
import time
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


WEDGE = """\
import time

def handler(request):
    time.sleep(30)  # stuck in C: the isolate is abandoned every time
    return "never"
"""


def test_a_function_marked_failing_is_reported_to_the_origin(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = Node(origin, origin.node_token(), tmp_path / "node", tmp_path / "node.log", None)
    node.environ.update(EDGE_MAX_FUNCTION_FAILURES="2", EDGE_ABANDON_AFTER_MS="200")
    fleet.nodes.append(node)
    node.start()
    directory = tmp_path / "wedge"
    directory.mkdir()
    (directory / "edge.toml").write_text('name = "wedge"\ntimeout_ms = 100\n')
    (directory / "main.py").write_text(WEDGE)
    result = run_edge("deploy", str(directory), "--wait", env=origin.env())
    assert result.returncode == 0, result.stderr
    for n in range(2):
        assert node.get(f"/wedge/{n}").status == 504
        time.sleep(0.5)  # past abandon_after_ms: the stuck isolate is replaced, a failure counted
    wait_for(lambda: node.ready()["functions"]["wedge"]["state"] == "failing", 5, "failing on the node")

    def reported() -> dict[str, object] | None:
        report = origin.node_report(node.node_id)
        if report is None:
            return None
        functions: list[dict[str, object]] = report["functions"]  # type: ignore[assignment]
        for function in functions:
            if function["name"] == "wedge" and function["state"] == "failing":
                return function
        return None

    function = wait_for(reported, 20, "the origin told the function is failing")
    assert "is failing: it got stuck or crashed 2 times within 60 s" in str(function["error"])
