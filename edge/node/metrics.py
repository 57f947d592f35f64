"""Per-function metrics of one node worker, and the snapshots the node's main process sums.

The request path counts in plain Python (a dict lookup, a few integer additions and one bisect
per request: no prometheus_client call there). Once a second, and at shutdown, the worker writes
everything it counted as one `WorkerSample` (msgspec JSON, atomic rename) into the node's metrics
directory, `<runtime dir>/metrics/` (functions may not open the runtime directory). The main
process (edge/node/admin.py) sums the samples of every worker, dead ones included, into the
Prometheus text at the admin listener's `GET /metrics`.

Definitions:
- a request counts once it is answered, under its function and version (version "" when the
  function had no version to run: it failed to load), by status class;
- its duration runs from routing to the last byte handed to the server (a cache hit included);
- a cold start is the first request an instance serves: one started for it (a lazy function's
  first request, or one the pool grew for queued requests), the first one after a deploy switched
  versions, the first in a new worker (a stuck isolate replaced in its instance does not count);
- a timeout is a 504 (only deadlines make one);
- in flight: requests routed to the function version and not finished; queue depth: requests
  handed to its isolates and not answered yet (waiting or running); queued: requests waiting for
  an instance (docs/scaling.md); refused: requests answered 429 (queue full) or 503 (queue
  timeout, node budget, no instance could start); instances: its isolates.

`function_stats()` reports this worker's own figures: with several workers each worker reports
to the origin as a node of its own (edge/node/sync.py).
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from cache.stats import CacheStats
from edge.control.messages import FunctionStats
from isolates.pool import IsolatePool

__all__ = [
    "BUCKETS",
    "SAMPLE_INTERVAL_S",
    "Counters",
    "FunctionSample",
    "WorkerMetrics",
    "WorkerSample",
    "metrics_directory",
    "process_start",
    "quantile",
]

log = logging.getLogger("edge.node")

# Upper bounds (seconds) of the duration histogram's buckets; one more bucket counts the rest (+Inf).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# How often a worker writes its sample, and how often it keeps one for the last-minute figures.
SAMPLE_INTERVAL_S = 1.0
# An unchanged sample (an idle worker) is written again only after this long: an SD card's writes are few.
REWRITE_AFTER_S = 30.0
HISTORY_INTERVAL_S = 5.0
WINDOW_S = 60.0

_PAGE = os.sysconf("SC_PAGE_SIZE")


def metrics_directory(runtime_dir: str) -> Path:
    """Where the workers of the node whose runtime directory is `runtime_dir` write their samples."""
    return Path(runtime_dir, "metrics")


def process_start(pid: int) -> int:
    """The start time (clock ticks since boot) of a running process; 0 when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return 0
    fields = text[text.rindex(b")") + 2 :].split()  # the name in parentheses may hold spaces
    return 0 if fields[0] in (b"Z", b"X") else int(fields[19])


class Counters:
    """What one worker counted for one function version (updated per request)."""

    __slots__ = ("buckets", "cold_starts", "in_flight", "refused", "seconds", "statuses", "timeouts")

    def __init__(self) -> None:
        # Index: the status class (2 for 2xx); statuses past 999 count as 9xx.
        self.statuses = [0] * 10
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.seconds = 0.0
        self.cold_starts = 0
        self.timeouts = 0
        self.in_flight = 0
        # Answered 429 or 503 for want of an instance (queue full or timed out, node budget).
        self.refused = 0

    def begin(self) -> None:
        """Called when a request is routed to this version (the core counts its cold starts)."""
        self.in_flight += 1

    def end(self, status: int, seconds: float) -> None:
        """Called once the request's answer is sent."""
        self.in_flight -= 1
        self.statuses[min(status // 100, 9)] += 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.seconds += seconds
        if status == 504:
            self.timeouts += 1


class FunctionSample(msgspec.Struct, array_like=True):
    """One function version's counters and gauges in one worker's sample."""

    function: str
    version: str
    statuses: list[int]
    buckets: list[int]
    seconds: float
    cold_starts: int
    timeouts: int
    in_flight: int
    queue_depth: int
    instances: int
    queued: int = 0
    refused: int = 0


class WorkerSample(msgspec.Struct, kw_only=True):
    """Everything one worker counted since it started, and its gauges now (one file per worker)."""

    pid: int
    # The worker's start time in clock ticks (a live worker, not a reused pid, has the same).
    started: int
    time: float
    functions: list[FunctionSample] = []
    rss_bytes: int = 0
    isolates: int = 0
    abandoned_isolates: int = 0
    wedged_isolates: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_bytes: int = 0
    # Origin mode only: the applied revision, and seconds since the worker last saw itself in step
    # with the origin (0 while connected).
    revision: int | None = None
    lag_s: float | None = None
    node_id: str = ""


def quantile(buckets: list[int], q: float) -> float:
    """The `q` quantile (seconds) of a histogram's bucket counts, interpolated as Prometheus does."""
    total = sum(buckets)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index == len(BUCKETS):  # the +Inf bucket: the highest finite bound is all we know
                return BUCKETS[-1]
            lower = BUCKETS[index - 1] if index else 0.0
            return lower + (BUCKETS[index] - lower) * (rank - seen) / count
        seen += count
    return BUCKETS[-1]


# (time, {(function, version): (requests, 5xx, buckets)}) kept for the last-minute figures.
_Totals = dict[tuple[str, str], tuple[int, int, list[int]]]
_NONE = (0, 0, [0] * (len(BUCKETS) + 1))


class WorkerMetrics:
    """This worker's counters by (function, version), its samples and its last-minute figures."""

    def __init__(
        self,
        directory: Path | None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.functions: dict[tuple[str, str], Counters] = {}
        self._directory = directory
        self._clock = clock
        self._monotonic = monotonic
        self._pid = os.getpid()
        self._started = process_start(self._pid)
        self._path = directory / f"worker-{self._pid}-{self._started}.json" if directory else None
        self._history: deque[tuple[float, _Totals]] = deque([(monotonic(), {})])
        self._in_step_at = monotonic()
        # The last sample written (its time and RSS left out) and when.
        self._written: WorkerSample | None = None
        self._written_at = 0.0

    def counters(self, function: str, version: str) -> Counters:
        """The counters of one function version (created on its first request)."""
        key = (function, version)
        counters = self.functions.get(key)
        if counters is None:
            counters = self.functions[key] = Counters()
        return counters

    def sample(
        self, pool: IsolatePool | None, cache: CacheStats | None, status: Mapping[str, Any]
    ) -> WorkerSample:
        """Everything counted so far, with the gauges read now from the pool, cache and source."""
        gauges: dict[tuple[str, str], list[int]] = {}
        serving = 0
        for name, function in pool.functions.items() if pool is not None else ():
            for release in function.releases:
                running = release.instances
                entry = gauges.setdefault((name, running.spec.version), [0, 0, 0])
                entry[0] += sum(instance.isolate.pending for instance in running.instances)
                entry[1] += len(running.instances)
                entry[2] += running.queued
                serving += len(running.instances)
        functions = []
        for key in sorted(self.functions.keys() | gauges.keys()):
            counters = self.functions.get(key) or Counters()
            queue_depth, instances, queued = gauges.get(key, (0, 0, 0))
            functions.append(
                FunctionSample(
                    key[0],
                    key[1],
                    list(counters.statuses),
                    list(counters.buckets),
                    counters.seconds,
                    counters.cold_starts,
                    counters.timeouts,
                    counters.in_flight,
                    queue_depth,
                    instances,
                    queued,
                    counters.refused,
                )
            )
        revision, lag = None, None
        if "revision" in status:
            now = self._monotonic()
            if status.get("connected"):
                self._in_step_at = now
            revision, lag = int(status["revision"]), now - self._in_step_at
        return WorkerSample(
            pid=self._pid,
            started=self._started,
            time=self._clock(),
            functions=functions,
            rss_bytes=_rss_bytes(),
            isolates=serving,
            abandoned_isolates=pool.abandoned if pool is not None else 0,
            wedged_isolates=len(pool.wedged_alive()) if pool is not None else 0,
            cache_hits=cache.hits if cache is not None else 0,
            cache_misses=cache.misses if cache is not None else 0,
            cache_bytes=cache.bytes if cache is not None else 0,
            revision=revision,
            lag_s=lag,
            node_id=str(status.get("node_id", "")),
        )

    def write(self, sample: WorkerSample) -> None:
        """Replace this worker's file with `sample` (atomically: the main process reads it any time),
        unless nothing but its time and RSS changed within REWRITE_AFTER_S."""
        if self._path is None:
            return
        now = self._monotonic()
        steady = msgspec.structs.replace(sample, time=0.0, rss_bytes=0)
        if steady == self._written and now - self._written_at < REWRITE_AFTER_S:
            return
        self._written, self._written_at = steady, now
        temporary = self._path.with_name(f".{self._path.name}.tmp")
        try:
            temporary.write_bytes(msgspec.json.encode(sample))
            temporary.replace(self._path)
        except OSError as exc:  # the node is shutting down (its runtime directory went) or the disk is full
            log.warning("%s: cannot write this worker's metrics: %s", self._path, exc)

    def remember(self) -> None:
        """Keep the totals every HISTORY_INTERVAL_S for the last-minute figures (called per sample)."""
        now = self._monotonic()
        history = self._history
        if now - history[-1][0] < HISTORY_INTERVAL_S:
            return
        totals = {
            key: (sum(counters.statuses), counters.statuses[5], list(counters.buckets))
            for key, counters in self.functions.items()
        }
        history.append((now, totals))
        # Keep the newest entry at least WINDOW_S old as the start of the window.
        while len(history) > 1 and now - history[1][0] >= WINDOW_S:
            history.popleft()

    def stats(self) -> list[FunctionStats]:
        """Each function version's counters, and over the last minute its rate, 5xx share and p50/p99."""
        since, before = self._history[0]
        window = max(self._monotonic() - since, 1e-9)
        result = []
        for (name, version), counters in sorted(self.functions.items()):
            statuses = counters.statuses
            requests = sum(statuses)
            old_requests, old_errors, old_buckets = before.get((name, version), _NONE)
            recent = requests - old_requests
            buckets = [now - then for now, then in zip(counters.buckets, old_buckets, strict=True)]
            result.append(
                FunctionStats(
                    name=name,
                    version=version,
                    requests=requests,
                    errors=statuses[5],
                    client_errors=statuses[4],
                    timeouts=counters.timeouts,
                    cold_starts=counters.cold_starts,
                    rps=round(recent / window, 3),
                    error_rate=round((statuses[5] - old_errors) / recent, 4) if recent else 0.0,
                    p50_ms=round(quantile(buckets, 0.5) * 1000, 3),
                    p99_ms=round(quantile(buckets, 0.99) * 1000, 3),
                )
            )
        return result


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        return 0
