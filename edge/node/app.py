"""The node's ASGI app: route each request to a function's isolate; `/_edge/...` is the node's own."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from itertools import count
from time import monotonic
from typing import Any

import msgspec

from cache import PASS, CachedRequest, CacheResult, Headers, HttpCache, Streamed
from edge.control.messages import FunctionStats
from edge.node import logship
from edge.node.accesslog import AccessLine, AccessLog
from edge.node.guard import Answer, Guard, with_headers
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
    Isolate,
    Reply,
    Stream,
    StreamCut,
    backend_factory,
)
from isolates.pool import BackendLookup, IsolatePool

__all__ = ["FunctionSource", "NodeApp", "create_app"]

log = logging.getLogger("edge.node")
function_log = logging.getLogger("edge.function")

SETTINGS_VARIABLE = "EDGE_NODE_SETTINGS_JSON"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
# Marks an error the node rendered (never sent to clients): its body is the bare message.
_NODE_ERROR = (b"x-edge-node-error", b"1")
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")
# The Lambda invoke API (as AWS and its Runtime Interface Emulator serve it): the function's
# name, or `function` for the node's only `kind = "lambda"` function.
_INVOKE_PATH = re.compile(r"/2015-03-31/functions/([a-z0-9][a-z0-9_-]{0,62})/invocations")


class NodeApp:
    """The ASGI application of one node worker process."""

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(receive, send)
            elif kind == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        # An HTTP request (here, not in a method of its own: a coroutine less per request).
        headers = scope["headers"]
        # One C-level pass over the headers instead of a Python loop (repeated names: last wins).
        named = dict(headers)
        given_id = named.get(b"x-request-id")
        if given_id is not None and _VALID_REQUEST_ID.fullmatch(given_id):
            request_id = given_id.decode()
        else:
            request_id = f"{self._id_prefix}{next(self._ids):07x}"
        path: str = scope["path"]
        if path.startswith(RESERVED_PREFIX):
            await self._node_endpoint(path, request_id, send)
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
            0.0, "", "", scope["method"], path, 500, 0.0, False, "-", request_id, 0, trace_id, _client(scope)
        )
        counters = None
        try:
            counters = await self._route(scope, receive, send, named, line)
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

    async def _route(
        self, scope: Scope, receive: Receive, send: Send, named: dict[bytes, bytes], line: AccessLine
    ) -> Counters | None:
        """Answer one request for a function (filling in `line`); returns its version's counters."""
        path, method = line.path, line.method
        invoked = _INVOKE_PATH.fullmatch(path) if path.startswith("/2015-03-31/") else None
        if invoked is not None:
            name = self._invoked(invoked[1])
            if method != "POST":
                await _send_error(send, 405, "the invoke API takes POST", line)
                return None
        else:
            name = self.router.match(path)
        function = self._pool.get(name) if name is not None and self._pool is not None else None
        if function is None:
            await _send_error(send, 404, f"no function serves {path}", line)
            return None
        isolate = function.pick()
        if isolate is None and function.lazy is not None:
            warmed = await self.pool.warm(function.name)
            isolate = warmed.pick() if warmed is not None else None
            function = warmed or function
        line.function = function.name
        if isolate is not None:
            line.version = isolate.spec.version
        metrics = self.metrics
        counters = None
        if metrics is not None:
            counters = metrics.counters(function.name, line.version)
            line.cold = counters.begin(isolate)
        if isolate is None:
            await _send_error(send, 503, function.error or f"function {name} is not serving", line)
            return counters
        guard = self.guards.get(isolate.spec.version)
        if guard is not None:  # before the cache and the body: a hit never skips auth
            checked = guard.check(method, path, scope["headers"], named, line.request_id)
            if isinstance(checked, Answer):
                await _send_answer(send, checked, line)
                return counters
            scope["headers"] = checked.headers
            if checked.cors is not None:
                send = with_headers(send, checked.cors)
        cache = self.cache
        if invoked is not None:
            if isolate.spec.kind != "lambda":
                message = (
                    f'function {name} is kind = "{isolate.spec.kind}"; the invoke API calls kind = "lambda"'
                )
                await _send_error(send, 400, message, line)
                return counters
            cache, method = None, INVOKE_METHOD
        headers = scope["headers"]
        looked_up = None
        if cache is not None:
            looked_up = cache.lookup(
                function.name, isolate.spec.version, method, path, scope["query_string"], headers, named
            )
            if isinstance(looked_up, CacheResult):
                line.cache, line.status, line.bytes = (
                    looked_up.cache_status,
                    looked_up.status,
                    len(looked_up.body),
                )
                looked_up.headers.append((b"x-request-id", line.request_id.encode()))
                await send(
                    {"type": "http.response.start", "status": looked_up.status, "headers": looked_up.headers}
                )
                await send({"type": "http.response.body", "body": looked_up.body})
                return counters
        body = b""
        length = named.get(b"content-length")
        if length is not None or b"transfer-encoding" in named:
            limit = self.settings.max_body_bytes
            if length is not None and not length.isdigit():
                self.bad_bodies += 1
                await _send_error(send, 400, f"invalid Content-Length {length.decode('latin-1')!r}", line)
                return counters
            if length is not None and int(length) > limit:
                await _send_error(send, 413, f"request body over the limit of {limit} bytes", line)
                return counters
            received = await _read_body(receive, limit)
            if received is None:
                await _send_error(send, 413, f"request body over the limit of {limit} bytes", line)
                return counters
            if received is _INCOMPLETE or (length is not None and len(received) != int(length)):
                # Cut off, or an invalid chunked encoding (granian reports both as a disconnect):
                # the handler never sees a partial body. A client still there gets a 400.
                self.bad_bodies += 1
                expected = (
                    f"{int(length)} bytes (Content-Length)" if length is not None else "a valid chunked body"
                )
                await _send_error(
                    send, 400, f"request body incomplete or malformed: expected {expected}", line
                )
                return counters
            body = received
        if cache is None or looked_up is PASS:
            query = scope["query_string"]
            reply = await isolate.submit(
                method,
                path,
                query.decode("latin-1"),
                headers,
                body,
                line.request_id,
                monotonic() + function.timeout,
                line.client,
            )
            if cache is None or reply[0] != RESPONSE:
                await _send_reply(send, reply, line, receive)
                return counters
            ttl = self.cache_ttls.get(function.name, 0)
            response = (reply[2], reply[3], reply[4])
            result = cache.passed(
                function.name, isolate.spec.version, path, query, ttl, response, method == "HEAD"
            )
            line.cache, line.status, line.bytes = "PASS", result.status, len(result.body)
            result.headers.append((b"x-request-id", line.request_id.encode()))
            await send({"type": "http.response.start", "status": result.status, "headers": result.headers})
            await send({"type": "http.response.body", "body": result.body})
            return counters
        await self._cached(cache, scope, receive, send, function.timeout, isolate, body, line)
        return counters

    async def _cached(
        self,
        cache: HttpCache,
        scope: Scope,
        receive: Receive,
        send: Send,
        timeout: float,
        isolate: Isolate,
        body: bytes,
        line: AccessLine,
    ) -> None:
        """Answer through the response cache; the isolate runs only on a miss."""
        method, path, query, headers = scope["method"], scope["path"], scope["query_string"], scope["headers"]
        request_id = line.request_id

        async def invoke(revalidation: Headers | None = None, /) -> tuple[int, Headers, bytes]:
            reply = await isolate.submit(
                method,
                path,
                query.decode("latin-1"),
                headers if revalidation is None else revalidation,  # the cache's conditional request
                body,
                request_id,
                monotonic() + timeout,
                line.client,
            )
            if reply[0] == RESPONSE:
                return reply[2], list(reply[3]), reply[4]
            if reply[0] == STREAM:  # neither stored nor shared: sent below as it comes
                raise Streamed(reply, reply[4].close)
            # The message alone: a collapsed waiter gets this too and renders its own request id.
            return reply[2], [_JSON, _NODE_ERROR], reply[3].encode()

        name = line.function
        ttl = self.cache_ttls.get(name, 0)
        request = CachedRequest(name, isolate.spec.version, method, path, query, headers, ttl)
        try:
            result = await cache.handle(request, invoke)
        except Streamed as streamed:
            line.cache = "MISS"
            await _send_stream(send, receive, streamed.reply, line)
            return
        response_headers, response_body = result.headers, result.body
        if _NODE_ERROR in response_headers:
            response_headers = [header for header in response_headers if header != _NODE_ERROR]
            response_body = msgspec.json.encode({"error": response_body.decode(), "request_id": request_id})
        line.cache, line.status, line.bytes = result.cache_status, result.status, len(response_body)
        response_headers.append((b"x-request-id", request_id.encode()))
        await send({"type": "http.response.start", "status": result.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": response_body})

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
            if any(release.isolate.spec.kind == "lambda" for release in function.releases)
            or (function.lazy is not None and function.lazy.kind == "lambda")
        ]
        return kinds[0] if len(kinds) == 1 else None

    async def _node_endpoint(self, path: str, request_id: str, send: Send) -> None:
        if path == "/_edge/health":
            await _send_json(send, 200, {"status": "ok"}, request_id)
        elif path == "/_edge/metrics":
            serving = self._pool.functions if self._pool is not None else {}
            isolates = [release.isolate for function in serving.values() for release in function.releases]
            metrics: dict[str, Any] = {
                "functions": len(serving),
                "abandoned_isolates": self._pool.abandoned if self._pool is not None else 0,
                "incomplete_bodies": self.bad_bodies,
                # Abandoned isolates still stuck in C code in this worker, and why it asked to be recycled.
                "wedged_isolates": len(self._pool.wedged_alive()) if self._pool is not None else 0,
                "recycling": self.watch.recycle_reason if self.watch is not None else "",
                # Requests reach isolates in batches; a batch for an idle isolate wakes it.
                "isolate_batches": sum(isolate.batches for isolate in isolates),
                "isolate_wakes": sum(isolate.wakes for isolate in isolates),
            }
            if self.cache is not None:
                metrics["cache"] = self.cache.stats.as_dict()
            await _send_json(send, 200, metrics, request_id)
        elif path == "/_edge/ready":
            functions: dict[str, dict[str, Any]] = {}
            if self._pool is not None:
                for name, function in self._pool.functions.items():
                    if function.error:
                        state = "failing" if function.failing else "error"
                        functions[name] = {"state": state, "error": function.error}
                    elif function.lazy is not None:
                        functions[name] = {"state": "cold", "versions": [function.lazy.version]}
                    else:
                        functions[name] = {"state": "serving", "versions": list(function.versions)}
            body = {"ready": self.ready, "functions": functions, **self.source.status()}
            await _send_json(send, 200 if self.ready else 503, body, request_id)
        else:
            await _send_json(
                send, 404, {"error": f"no node endpoint {path}", "request_id": request_id}, request_id
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("node start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

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


# What _read_body returns for a body that did not arrive whole.
_INCOMPLETE = b"\0incomplete"


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body; None as soon as it passes `limit` bytes; _INCOMPLETE when cut off."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _INCOMPLETE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


async def _send_reply(send: Send, reply: Reply, line: AccessLine, receive: Receive) -> None:
    if reply[0] == RESPONSE:
        line.status, line.bytes = reply[2], len(reply[4])
        headers = [*reply[3], (b"x-request-id", line.request_id.encode())]
        await send({"type": "http.response.start", "status": reply[2], "headers": headers})
        await send({"type": "http.response.body", "body": reply[4]})
    elif reply[0] == STREAM:
        await _send_stream(send, receive, reply, line)
    else:
        await _send_error(send, reply[2], reply[3], line)


async def _send_stream(send: Send, receive: Receive, reply: Reply, line: AccessLine) -> None:
    """Send a streamed reply piece by piece (chunked).

    A stream cut off is logged and left without its terminating chunk: the server ends the
    response abnormally, so the client cannot take it for complete. A client that goes away
    (`http.disconnect`) stops the sending; the function's generator runs on until it ends or
    reaches its deadline, and what it still makes is dropped.
    """
    stream: Stream = reply[4]
    headers = [*reply[3], (b"x-request-id", line.request_id.encode())]
    watch = asyncio.get_running_loop().create_task(_close_on_disconnect(receive, stream))
    line.status = reply[2]
    try:
        await send({"type": "http.response.start", "status": reply[2], "headers": headers})
        async for data in stream:
            line.bytes += len(data)
            await send({"type": "http.response.body", "body": data, "more_body": True})
    except StreamCut as exc:
        log.error("request %s: streamed response cut off: %s", line.request_id, exc)
        return
    finally:
        watch.cancel()
        stream.close()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _close_on_disconnect(receive: Receive, stream: Stream) -> None:
    """Close `stream` once the client is gone (the ASGI server keeps accepting sends meanwhile)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.close()


async def _send_json(send: Send, status: int, payload: dict[str, Any], request_id: str) -> None:
    headers = [_JSON, (b"x-request-id", request_id.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": msgspec.json.encode(payload)})


async def _send_answer(send: Send, answer: Answer, line: AccessLine) -> None:
    line.status, line.bytes = answer.status, len(answer.body)
    headers = [*answer.headers, (b"x-request-id", line.request_id.encode())]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def _send_error(send: Send, status: int, message: str, line: AccessLine) -> None:
    body = msgspec.json.encode({"error": message, "request_id": line.request_id})
    line.status, line.bytes = status, len(body)
    headers = [_JSON, (b"x-request-id", line.request_id.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    backends: BackendLookup = backend_factory,
    metrics: bool = True,
    *,
    settings: NodeSettings | None = None,
    recycle: Callable[[], None] | None = None,
) -> NodeApp:
    """Granian's factory: settings from `edge node`'s main process (edge/node/handoff.py), else from
    `EDGE_NODE_SETTINGS_JSON` (for tools that run granian themselves; never with a token).

    `backends` picks each isolation level's backend (a benchmark passes a canned one); `metrics`
    False counts nothing per request (loadtest/metrics_cost.py's baseline). A node serving in
    its own process (edge/node/embedded.py) gives its `settings` and how it `recycle`s itself."""
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
    return NodeApp(
        settings, source, backends=backends, recycle=recycle, runtime_dir=runtime_dir, metrics=metrics
    )


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
