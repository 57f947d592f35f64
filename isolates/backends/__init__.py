"""Isolate backends: where a function's code runs. Each backend module implements `Isolate`."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any, Protocol

import msgspec

from isolates.manifest import Permissions

__all__ = [
    "BACKENDS",
    "CHUNK",
    "ERROR",
    "INVOKE_METHOD",
    "LOADED",
    "LOG",
    "RESPONSE",
    "STREAM",
    "STREAM_BUFFER_BYTES",
    "Backend",
    "BackendFactory",
    "BackendOptions",
    "FixedStandby",
    "Isolate",
    "IsolateSpec",
    "LoadError",
    "LogSink",
    "OnStuck",
    "Reply",
    "RequestHeaders",
    "StandbyBudget",
    "Stream",
    "StreamCut",
    "StreamReplies",
    "backend_factory",
    "kind_options",
]

# Message kinds shared with the guest runtime (isolates/guest/_edge_runtime.py).
RESPONSE, ERROR, LOG, LOADED, STREAM, CHUNK = 0, 1, 2, 3, 4, 5

# The method of a request that is a direct invocation (the Lambda invoke API), not HTTP: not a
# valid HTTP token, so no client request can carry it. The guest's `lambda` kind passes the body
# to the handler as the event and answers the handler's return value as JSON.
INVOKE_METHOD = "<invoke>"

# (RESPONSE, seq, status, headers, body), (ERROR, seq, status, message), or for a streamed
# response (STREAM, seq, status, headers, chunks): `chunks` a `Stream` (an async iterator of bytes).
Reply = tuple[Any, ...]

# What a stream may hold that its client has not taken yet. The guest cannot be paused: a
# stream whose client reads slower than the function writes is cut off past this.
STREAM_BUFFER_BYTES = 8 << 20

log = logging.getLogger("edge.isolates")

# A request's header pairs as the ASGI server gives them (a list) or as tuples.
RequestHeaders = list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]

# Called with (function, version, stream, request_id, line) for every line a function logs.
LogSink = Callable[[str, str, str, str, str], None]


class IsolateSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything needed to start one version of one function."""

    name: str
    version: str
    directory: str
    module: str
    attribute: str
    timeout_ms: int
    env: tuple[tuple[str, str], ...] = ()
    # Which backend runs it (a key of BACKENDS) and what it may reach (`[permissions]`).
    isolation: str = "interpreter"
    permissions: Permissions = Permissions()
    # Process backend: memory limit of the child in MiB (0: BackendOptions.memory_mb).
    memory_mb: int = 0
    # The entrypoint's shape (manifest `kind`) and what its adapter needs (`lambda_payload`).
    kind: str = "edge"
    lambda_payload: str = "2.0"


def kind_options(spec: IsolateSpec, memory_mb: int) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """What the guest's adapter for `spec.kind` is given (the assignment's `kind` field)."""
    options = (
        ("lambda_payload", spec.lambda_payload),
        ("memory_mb", spec.memory_mb or memory_mb),
        ("timeout_ms", spec.timeout_ms),
    )
    return spec.kind, options


class LoadError(Exception):
    """The function's module or entrypoint could not be loaded; the message says which and why."""


class Isolate(Protocol):
    """One running version of one function."""

    spec: IsolateSpec
    # True once loaded when the handler is a coroutine function.
    is_async: bool
    # Request batches handed to the isolate, and how many of them had to wake it (it was idle).
    batches: int
    wakes: int
    # True when the isolate replaces its own worker after a crash or a wedge (process backend):
    # its `on_stuck` call then only tells the pool to count a failure. False: the pool replaces
    # the whole isolate (it has `take_queued()`, `adopt(queued)` and `abandon()`).
    recovers: bool

    @property
    def ready(self) -> asyncio.Future[None]:
        """Resolves once the entrypoint is imported; raises LoadError when it cannot be."""
        ...

    @property
    def alive(self) -> bool:
        """False once the isolate was closed, crashed or abandoned."""
        ...

    @property
    def pending(self) -> int:
        """Requests submitted and not answered yet (waiting or running; the node's queue depth)."""
        ...

    def submit(
        self,
        method: str,
        path: str,
        query: str,
        headers: RequestHeaders,
        body: bytes,
        request_id: str,
        deadline: float,
        client: str = "",
    ) -> asyncio.Future[Reply]:
        """Called per request; the future resolves to a Reply and never raises (errors are Replies).

        `client` is the peer's address ("host:port", "" when unknown)."""
        ...

    async def close(self, timeout: float) -> bool:
        """Stop after the requests in hand are answered; returns False if it had to be abandoned."""
        ...


# Called by an isolate whose guest is stuck in C code past a deadline (its pool replaces it).
OnStuck = Callable[[Any], None]


class BackendOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What every backend of one node process is configured with (from the node's settings)."""

    # Blank isolates (interpreters or spawned children) kept ready ahead of need.
    warm_pool: int = 2
    # How many blank interpreters the pool may hold while cold starts outrun it (it grows past
    # `warm_pool` only then, and only while the node's budget has room; see WarmPool).
    warm_pool_max: int = 32
    # How long an isolate may stay silent after a request's deadline before it is replaced (s).
    abandon_after: float = 1.0
    # Standard-library modules imported into blank isolates ahead of need.
    preload: tuple[str, ...] = ()
    # Directories no function may open (the node's data and state directories); a function's
    # own bundle inside one of them stays readable.
    protected: tuple[str, ...] = ()
    # Process backend: default memory limit per child (MiB), CPU seconds per child, and the uid
    # range children run under when the node is root (one uid per function).
    memory_mb: int = 256
    cpu_s: int = 3600
    uid_base: int = 61000
    uid_count: int = 1000


class Backend(Protocol):
    """Starts isolates of one isolation level for one node process (made in the running loop)."""

    def take(self, spec: IsolateSpec, on_stuck: OnStuck | None, expect_async: bool = False) -> Isolate:
        """Called per new function version: a started isolate assigned to `spec` (`ready` says when)."""
        ...

    def saw_async(self) -> None:
        """Called once an async handler loaded: keep blank isolates ready for one from now on."""
        ...

    async def close(self, timeout: float) -> None:
        """Called at shutdown: stop the blank isolates this backend keeps."""
        ...

    def bound_by(self, budget: StandbyBudget) -> None:
        """Called once: blank isolates beyond `warm_pool` count against this budget."""
        ...

    def refill(self) -> None:
        """Called after deploys: make the blank isolates now wanted (in the background)."""
        ...

    def extra_standby(self) -> int:
        """Blank isolates held beyond `warm_pool` (the budget counts them)."""
        ...

    def congested(self) -> bool:
        """Work waits for a host thread: another instance would wait too (instance sets hold off)."""
        ...

    def drop_standby(self) -> bool:
        """Stop one blank isolate held beyond `warm_pool` (the budget needs the room); False: none."""
        ...


class FixedStandby:
    """The standby half of `Backend` for one whose blank isolates stay at `warm_pool` (process
    children are too costly to make ahead of need): nothing beyond it for the budget to count."""

    def bound_by(self, budget: StandbyBudget) -> None:
        pass

    def extra_standby(self) -> int:
        return 0

    def drop_standby(self) -> bool:
        return False

    def congested(self) -> bool:
        return False


class StandbyBudget(Protocol):
    """What a backend's warm pool asks of the node's budget (isolates/instances.py `Budget`)."""

    def room_for_blank(self) -> bool:
        """True when one more blank interpreter fits beside the instances and the other blanks."""
        ...

    def never_run(self, isolation: str) -> int:
        """Function versions of that isolation level deployed and never started (cold starts to come)."""
        ...


# (loop, log sink, options) -> a backend.
BackendFactory = Callable[[asyncio.AbstractEventLoop, LogSink, BackendOptions], Backend]

# Isolation level (manifest `isolation`) -> "module:attribute" of its BackendFactory.
BACKENDS: dict[str, str] = {
    "interpreter": "isolates.backends.subinterpreter:WarmPool",
    "process": "isolates.backends.process:ProcessBackend",
}


def backend_factory(name: str) -> BackendFactory:
    """The factory registered for isolation level `name`; raises LookupError for an unknown one."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise LookupError(f"unknown isolation {name!r}; expected one of {', '.join(BACKENDS)}") from None
    module, _, attribute = target.partition(":")
    factory: BackendFactory = getattr(importlib.import_module(module), attribute)
    return factory


class StreamCut(Exception):
    """A streamed response ended before its last piece; the message says why."""


class Stream:
    """The body of a streamed reply: an async iterator of bytes, fed by the isolate's backend.

    Iterating yields what arrived since the last step (joined), ends after the last piece, and
    raises StreamCut when the stream was cut off (the function failed, timed out or its isolate
    went away, or the client fell more than `limit` bytes behind).
    """

    __slots__ = ("_buffered", "_closed", "_ended", "_error", "_limit", "_loop", "_pieces", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = STREAM_BUFFER_BYTES) -> None:
        self._loop = loop
        self._limit = limit
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._ended = False
        self._closed = False
        self._error: str | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def ended(self) -> bool:
        """True once the last piece arrived or the stream was cut off."""
        return self._ended

    def feed(self, data: bytes, more: bool) -> bool:
        """Called per CHUNK; returns False when the unread pieces pass the limit (cut it then)."""
        if self._ended:
            return True
        if data and not self._closed:
            self._pieces.append(data)
            self._buffered += len(data)
        if not more:
            self._ended = True
        self._wake()
        return self._buffered <= self._limit

    def cut(self, reason: str) -> None:
        """End the stream cut off: the reader gets what arrived, then StreamCut(reason)."""
        if not self._ended:
            self._ended = True
            self._error = reason
            self._wake()

    def close(self) -> None:
        """The reader is gone (client disconnected): iteration ends, what arrives is dropped."""
        self._closed = True
        self._pieces.clear()
        self._buffered = 0
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> bytes:
        while not self._closed:
            pieces = self._pieces
            if pieces:
                data = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
                if pieces:
                    pieces.clear()
                self._buffered = 0
                return data
            if self._error is not None:
                raise StreamCut(self._error)
            if self._ended:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        raise StopAsyncIteration


class StreamReplies:
    """The streamed replies of one isolate, from STREAM through CHUNK messages to their end.

    A backend calls `start`, `chunk` and `error` as messages arrive, then `settle` once per
    batch: a stream whose start and last piece came in the same batch is answered as a plain
    RESPONSE (joined: cacheable, with a Content-Length); the others become open `Stream`s.
    An open stream still running `grace` seconds past its deadline is cut off and `on_overdue`
    is called with the loop time of that deadline (the guest should have ended it itself).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        grace: float,
        on_overdue: Callable[[float], None],
        limit: int = STREAM_BUFFER_BYTES,
    ) -> None:
        self._loop = loop
        self._grace = grace
        self._on_overdue = on_overdue
        self._limit = limit
        # seq -> [status, headers, pieces, ended]: started in the batch being handled.
        self._starting: dict[int, list[Any]] = {}
        # seq -> (stream, timer): answered as streams, not ended yet.
        self._open: dict[int, tuple[Stream, asyncio.TimerHandle]] = {}
        self.timeout_message = "timed out"

    def __len__(self) -> int:
        return len(self._open)

    def start(self, seq: int, status: int, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        """A STREAM message arrived."""
        self._starting[seq] = [status, headers, [], False]

    def chunk(self, seq: int, data: bytes, more: bool) -> None:
        """A CHUNK message arrived (one for an unknown or cut-off stream is dropped)."""
        starting = self._starting.get(seq)
        if starting is not None:
            if data:
                starting[2].append(data)
            starting[3] = not more
            return
        entry = self._open.get(seq)
        if entry is None:
            return
        stream, timer = entry
        if not stream.feed(data, more):
            self._end(seq, f"the client fell more than {self._limit >> 20} MiB behind the function")
        elif not more:
            del self._open[seq]
            timer.cancel()

    def error(self, seq: int, message: str) -> bool:
        """An ERROR message arrived; True when it ends a stream (cut off), False for a plain error."""
        if self._starting.pop(seq, None) is not None:
            return False  # it failed before anything was sent: an ordinary error reply
        if seq not in self._open:
            return False
        self._end(seq, message)
        return True

    def settle(self) -> list[Reply]:
        """The replies for the streams started in this batch (call once the batch is handled)."""
        starting, self._starting = self._starting, {}
        replies: list[Reply] = []
        for seq, (status, headers, pieces, ended) in starting.items():
            if ended:
                replies.append((RESPONSE, seq, status, headers, b"".join(pieces)))
                continue
            stream = Stream(self._loop, self._limit)
            for data in pieces:
                stream.feed(data, True)
            replies.append((STREAM, seq, status, headers, stream))
        return replies

    def opened(self, seq: int, stream: Stream, deadline: float) -> None:
        """The backend answered a request with `stream` (from `settle`); it ends by `deadline`."""
        expired_at = self._loop.time() + (deadline - monotonic())
        timer = self._loop.call_at(expired_at + self._grace, self._overdue, seq, expired_at)
        self._open[seq] = (stream, timer)

    def _overdue(self, seq: int, expired_at: float) -> None:
        if seq in self._open:
            self._end(seq, self.timeout_message)
            self._on_overdue(expired_at)

    def _end(self, seq: int, reason: str) -> None:
        stream, timer = self._open.pop(seq)
        timer.cancel()
        stream.cut(reason)

    def cut_all(self, reason: str) -> int:
        """Cut off every open stream (its isolate is gone); returns how many there were."""
        self._starting.clear()
        seqs = list(self._open)
        for seq in seqs:
            self._end(seq, reason)
        return len(seqs)
