"""Isolate backends: where a function's code runs. Each backend module implements `Isolate`."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
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
    "Backend",
    "BackendFactory",
    "BackendOptions",
    "Isolate",
    "IsolateSpec",
    "LoadError",
    "LogSink",
    "OnStuck",
    "Reply",
    "RequestHeaders",
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
# response (STREAM, seq, status, headers, chunks): `chunks` an async iterator of bytes.
Reply = tuple[Any, ...]

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
