"""Isolate backends: where a function's code runs. Each backend module implements `Isolate`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

__all__ = [
    "ERROR",
    "LOADED",
    "LOG",
    "RESPONSE",
    "Isolate",
    "IsolateSpec",
    "LoadError",
    "LogSink",
    "Reply",
    "RequestHeaders",
]

# Message kinds shared with the guest runtime (isolates/guest/_edge_runtime.py).
RESPONSE, ERROR, LOG, LOADED = 0, 1, 2, 3

# (RESPONSE, seq, status, headers, body) or (ERROR, seq, status, message)
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
    ) -> asyncio.Future[Reply]:
        """Called per request; the future resolves to a Reply and never raises (errors are Replies)."""
        ...

    async def close(self, timeout: float) -> bool:
        """Stop after the requests in hand are answered; returns False if it had to be abandoned."""
        ...
