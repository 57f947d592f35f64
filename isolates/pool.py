"""The isolates of one node process: which versions of which functions run, and switching them.

A function's releases (version, weight) switch atomically: new versions are started and warmed
first; only when every one of them loaded does the function point at them. Requests in flight
finish on the isolates they were sent to, which are retired once they drain.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

from isolates.backends import (
    ERROR,
    Backend,
    BackendFactory,
    BackendOptions,
    Isolate,
    IsolateSpec,
    LoadError,
    LogSink,
    backend_factory,
)

__all__ = ["BackendLookup", "Function", "IsolatePool", "Release", "Wedged", "thread_cpu_seconds"]

log = logging.getLogger("edge.isolates")

# Isolation level name -> the factory of its backend (isolates.backends.backend_factory by default;
# a benchmark or a test passes its own).
BackendLookup = Callable[[str], BackendFactory]


# Called with (function, version, reason) when a version is marked failing.
OnFailing = Callable[[str, str, str], None]

_CLOCK_TICKS = 100  # USER_HZ: /proc reports CPU times in these on every Linux architecture


def thread_cpu_seconds(thread_id: int | None) -> float:
    """User + system CPU seconds of one thread of this process (0.0 once it is gone)."""
    if thread_id is None:
        return 0.0
    try:
        with open(f"/proc/self/task/{thread_id}/stat", "rb") as file:
            fields = file.read().rpartition(b")")[2].split()
    except OSError:
        return 0.0
    # Fields after the command name start at field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class Wedged(NamedTuple):
    """An abandoned isolate whose thread is still inside its interpreter, stuck in C code."""

    isolate: Any
    abandoned_at: float
    # The thread's CPU seconds when it was abandoned: more since then means it spins.
    cpu_at_abandon: float

    @property
    def alive(self) -> bool:
        return not self.isolate.exited

    def cpu_since_abandoned(self) -> float:
        return thread_cpu_seconds(self.isolate.thread_id) - self.cpu_at_abandon


class Release(NamedTuple):
    """One version of a function and its share of the traffic (a weight out of the total)."""

    isolate: Isolate
    weight: int


class Function:
    """What requests for one function are dispatched to: its live releases, or why it is down."""

    __slots__ = ("_cumulative", "_total", "error", "failing", "lazy", "name", "releases", "timeout")

    def __init__(
        self,
        name: str,
        timeout: float,
        releases: Sequence[Release] = (),
        error: str = "",
        lazy: IsolateSpec | None = None,
        failing: bool = False,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.releases = tuple(releases)
        self.error = error
        # Down because it kept getting stuck or crashing (see IsolatePool), not because it failed to load.
        self.failing = failing
        # Started on its first request instead of at start-up (scale from zero).
        self.lazy = lazy
        running = 0
        cumulative = []
        for release in self.releases:
            running += release.weight
            cumulative.append(running)
        self._cumulative = tuple(cumulative)
        self._total = running

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions serving, stable one first."""
        return tuple(release.isolate.spec.version for release in self.releases)

    def pick(self) -> Isolate | None:
        """The isolate for the next request: weighted at random between releases."""
        releases = self.releases
        if len(releases) == 1:
            return releases[0].isolate
        if not releases or self._total <= 0:
            return None
        ticket = random.random() * self._total
        for release, edge in zip(releases, self._cumulative, strict=True):
            if ticket < edge:
                return release.isolate
        return releases[-1].isolate


class IsolatePool:
    """All functions of this process; create it inside the running event loop (ASGI lifespan)."""

    def __init__(
        self,
        log_sink: LogSink,
        options: BackendOptions | None = None,
        backends: BackendLookup = backend_factory,
        drain_timeout: float = 30.0,
        max_failures: int = 3,
        failure_window: float = 60.0,
        failing: Mapping[tuple[str, str], str] | None = None,
        on_failing: OnFailing | None = None,
        clock: Callable[[], float] = time.monotonic,
        **option_fields: Any,
    ) -> None:
        """Parameters
        ----------
        max_failures, failure_window:
            A version that gets stuck (or crashes its process) `max_failures` times within
            `failure_window` seconds is marked failing: it answers 503 until another version is deployed.
        failing:
            (function, version) -> reason of versions marked failing earlier (by a previous worker).
        on_failing:
            Called when a version is marked failing (the node keeps the marks across workers).
        option_fields:
            Override single fields of `options` (warm_pool=0, abandon_after=0.2, ...).
        """
        self._loop = asyncio.get_running_loop()
        self._log_sink = log_sink
        self._options = msgspec.structs.replace(options or BackendOptions(), **option_fields)
        self._lookup = backends
        self._backends: dict[str, Backend] = {}
        # The interpreter backend starts its warm pool at once; others start on first use.
        self._backend("interpreter")
        self._drain_timeout = drain_timeout
        self._functions: dict[str, Function] = {}
        self._isolates: dict[tuple[str, str], Isolate] = {}
        self._retiring: set[asyncio.Task[bool]] = set()
        self._warming: dict[str, asyncio.Task[None]] = {}
        self.abandoned = 0
        self._max_failures = max_failures
        self._failure_window = failure_window
        self._clock = clock
        self._failure_times: dict[tuple[str, str], list[float]] = {}
        self.failing: dict[tuple[str, str], str] = dict(failing or {})
        self._on_failing = on_failing
        # Abandoned isolates, until their thread leaves the interpreter (see `wedged_alive`).
        self._wedged: list[Wedged] = []

    def _backend(self, isolation: str) -> Backend:
        backend = self._backends.get(isolation)
        if backend is None:
            backend = self._lookup(isolation)(self._loop, self._log_sink, self._options)
            self._backends[isolation] = backend
        return backend

    @property
    def functions(self) -> dict[str, Function]:
        """Functions by name (read-only use)."""
        return self._functions

    def get(self, name: str) -> Function | None:
        """The function called `name`, if this node has it."""
        return self._functions.get(name)

    async def deploy(self, name: str, releases: Sequence[tuple[IsolateSpec, int]]) -> None:
        """Warm every version in `releases`, then switch the function to them; raises LoadError.

        On LoadError the function keeps serving what it served before.
        """
        for spec, _ in releases:
            reason = self.failing.get((name, spec.version))
            if reason is not None:
                raise LoadError(reason)
        started: list[Isolate] = []
        chosen: list[Release] = []
        current = self._functions.get(name)
        # A new version of an async function is most likely async too (see WarmPool).
        expect_async = current is not None and any(release.isolate.is_async for release in current.releases)
        for spec, weight in releases:
            isolate = self._isolates.get((name, spec.version))
            if isolate is None or not isolate.alive or isolate.spec != spec:
                isolate = self._backend(spec.isolation).take(spec, self._replace_stuck, expect_async)
                started.append(isolate)
            chosen.append(Release(isolate, weight))
        try:
            await asyncio.gather(*(isolate.ready for isolate in started))
        except LoadError:
            for isolate in started:
                self._retire(isolate)
            raise
        for isolate in started:
            if isolate.is_async:
                self._backend(isolate.spec.isolation).saw_async()
        old = self._functions.get(name)
        timeout = releases[0][0].timeout_ms / 1000 if releases else 30.0
        self._functions[name] = Function(name, timeout, chosen)
        for isolate in started:
            self._isolates[(name, isolate.spec.version)] = isolate
        keep = {id(release.isolate) for release in chosen}
        if old is not None:
            for release in old.releases:
                if id(release.isolate) not in keep:
                    self._isolates.pop((name, release.isolate.spec.version), None)
                    self._retire(release.isolate)

    def register_lazy(self, spec: IsolateSpec) -> None:
        """Route to a function whose isolate starts on its first request (see `warm`)."""
        self._functions[spec.name] = Function(spec.name, spec.timeout_ms / 1000, lazy=spec)

    async def warm(self, name: str) -> Function | None:
        """Start a lazily registered function (once, however many requests wait); returns it."""
        function = self._functions.get(name)
        if function is None or function.lazy is None:
            return function
        task = self._warming.get(name)
        if task is None:
            task = self._loop.create_task(self._warm(function.lazy))
            self._warming[name] = task
            task.add_done_callback(lambda _: self._warming.pop(name, None))
        await asyncio.shield(task)
        return self._functions.get(name)

    async def _warm(self, spec: IsolateSpec) -> None:
        try:
            await self.deploy(spec.name, [(spec, 100)])
        except LoadError as exc:
            log.error("function %s: failed to load: %s", spec.name, exc)
            self._functions[spec.name] = Function(
                spec.name, spec.timeout_ms / 1000, error=f"function {spec.name} failed to load: {exc}"
            )

    def fail(self, name: str, error: str, timeout: float = 30.0) -> None:
        """Record a function that cannot run (its routes answer 503 with `error`)."""
        if name not in self._functions:
            failing = any(marked == name for marked, _ in self.failing)
            self._functions[name] = Function(name, timeout, error=error, failing=failing)

    async def remove(self, name: str) -> None:
        """Stop routing to `name` and retire its isolates once they drain."""
        function = self._functions.pop(name, None)
        if function is None:
            return
        for release in function.releases:
            self._isolates.pop((name, release.isolate.spec.version), None)
            self._retire(release.isolate)

    def _retire(self, isolate: Isolate) -> None:
        task = self._loop.create_task(isolate.close(self._drain_timeout))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def wedged_alive(self) -> list[Wedged]:
        """The abandoned isolates whose thread is still stuck in their interpreter."""
        self._wedged = [wedged for wedged in self._wedged if wedged.alive]
        return self._wedged

    def is_failing(self, name: str) -> bool:
        """True when `name` is down because one of its versions was marked failing."""
        function = self._functions.get(name)
        return function is not None and function.failing

    def _count_failure(self, spec: IsolateSpec) -> str | None:
        """Note one wedge or crash of `spec`; returns why it is failing now, or None."""
        key = (spec.name, spec.version)
        now = self._clock()
        times = [t for t in self._failure_times.get(key, []) if now - t < self._failure_window]
        times.append(now)
        self._failure_times[key] = times
        if len(times) < self._max_failures:
            return None
        reason = (
            f"function {spec.name} version {spec.version[:12]} is failing: it got stuck or crashed "
            f"{len(times)} times within {self._failure_window:g} s; deploy a new version to retry"
        )
        self.failing[key] = reason
        log.error("%s", reason)
        if self._on_failing is not None:
            self._on_failing(spec.name, spec.version, reason)
        return reason

    def _mark_failing(self, name: str, timeout: float, reason: str) -> None:
        function = self._functions.get(name)
        self._functions[name] = Function(name, timeout, error=reason, failing=True)
        for release in function.releases if function is not None else ():
            self._isolates.pop((name, release.isolate.spec.version), None)
            if release.isolate.alive:
                self._retire(release.isolate)

    def _replace_stuck(self, stuck: Any) -> None:
        """An isolate hung in C code (or, for one that `recovers`, crashed and was restarted).

        Counts a failure of its version; one that does not recover is abandoned and its function
        routed to a fresh isolate of the same version, unless the version is now failing. `stuck`
        then has `take_queued()`, `adopt(queued)` and `abandon()` (SubinterpreterIsolate).
        """
        spec = stuck.spec
        failing = self._count_failure(spec)
        if stuck.recovers:
            if failing is not None:
                self._mark_failing(spec.name, spec.timeout_ms / 1000, failing)
            return
        self.abandoned += 1
        self._wedged.append(Wedged(stuck, self._clock(), thread_cpu_seconds(stuck.thread_id)))
        if failing is not None:
            for _, future in stuck.take_queued():
                if not future.done():
                    future.set_result((ERROR, 0, 503, failing))
            stuck.abandon()
            self._mark_failing(spec.name, spec.timeout_ms / 1000, failing)
            return
        fresh: Any = self._backend(spec.isolation).take(spec, self._replace_stuck, stuck.is_async)
        fresh.adopt(stuck.take_queued())
        stuck.abandon()
        self._isolates[(spec.name, spec.version)] = fresh
        function = self._functions.get(spec.name)
        if function is not None:
            releases = [
                Release(fresh, release.weight) if release.isolate is stuck else release
                for release in function.releases
            ]
            self._functions[spec.name] = Function(function.name, function.timeout, releases, function.error)

    async def close(self, timeout: float) -> None:
        """Stop every isolate (called from lifespan shutdown, so the worker exits without hanging)."""
        isolates = list(self._isolates.values())
        self._functions.clear()
        self._isolates.clear()
        await asyncio.gather(*(backend.close(timeout) for backend in self._backends.values()))
        results = await asyncio.gather(*(isolate.close(timeout) for isolate in isolates), *self._retiring)
        stuck = results.count(False)
        if stuck:
            log.error("%d isolate(s) could not be stopped", stuck)
