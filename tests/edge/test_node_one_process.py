"""A node with `workers = 1` serves from one process: what it holds, and how it restarts in place.

Real nodes over HTTP (the default settings: `supervise = false`). With granian's main process
instead (`supervise = true`): test_node_recycle.py.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from node_harness import Node, NodeFactory, wait_until, write_function

from loadtest._memory import process_tree

# What an instance holds: the function reports which heavy modules its interpreter has loaded.
PROBE = """
    import os
    import sys

    def handler(request):
        heavy = ("site", "threading", "collections", "json", "typing", "re")
        return {
            "pid": os.getpid(),
            "no_site": sys.flags.no_site,
            "loaded": [name for name in heavy if name in sys.modules],
        }
"""

WEDGE = """
    import time

    def handler(request):
        if request.query_string == "sleep":
            time.sleep(100)  # in C: the watchdog cannot interrupt it
        return "fine"
"""

HELLO = """
    def handler(request):
        return "hello"
"""

HOG = """
    kept = []

    def handler(request):
        kept.append(bytearray(40 * 1024 * 1024))
        for page in range(0, len(kept[-1]), 4096):
            kept[-1][page] = 1  # touched: counts in RSS
        return str(40 * len(kept))
"""


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _restarted_in_place(node: Node, marker: str, starts: int) -> None:
    """Wait until the log says why the node restarts in place and it started for the `starts`th
    time (each start prints its banner), then until it serves /hello again."""
    wait_until(lambda: marker in node.log_text(), 20, f"{marker!r} in the log")
    wait_until(lambda: node.log_text().count("function(s) from") == starts, 30, f"start number {starts}")
    wait_until(lambda: node.get("/hello", timeout=1).body == b"hello", 30, "/hello answered again")
    assert node.server.process is not None and node.server.process.poll() is None


def test_the_node_is_one_process_and_its_isolates_load_no_heavy_module(
    tmp_path: Path, start_node: NodeFactory
) -> None:
    write_function(tmp_path / "functions", "probe", PROBE)
    node = start_node(tmp_path / "functions")
    assert process_tree(node.server.pid) == [node.server.pid]
    reply = node.get("/probe").json()
    # The interpreters of a node started without `site` skip it too; the runtime imports none
    # of the modules that would cost every instance hundreds of KiB.
    assert reply == {"pid": node.server.pid, "no_site": 1, "loaded": []}
    # A local-mode node never loads cryptography (≈ 10 MB of its RSS).
    maps = Path(f"/proc/{node.server.pid}/maps").read_text()
    assert "cryptography" not in maps
    assert node.server.stop() == 0


def test_a_recycle_restarts_the_node_in_place_and_keeps_its_failing_marks(
    tmp_path: Path, start_node: NodeFactory
) -> None:
    root = tmp_path / "functions"
    write_function(root, "wedge", WEDGE, "timeout_ms = 200\n")
    write_function(root, "hello", HELLO)
    env = {
        "EDGE_MAX_ABANDONED_ISOLATES": "2",
        "EDGE_MAX_FUNCTION_FAILURES": "2",
        "EDGE_ABANDON_AFTER_MS": "300",
    }
    node = start_node(root, env=env)
    idle_threads = _threads(node.server.pid)
    for n in range(2):
        assert node.get(f"/wedge/{n}?sleep").status == 504
        time.sleep(0.6)
    _restarted_in_place(node, "restarting this node in place once the requests in flight are answered", 2)
    # The same process (the service manager's pid stays), without the stuck threads.
    assert process_tree(node.server.pid) == [node.server.pid]
    assert node.get("/_edge/metrics").json()["wedged_isolates"] == 0
    assert _threads(node.server.pid) <= idle_threads + 1
    # The marks live in the runtime directory, which the restart keeps.
    wait_until(lambda: node.get("/_edge/ready").json()["ready"], 10, "the node ready")
    assert node.get("/_edge/ready").json()["functions"]["wedge"]["state"] == "failing"
    assert node.get("/wedge").status == 503
    assert node.server.stop() == 0


def test_the_rss_ceiling_and_sighup_restart_the_node_in_place(
    tmp_path: Path, start_node: NodeFactory
) -> None:
    root = tmp_path / "functions"
    write_function(root, "hello", HELLO)
    write_function(root, "hog", HOG)
    node = start_node(root, env={"EDGE_MAX_RSS_MB": "200"})
    for _ in range(4):
        assert node.get("/hog").status == 200
    _restarted_in_place(node, "over max_rss_mb = 200", 2)
    assert node.get("/hog").body == b"40"  # a fresh process image: the hog's memory went with it
    assert node.server.process is not None
    node.server.process.send_signal(signal.SIGHUP)
    _restarted_in_place(node, "in flight are answered: SIGHUP", 3)
    assert node.get("/hog").body == b"40"
    assert node.server.stop() == 0
