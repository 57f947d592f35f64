"""The node's request path, free of any server protocol: route -> cache -> invoke -> reply.

A front end (app.py: ASGI, rsgi.py: granian's RSGI) turns one server request into an
`Exchange` and awaits `NodeCore.handle(exchange)`; the core answers through the same object.
Everything else a node worker does (lifespan start-up and shutdown, `/_edge/...`, purges,
metrics) lives here too, so both front ends behave the same by construction.
"""

from __future__ import annotations

import _interpreters
import asyncio
import fnmatch
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import count
from time import monotonic
from typing import Any, Protocol

import msgspec

from cache import PASS, CachedRequest, CacheResult, HttpCache, Streamed
from cache import Headers as CacheHeaders
from edge.control.messages import FunctionStats
from edge.node import logship
from edge.node.accesslog import AccessLine, AccessLog
from edge.node.guard import Answer, Guard, with_cors
from edge.node.metrics import SAMPLE_INTERVAL_S, Counters, WorkerMetrics, WorkerSample, metrics_directory
from edge.node.recycling import RUNTIME_DIR_VARIABLE, FailingMarks, WorkerWatch, recycle_by_sighup
from edge.node.routing import RESERVED_PREFIX, Router
from edge.node.settings import NodeSettings
from edge.node.source import FunctionSource
from edge.node.tracing import trace_id_of
from isolates.backends import (
    INVOKE_METHOD,
    RESPONSE,
    STREAM,
    BackendOptions,
    Reply,
    Stream,
    StreamCut,
    backend_factory,
)
from isolates.instances import Budget, Instance, InstanceSet, Refused
from isolates.pool import BackendLookup, IsolatePool

__all__ = [
    "SETTINGS_VARIABLE",
    "Exchange",
    "HeaderNames",
    "Headers",
    "IncompleteBody",
    "NodeCore",
    "backend_options",
    "build_node",
    "scrub_environment",
]

log = logging.getLogger("edge.node")
function_log = logging.getLogger("edge.function")

SETTINGS_VARIABLE = "EDGE_NODE_SETTINGS_JSON"

Headers = list[tuple[bytes, bytes]]

_JSON = (b"content-type", b"application/json")
# Marks an error the node rendered (never sent to clients): its body is the bare message.
_NODE_ERROR = (b"x-edge-node-error", b"1")
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")
# The Lambda invoke API (as AWS and its Runtime Interface Emulator serve it): the function's
# name, or `function` for the node's only `kind = "lambda"` function.
_INVOKE_PATH = re.compile(r"/2015-03-31/functions/([a-z0-9][a-z0-9_-]{0,62})/invocations")


class IncompleteBody(Exception):
    """The request body was cut off or its framing was invalid (the handler never sees it)."""


class HeaderNames(Protocol):
    """A request's headers by (lower-case) name; a dict of them is one."""

    def get(self, name: bytes, /) -> bytes | None:
        """The value of header `name`, or None."""
        ...

    def __contains__(self, name: object, /) -> bool: ...

    def __iter__(self) -> Iterator[bytes]:
        """Every name, once."""
        ...

    def __len__(self) -> int: ...


class Exchange(Protocol):
    """One HTTP request as a front end hands it to the core, and the way back to its client.

    The attributes are the request: `query` the raw query string, `client` "host:port" (or "").
    """

    method: str
    path: str
    query: bytes
    client: str

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]:
        """(lower-case name, value) byte pairs in arrival order; may be converted on first use."""
        ...

    def named(self) -> HeaderNames:
        """The headers by name, without converting what a cached answer never looks at."""
        ...

    async def read_body(self, limit: int) -> bytes | None:
        """Called at most once: the whole body; None as soon as it passes `limit` bytes.

        Raises IncompleteBody when it was cut off or malformed."""
        ...

    def respond(self, status: int, headers: Headers, body: bytes, request_id: str) -> None:
        """Called once per plain answer: the front end sends it with `x-request-id: request_id`,
        now or as soon as `handle` returns."""
        ...

    async def start_stream(self, status: int, headers: Headers, request_id: str) -> None:
        """Called instead of `respond` for a streamed answer: send the status and headers."""
        ...

    async def send_piece(self, data: bytes) -> None:
        """Called per piece of a started stream, in order."""
        ...

    async def end_stream(self, complete: bool) -> None:
        """Called once a started stream ends: whole (`complete`), or cut off, in which case the
        client must not be able to take what it got for the whole response."""
        ...

    async def disconnected(self) -> None:
        """Returns once the client has gone away (awaited only while a stream is sent)."""
        ...


class NodeCore:
    """Everything of one node worker but the server protocol: state, lifespan, the request path."""

    def __init__(
        self,
        settings: NodeSettings,
        source: FunctionSource,
        clock: Callable[[], float] = time.time,
        backends: BackendLookup = backend_factory,
        recycle: Callable[[], None] | None = None,
        runtime_dir: str | None = None,
        metrics: bool = True,
    ) -> None:
        """Parameters
        ----------
        clock:
            The wall clock the cache compares with Date/Expires (injected in tests).
        backends:
            Isolation level -> backend factory (tests and benchmarks pass their own).
        recycle:
            Asks for this worker to be replaced gracefully (granian: SIGHUP to the parent);
            None: the request is only logged.
        runtime_dir:
            A directory that outlives this worker, for marks of failing function versions and
            the worker's metrics samples (edge/node/metrics.py).
        metrics:
            Count requests per function version (False: a benchmark's baseline); the access log
            follows `settings.access_log`.
        """
        self._backends = backends
        self._recycle = recycle
        self._runtime_dir = runtime_dir
        self._failing_marks = FailingMarks(runtime_dir)
        self.watch: WorkerWatch | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.settings = settings
        self.source = source
        self.router = Router(())
        self.ready = False
        self.cache = HttpCache(settings.cache, timer=clock) if settings.cache.enabled else None
        # Seconds a function's responses stay fresh when they say nothing (manifest `[cache] ttl`).
        self.cache_ttls: dict[str, int] = {}
        # Version -> its [auth]/[cors] (edge/node/guard.py); only versions that have either.
        self.guards: dict[str, Guard] = {}
        self._pool: IsolatePool | None = None
        self._ids = count(1)
        # Requests refused because their body was cut off or malformed (in /_edge/metrics).
        self.bad_bodies = 0
        self._id_prefix = os.urandom(5).hex()
        directory = metrics_directory(runtime_dir) if runtime_dir else None
        self.metrics = WorkerMetrics(directory) if metrics else None
        self._metrics_task: asyncio.Task[None] | None = None
        self.access = AccessLog(enabled=settings.access_log)
        # Request id -> trace id (W3C traceparent) of requests in flight that carry one.
        self._traces: dict[str, str] = {}

    @property
    def pool(self) -> IsolatePool:
        """The isolates of this process (exists from lifespan startup on)."""
        if self._pool is None:
            raise RuntimeError("the node's isolate pool exists only after lifespan startup")
        return self._pool

    def set_routes(self, routes: Iterable[tuple[str, str]]) -> None:
        """Replace the routing table with (path prefix, function name) pairs."""
        self.router = Router(routes)

    def purge(self, function: str, kind: str, value: str) -> int:
        """Apply a purge order from the origin to this node's response cache; returns entries removed."""
        if self.cache is None:
            return 0
        if kind == "path":
            removed = self.cache.purge_path(function, value)
        elif kind == "prefix":
            removed = self.cache.purge_prefix(function, value)
        elif kind == "tag":
            removed = self.cache.purge_tag(function, value)
        else:
            removed = self.cache.purge_all(function)
        log.info("purge %s %s %r: %d cached responses removed", function, kind, value, removed)
        return removed

    def function_stats(self) -> list[FunctionStats]:
        """Each function version's traffic in this worker (which reports as a node of its own)."""
        return self.metrics.stats() if self.metrics is not None else []

    def sample_metrics(self) -> WorkerSample | None:
        """This worker's counters and gauges now (None when it does not count)."""
        if self.metrics is None:
            return None
        stats = self.cache.stats if self.cache is not None else None
        return self.metrics.sample(self._pool, stats, self.source.status())

    async def _write_metrics(self) -> None:
        """Write this worker's sample every SAMPLE_INTERVAL_S until cancelled (at shutdown)."""
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            self._save_metrics()

    def _save_metrics(self) -> None:
        sample = self.sample_metrics()
        if sample is not None and self.metrics is not None:
            self.metrics.write(sample)
            self.metrics.remember()

    async def handle(self, exchange: Exchange) -> None:
        """Answer one HTTP request (the front ends' only entry to the request path)."""
        named = exchange.named()
        given_id = named.get(b"x-request-id")
        if given_id is not None and _VALID_REQUEST_ID.fullmatch(given_id):
            request_id = given_id.decode()
        else:
            request_id = f"{self._id_prefix}{next(self._ids):07x}"
        path = exchange.path
        if path.startswith(RESERVED_PREFIX):
            self._node_endpoint(exchange, path, request_id)
            return
        started = monotonic()
        trace_id = ""
        traceparent = named.get(b"traceparent")
        if traceparent is not None:
            trace_id = trace_id_of(traceparent)
            if trace_id:  # the function's log lines of this request carry it (_log_function_line)
                self._traces[request_id] = trace_id
        # What the access log and the metrics see of this request; filled in as it is answered.
        line = AccessLine(
            0.0, "", "", exchange.method, path, 500, 0.0, False, "-", request_id, 0, trace_id, exchange.client
        )
        counters = None
        try:
            counters = await self._route(exchange, named, line)
        finally:
            self._finished(line, started, counters)

    def _finished(self, line: AccessLine, started: float, counters: Counters | None) -> None:
        """The one hook per answered request: metrics, the access log, the trace id's end."""
        ended = monotonic()
        seconds = ended - started
        metrics = self.metrics
        if metrics is not None and line.function:
            # None when routing raised (a bug): the version's counters are found by name.
            (counters or metrics.counters(line.function, line.version)).end(line.status, seconds)
        if line.trace_id:
            self._traces.pop(line.request_id, None)
        access = self.access
        if access.enabled:
            line.time = ended + access.wall_offset
            line.duration_ms = int(seconds * 1e6) / 1000  # whole microseconds (round() costs more)
            access.add(line)

    async def _route(self, exchange: Exchange, named: HeaderNames, line: AccessLine) -> Counters | None:
        """Answer one request for a function (filling in `line`); returns its version's counters."""
        path, method = line.path, line.method
        invoked = _INVOKE_PATH.fullmatch(path) if path.startswith("/2015-03-31/") else None
        if invoked is not None:
            name = self._invoked(invoked[1])
            if method != "POST":
                _send_error(exchange, 405, "the invoke API takes POST", line)
                return None
        else:
            name = self.router.match(path)
        function = self._pool.get(name) if name is not None and self._pool is not None else None
        if function is None:
            _send_error(exchange, 404, f"no function serves {path}", line)
            return None
        chosen = function.choose()
        line.function = function.name
        if chosen is not None:
            line.version = chosen.spec.version
        metrics = self.metrics
        counters = None
        if metrics is not None:
            counters = metrics.counters(function.name, line.version)
            counters.begin()
        if chosen is None:
            _send_error(exchange, 503, function.error or f"function {name} is not serving", line)
            return counters
        spec = chosen.spec
        guard = self.guards.get(spec.version)
        if guard is not None:  # before the cache and the body: a cached answer never skips auth
            checked = guard.check(method, path, _as_list(exchange.headers), named, line.request_id)
            if isinstance(checked, Answer):
                line.status, line.bytes = checked.status, len(checked.body)
                exchange.respond(checked.status, list(checked.headers), checked.body, line.request_id)
                return counters
            exchange = _Admitted(exchange, checked.headers, checked.cors)
            named = exchange.named()
        cache = self.cache
        if invoked is not None:
            if spec.kind != "lambda":
                message = f'function {name} is kind = "{spec.kind}"; the invoke API calls kind = "lambda"'
                _send_error(exchange, 400, message, line)
                return counters
            cache, method = None, INVOKE_METHOD
        headers = exchange.headers
        looked_up = None
        if cache is not None:
            version, query = spec.version, exchange.query
            looked_up = cache.lookup(function.name, version, method, path, query, headers, named)
            if isinstance(looked_up, CacheResult):
                line.cache, line.status, line.bytes = (
                    looked_up.cache_status,
                    looked_up.status,
                    len(looked_up.body),
                )
                exchange.respond(looked_up.status, looked_up.headers, looked_up.body, line.request_id)
                return counters
        body = b""
        length = named.get(b"content-length")
        if length is not None or b"transfer-encoding" in named:
            received = await self._read_body(exchange, length, line)
            if received is None:
                return counters
            body = received
        if cache is None or looked_up is PASS:
            instance = chosen.take()
            if instance is None:
                try:
                    instance, exchange = await _waited(chosen, exchange)
                except Refused as refused:
                    if counters is not None:
                        counters.refused += 1
                    _send_error(exchange, refused.status, refused.message, line, refused.retry_after)
                    return counters
            if instance.served == 1:
                line.cold = True
                if counters is not None:
                    counters.cold_starts += 1
            query = exchange.query
            try:
                reply = await instance.isolate.submit(
                    method,
                    path,
                    query.decode("latin-1"),
                    _as_list(headers),
                    body,
                    line.request_id,
                    monotonic() + function.timeout,
                    line.client,
                )
            except BaseException:
                chosen.give_back(instance)
                raise
            if reply[0] == STREAM:  # the instance is busy until the stream ends
                try:
                    await _send_stream(exchange, reply, line)
                finally:
                    chosen.give_back(instance)
                return counters
            chosen.give_back(instance)
            if cache is None or reply[0] != RESPONSE:
                await _send_reply(exchange, reply, line)
                return counters
            ttl = self.cache_ttls.get(function.name, 0)
            response = (reply[2], reply[3], reply[4])
            result = cache.passed(function.name, spec.version, path, query, ttl, response, method == "HEAD")
            line.cache, line.status, line.bytes = "PASS", result.status, len(result.body)
            exchange.respond(result.status, result.headers, result.body, line.request_id)
            return counters
        await self._cached(cache, exchange, function.timeout, chosen, body, line, counters)
        return counters

    async def _read_body(self, exchange: Exchange, length: bytes | None, line: AccessLine) -> bytes | None:
        """The request's whole body, or None once the client got its error (400, 413)."""
        limit = self.settings.max_body_bytes
        if length is not None and not length.isdigit():
            self.bad_bodies += 1
            _send_error(exchange, 400, f"invalid Content-Length {length.decode('latin-1')!r}", line)
            return None
        if length is not None and int(length) > limit:
            _send_error(exchange, 413, f"request body over the limit of {limit} bytes", line)
            return None
        try:
            received = await exchange.read_body(limit)
            whole = received is None or length is None or len(received) == int(length)
        except IncompleteBody:
            received, whole = b"", False
        if received is None:
            _send_error(exchange, 413, f"request body over the limit of {limit} bytes", line)
            return None
        if not whole:
            # Cut off, or an invalid chunked encoding: the handler never sees a partial body.
            # A client still there gets a 400.
            self.bad_bodies += 1
            expected = (
                f"{int(length)} bytes (Content-Length)" if length is not None else "a valid chunked body"
            )
            _send_error(exchange, 400, f"request body incomplete or malformed: expected {expected}", line)
            return None
        return received

    async def _cached(
        self,
        cache: HttpCache,
        exchange: Exchange,
        timeout: float,
        chosen: InstanceSet,
        body: bytes,
        line: AccessLine,
        counters: Counters | None,
    ) -> None:
        """Answer through the response cache; an instance runs only on a miss."""
        method, path, query, headers = exchange.method, exchange.path, exchange.query, exchange.headers
        request_id = line.request_id
        # Set when the miss waited for an instance that started for it (Server-Timing: cold).
        timed: list[Exchange] = []

        async def invoke(revalidation: CacheHeaders | None = None, /) -> tuple[int, CacheHeaders, bytes]:
            instance = chosen.take()
            if instance is None:
                try:
                    instance, waited = await _waited(chosen, exchange)
                except Refused as refused:
                    return (
                        refused.status,
                        [*_retry_after(refused.retry_after), _JSON, _NODE_ERROR],
                        (refused.message.encode()),
                    )
                if waited is not exchange:
                    timed.append(waited)
            if instance.served == 1:
                line.cold = True
                if counters is not None:
                    counters.cold_starts += 1
            try:
                reply = await instance.isolate.submit(
                    method,
                    path,
                    query.decode("latin-1"),
                    # The cache's conditional request when it revalidates a stored answer.
                    _as_list(headers) if revalidation is None else revalidation,
                    body,
                    request_id,
                    monotonic() + timeout,
                    line.client,
                )
            except BaseException:
                chosen.give_back(instance)
                raise
            if reply[0] == STREAM:  # neither stored nor shared: sent below as it comes
                raise Streamed(reply, _closer(reply[4], chosen, instance))
            chosen.give_back(instance)
            if reply[0] == RESPONSE:
                return reply[2], list(reply[3]), reply[4]
            # The message alone: a collapsed waiter gets this too and renders its own request id.
            return reply[2], [_JSON, _NODE_ERROR], reply[3].encode()

        name = line.function
        ttl = self.cache_ttls.get(name, 0)
        request = CachedRequest(name, chosen.spec.version, method, path, query, headers, ttl)
        try:
            result = await cache.handle(request, invoke)
        except Streamed as streamed:
            line.cache = "MISS"
            try:
                await _send_stream(timed[0] if timed else exchange, streamed.reply, line)
            finally:
                streamed.close()  # the instance is busy until the stream ends
            return
        if timed:
            exchange = timed[0]
        response_headers, response_body = result.headers, result.body
        if _NODE_ERROR in response_headers:
            response_headers = [header for header in response_headers if header != _NODE_ERROR]
            response_body = msgspec.json.encode({"error": response_body.decode(), "request_id": request_id})
        line.cache, line.status, line.bytes = result.cache_status, result.status, len(response_body)
        exchange.respond(result.status, response_headers, response_body, request_id)

    def _log_function_line(
        self, function: str, version: str, stream: str, request_id: str, line: str
    ) -> None:
        """The pool's log sink: one line a function printed, tagged with its request (and trace) id."""
        level = logging.ERROR if stream == "error" else logging.INFO
        trace_id = self._traces.get(request_id, "") if request_id else ""
        if trace_id:
            function_log.log(level, "[%s %s trace=%s] %s", function, request_id, trace_id, line)
        else:
            function_log.log(level, "[%s %s] %s", function, request_id or "-", line)
        logship.emit(stream, function, version, request_id, line, trace_id)

    def _invoked(self, name: str) -> str | None:
        """The function the invoke API names: `function` is the only `kind = "lambda"` one."""
        if name != "function" or self._pool is None or name in self._pool.functions:
            return name
        kinds = [
            function.name
            for function in self._pool.functions.values()
            if any(release.instances.spec.kind == "lambda" for release in function.releases)
        ]
        return kinds[0] if len(kinds) == 1 else None

    def _node_endpoint(self, exchange: Exchange, path: str, request_id: str) -> None:
        if path == "/_edge/health":
            _send_json(exchange, 200, {"status": "ok"}, request_id)
        elif path == "/_edge/metrics":
            _send_json(exchange, 200, self._metrics_body(), request_id)
        elif path == "/_edge/ready":
            functions: dict[str, dict[str, Any]] = {}
            if self._pool is not None:
                for name, function in self._pool.functions.items():
                    if function.error:
                        state = "failing" if function.failing else "error"
                        functions[name] = {"state": state, "error": function.error}
                        continue
                    # "cold": no instance runs (lazy, or scaled to zero); the next request starts one.
                    state = "serving" if function.instances else "cold"
                    functions[name] = {"state": state, "versions": list(function.versions)}
            body = {"ready": self.ready, "functions": functions, **self.source.status()}
            _send_json(exchange, 200 if self.ready else 503, body, request_id)
        else:
            _send_json(
                exchange, 404, {"error": f"no node endpoint {path}", "request_id": request_id}, request_id
            )

    def _metrics_body(self) -> dict[str, Any]:
        """This worker's figures for /_edge/metrics."""
        pool = self._pool
        serving = pool.functions if pool is not None else {}
        sets = [release.instances for function in serving.values() for release in function.releases]
        isolates = [instance.isolate for instances in sets for instance in instances.instances]
        metrics: dict[str, Any] = {
            "functions": len(serving),
            "abandoned_isolates": pool.abandoned if pool is not None else 0,
            "incomplete_bodies": self.bad_bodies,
            # Abandoned isolates still stuck in C code in this worker, and why it asked to be recycled.
            "wedged_isolates": len(pool.wedged_alive()) if pool is not None else 0,
            "recycling": self.watch.recycle_reason if self.watch is not None else "",
            # Requests reach isolates in batches; a batch for an idle isolate wakes it.
            "isolate_batches": sum(isolate.batches for isolate in isolates),
            "isolate_wakes": sum(isolate.wakes for isolate in isolates),
            # Instances per function, requests waiting for one, and those refused (docs/scaling.md).
            "scaling": {
                name: {
                    "instances": function.instances,
                    "in_flight": sum(
                        instance.in_flight
                        for release in function.releases
                        for instance in release.instances.instances
                    ),
                    "queued": sum(release.instances.queued for release in function.releases),
                }
                for name, function in serving.items()
            },
            "queued": sum(instances.queued for instances in sets),
            # Subinterpreters alive in this worker (blank warm ones and draining ones included).
            "interpreters": len(_interpreters.list_all()) - 1,
            "refused": dict(pool.refused) if pool is not None else {},
        }
        if pool is not None:
            budget = pool.budget
            metrics["budget"] = {
                "instances": budget.instances,
                "max_instances": budget.max_instances,
                "memory_mb": budget.used_mb,
                "memory_budget_mb": budget.memory_mb,
                "evicted": budget.evicted,
                # Blank interpreters held beyond warm_pool while cold starts outran the pool.
                "extra_blanks": sum(backend.extra_standby() for backend in budget.pools),
            }
            warm = pool.warm_pool
            if warm is not None:
                metrics["warm_pool"] = {
                    "target": warm.target,
                    "blanks": warm.blanks,
                    "made": warm.made,
                    "outrun": warm.outrun,
                }
        if self.cache is not None:
            metrics["cache"] = self.cache.stats.as_dict()
        return metrics

    async def startup(self) -> None:
        """Create the isolates (never at import: granian forks workers) and load the functions."""
        scrub_environment(self.settings.scrub_env)
        settings = self.settings
        self._pool = IsolatePool(
            self._log_function_line,
            backend_options(settings, self._runtime_dir),
            backends=self._backends,
            drain_timeout=settings.shutdown_timeout_ms / 1000,
            max_failures=settings.max_function_failures,
            failing=self._failing_marks.load(),
            on_failing=self._failing_marks.add,
            budget=Budget(settings.budget.max_instances, settings.budget.memory_budget_mb),
            instance_mb=settings.budget.interpreter_instance_mb,
        )
        self.watch = WorkerWatch(self._pool, settings.max_abandoned_isolates, self._recycle or _no_recycle)
        self._watch_task = asyncio.get_running_loop().create_task(self.watch.run())
        if self.metrics is not None:
            if self._runtime_dir:
                metrics_directory(self._runtime_dir).mkdir(exist_ok=True)
            self._metrics_task = asyncio.get_running_loop().create_task(self._write_metrics())
        await self.source.start(self)
        if settings.origin:
            logship.shipper = logship.LogShipper(settings, str(self.source.status().get("node_id", "")))
            await logship.shipper.start()
        self.ready = True

    async def shutdown(self) -> None:
        """Stop syncing, then stop every isolate's thread so the worker can exit."""
        self.ready = False
        if self._watch_task is not None:
            self._watch_task.cancel()
        await self.source.stop()
        if self.cache is not None:
            await self.cache.aclose()
        if self._pool is not None:
            await self._pool.close(self.settings.shutdown_timeout_ms / 1000)
        if self._metrics_task is not None:
            self._metrics_task.cancel()
        # Everything answered is counted: the main process keeps this worker's last sample.
        self._save_metrics()
        self.access.flush()
        if logship.shipper is not None:
            await logship.shipper.stop()
            logship.shipper = None


def _no_recycle() -> None:
    log.error("this worker needs recycling, but it does not run under `edge node`: restart it")


def backend_options(settings: NodeSettings, runtime_dir: str | None = None) -> BackendOptions:
    """What the node's settings say every isolate backend of a worker should do."""
    protected = [settings.data, *settings.protected_paths, *([runtime_dir] if runtime_dir else [])]
    return BackendOptions(
        warm_pool=settings.warm_pool,
        warm_pool_max=settings.warm_pool_max,
        abandon_after=settings.abandon_after_ms / 1000,
        preload=tuple(settings.warm_imports),
        protected=tuple(os.path.realpath(path) for path in protected),
        memory_mb=settings.process_memory_mb,
        cpu_s=settings.process_cpu_s,
        uid_base=settings.process_uid_base,
    )


def scrub_environment(patterns: list[str]) -> None:
    """Remove matching variables from the process (C) environment before isolates copy it."""
    for variable in list(os.environ):
        if any(fnmatch.fnmatchcase(variable, pattern) for pattern in patterns):
            del os.environ[variable]


class _Admitted:
    """An exchange the function's [auth]/[cors] let through: the request headers as the function
    sees them (the verified identity added, a client's forged one removed), and the node's CORS
    headers on every answer in place of the function's own."""

    def __init__(self, exchange: Exchange, headers: Headers, cors: Headers | None) -> None:
        self._exchange = exchange
        self.headers = headers
        self._cors = cors
        self.method, self.path, self.query, self.client = (
            exchange.method,
            exchange.path,
            exchange.query,
            exchange.client,
        )

    def named(self) -> HeaderNames:
        return dict(self.headers)

    async def read_body(self, limit: int) -> bytes | None:
        return await self._exchange.read_body(limit)

    def respond(self, status: int, headers: Headers, body: bytes, request_id: str) -> None:
        if self._cors is not None:
            headers = with_cors(headers, self._cors)
        self._exchange.respond(status, headers, body, request_id)

    async def start_stream(self, status: int, headers: Headers, request_id: str) -> None:
        if self._cors is not None:
            headers = with_cors(headers, self._cors)
        await self._exchange.start_stream(status, headers, request_id)

    async def send_piece(self, data: bytes) -> None:
        await self._exchange.send_piece(data)

    async def end_stream(self, complete: bool) -> None:
        await self._exchange.end_stream(complete)

    async def disconnected(self) -> None:
        await self._exchange.disconnected()


def _as_list(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """The pairs as the list an isolate takes (a front end's lazy view converts them now)."""
    return headers if type(headers) is list else list(headers)


async def _send_reply(exchange: Exchange, reply: Reply, line: AccessLine) -> None:
    if reply[0] == RESPONSE:
        line.status, line.bytes = reply[2], len(reply[4])
        exchange.respond(reply[2], reply[3], reply[4], line.request_id)
    elif reply[0] == STREAM:
        await _send_stream(exchange, reply, line)
    else:
        _send_error(exchange, reply[2], reply[3], line)


async def _send_stream(exchange: Exchange, reply: Reply, line: AccessLine) -> None:
    """Send a streamed reply piece by piece (chunked).

    A stream cut off is logged and ended as incomplete (`Exchange.end_stream`), so the client
    cannot take it for whole. A client that goes away stops the sending; the function's
    generator runs on until it ends or reaches its deadline, and what it still makes is dropped.
    """
    stream: Stream = reply[4]
    watch = asyncio.get_running_loop().create_task(_close_on_disconnect(exchange, stream))
    line.status = reply[2]
    complete = False
    try:
        await exchange.start_stream(reply[2], reply[3], line.request_id)
        async for data in stream:
            line.bytes += len(data)
            await exchange.send_piece(data)
        complete = True
    except StreamCut as exc:
        log.error("request %s: streamed response cut off: %s", line.request_id, exc)
    finally:
        watch.cancel()
        stream.close()
    await exchange.end_stream(complete)


async def _close_on_disconnect(exchange: Exchange, stream: Stream) -> None:
    """Close `stream` once the client is gone (servers keep accepting pieces meanwhile)."""
    await exchange.disconnected()
    stream.close()


def _send_json(exchange: Exchange, status: int, payload: dict[str, Any], request_id: str) -> None:
    exchange.respond(status, [_JSON], msgspec.json.encode(payload), request_id)


def _send_error(
    exchange: Exchange, status: int, message: str, line: AccessLine, retry_after: int = 0
) -> None:
    body = msgspec.json.encode({"error": message, "request_id": line.request_id})
    line.status, line.bytes = status, len(body)
    exchange.respond(status, [*_retry_after(retry_after), _JSON], body, line.request_id)


def _retry_after(seconds: int) -> list[tuple[bytes, bytes]]:
    return [(b"retry-after", str(seconds).encode())] if seconds else []


def _closer(stream: Stream, chosen: InstanceSet, instance: Instance) -> Callable[[], None]:
    """Drops a streamed miss's stream and gives its instance's slot back, once (the cache calls
    it for a background refresh's stream, which nobody sends)."""
    held = [instance]

    def close() -> None:
        stream.close()
        if held:
            chosen.give_back(held.pop())

    return close


async def _waited(chosen: InstanceSet, exchange: Exchange) -> tuple[Instance, Exchange]:
    """A slot of `chosen` after waiting in its queue, and the exchange to answer through: one
    that adds `Server-Timing: cold;dur=...` when the instance started during the wait.

    Raises Refused."""
    started = monotonic()
    instance = await chosen.wait()
    if instance.served == 1:
        return instance, _ColdStart(exchange, (monotonic() - started) * 1000)
    return instance, exchange


class _ColdStart:
    """An exchange whose answer says it paid a cold start (only such requests pay for this)."""

    def __init__(self, exchange: Exchange, milliseconds: float) -> None:
        self._exchange = exchange
        self._timing = (b"server-timing", f"cold;dur={milliseconds:.1f}".encode())
        self.method, self.path, self.query = exchange.method, exchange.path, exchange.query
        self.headers, self.client = exchange.headers, exchange.client

    def named(self) -> HeaderNames:
        return self._exchange.named()

    async def read_body(self, limit: int) -> bytes | None:
        return await self._exchange.read_body(limit)

    def respond(self, status: int, headers: Headers, body: bytes, request_id: str) -> None:
        self._exchange.respond(status, [*headers, self._timing], body, request_id)

    async def start_stream(self, status: int, headers: Headers, request_id: str) -> None:
        await self._exchange.start_stream(status, [*headers, self._timing], request_id)

    async def send_piece(self, data: bytes) -> None:
        await self._exchange.send_piece(data)

    async def end_stream(self, complete: bool) -> None:
        await self._exchange.end_stream(complete)

    async def disconnected(self) -> None:
        await self._exchange.disconnected()


def build_node[T: NodeCore](
    cls: Callable[..., T],
    backends: BackendLookup,
    metrics: bool,
    *,
    settings: NodeSettings | None = None,
    recycle: Callable[[], None] | None = None,
) -> T:
    """A front end's granian factory: settings from `edge node`'s main process
    (edge/node/handoff.py), else from `EDGE_NODE_SETTINGS_JSON` (for tools that run granian
    themselves; never with a token); the function source they name.

    A node serving in its own process (edge/node/embedded.py) gives its `settings` and how it
    `recycle`s itself."""
    if settings is None:
        settings = _handed_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    source: FunctionSource
    if settings.origin:
        from edge.node.sync import OriginSource

        source = OriginSource(settings)
    elif settings.functions:
        from edge.node.local import LocalSource

        source = LocalSource(settings.functions)
    else:
        raise RuntimeError("no function source: set `functions` (a directory) or `origin` (a URL)")
    runtime_dir = os.environ.get(RUNTIME_DIR_VARIABLE)
    if recycle is None and runtime_dir:
        recycle = recycle_by_sighup
    return cls(settings, source, backends=backends, recycle=recycle, runtime_dir=runtime_dir, metrics=metrics)


def _handed_settings() -> NodeSettings:
    """A granian worker's settings: from `edge node`'s main process, else `EDGE_NODE_SETTINGS_JSON`."""
    from edge.node import handoff

    raw = os.environ.pop(SETTINGS_VARIABLE, None)
    settings = handoff.receive()
    if settings is None:
        settings = msgspec.json.decode(raw, type=NodeSettings) if raw else NodeSettings()
        if settings.token:
            raise RuntimeError(
                f"{SETTINGS_VARIABLE}: must not carry the node token (every process of the node could"
                " read it in /proc/PID/environ); run `edge node`, which hands it over privately"
            )
    return settings
