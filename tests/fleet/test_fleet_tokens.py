"""Node tokens with real nodes: a node id belongs to one token, so a second node using another
node's bound token is refused (403) while the first keeps working, and `deploy --wait` is not
fooled by a report forged with another valid token."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_harness import Fleet, Node, run_edge, wait_for, write_version

from edge.control.client import OriginClient, OriginError
from edge.control.messages import FunctionStatus, NodeReport
from edge.origin.datadir import hash_token


def _node(fleet: Fleet, token: str, node_id: str) -> Node:
    """A node with this token and id (its id is kept in its state directory), started."""
    assert fleet.origin is not None
    index = len(fleet.nodes) + 1
    data = fleet.root / f"node{index}"
    data.mkdir()
    (data / "node-id").write_text(node_id + "\n")
    node = Node(fleet.origin, token, data, fleet.root / f"node{index}.log", None)
    fleet.nodes.append(node)
    node.start()
    return node


def test_a_second_node_with_another_nodes_bound_token_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    token = origin.node_token("--node", "edge-a")
    first = _node(fleet, token, "edge-a")
    wait_for(lambda: "edge-a" in origin.live_nodes(), 20, "edge-a to register")

    second = _node(fleet, token, "edge-b")
    message = (
        f"node token {hash_token(token)[:12]} is bound to node `edge-a`; it cannot act as node `edge-b`:"
        " give that node its own token (`edge origin token create --role node --node edge-b`)"
    )
    errors = wait_for(lambda: second.ready()["errors"], 20, "edge-b to show its refusal")
    assert errors == [f"sync: 403 forbidden: {message}"]
    assert [n.info.node_id for n in origin.admin().nodes().nodes] == ["edge-a"]

    directory, _ = write_version(tmp_path, "v1")
    result = run_edge("deploy", str(directory), "--wait", env=origin.env())
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[-1] == "1 node(s) applied revision 1"
    assert first.body() == b"v1"
    assert second.ready()["revision"] == 0


def test_deploy_wait_is_not_fooled_by_a_forged_report(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    # Another valid node token: its holder tries to report as the node that is serving.
    forger = OriginClient(origin.url, origin.node_token(), timeout=10)
    v1, _ = write_version(tmp_path, "v1")
    assert run_edge("deploy", str(v1), "--wait", env=origin.env()).returncode == 0
    v2, second = write_version(tmp_path, "v2")
    forged = NodeReport(
        node_id=node.node_id,
        applied_revision=99,
        functions=[FunctionStatus(name="hello", versions=[second], state="error", error="forged: boom")],
    )
    with pytest.raises(OriginError) as caught:
        forger.report(forged)
    assert caught.value.status == 403
    assert caught.value.message.startswith(f"node `{node.node_id}` belongs to token ")

    result = run_edge("deploy", str(v2), "--wait", env=origin.env())

    assert (result.returncode, result.stderr) == (0, "")
    assert "FAILED" not in result.stdout and "forged" not in result.stdout
    assert result.stdout.splitlines()[-1] == "1 node(s) applied revision 2"
    assert node.body() == b"v2"
    assert origin.reported(node.node_id, 2)["functions"][0]["state"] == "serving"
