"""The instances of one function version: free slots, the queue of requests waiting for one, growth.

An instance is one `Isolate`. A request takes a slot of an instance (`InstanceSet.take`, no
await: the path of a function with an idle instance), or waits in the set's queue (`wait`),
which starts instances while requests queue, up to `max_instances`, within the node's `Budget`.
A set with no instance starts one at once (a cold start); one with instances grows only once a
request has waited GROW_AFTER seconds, so requests that collide on a fast function (they queue
for microseconds) do not each start an instance (≈ 3-16 ms and ≈ 2.7 MiB) that then idles for
`idle_timeout`; and not while interpreters wait for a runner thread (`Budget.congested`: a new
one would wait too; the runners add threads for handlers that block).
A full queue refuses at once (429), a wait past `queue_timeout` refuses with 503; both raise
`Refused`. `reap` retires instances idle for `idle_timeout` down to `min_instances` (0: none,
the function scaled to zero). docs/scaling.md says why the defaults are what they are.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import msgspec

from isolates.backends import Backend, Isolate, IsolateSpec, LoadError

__all__ = ["GROW_AFTER", "REFUSALS", "Budget", "Instance", "InstanceSet", "Refused", "ScalePolicy"]

log = logging.getLogger("edge.isolates")

# Retry-After (seconds) of each refusal: a slot frees within a request's time; room in the
# node's budget only once some instance has been idle for its idle_timeout.
RETRY_QUEUE_FULL = 1
RETRY_QUEUE_TIMEOUT = 1
RETRY_BUDGET = 5

# How long a request waits for a busy instance before the set starts another (see the docstring):
# about one cold start from the warm pool.
GROW_AFTER = 0.005
# Why a request was refused (`Refused.reason`).
REFUSALS = ("queue_full", "queue_timeout", "budget", "error")


class ScalePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How many instances of one function version run and how requests wait for one (resolved)."""

    min_instances: int = 1
    max_instances: int = 4
    # In-flight requests per instance; 0: 1 for a sync handler, `async_concurrency` for an async
    # (or a sync `threadsafe`) one. Resolved once the first instance loaded.
    concurrency: int = 0
    threadsafe: bool = False
    async_concurrency: int = 100
    max_queue: int = 1000
    queue_timeout: float = 10.0
    idle_timeout: float = 300.0
    # What one instance counts against the node's memory budget (MiB).
    memory_mb: int = 0


class Refused(Exception):
    """A request that cannot get an instance: answered `status` with `message` and Retry-After."""

    def __init__(self, status: int, message: str, retry_after: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        # "queue_full", "queue_timeout", "budget" or "error" (the counters of /_edge/metrics).
        self.reason = reason


class Instance:
    """One isolate of a set, and what the set knows of it."""

    __slots__ = ("in_flight", "isolate", "last_used", "served")

    def __init__(self, isolate: Isolate, now: float) -> None:
        self.isolate = isolate
        self.in_flight = 0
        self.last_used = now
        # Requests it was given: the first one is the instance's cold start.
        self.served = 0


class _Waiter(NamedTuple):
    future: asyncio.Future[Instance]
    # Loop time past which it is refused (FIFO with one timeout: the oldest expires first).
    deadline: float


class Budget:
    """The node-wide ceiling on instances and their memory; evicts idle instances to make room."""

    def __init__(self, max_instances: int = 0, memory_mb: int = 0) -> None:
        """0 for either: no ceiling of that kind."""
        self.max_instances = max_instances
        self.memory_mb = memory_mb
        self.instances = 0
        self.used_mb = 0
        self.evicted = 0
        self.sets: list[InstanceSet] = []
        # Warm pools whose blanks beyond their base size count here, each as `blank_mb` MiB.
        self.pools: list[Backend] = []
        self.blank_mb = 0

    def _fits(self, memory_mb: int) -> bool:
        blanks = sum(pool.extra_standby() for pool in self.pools) if self.pools else 0
        count_ok = not self.max_instances or self.instances + blanks + 1 <= self.max_instances
        memory_ok = not self.memory_mb or self.used_mb + blanks * self.blank_mb + memory_mb <= self.memory_mb
        return count_ok and memory_ok

    def never_run(self, isolation: str) -> int:
        """Function versions of that isolation level that never had an instance (none starting):
        each may ask for a cold start any moment (deployed with `preload = false`)."""
        return sum(
            1
            for owner in self.sets
            if not owner._resolved
            and not owner.starting
            and not owner.closed
            and owner.spec.isolation == isolation
        )

    def congested(self) -> bool:
        """Work waits for a host thread (the interpreter backend's runners): an instance started
        now would wait for one too, so a set does not grow for requests that wait meanwhile."""
        return any(pool.congested() for pool in self.pools)

    def room_for_blank(self) -> bool:
        """True when one more blank interpreter fits beside the instances and the other blanks."""
        return self._fits(self.blank_mb)

    def _drop_blank(self) -> bool:
        return any(pool.drop_standby() for pool in self.pools)

    def reserve(self, requester: InstanceSet, memory_mb: int) -> str:
        """Count one more instance for `requester`; "" when it fits, else why not.

        Makes room by retiring the least recently used idle instances of other sets first.
        """
        while not self._fits(memory_mb) and self._drop_blank():
            pass
        if not self._fits(memory_mb):
            idle = sorted(
                (
                    (owner, instance)
                    for owner in self.sets
                    if owner is not requester
                    for instance in owner.instances
                    if instance.in_flight == 0
                ),
                key=lambda pair: pair[1].last_used,
            )
            for owner, instance in idle:
                if self._fits(memory_mb):
                    break
                log.info(
                    "function %s: idle instance retired to make room for %s (node budget)",
                    owner.spec.name,
                    requester.spec.name,
                )
                owner.retire(instance)
                self.evicted += 1
        if not self._fits(memory_mb):
            used = []
            if self.max_instances:
                used.append(f"{self.instances} of max_instances = {self.max_instances}")
            if self.memory_mb:
                used.append(
                    f"{self.used_mb} MiB of memory_budget_mb = {self.memory_mb}, {memory_mb} more asked"
                )
            return (
                f"the node's [budget] is used up ({'; '.join(used)}) and no other function's instance"
                " is idle; retry later or raise the budget in the node's settings"
            )
        self.instances += 1
        self.used_mb += memory_mb
        return ""

    def free(self, memory_mb: int) -> None:
        """Called once per instance retired or failed to start."""
        self.instances -= 1
        self.used_mb -= memory_mb


# (spec, expect_async) -> a started isolate (the pool's backend `take`).
Starter = Callable[[IsolateSpec, bool], Isolate]
# (isolate) -> None: stop it once it drained (the pool's retire).
Retirer = Callable[[Isolate], None]


class InstanceSet:
    """The instances of one function version; see the module docstring."""

    __slots__ = (
        "_budget",
        "_clock",
        "_expect_async",
        "_grow_timer",
        "_loop",
        "_on_load_error",
        "_resolved",
        "_retirer",
        "_starter",
        "_tasks",
        "_timer",
        "_waiters",
        "closed",
        "concurrency",
        "grown",
        "instances",
        "policy",
        "refused",
        "spec",
        "starting",
    )

    def __init__(
        self,
        spec: IsolateSpec,
        policy: ScalePolicy,
        starter: Starter,
        retirer: Retirer,
        budget: Budget,
        clock: Callable[[], float],
        expect_async: bool = False,
        on_load_error: Callable[[InstanceSet, str], None] | None = None,
        refused: dict[str, int] | None = None,
    ) -> None:
        self.spec = spec
        self.policy = policy
        self._starter = starter
        self._retirer = retirer
        self._budget = budget
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._expect_async = expect_async
        self._on_load_error = on_load_error
        self.instances: list[Instance] = []
        self.starting = 0
        # Unknown until the first instance loaded (a sync handler takes one at a time).
        self.concurrency = policy.concurrency or 1
        self._resolved = False
        self._waiters: deque[_Waiter] = deque()
        # One timer for the oldest waiter's deadline, not one per queued request.
        self._timer: asyncio.TimerHandle | None = None
        # Armed while requests wait and instances exist: `_grow` once GROW_AFTER passed.
        self._grow_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        # Requests refused, by reason (shared by the sets of one pool); instances started for queued ones.
        self.refused = refused if refused is not None else dict.fromkeys(REFUSALS, 0)
        self.grown = 0
        budget.sets.append(self)

    @property
    def queued(self) -> int:
        """Requests waiting for an instance."""
        return len(self._waiters)

    @property
    def is_async(self) -> bool:
        """True once an instance loaded an async handler."""
        return any(instance.isolate.is_async for instance in self.instances)

    def take(self) -> Instance | None:
        """A slot of an instance, taken now; None when every instance is busy (then `wait`)."""
        for instance in self.instances:
            if instance.in_flight < self.concurrency:
                instance.in_flight += 1
                instance.served += 1
                return instance
        return None

    def give_back(self, instance: Instance) -> None:
        """Called once the request that took `instance` was answered."""
        instance.in_flight -= 1
        instance.last_used = self._clock()
        if self._waiters:
            self._hand(instance)
        elif self.closed and not instance.in_flight and instance in self.instances:
            self.retire(instance)  # drained: its version was switched away from

    async def wait(self) -> Instance:
        """A slot, once one frees or a new instance started; raises Refused."""
        if self.closed and not self.instances:  # a draining set still serves its queue
            message = f"function {self.spec.name} version {self.spec.version[:12]} was replaced"
            raise Refused(503, message, RETRY_QUEUE_FULL, "error")
        policy = self.policy
        if len(self._waiters) >= policy.max_queue:
            self.refused["queue_full"] += 1
            raise Refused(
                429,
                f"function {self.spec.name} is busy: {len(self.instances)} instance(s) at their concurrency"
                f" and {len(self._waiters)} request(s) queued (max_queue = {policy.max_queue})",
                RETRY_QUEUE_FULL,
                "queue_full",
            )
        future: asyncio.Future[Instance] = self._loop.create_future()
        self._waiters.append(_Waiter(future, self._loop.time() + policy.queue_timeout))
        if self._timer is None:
            self._timer = self._loop.call_at(self._waiters[0].deadline, self._expire)
        if not self.instances and not self.starting:
            self._grow()
        elif self._grow_timer is None:
            self._arm_growth()
        return await future

    def _grow_late(self) -> None:
        self._grow_timer = None
        if not self._waiters:
            return
        # Interpreters wait for a host thread: another instance would wait too; look again later.
        if self._budget.congested():
            self._arm_growth()
        else:
            self._grow()

    def _arm_growth(self) -> None:
        self._grow_timer = self._loop.call_later(GROW_AFTER, self._grow_late)

    def _expire(self) -> None:
        """Refuse the waiters past their deadline; re-arm for the oldest one left."""
        self._timer = None
        waiters, now = self._waiters, self._loop.time()
        while waiters and (waiters[0].future.done() or waiters[0].deadline <= now):
            future = waiters.popleft().future
            if future.done():
                continue
            self.refused["queue_timeout"] += 1
            future.set_exception(
                Refused(
                    503,
                    f"function {self.spec.name} is busy: no instance was free within queue_timeout_ms ="
                    f" {round(self.policy.queue_timeout * 1000)} ({len(self.instances)} instance(s),"
                    f" max_instances = {self.policy.max_instances})",
                    RETRY_QUEUE_TIMEOUT,
                    "queue_timeout",
                )
            )
        if waiters:
            self._timer = self._loop.call_at(waiters[0].deadline, self._expire)

    def _refuse_all(self, refusal: Refused) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.future.done():
                self.refused[refusal.reason] += 1
                waiter.future.set_exception(refusal)

    def _hand(self, instance: Instance) -> None:
        """Give `instance`'s free slots to the requests waiting longest."""
        waiters = self._waiters
        while waiters and instance.in_flight < self.concurrency:
            future = waiters.popleft().future
            if not future.done():  # else it timed out or its client went away
                instance.in_flight += 1
                instance.served += 1
                future.set_result(instance)

    def _grow(self) -> None:
        """Start instances for the queued requests that the starting ones will not take."""
        if self.closed:  # draining: its instances serve the queue, no new ones start
            return
        policy = self.policy
        needed = math.ceil(len(self._waiters) / self.concurrency) - self.starting
        room = policy.max_instances - len(self.instances) - self.starting
        for _ in range(min(needed, room)):
            reason = self._budget.reserve(self, policy.memory_mb)
            if reason:
                if not self.instances and not self.starting:
                    message = f"function {self.spec.name} has no instance: {reason}"
                    self._refuse_all(Refused(503, message, RETRY_BUDGET, "budget"))
                return
            self.starting += 1
            self.grown += 1
            task = self._loop.create_task(self._start_one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start_one(self) -> None:
        try:
            instance = await self._started()
        except LoadError as exc:
            if not self.instances and not self.starting:
                message = f"function {self.spec.name} failed to load: {exc}"
                self._refuse_all(Refused(503, message, RETRY_BUDGET, "error"))
                if self._on_load_error is not None:
                    self._on_load_error(self, message)
            return
        self._hand(instance)

    async def _started(self) -> Instance:
        """One more instance, loaded and counted (its budget reserved by the caller); raises LoadError."""
        isolate = self._starter(self.spec, self._expect_async or self.is_async)
        try:
            await isolate.ready
            self._resolve(isolate)
        except LoadError:
            self.starting -= 1
            self._budget.free(self.policy.memory_mb)
            self._retirer(isolate)
            raise
        self.starting -= 1
        instance = Instance(isolate, self._clock())
        self.instances.append(instance)
        if self.closed and not self._waiters:  # drained or stopped while it started
            self.retire(instance)
        return instance

    def _resolve(self, isolate: Isolate) -> None:
        """Fix the concurrency once the handler's kind is known; raises LoadError for a bad one."""
        if self._resolved:
            return
        policy = self.policy
        parallel = isolate.is_async or policy.threadsafe
        if policy.concurrency > 1 and not parallel:
            raise LoadError(
                f"[scale] concurrency = {policy.concurrency} needs `threadsafe = true`: the handler is"
                " sync and takes one request at a time unless it is declared thread-safe"
            )
        self.concurrency = policy.concurrency or (policy.async_concurrency if parallel else 1)
        self._resolved = True

    async def start(self, count: int) -> None:
        """Start `count` instances (a deploy); raises LoadError when one does not load.

        Instances the node's budget has no room for are left out (logged): requests start them
        later, when it has.
        """
        count = max(count - len(self.instances) - self.starting, 0)
        reserved = 0
        for _ in range(count):
            reason = self._budget.reserve(self, self.policy.memory_mb)
            if reason:
                log.warning(
                    "function %s: started %d of %d instances: %s", self.spec.name, reserved, count, reason
                )
                break
            reserved += 1
        self.starting += reserved
        results = await asyncio.gather(*(self._started() for _ in range(reserved)), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def reap(self, now: float) -> int:
        """Retire instances idle for idle_timeout beyond min_instances; returns how many."""
        policy = self.policy
        spare = len(self.instances) - policy.min_instances
        retired = 0
        for instance in sorted(self.instances, key=lambda instance: instance.last_used):
            if retired >= spare:
                break
            if instance.in_flight == 0 and now - instance.last_used >= policy.idle_timeout:
                self.retire(instance)
                retired += 1
        return retired

    def retire(self, instance: Instance) -> None:
        """Stop using `instance` and stop it once it drained."""
        self.instances.remove(instance)
        self._budget.free(self.policy.memory_mb)
        self._retirer(instance.isolate)
        if self.closed and not self.instances and self in self._budget.sets:
            self._budget.sets.remove(self)

    def replace(self, stuck: Isolate, fresh: Isolate) -> bool:
        """Swap a stuck isolate for a fresh one of the same version; False when it is not here."""
        for instance in self.instances:
            if instance.isolate is stuck:
                instance.isolate = fresh
                return True
        return False

    def update(self, policy: ScalePolicy) -> None:
        """Take a redeployed version's new policy (its memory figure stays); raises LoadError."""
        self.policy = msgspec.structs.replace(policy, memory_mb=self.policy.memory_mb)
        if self.instances:
            self._resolved = False
            self._resolve(self.instances[0].isolate)

    def drain(self) -> None:
        """Stop taking new requests; the queued ones are still served, then every instance retires.

        A deploy that switched away from this version, or the function's removal, calls it.
        """
        self.closed = True
        if not self.instances and not self.starting:
            message = f"function {self.spec.name} version {self.spec.version[:12]} was replaced"
            self._refuse_all(Refused(503, message, RETRY_QUEUE_FULL, "error"))
        if not self._waiters:
            for instance in [instance for instance in self.instances if not instance.in_flight]:
                self.retire(instance)

    def close(self) -> list[Isolate]:
        """Stop at once: refuse the queued requests; returns the isolates to retire (shutdown, failing)."""
        self.closed = True
        message = f"function {self.spec.name} version {self.spec.version[:12]} stopped"
        self._refuse_all(Refused(503, message, RETRY_QUEUE_FULL, "error"))
        if self in self._budget.sets:
            self._budget.sets.remove(self)
        isolates = [instance.isolate for instance in self.instances]
        for _ in self.instances:
            self._budget.free(self.policy.memory_mb)
        self.instances = []
        return isolates
