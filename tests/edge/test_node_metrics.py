"""Prometheus metrics per function: summed over a node's workers by its main process's admin
listener (parsed with prometheus_client's parser), surviving a killed worker and a version switch;
the admin listener is not the public port; a second node on a busy port refuses to start."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from node_harness import Node, NodeFactory, request, write_function
from prometheus_client.parser import text_string_to_metric_families

from edge.node.admin import NodeCollector, SampleReader
from edge.node.metrics import BUCKETS, FunctionSample, WorkerMetrics, WorkerSample, quantile
from edge.node.settings import SettingsError, load_settings
from loadtest._servers import free_port

WORK = """
    import os

    def handler(request):
        if request.query_string == "fail":
            raise ValueError("boom")
        if request.query_string == "teapot":
            return ("short and stout", 418)
        while request.query_string == "spin":
            pass
        return {"pid": os.getpid()}
"""

EDGE_VERSION = importlib.metadata.version("edge-functions")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of the admin listener's `GET /metrics`, parsed by prometheus_client."""
    reply = request(port, "/metrics")
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.1)


def pids_serving(node: Node, want: int = 2, tries: int = 400) -> tuple[set[int], int]:
    """GET /work on new connections until `want` worker pids answered; returns them and the count."""
    pids: set[int] = set()
    sent = 0
    while len(pids) < want and sent < tries:
        reply = node.get("/work")
        assert reply.status == 200, reply
        pids.add(reply.json()["pid"])
        sent += 1
    assert len(pids) == want, f"{sent} requests reached only the workers {pids}"
    return pids, sent


@pytest.fixture
def functions(tmp_path: Path) -> Path:
    root = tmp_path / "functions"
    write_function(root, "work", WORK, "timeout_ms = 300\n")
    return root


def start(start_node: NodeFactory, functions: Path, workers: int = 2) -> tuple[Node, int]:
    admin = free_port()
    env = {"EDGE_WORKERS": str(workers), "EDGE_ADMIN_PORT": str(admin), "EDGE_ABANDON_AFTER_MS": "2000"}
    return start_node(functions, env=env), admin


def test_metrics_after_a_known_sequence_are_summed_over_two_workers(
    start_node: NodeFactory, functions: Path
) -> None:
    node, admin = start(start_node, functions)
    version = node.get("/_edge/ready").json()["functions"]["work"]["versions"][0]
    pids, ok = pids_serving(node)
    statuses = [
        node.get(f"/work?{query}").status for query in ("fail", "fail", "fail", "teapot", "teapot", "spin")
    ]
    assert statuses == [500, 500, 500, 418, 418, 504]
    assert node.get("/nothing").status == 404  # no function: in the access log, not in function metrics
    total = ok + 6
    labels = {"function": "work", "version": version}

    wait_until(
        lambda: value(scrape(admin), "edge_function_request_duration_seconds_count", **labels) == total,
        f"{total} requests in the histogram",
    )
    samples = scrape(admin)

    requests = {
        status_class: value(samples, "edge_function_requests_total", **labels, status_class=status_class)
        for status_class in ("2xx", "3xx", "4xx", "5xx")
    }
    assert requests == {"2xx": ok, "3xx": 0, "4xx": 2, "5xx": 4}
    assert value(samples, "edge_function_timeouts_total", **labels) == 1
    # Each worker's preloaded isolate served its first request: one cold start per worker.
    assert value(samples, "edge_function_cold_starts_total", **labels) == 2
    assert value(samples, "edge_function_instances", **labels) == 2
    assert value(samples, "edge_function_in_flight", **labels) == 0
    assert value(samples, "edge_function_queue_depth", **labels) == 0
    buckets = {
        le: value(samples, "edge_function_request_duration_seconds_bucket", **labels, le=le)
        for le in (*(f"{bound}" for bound in BUCKETS), "+Inf")
    }
    assert buckets["+Inf"] == total
    assert list(buckets.values()) == sorted(buckets.values())  # cumulative
    # The spin ran into its 300 ms deadline: the only request above 0.25 s.
    assert buckets["0.25"] == total - 1
    duration_sum = value(samples, "edge_function_request_duration_seconds_sum", **labels)
    assert duration_sum is not None and 0.3 < duration_sum < 0.3 + total * 0.25
    assert value(samples, "edge_node_workers") == 2
    assert value(samples, "edge_node_isolates") == 2
    assert value(samples, "edge_node_abandoned_isolates_total") == 0
    assert value(samples, "edge_node_wedged_isolates") == 0
    assert value(samples, "edge_cache_hits_total") == 0
    rss = value(samples, "edge_node_rss_bytes")
    assert rss is not None and rss > 50e6
    assert value(samples, "edge_node_info", node_id="", version=EDGE_VERSION) == 1
    # Local mode: nothing to sync.
    assert not any(name.startswith("edge_sync_") for name, _ in samples)
    assert {name for name, labels in samples if dict(labels).get("function") not in (None, "work")} == set()
    assert len(pids) == 2


def test_the_admin_listener_is_not_the_public_port(start_node: NodeFactory, functions: Path) -> None:
    node, admin = start(start_node, functions, workers=1)

    public = node.get("/metrics")
    assert (public.status, public.json()["error"]) == (404, "no function serves /metrics")
    # The public JSON stays as it was.
    legacy = node.get("/_edge/metrics").json()
    assert set(legacy) >= {"functions", "abandoned_isolates", "isolate_batches", "cache"}
    other = request(admin, "/")
    assert (other.status, other.body) == (404, b"the admin listener serves GET /metrics\n")
    # It listens on loopback only (admin_host), not on every interface.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        assert probe.connect_ex(("127.0.0.1", admin)) == 0
    assert f"edge node: metrics at http://127.0.0.1:{admin}/metrics" in node.log_text()


def test_counters_survive_a_killed_worker(start_node: NodeFactory, functions: Path) -> None:
    node, admin = start(start_node, functions)
    version = node.get("/_edge/ready").json()["functions"]["work"]["versions"][0]
    labels = {"function": "work", "version": version, "status_class": "2xx"}
    pids, ok = pids_serving(node)
    wait_until(lambda: value(scrape(admin), "edge_function_requests_total", **labels) == ok, f"{ok} requests")
    time.sleep(1.5)  # both workers wrote their sample after the last request too

    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: value(scrape(admin), "edge_node_workers") == 1, "the dead worker's gauges to go")
    assert value(scrape(admin), "edge_function_requests_total", **labels) == ok
    assert value(scrape(admin), "edge_function_instances", function="work", version=version) == 1
    wait_until(lambda: value(scrape(admin), "edge_node_workers") == 2, "granian to respawn the worker")

    more, sent = pids_serving(node)
    assert victim not in more
    wait_until(
        lambda: value(scrape(admin), "edge_function_requests_total", **labels) == ok + sent,
        f"{ok + sent} requests over three workers",
    )
    # The new worker's first request was a cold start: two workers then one more.
    assert value(scrape(admin), "edge_function_cold_starts_total", function="work", version=version) == 3


def test_counters_survive_a_version_switch(tmp_path: Path) -> None:
    from fleet.fleet_harness import Fleet, Node, run_edge, wait_for, write_version

    fleet = Fleet(tmp_path)
    try:
        origin = fleet.start_origin()
        node = Node(origin, origin.node_token(), tmp_path / "node", tmp_path / "node.log", None)
        admin = free_port()
        node.environ["EDGE_ADMIN_PORT"] = str(admin)
        fleet.nodes.append(node)
        node.start()
        # Ready comes before registration: --wait waits only for the nodes the origin knows.
        wait_for(lambda: node.node_id in origin.live_nodes(), 20, "the node to register")
        directory, v1 = write_version(tmp_path, "v1")
        assert run_edge("deploy", str(directory), "--wait", env=origin.env()).returncode == 0
        assert [node.get("/hello").body for _ in range(3)] == [b"v1"] * 3
        directory, v2 = write_version(tmp_path, "v2")
        assert run_edge("deploy", str(directory), "--wait", env=origin.env()).returncode == 0
        # --wait returned once the node applied v2: every request now reaches v2.
        assert [node.get("/hello").body for _ in range(3)] == [b"v2"] * 3

        def counts() -> tuple[float | None, ...]:
            samples = scrape(admin)
            return tuple(
                value(
                    samples, "edge_function_requests_total", function="hello", version=v, status_class="2xx"
                )
                for v in (v1, v2)
            )

        wait_until(lambda: counts() == (3, 3), "v1's 3 requests and v2's 3")
        samples = scrape(admin)
        for version in (v1, v2):
            assert value(samples, "edge_function_cold_starts_total", function="hello", version=version) == 1
        # v1 retired: its counters stay, it has no instance left.
        assert value(samples, "edge_function_instances", function="hello", version=v1) == 0
        assert value(samples, "edge_function_instances", function="hello", version=v2) == 1
        assert value(samples, "edge_sync_revision") == 2
        assert value(samples, "edge_sync_lag_seconds") == 0
        assert value(samples, "edge_node_info", node_id=node.node_id, version=EDGE_VERSION) == 1
    finally:
        fleet.close()


def test_a_second_node_on_a_busy_port_refuses_to_start(
    start_node: NodeFactory, functions: Path, tmp_path: Path
) -> None:
    node, _ = start(start_node, functions, workers=1)
    env = {key: value for key, value in os.environ.items() if not key.startswith("EDGE_")}
    argv = [sys.executable, "-m", "edge", "node", "--functions", str(functions), "--port", str(node.port)]

    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=False)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: port {node.port} on 127.0.0.1 is already in use (another edge node?): stop that process,"
        " or pick a free port with --port PORT (or `port` in the settings file, EDGE_PORT)\n"
    )
    # Every request still reaches the first node.
    pids = {node.get("/work").json()["pid"] for _ in range(20)}
    assert len(pids) == 1


def test_a_busy_admin_port_is_reported_and_the_node_serves_on(
    start_node: NodeFactory, functions: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = start_node(functions, env={"EDGE_ADMIN_PORT": str(port)})
        assert node.get("/work").status == 200
        assert (
            f"edge node: error: no admin listener (Prometheus metrics) on 127.0.0.1:{port}: Address already"
            " in use; set a free `admin_port` (EDGE_ADMIN_PORT, 0 turns it off)"
        ) in node.log_text()


# Pure tests of the counting and the summing.


def sample(pid: int, started: int, requests: int, in_flight: int = 0) -> WorkerSample:
    buckets = [0] * (len(BUCKETS) + 1)
    buckets[3] = requests
    function = FunctionSample(
        "f", "v1", [0, 0, requests, 0, 0, 0, 0, 0, 0, 0], buckets, 0.004 * requests, 1, 0, in_flight, 0, 1
    )
    return WorkerSample(
        pid=pid, started=started, time=0.0, functions=[function], cache_hits=requests, isolates=1
    )


def test_a_dead_workers_counters_are_kept_and_its_gauges_dropped(tmp_path: Path) -> None:
    alive = {(1, 10), (2, 20)}
    reader = SampleReader(tmp_path, alive=lambda pid, started: (pid, started) in alive)

    def write(worker: WorkerSample) -> None:
        (tmp_path / f"worker-{worker.pid}-{worker.started}.json").write_bytes(msgspec.json.encode(worker))

    write(sample(1, 10, 5, in_flight=2))
    write(sample(2, 20, 7, in_flight=1))
    totals = reader.read()
    entry = totals.functions[("f", "v1")]
    assert (entry.statuses[2], entry.in_flight, entry.instances, totals.workers, totals.cache_hits) == (
        12,
        3,
        2,
        2,
        12,
    )

    alive.discard((1, 10))  # worker 1 died; worker 3 took its place (the same pid reused, another start)
    write(sample(1, 11, 4))
    alive.add((1, 11))
    totals = reader.read()
    entry = totals.functions[("f", "v1")]
    assert (entry.statuses[2], entry.in_flight, entry.instances, totals.workers, totals.cache_hits) == (
        16,
        1,
        2,
        2,
        16,
    )
    assert entry.cold_starts == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["worker-1-11.json", "worker-2-20.json"]


def test_quantiles_interpolate_within_buckets() -> None:
    buckets = [0] * (len(BUCKETS) + 1)
    assert quantile(buckets, 0.5) == 0.0
    buckets[1] = 100  # all within (0.5 ms, 1 ms]
    assert quantile(buckets, 0.5) == pytest.approx(0.00075)
    buckets[-1] = 100  # half past the last bound: the bound is all that is known
    assert quantile(buckets, 0.99) == BUCKETS[-1]


def test_function_stats_cover_the_last_minute() -> None:
    now = [1000.0]
    metrics = WorkerMetrics(None, monotonic=lambda: now[0])
    counters = metrics.counters("f", "v1")
    counters.begin()
    counters.cold_starts += 1  # the core counts the first request an instance serves
    counters.end(200, 0.002)
    counters.begin()
    counters.end(200, 0.002)
    for step in range(1, 19):  # a sample every 5 s: 2 fast answers a step for 30 s, then 4 slow and a 503
        now[0] = 1000 + 5 * step
        for status in (200, 200) if step <= 6 else (200, 200, 200, 200, 503):
            counters.begin()
            counters.end(status, 0.002 if step <= 6 else 0.02)
        metrics.remember()
    counters.begin()
    counters.end(404, 0.02)
    [stats] = metrics.stats()
    assert (stats.name, stats.version, stats.requests, stats.errors, stats.client_errors) == (
        "f",
        "v1",
        75,
        12,
        1,
    )
    assert (stats.cold_starts, stats.timeouts) == (1, 0)
    # The window starts at the newest sample at least 60 s old (t = 1030, after 14 requests).
    assert (stats.rps, stats.error_rate) == (round(61 / 60, 3), round(12 / 61, 4))
    assert 10 < stats.p50_ms < stats.p99_ms <= 25


def test_the_grafana_dashboard_and_the_rules_use_only_exported_names(tmp_path: Path) -> None:
    worker = sample(os.getpid(), 1, 3)
    worker.revision, worker.lag_s = 4, 0.0
    (tmp_path / f"worker-{worker.pid}-1.json").write_bytes(msgspec.json.encode(worker))
    collector = NodeCollector(SampleReader(tmp_path, alive=lambda pid, started: True), "0.1.0")
    exported = {sample.name for family in collector.collect() for sample in family.samples}
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    dashboard = json.loads((deploy / "grafana" / "edge-functions.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    expressions += [variable.get("query", "") for variable in dashboard["templating"]["list"]]
    rules = yaml_exprs((deploy / "prometheus" / "edge-rules.yml").read_text())
    used = {name for text in [*expressions, *rules] for name in re.findall(r"\bedge_[a-z_]+\b", text)}
    assert len(rules) == 7
    assert used - exported == set()
    assert {"edge_function_requests_total", "edge_sync_lag_seconds", "edge_node_info"} <= used


def yaml_exprs(text: str) -> list[str]:
    """The `expr:` values of a rules file (folded `>` blocks joined), without a YAML library."""
    found: list[str] = []
    lines = text.splitlines()
    for index, raw in enumerate(lines):
        key, _, rest = raw.strip().partition(": ")
        if key != "expr" and raw.strip() != "expr: >":
            continue
        if raw.strip() == "expr: >":
            indent = len(raw) - len(raw.lstrip())
            block = []
            for following in lines[index + 1 :]:
                if len(following) - len(following.lstrip()) <= indent:
                    break
                block.append(following.strip())
            found.append(" ".join(block))
        else:
            found.append(rest)
    return found


def test_an_idle_workers_sample_is_not_rewritten_every_second(tmp_path: Path) -> None:
    now = [0.0]
    metrics = WorkerMetrics(tmp_path, monotonic=lambda: now[0])
    path = tmp_path / f"worker-{os.getpid()}-{process_start_of_self()}.json"
    metrics.write(metrics.sample(None, None, {}))
    path.write_bytes(b"marker")
    now[0] = 29.0
    metrics.write(metrics.sample(None, None, {}))
    assert path.read_bytes() == b"marker"  # unchanged: not written
    counters = metrics.counters("f", "v1")
    counters.begin()
    counters.end(200, 0.001)
    metrics.write(metrics.sample(None, None, {}))
    assert msgspec.json.decode(path.read_bytes(), type=WorkerSample).functions[0].statuses[2] == 1
    now[0] = 60.0
    path.write_bytes(b"marker")
    metrics.write(metrics.sample(None, None, {}))  # 30 s later it is written again anyway
    assert path.read_bytes() != b"marker"


def process_start_of_self() -> int:
    from edge.node.metrics import process_start

    return process_start(os.getpid())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"port": 9000, "admin_port": 9000},
            "command line: Expected `int` from 0 to 65535 other than `port` (9000); 0 turns the admin"
            " listener off, got 9000 - at `$.admin_port`",
        ),
        (
            {"admin_port": 70000},
            "command line: Expected `int` from 0 to 65535 other than `port` (8080); 0 turns the admin"
            " listener off, got 70000 - at `$.admin_port`",
        ),
        ({"admin_host": ""}, "command line: Expected an address, e.g. 127.0.0.1, got '' - at `$.admin_host`"),
    ],
)
def test_bad_admin_settings_are_refused(flags: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(None, {}, flags)
    assert str(error.value) == message


def test_admin_settings_from_the_environment() -> None:
    settings = load_settings(None, {"EDGE_ADMIN_PORT": "0", "EDGE_ACCESS_LOG": "false"})
    assert (settings.admin_port, settings.access_log, settings.admin_host) == (0, False, "127.0.0.1")
