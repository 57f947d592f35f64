"""Cache purges travel from `edge purge` through the origin to every node's response cache."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from fleet_harness import Fleet, Node, run_edge, wait_for, write_version

SITE = """\
calls = 0

def handler(request):
    global calls
    calls += 1
    tag = "blog" if request.path.startswith("/site/blog") else "misc"
    headers = {"cache-control": "public, max-age=3600", "cache-tag": tag}
    return (f"{request.path} render {calls}", 200, headers)
"""

PATHS = ("/site/a", "/site/blog/1", "/site/blog/2", "/site/other")


def cache_states(node: Node) -> dict[str, str]:
    """x-cache for one request to each path (a MISS fills the entry again)."""
    return {path: node.get(path).headers["x-cache"] for path in PATHS}


def _applied(nodes: list[Node], what: str) -> str:
    """The lines `--wait` prints for nodes that applied `what` (by node id)."""
    host = socket.gethostname()
    return "".join(
        f"node {n.node_id} ({host}): applied {what}\n" for n in sorted(nodes, key=lambda n: n.node_id)
    )


def warm(node: Node) -> None:
    cache_states(node)
    assert cache_states(node) == dict.fromkeys(PATHS, "HIT")


def test_purges_by_path_prefix_tag_and_all_reach_every_node(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    nodes = [fleet.start_node(), fleet.start_node()]
    directory, _ = write_version(tmp_path, "site", name="site", code=SITE)
    assert run_edge("deploy", str(directory), "--wait", env=origin.env()).returncode == 0
    for node in nodes:
        warm(node)

    result = run_edge("purge", "site", "--path", "/site/a", "--wait", env=origin.env())
    assert result.stdout == (
        "purge order 1 for site (path /site/a) at revision 2\n"
        + _applied(nodes, "purge order 1")
        + "2 node(s) applied purge order 1\n"
    ), result
    for node in nodes:
        assert cache_states(node) == {
            "/site/a": "MISS",
            "/site/blog/1": "HIT",
            "/site/blog/2": "HIT",
            "/site/other": "HIT",
        }

    assert run_edge("purge", "site", "--prefix", "/site/blog", "--wait", env=origin.env()).returncode == 0
    for node in nodes:
        assert cache_states(node) == {
            "/site/a": "HIT",
            "/site/blog/1": "MISS",
            "/site/blog/2": "MISS",
            "/site/other": "HIT",
        }

    assert run_edge("purge", "site", "--tag", "misc", "--wait", env=origin.env()).returncode == 0
    for node in nodes:
        assert cache_states(node) == {
            "/site/a": "MISS",
            "/site/blog/1": "HIT",
            "/site/blog/2": "HIT",
            "/site/other": "MISS",
        }

    result = run_edge("purge", "site", "--all", "--wait", env=origin.env())
    assert result.stdout == (
        "purge order 4 for site (everything) at revision 5\n"
        + _applied(nodes, "purge order 4")
        + "2 node(s) applied purge order 4\n"
    ), result
    for node in nodes:
        assert cache_states(node) == dict.fromkeys(PATHS, "MISS")

    # Applied once: later revisions (another deploy) do not purge again.
    other, _ = write_version(tmp_path, "other", name="other")
    assert run_edge("deploy", str(other), "--wait", env=origin.env()).returncode == 0
    for node in nodes:
        assert cache_states(node) == dict.fromkeys(PATHS, "HIT")
        assert origin.reported(node.node_id, 6)["applied_purge_id"] == 4


def test_a_node_that_missed_a_purge_applies_it_when_it_syncs_again(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    awake, frozen = fleet.start_node(), fleet.start_node()
    directory, _ = write_version(tmp_path, "site", name="site", code=SITE)
    assert run_edge("deploy", str(directory), "--wait", env=origin.env()).returncode == 0
    for node in (awake, frozen):
        warm(node)

    group = os.getpgid(frozen.pid)
    os.killpg(group, signal.SIGSTOP)  # the node and its worker: no polls, no reports
    try:
        result = run_edge("purge", "site", "--tag", "blog", env=origin.env())
        assert result.stdout == "purge order 1 for site (tag blog) at revision 2\n", result
        wait_for(lambda: origin.reported(awake.node_id, 2)["applied_purge_id"] == 1, 10, "the awake node")
        assert cache_states(awake)["/site/blog/1"] == "MISS"
    finally:
        os.killpg(group, signal.SIGCONT)

    report = wait_for(
        lambda: (r := origin.node_report(frozen.node_id)) and r["applied_purge_id"] == 1 and r,
        15,
        "the node that was frozen to apply the purge",
    )
    assert report["applied_revision"] == 2
    assert cache_states(frozen) == {
        "/site/a": "HIT",
        "/site/blog/1": "MISS",
        "/site/blog/2": "MISS",
        "/site/other": "HIT",
    }
