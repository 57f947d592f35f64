"""The origin goes away: nodes keep serving, also across a restart, and converge once it is back."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fleet_harness import Fleet, Node, run_edge, wait_for, write_version

# A node that failed to reach the origin n times waits up to 0.5 * 2^(n-1) s (edge/control/poll.py):
# the outages here last a few seconds, so the next poll is due within about 8 s of the return.
CONVERGE_S = 15.0


def _disconnected(node: Node) -> bool:
    ready = node.ready()
    errors: list[str] = ready["errors"]
    return (
        not ready["connected"] and bool(errors) and errors[-1].startswith("sync: cannot reach the origin at ")
    )


def test_nodes_keep_serving_while_the_origin_is_down_and_converge_when_it_returns(
    fleet: Fleet, tmp_path: Path
) -> None:
    origin = fleet.start_origin()
    nodes = [fleet.start_node(), fleet.start_node()]
    first, v1 = write_version(tmp_path, "v1")
    second, v2 = write_version(tmp_path, "v2")
    result = run_edge("deploy", str(first), "--wait", env=origin.env())
    assert result.stdout.endswith("2 node(s) applied revision 1\n"), result
    pids = [node.pid for node in nodes]

    origin.stop()

    for node in nodes:
        wait_for(partial(_disconnected, node), 10, "the node to notice the origin is gone")
        assert [node.body() for _ in range(50)] == [b"v1"] * 50
        ready = node.ready()
        assert (ready["functions"], ready["revision"]) == (
            {"hello": {"state": "serving", "versions": [v1]}},
            1,
        )

    origin.start()
    result = run_edge("deploy", str(second), env=origin.env())
    assert result.stdout == f"deployed hello {v2[:12]} at revision 2: {v2[:12]} 100%\n", result

    for node in nodes:
        wait_for(partial(node.serves, b"v2"), CONVERGE_S, "the node to serve v2")
        ready = node.ready()
        assert (ready["functions"], ready["revision"]) == (
            {"hello": {"state": "serving", "versions": [v2]}},
            2,
        )
    assert [node.pid for node in nodes] == pids  # converged without a restart
    wait_for(
        lambda: origin.live_nodes() == {node.node_id for node in nodes}, 10, "both nodes to be live again"
    )


def test_node_restarted_while_the_origin_is_down_serves_its_last_known_good_state(
    fleet: Fleet, tmp_path: Path
) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    first, v1 = write_version(tmp_path, "v1")
    second, v2 = write_version(tmp_path, "v2")
    assert run_edge("deploy", str(first), "--wait", env=origin.env()).returncode == 0
    origin.stop()
    node.stop()
    log_size = len(node.output())

    node.start()

    # Ready (the harness waited for 200 on /_edge/ready) and serving, with no origin at all.
    assert node.body() == b"v1"
    ready = node.ready()
    assert (ready["functions"], ready["revision"]) == ({"hello": {"state": "serving", "versions": [v1]}}, 1)
    assert (
        f"INFO edge.sync: serving last-known-good revision 1 from {node.data}\n" in node.output()[log_size:]
    )
    wait_for(lambda: _disconnected(node), 10, "the node to fail to reach the origin")
    assert node.body() == b"v1"

    origin.start()
    result = run_edge("deploy", str(second), env=origin.env())
    assert result.returncode == 0, result

    wait_for(partial(node.serves, b"v2"), CONVERGE_S, "the node to serve v2")
    ready = node.ready()
    assert (ready["functions"], ready["revision"], ready["connected"]) == (
        {"hello": {"state": "serving", "versions": [v2]}},
        2,
        True,
    )
