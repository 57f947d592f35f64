"""Instance pools over HTTP: concurrency caps, queueing (429, 503), growth, idle reaping, scale to
zero, the node budget and Server-Timing on cold starts (docs/scaling.md). Real nodes on loopback.

Handlers that must stay busy block until the test creates a `go` file in their directory
(a function may read its own bundle), so no test waits on a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from node_harness import Node, NodeFactory, Reply, write_function

BLOCKING = """\
    import os, time

    GO = os.path.join(os.path.dirname(__file__), "go")

    def handler(request):
        while not os.path.exists(GO):
            time.sleep(0.005)
        return "done"
"""

HELLO = """\
    def handler(request):
        return "hello"
"""

# Blank interpreters kept ahead of need would show as isolate threads too.
NO_WARM_POOL = {"EDGE_WARM_POOL": "0", "EDGE_ADMIN_PORT": "0"}


def poll(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """`check()` once it is truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def ready(node: Node, name: str) -> dict[str, Any]:
    """The function's entry in /_edge/ready with its instance figures from /_edge/metrics."""
    entry: dict[str, Any] = node.get("/_edge/ready").json()["functions"][name]
    return {**entry, **node.get("/_edge/metrics").json()["scaling"][name]}


def interpreters(node: Node) -> int:
    """Subinterpreters alive in the node's worker (the warm pool off: one per instance)."""
    count: int = node.get("/_edge/metrics").json()["interpreters"]
    return count


def in_background(node: Node, *paths: str) -> list[Future[Reply]]:
    """GET each path on a thread of its own (distinct paths: the cache would collapse equal GETs)."""
    pool = ThreadPoolExecutor(len(paths))
    futures = [pool.submit(node.get, path, timeout=30.0) for path in paths]
    pool.shutdown(wait=False)
    return futures


def test_a_full_queue_answers_429_and_a_queue_timeout_503(tmp_path: Path, start_node: NodeFactory) -> None:
    directory = write_function(
        tmp_path,
        "busy",
        BLOCKING,
        "[scale]\nmax_instances = 1\nmax_queue = 1\nqueue_timeout_ms = 300\n",
    )
    node = start_node(tmp_path)
    [held] = in_background(node, "/busy?held")
    poll(lambda: ready(node, "busy")["in_flight"] == 1)
    [queued] = in_background(node, "/busy?queued")
    poll(lambda: ready(node, "busy")["queued"] == 1)

    refused = node.get("/busy?refused")
    assert refused.status == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["error"] == (
        "function busy is busy: 1 instance(s) at their concurrency and 1 request(s) queued (max_queue = 1)"
    )

    timed_out = queued.result(timeout=10)
    assert timed_out.status == 503
    assert timed_out.headers["retry-after"] == "1"
    assert timed_out.json()["error"] == (
        "function busy is busy: no instance was free within queue_timeout_ms = 300"
        " (1 instance(s), max_instances = 1)"
    )
    (directory / "go").write_text("")
    assert held.result(timeout=10).body == b"done"
    metrics = node.get("/_edge/metrics").json()
    assert metrics["refused"] == {"queue_full": 1, "queue_timeout": 1, "budget": 0, "error": 0}


def test_min_instances_are_warm_at_start(tmp_path: Path, start_node: NodeFactory) -> None:
    write_function(tmp_path, "warm", HELLO, "[scale]\nmin_instances = 3\n")
    write_function(tmp_path, "plain", HELLO)
    node = start_node(tmp_path, env=NO_WARM_POOL)
    assert (ready(node, "warm")["instances"], ready(node, "plain")["instances"]) == (3, 1)
    assert interpreters(node) == 4
    reply = node.get("/warm")
    assert reply.body == b"hello"
    assert "server-timing" not in reply.headers  # its instance was started ahead of it


def test_a_sync_function_grows_under_queued_load_then_shrinks_when_idle(
    tmp_path: Path, start_node: NodeFactory
) -> None:
    directory = write_function(
        tmp_path, "grow", BLOCKING, "[scale]\nmax_instances = 4\nidle_timeout_s = 0.3\n"
    )
    node = start_node(tmp_path, env=NO_WARM_POOL)
    held = in_background(node, "/grow?1", "/grow?2", "/grow?3", "/grow?4")
    # Four slow requests run at once: four instances, each with its one request, none queued.
    poll(lambda: ready(node, "grow")["in_flight"] == 4)
    assert (ready(node, "grow")["instances"], ready(node, "grow")["queued"]) == (4, 0)
    assert interpreters(node) == 4
    (directory / "go").write_text("")
    replies = [future.result(timeout=10) for future in held]
    assert [reply.body for reply in replies] == [b"done"] * 4
    # Three waited for an instance started for them, and say what it cost.
    timings = sorted(reply.headers.get("server-timing", "") for reply in replies)
    assert timings[0] == ""
    assert all(timing.startswith("cold;dur=") for timing in timings[1:]), timings
    # Idle past idle_timeout_s: back to min_instances (1), the other interpreters gone.
    poll(lambda: ready(node, "grow")["instances"] == 1)
    poll(lambda: interpreters(node) == 1)


def test_min_instances_0_scales_to_zero_and_frees_the_interpreters(
    tmp_path: Path, start_node: NodeFactory
) -> None:
    write_function(tmp_path, "zero", HELLO, "[scale]\nmin_instances = 0\nidle_timeout_s = 0.2\n")
    node = start_node(tmp_path, env=NO_WARM_POOL)
    # Deployed (and proven to load) with one instance, stopped once idle.
    poll(lambda: ready(node, "zero")["state"] == "cold")
    poll(lambda: interpreters(node) == 0)
    assert ready(node, "zero")["instances"] == 0
    first = node.get("/zero?1")
    assert (first.status, first.body) == (200, b"hello")
    assert first.headers["server-timing"].startswith("cold;dur=")
    second = node.get("/zero?2")
    assert "server-timing" not in second.headers
    assert ready(node, "zero")["instances"] == 1
    poll(lambda: interpreters(node) == 0)
    assert node.get("/_edge/metrics").json()["budget"]["instances"] == 0


def test_the_node_budget_retires_lru_idle_instances_and_is_never_exceeded(
    tmp_path: Path, start_node: NodeFactory
) -> None:
    for name in ("a", "b", "c"):
        write_function(tmp_path, name, BLOCKING)
    env = {**NO_WARM_POOL, "EDGE_BUDGET__MAX_INSTANCES": "2"}
    node = start_node(tmp_path, env=env)

    def instances() -> dict[str, int]:
        functions = node.get("/_edge/metrics").json()["scaling"]
        counts = {name: entry["instances"] for name, entry in functions.items()}
        assert sum(counts.values()) <= 2
        assert node.get("/_edge/metrics").json()["budget"]["instances"] <= 2
        return counts

    # At start-up a and b took the budget; c has no instance yet.
    assert instances() == {"a": 1, "b": 1, "c": 0}
    for name in ("a", "b", "c"):
        (tmp_path / name / "go").write_text("")
    assert node.get("/a").body == b"done"
    assert node.get("/b").body == b"done"
    assert node.get("/c").body == b"done"  # a was the least recently used idle instance
    assert instances() == {"a": 0, "b": 1, "c": 1}
    assert node.get("/a?again").body == b"done"  # now b is
    assert instances() == {"a": 1, "b": 0, "c": 1}
    assert node.get("/_edge/metrics").json()["budget"]["evicted"] == 2
    poll(lambda: interpreters(node) <= 2)

    # With every instance busy there is nothing to retire: 503, saying why.
    for name in ("a", "c"):
        (tmp_path / name / "go").unlink()
    held = in_background(node, "/a?held", "/c?held")
    poll(lambda: sum(ready(node, name)["in_flight"] for name in ("a", "c")) == 2)
    refused = node.get("/b?refused")
    assert refused.status == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"] == (
        "function b has no instance: the node's [budget] is used up (2 of max_instances = 2) and no"
        " other function's instance is idle; retry later or raise the budget in the node's settings"
    )
    for name in ("a", "c"):
        (tmp_path / name / "go").write_text("")
    assert [future.result(timeout=10).body for future in held] == [b"done", b"done"]
    assert instances() == {"a": 1, "b": 0, "c": 1}
    assert node.get("/_edge/metrics").json()["refused"]["budget"] == 1


def test_a_lazy_functions_first_response_says_it_paid_a_cold_start(
    tmp_path: Path, start_node: NodeFactory
) -> None:
    write_function(tmp_path, "lazy", HELLO)
    node = start_node(tmp_path, env={"EDGE_PRELOAD": "false"})
    assert ready(node, "lazy")["state"] == "cold"
    first = node.get("/lazy?1")
    assert first.body == b"hello"
    milliseconds = float(first.headers["server-timing"].removeprefix("cold;dur="))
    assert 0 < milliseconds < 10_000
    assert "server-timing" not in node.get("/lazy?2").headers
    assert ready(node, "lazy")["state"] == "serving"


def test_a_process_function_scaled_to_zero_stops_its_child(tmp_path: Path, start_node: NodeFactory) -> None:
    code = """\
        import os

        def handler(request):
            return {"pid": os.getpid()}
    """
    manifest = 'isolation = "process"\nmemory_mb = 64\n[scale]\nmin_instances = 0\nidle_timeout_s = 0.2\n'
    write_function(tmp_path, "child", code, manifest)
    node = start_node(tmp_path, env={**NO_WARM_POOL, "EDGE_BUDGET__MEMORY_BUDGET_MB": "1000"})
    poll(lambda: ready(node, "child")["state"] == "cold")
    reply = node.get("/child")
    pid = reply.json()["pid"]
    assert reply.headers["server-timing"].startswith("cold;dur=")
    # The instance counts its memory_mb against the budget while it runs.
    assert node.get("/_edge/metrics").json()["budget"]["memory_mb"] == 64
    poll(lambda: ready(node, "child")["instances"] == 0)
    poll(lambda: not _running(pid))
    assert node.get("/_edge/metrics").json()["budget"]["memory_mb"] == 0


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def test_an_open_stream_keeps_its_instance_busy_so_the_next_request_gets_another(
    tmp_path: Path, start_node: NodeFactory
) -> None:
    code = """\
        import os, time

        GO = os.path.join(os.path.dirname(__file__), "go")

        def handler(request):
            yield "first "
            while not os.path.exists(GO):
                time.sleep(0.005)
            yield "last"
    """
    directory = write_function(tmp_path, "stream", code, "[scale]\nmax_instances = 2\n")
    node = start_node(tmp_path, env=NO_WARM_POOL)
    [held] = in_background(node, "/stream?held")
    poll(lambda: ready(node, "stream")["in_flight"] == 1)
    # The stream's head was sent long ago; its instance is still the stream's.
    [second] = in_background(node, "/stream?second")
    poll(lambda: ready(node, "stream")["instances"] == 2)
    (directory / "go").write_text("")
    assert [future.result(timeout=10).body for future in (held, second)] == [b"first last"] * 2
    assert ready(node, "stream")["in_flight"] == 0
