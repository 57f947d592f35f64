"""The isolates of one node process: which versions of which functions run, and switching them.

Each version runs as a set of instances (isolates/instances.py), grown while requests queue and
reaped when idle, within the node's budget. A function's releases (version, weight) switch
atomically: new versions are started and warmed first; only when every one of them loaded does
the function point at them. The versions switched away from drain: their queued requests are
still served, then their instances retire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

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
from isolates.instances import REFUSALS, Budget, InstanceSet, ScalePolicy

if TYPE_CHECKING:
    from isolates.backends.subinterpreter import WarmPool

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
    """One version of a function (its instances) and its share of the traffic (a weight out of the total)."""

    instances: InstanceSet
    weight: int


class Function:
    """What requests for one function are dispatched to: its live releases, or why it is down."""

    __slots__ = ("_cumulative", "_total", "error", "failing", "name", "releases", "timeout")

    def __init__(
        self,
        name: str,
        timeout: float,
        releases: Sequence[Release] = (),
        error: str = "",
        failing: bool = False,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.releases = tuple(releases)
        self.error = error
        # Down because it kept getting stuck or crashing (see IsolatePool), not because it failed to load.
        self.failing = failing
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
        return tuple(release.instances.spec.version for release in self.releases)

    @property
    def instances(self) -> int:
        """Instances running, over every version."""
        return sum(len(release.instances.instances) for release in self.releases)

    def choose(self) -> InstanceSet | None:
        """The version for the next request: weighted at random between releases."""
        releases = self.releases
        if len(releases) == 1:
            return releases[0].instances
        if not releases or self._total <= 0:
            return None
        ticket = random.random() * self._total
        for release, edge in zip(releases, self._cumulative, strict=True):
            if ticket < edge:
                return release.instances
        return releases[-1].instances

    def pick(self) -> Isolate | None:
        """A running isolate of the next request's version, without taking a slot (tools, tests)."""
        chosen = self.choose()
        if chosen is None or not chosen.instances:
            return None
        return min(chosen.instances, key=lambda instance: instance.in_flight).isolate


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
        policy: ScalePolicy | None = None,
        budget: Budget | None = None,
        instance_mb: int = 0,
        reap_interval: float = 1.0,
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
        policy:
            How functions deployed without a policy of their own scale (isolates/instances.py).
        budget:
            The node-wide ceiling on instances and their memory (none by default).
        instance_mb:
            What an interpreter instance counts against the budget's memory (MiB); a process
            instance counts its memory limit.
        reap_interval:
            Seconds between looks for instances idle past their idle_timeout (0: only `reap()`).
        option_fields:
            Override single fields of `options` (warm_pool=0, abandon_after=0.2, ...).
        """
        self._loop = asyncio.get_running_loop()
        self._log_sink = log_sink
        self._options = msgspec.structs.replace(options or BackendOptions(), **option_fields)
        self._lookup = backends
        self._backends: dict[str, Backend] = {}
        self._refill_soon = False
        self.budget = budget or Budget()
        self.budget.blank_mb = instance_mb
        # The interpreter backend starts its warm pool at once; others start on first use.
        self._backend("interpreter")
        self._drain_timeout = drain_timeout
        self._functions: dict[str, Function] = {}
        self._sets: dict[tuple[str, str], InstanceSet] = {}
        # Sets switched away from that still serve their queued requests (closed at shutdown).
        self._draining: set[InstanceSet] = set()
        self._retiring: set[asyncio.Task[bool]] = set()
        self._policy = policy or ScalePolicy()
        # Requests refused for want of an instance since start, by reason (isolates/instances.py).
        self.refused = dict.fromkeys(REFUSALS, 0)
        self._instance_mb = instance_mb
        self._reaper = self._loop.create_task(self._reap_forever(reap_interval)) if reap_interval else None
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
            backend.bound_by(self.budget)
            self.budget.pools.append(backend)
            self._backends[isolation] = backend
        return backend

    @property
    def warm_pool(self) -> WarmPool | None:
        """The interpreter backend's warm pool (None when another backend stands in for it)."""
        from isolates.backends.subinterpreter import WarmPool

        backend = self._backends.get("interpreter")
        return backend if isinstance(backend, WarmPool) else None

    @property
    def functions(self) -> dict[str, Function]:
        """Functions by name (read-only use)."""
        return self._functions

    def get(self, name: str) -> Function | None:
        """The function called `name`, if this node has it."""
        return self._functions.get(name)

    def _new_set(self, spec: IsolateSpec, policy: ScalePolicy, expect_async: bool) -> InstanceSet:
        if not policy.memory_mb:
            memory = spec.memory_mb or self._options.memory_mb if spec.isolation == "process" else 0
            policy = msgspec.structs.replace(policy, memory_mb=memory or self._instance_mb)
        return InstanceSet(
            spec,
            policy,
            self._start_isolate,
            self._retire,
            self.budget,
            self._clock,
            expect_async,
            self._failed_to_start,
            self.refused,
        )

    def _start_isolate(self, spec: IsolateSpec, expect_async: bool) -> Isolate:
        isolate = self._backend(spec.isolation).take(spec, self._replace_stuck, expect_async)
        self._loop.create_task(self._note_async(isolate))
        return isolate

    async def _note_async(self, isolate: Isolate) -> None:
        with contextlib.suppress(LoadError):
            await isolate.ready
            if isolate.is_async:
                self._backend(isolate.spec.isolation).saw_async()

    def _failed_to_start(self, instances: InstanceSet, message: str) -> None:
        """A set with no instance could not start one: its function answers 503 with why."""
        function = self._functions.get(instances.spec.name)
        if function is not None and any(release.instances is instances for release in function.releases):
            log.error("%s", message)
            self._close_sets(function)
            self._functions[function.name] = Function(function.name, function.timeout, error=message)

    async def deploy(
        self,
        name: str,
        releases: Sequence[tuple[IsolateSpec, int]],
        policies: Sequence[ScalePolicy] | None = None,
    ) -> None:
        """Warm every version in `releases`, then switch the function to them; raises LoadError.

        Each new version starts max(min_instances, 1) instances first (so a version that does not
        load is never switched to). `policies`: one per release (the pool's default without).
        On LoadError the function keeps serving what it served before.
        """
        for spec, _ in releases:
            reason = self.failing.get((name, spec.version))
            if reason is not None:
                raise LoadError(reason)
        started: list[InstanceSet] = []
        chosen: list[Release] = []
        current = self._functions.get(name)
        # A new version of an async function is most likely async too (see WarmPool).
        expect_async = current is not None and any(release.instances.is_async for release in current.releases)
        for index, (spec, weight) in enumerate(releases):
            policy = policies[index] if policies else self._policy
            instances = self._sets.get((name, spec.version))
            if instances is None or instances.closed or instances.spec != spec:
                instances = self._new_set(spec, policy, expect_async)
                started.append(instances)
            else:
                instances.update(policy)
            chosen.append(Release(instances, weight))
        try:
            await asyncio.gather(
                *(instances.start(max(instances.policy.min_instances, 1)) for instances in started)
            )
        except LoadError:
            for instances in started:
                for isolate in instances.close():
                    self._retire(isolate)
            raise
        old = self._functions.get(name)
        timeout = releases[0][0].timeout_ms / 1000 if releases else 30.0
        self._functions[name] = Function(name, timeout, chosen)
        for instances in started:
            self._sets[(name, instances.spec.version)] = instances
        keep = {id(release.instances) for release in chosen}
        if old is not None:
            for release in old.releases:
                if id(release.instances) not in keep:
                    self._drain_set(release.instances)

    def _drain_set(self, instances: InstanceSet) -> None:
        """A version switched away from, or removed: it serves its queue, then its instances stop."""
        key = (instances.spec.name, instances.spec.version)
        if self._sets.get(key) is instances:
            del self._sets[key]
        self._draining.add(instances)
        instances.drain()

    def register_lazy(self, spec: IsolateSpec, policy: ScalePolicy | None = None) -> None:
        """Route to a function whose first instance starts on its first request (a set of none)."""
        instances = self._new_set(spec, policy or self._policy, False)
        self._sets[(spec.name, spec.version)] = instances
        self._functions[spec.name] = Function(spec.name, spec.timeout_ms / 1000, [Release(instances, 100)])
        if not self._refill_soon:  # once for many registered at once: blanks for their cold starts
            self._refill_soon = True
            self._loop.call_soon(self._refill, spec.isolation)

    def _refill(self, isolation: str) -> None:
        self._refill_soon = False
        self._backend(isolation).refill()

    def fail(self, name: str, error: str, timeout: float = 30.0) -> None:
        """Record a function that cannot run (its routes answer 503 with `error`)."""
        if name not in self._functions:
            failing = any(marked == name for marked, _ in self.failing)
            self._functions[name] = Function(name, timeout, error=error, failing=failing)

    async def remove(self, name: str) -> None:
        """Stop routing to `name` and retire its isolates once they drain."""
        function = self._functions.pop(name, None)
        if function is not None:
            for release in function.releases:
                self._drain_set(release.instances)

    def _close_sets(self, function: Function) -> None:
        for release in function.releases:
            self._close_set(release.instances)

    def _close_set(self, instances: InstanceSet) -> None:
        key = (instances.spec.name, instances.spec.version)
        if self._sets.get(key) is instances:
            del self._sets[key]
        for isolate in instances.close():
            self._retire(isolate)

    def _retire(self, isolate: Isolate) -> None:
        task = self._loop.create_task(isolate.close(self._drain_timeout))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def reap(self) -> int:
        """Retire the instances idle past their idle_timeout (beyond min_instances); returns how many."""
        now = self._clock()
        self._draining = {instances for instances in self._draining if instances.instances}
        return sum(instances.reap(now) for instances in list(self._sets.values()))

    async def _reap_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reap()

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
        if function is not None:
            self._close_sets(function)

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
        instances = self._sets.get((spec.name, spec.version))
        if instances is None or not instances.replace(stuck, fresh):
            self._retire(fresh)  # its set is gone: the adopted requests are answered, then it stops

    async def close(self, timeout: float) -> None:
        """Stop every isolate (called from lifespan shutdown, so the worker exits without hanging)."""
        if self._reaper is not None:
            self._reaper.cancel()
        sets = [*self._sets.values(), *self._draining]
        isolates = [isolate for instances in sets for isolate in instances.close()]
        self._draining.clear()
        self._functions.clear()
        self._sets.clear()
        await asyncio.gather(*(backend.close(timeout) for backend in self._backends.values()))
        results = await asyncio.gather(*(isolate.close(timeout) for isolate in isolates), *self._retiring)
        stuck = results.count(False)
        if stuck:
            log.error("%d isolate(s) could not be stopped", stuck)
