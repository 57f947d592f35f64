"""The node's admin listener, in `edge node`'s main process: Prometheus text at `GET /metrics`.

Granian's workers each write a sample of what they counted (edge/node/metrics.py); this process
sums them when Prometheus scrapes. Counters (requests, the duration histogram, cold starts,
timeouts, abandoned isolates, cache hits and misses) are the sum over every worker this node ever
had: a dead worker's last sample is folded into totals kept here and its file removed, so a
respawned or recycled worker never makes a counter go back. Gauges (in flight, queue depth,
instances, RSS, isolates, cache bytes, sync revision and lag) come from live workers only.

The exposition is prometheus_client's (a custom collector in a registry of its own, served by a
small threaded WSGI server): the official client's text format, and the same library's parser in
the tests. The listener has no token: keep `admin_host` on loopback or a private interface.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import msgspec
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from edge.node.metrics import BUCKETS, FunctionSample, WorkerSample, process_start

__all__ = ["AdminServer", "NodeCollector", "NodeTotals", "SampleReader"]

log = logging.getLogger("edge.node")

_STATUS_CLASSES = tuple(f"{index}xx" for index in range(10))
# As prometheus_client's own histograms write them ("0.005", "1.0", "+Inf").
_BUCKET_LABELS = (*(floatToGoString(bound) for bound in BUCKETS), "+Inf")  # type: ignore[no-untyped-call]


class FunctionTotals:
    """One function version over the whole node: counters summed, gauges of live workers."""

    __slots__ = (
        "buckets",
        "cold_starts",
        "in_flight",
        "instances",
        "queue_depth",
        "queued",
        "refused",
        "seconds",
        "statuses",
        "timeouts",
    )

    def __init__(self) -> None:
        self.statuses = [0] * 10
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.seconds = 0.0
        self.cold_starts = 0
        self.timeouts = 0
        self.in_flight = 0
        self.queue_depth = 0
        self.instances = 0
        self.queued = 0
        self.refused = 0

    def add_counters(self, sample: FunctionSample | FunctionTotals) -> None:
        self.statuses = [a + b for a, b in zip(self.statuses, sample.statuses, strict=True)]
        self.buckets = [a + b for a, b in zip(self.buckets, sample.buckets, strict=True)]
        self.seconds += sample.seconds
        self.cold_starts += sample.cold_starts
        self.timeouts += sample.timeouts
        self.refused += sample.refused


class NodeTotals(msgspec.Struct, kw_only=True):
    """What the admin listener exposes: the node's workers summed."""

    functions: dict[tuple[str, str], FunctionTotals] = {}
    workers: int = 0
    rss_bytes: int = 0
    isolates: int = 0
    abandoned_isolates: int = 0
    wedged_isolates: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_bytes: int = 0
    # Origin mode: the lowest applied revision and the largest lag among live workers.
    revision: int | None = None
    lag_s: float | None = None
    node_id: str = ""


class SampleReader:
    """Sums the samples in a node's metrics directory; folds in (and removes) dead workers' files."""

    def __init__(self, directory: Path, alive: Callable[[int, int], bool] | None = None) -> None:
        self.directory = directory
        self._alive = alive or _alive
        self._lock = threading.Lock()
        self._retired: dict[tuple[str, str], FunctionTotals] = {}
        self._retired_node = [0, 0, 0]  # abandoned isolates, cache hits, cache misses

    def read(self) -> NodeTotals:
        """The node's totals now (thread-safe: Prometheus may scrape twice at once)."""
        with self._lock:
            return self._read()

    def _read(self) -> NodeTotals:
        live: list[WorkerSample] = []
        for path in sorted(self.directory.glob("worker-*.json")):
            pid, _, started = path.stem.removeprefix("worker-").partition("-")
            # Liveness first: a worker found dead wrote its last sample before it died.
            alive = self._alive(int(pid), int(started))
            try:
                sample = msgspec.json.decode(path.read_bytes(), type=WorkerSample)
            except FileNotFoundError:
                continue
            except (OSError, msgspec.DecodeError) as exc:
                log.error("%s: cannot read a worker's metrics: %s", path, exc)
                continue
            if alive:
                live.append(sample)
            else:
                self._retire(sample)
                path.unlink(missing_ok=True)
        totals = NodeTotals(functions={key: _copy(value) for key, value in self._retired.items()})
        totals.abandoned_isolates, totals.cache_hits, totals.cache_misses = self._retired_node
        revisions, lags = [], []
        for sample in live:
            for function in sample.functions:
                entry = totals.functions.setdefault((function.function, function.version), FunctionTotals())
                entry.add_counters(function)
                entry.in_flight += function.in_flight
                entry.queue_depth += function.queue_depth
                entry.instances += function.instances
                entry.queued += function.queued
            totals.workers += 1
            totals.rss_bytes += sample.rss_bytes
            totals.isolates += sample.isolates
            totals.abandoned_isolates += sample.abandoned_isolates
            totals.wedged_isolates += sample.wedged_isolates
            totals.cache_hits += sample.cache_hits
            totals.cache_misses += sample.cache_misses
            totals.cache_bytes += sample.cache_bytes
            if sample.revision is not None:
                revisions.append(sample.revision)
            if sample.lag_s is not None:
                lags.append(sample.lag_s)
            totals.node_id = totals.node_id or sample.node_id
        totals.revision = min(revisions) if revisions else None
        totals.lag_s = max(lags) if lags else None
        return totals

    def _retire(self, sample: WorkerSample) -> None:
        for function in sample.functions:
            key = (function.function, function.version)
            self._retired.setdefault(key, FunctionTotals()).add_counters(function)
        retired = self._retired_node
        retired[0] += sample.abandoned_isolates
        retired[1] += sample.cache_hits
        retired[2] += sample.cache_misses


def _alive(pid: int, started: int) -> bool:
    return process_start(pid) == started


def _copy(totals: FunctionTotals) -> FunctionTotals:
    copy = FunctionTotals()
    copy.add_counters(totals)
    return copy


class NodeCollector(Collector):
    """The node's metric families, read from its workers' samples at every scrape."""

    def __init__(self, reader: SampleReader, version: str, node_id: Callable[[], str] = lambda: "") -> None:
        self.reader = reader
        self.version = version
        self.node_id = node_id

    def collect(self) -> Iterable[Metric]:
        totals = self.reader.read()
        yield from _function_families(totals)
        yield from _node_families(totals, os.getpid())
        info = GaugeMetricFamily(
            "edge_node_info",
            "The node: its id (origin mode) and the edge version",
            labels=["node_id", "version"],
        )
        info.add_metric([self.node_id() or totals.node_id, self.version], 1)
        yield info


def _function_families(totals: NodeTotals) -> Iterator[Metric]:
    labels = ["function", "version"]
    requests = CounterMetricFamily(
        "edge_function_requests",
        "Requests answered, by function version and status class",
        labels=[*labels, "status_class"],
    )
    duration = HistogramMetricFamily(
        "edge_function_request_duration_seconds",
        "Time from routing a request to its last byte (cache hits included)",
        labels=labels,
    )
    cold = CounterMetricFamily(
        "edge_function_cold_starts", "Requests that were the first an isolate served", labels=labels
    )
    timeouts = CounterMetricFamily(
        "edge_function_timeouts", "Requests answered 504 (timed out)", labels=labels
    )
    in_flight = GaugeMetricFamily(
        "edge_function_in_flight", "Requests routed and not finished", labels=labels
    )
    queue = GaugeMetricFamily(
        "edge_function_queue_depth", "Requests handed to isolates and not answered yet", labels=labels
    )
    instances = GaugeMetricFamily("edge_function_instances", "Isolates serving the version", labels=labels)
    queued = GaugeMetricFamily(
        "edge_function_queued", "Requests waiting for an instance (all busy)", labels=labels
    )
    refused = CounterMetricFamily(
        "edge_function_refused",
        "Requests refused for want of an instance (429 queue full, 503 queue timeout or budget)",
        labels=labels,
    )
    for (function, version), entry in sorted(totals.functions.items()):
        values = [function, version]
        for index, count in enumerate(entry.statuses):
            if count or 2 <= index <= 5:
                requests.add_metric([*values, _STATUS_CLASSES[index]], count)
        cumulative, running = [], 0
        for label, count in zip(_BUCKET_LABELS, entry.buckets, strict=True):
            running += count
            cumulative.append((label, running))
        duration.add_metric(values, cumulative, entry.seconds)
        cold.add_metric(values, entry.cold_starts)
        timeouts.add_metric(values, entry.timeouts)
        in_flight.add_metric(values, entry.in_flight)
        queue.add_metric(values, entry.queue_depth)
        instances.add_metric(values, entry.instances)
        queued.add_metric(values, entry.queued)
        refused.add_metric(values, entry.refused)
    yield from (requests, duration, cold, timeouts, in_flight, queue, instances, queued, refused)


def _node_families(totals: NodeTotals, main_pid: int) -> Iterator[Metric]:
    yield GaugeMetricFamily("edge_node_workers", "Live granian workers", value=totals.workers)
    yield GaugeMetricFamily(
        "edge_node_rss_bytes",
        "Resident memory of the node: its main process and live workers",
        value=totals.rss_bytes + _rss_of(main_pid),
    )
    yield GaugeMetricFamily("edge_node_isolates", "Isolates serving in live workers", value=totals.isolates)
    yield CounterMetricFamily(
        "edge_node_abandoned_isolates", "Isolates abandoned stuck in C code", value=totals.abandoned_isolates
    )
    yield GaugeMetricFamily(
        "edge_node_wedged_isolates",
        "Abandoned isolates still stuck in live workers",
        value=totals.wedged_isolates,
    )
    yield CounterMetricFamily(
        "edge_cache_hits", "Requests answered from the response cache", value=totals.cache_hits
    )
    yield CounterMetricFamily(
        "edge_cache_misses", "Cacheable requests that ran the function", value=totals.cache_misses
    )
    yield GaugeMetricFamily(
        "edge_cache_bytes", "Bytes of responses cached in live workers", value=totals.cache_bytes
    )
    if totals.revision is not None:
        yield GaugeMetricFamily(
            "edge_sync_revision",
            "The origin revision applied (the lowest among workers)",
            value=totals.revision,
        )
    if totals.lag_s is not None:
        yield GaugeMetricFamily(
            "edge_sync_lag_seconds",
            "Seconds since the node last saw itself in step with the origin (0 while connected)",
            value=totals.lag_s,
        )


def _rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class AdminServer:
    """`GET /metrics` on (host, port) from a daemon thread; `start` raises OSError when it cannot bind."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self.host = host
        self.port = port
        self._metrics = make_wsgi_app(registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/metrics":
            result: Iterable[bytes] = self._metrics(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"the admin listener serves GET /metrics\n"]

    def start(self) -> None:
        """Bind and serve; raises OSError (e.g. EADDRINUSE) when the address cannot be had."""
        server_class = _ThreadingServer6 if ":" in self.host else _ThreadingServer
        server = make_server(self.host, self.port, self._app, server_class, _QuietHandler)
        self.port = server.server_port
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="edge-admin", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def registry_for(collector: NodeCollector) -> CollectorRegistry:
    """A registry holding only the node's collector (not prometheus_client's process defaults)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
