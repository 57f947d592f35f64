"""Releases end to end: `edge deploy/promote/rollback/rm` against a real origin, seen on a real node."""

from __future__ import annotations

import http.client
import json
import socket
from collections import Counter
from pathlib import Path

from fleet_harness import Fleet, Hammer, Node, run_edge, wait_for, write_version


def _live(revision: int, node: Node) -> str:
    """What `--wait` prints when the one node applied `revision`."""
    return f"node {node.node_id} ({socket.gethostname()}): applied revision {revision}\n" + (
        f"1 node(s) applied revision {revision}\n"
    )


def _bodies(port: int, count: int) -> Counter[bytes]:
    """`count` GET /hello over one keep-alive connection; every answer must be a 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    bodies: Counter[bytes] = Counter()
    try:
        for _ in range(count):
            connection.request("GET", "/hello")
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200, (response.status, body)
            bodies[body] += 1
    finally:
        connection.close()
    return bodies


def test_deploy_is_served_by_the_node(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    assert node.get("/hello").status == 404
    directory, v1 = write_version(tmp_path, "v1")

    result = run_edge("deploy", str(directory), "--wait", env=origin.env())

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"deployed hello {v1[:12]} at revision 1: {v1[:12]} 100%\n" + _live(1, node)
    reply = node.get("/hello")
    assert (reply.status, reply.body) == (200, b"v1")
    ready = node.ready()
    assert ready["functions"] == {"hello": {"state": "serving", "versions": [v1]}}
    assert (ready["revision"], ready["node_id"], ready["errors"]) == (1, node.node_id, [])
    # What the node keeps for serving across restarts: the extracted bundle and its applied state.
    assert (
        node.data / "bundles" / v1 / "main.py"
    ).read_text() == "async def handler(request):\n    return 'v1'\n"
    applied = json.loads((node.data / "applied.json").read_text())
    assert applied["revision"] == 1
    assert [f["releases"] for f in applied["functions"]] == [[{"version": v1, "weight": 100}]]


def test_second_version_replaces_the_first_atomically(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    first, _ = write_version(tmp_path, "v1")
    second, v2 = write_version(tmp_path, "v2")
    assert run_edge("deploy", str(first), "--wait", env=origin.env()).returncode == 0

    with Hammer(node.port, "/hello", threads=4, limit=20_000, seconds=60) as hammer:
        wait_for(lambda: all(len(r) >= 20 for r in hammer.results), 10, "every client to get answers")
        result = run_edge("deploy", str(second), "--wait", env=origin.env())
        assert (result.returncode, result.stderr) == (0, ""), result
        # Keep going until every connection has been answered by v2 a few times.
        wait_for(
            lambda: all(sum(body == b"v2" for _, body in r[-20:]) == 20 for r in hammer.results),
            10,
            "every client to get v2",
        )

    for results in hammer.results:
        assert {answer for answer in results} <= {(200, b"v1"), (200, b"v2")}, Counter(results)
        bodies = [body for _, body in results]
        switch = bodies.index(b"v2")
        # One connection's requests are sequential: once it got v2, it never gets v1 again.
        assert switch > 0 and bodies[switch:] == [b"v2"] * (len(bodies) - switch), Counter(bodies)
    assert node.ready()["functions"] == {"hello": {"state": "serving", "versions": [v2]}}


def test_canary_split_then_promote(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    first, v1 = write_version(tmp_path, "v1")
    second, v2 = write_version(tmp_path, "v2")
    assert run_edge("deploy", str(first), "--wait", env=origin.env()).returncode == 0

    result = run_edge("deploy", str(second), "--canary", "30", "--wait", env=origin.env())

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"deployed hello {v2[:12]} at revision 2: {v1[:12]} 70%, {v2[:12]} 30%\n" + _live(2, node)
    )
    assert node.ready()["functions"] == {"hello": {"state": "serving", "versions": [v1, v2]}}
    bodies = _bodies(node.port, 1000)
    assert set(bodies) == {b"v1", b"v2"}
    assert 250 <= bodies[b"v2"] <= 350, bodies

    result = run_edge("promote", "hello", "--wait", env=origin.env())

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"promoted hello at revision 3: {v2[:12]} 100%\n" + _live(3, node)
    assert node.ready()["functions"] == {"hello": {"state": "serving", "versions": [v2]}}
    assert _bodies(node.port, 300) == {b"v2": 300}


def test_rollback_and_rollback_to_a_version_prefix(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    first, v1 = write_version(tmp_path, "v1")
    second, v2 = write_version(tmp_path, "v2")
    assert run_edge("deploy", str(first), "--wait", env=origin.env()).returncode == 0
    assert run_edge("deploy", str(second), "--wait", env=origin.env()).returncode == 0
    assert _bodies(node.port, 50) == {b"v2": 50}

    result = run_edge("rollback", "hello", "--wait", env=origin.env())

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"rolled back hello at revision 3: {v1[:12]} 100%\n" + _live(3, node)
    assert node.ready()["functions"] == {"hello": {"state": "serving", "versions": [v1]}}
    assert _bodies(node.port, 100) == {b"v1": 100}

    result = run_edge("rollback", "hello", "--to", v2[:8], "--wait", env=origin.env())

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"rolled back hello at revision 4: {v2[:12]} 100%\n" + _live(4, node)
    assert node.ready()["functions"] == {"hello": {"state": "serving", "versions": [v2]}}
    assert _bodies(node.port, 100) == {b"v2": 100}


def test_rm_stops_serving_on_the_node(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    directory, _ = write_version(tmp_path, "v1")
    assert run_edge("deploy", str(directory), "--wait", env=origin.env()).returncode == 0
    assert node.body() == b"v1"

    result = run_edge("rm", "hello", "--wait", env=origin.env())

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "removed hello at revision 2\n" + _live(2, node)
    reply = node.get("/hello")
    assert reply.status == 404
    assert reply.json() == {"error": "no function serves /hello", "request_id": reply.headers["x-request-id"]}
    ready = node.ready()
    assert (ready["functions"], ready["revision"], ready["errors"]) == ({}, 2, [])
    assert json.loads((node.data / "applied.json").read_text())["functions"] == []
