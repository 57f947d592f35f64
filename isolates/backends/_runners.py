"""Host threads shared by every interpreter isolate of a node process: any thread runs any interpreter.

An interpreter with nothing to do holds no thread: its guest returned from `_interpreters.exec`
(it is parked). Work for a parked interpreter queues an activation here; a free runner thread
enters the interpreter, which serves what is queued and what comes within its linger time, then
returns the thread. Each interpreter has its own GIL, so two activations on two threads run on two
cores at once.

Blank interpreters for the warm pool are made in the background: after every waiting
activation, on at most `floor - 1` threads at once. Threads start on demand: while fewer than
`floor` exist, or when an activation waits and every thread serves an interpreter that is not
idle (a handler running, or blocked: it may never return); an idle lingering interpreter is
asked to park first, and none lingers while others wait (the `pressure` byte every guest
reads). A thread that will be free within milliseconds — creating an interpreter (blank or
not), loading a function, or in an interpreter that answered everything it was given — is waited
for rather than joined by another, so starting 300 functions at once, or refilling a grown warm
pool while requests come, takes `floor` threads; a watcher grows the threads if it still has not
taken the waiting activation after _RECHECK_S. Threads beyond `floor` exit after `idle_exit`
seconds without work. `limit` bounds the threads; activations past it wait their turn.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Protocol

__all__ = ["Activation", "Runners", "default_floor"]

log = logging.getLogger("edge.isolates")

# How often waiting activations are looked at again while none gets a thread.
_RECHECK_S = 0.1


class Activation(Protocol):
    """An interpreter that runs on the shared threads."""

    @property
    def starting(self) -> bool:
        """True while its thread creates the interpreter or loads its function (CPU-bound, short)."""
        ...

    @property
    def pending(self) -> int:
        """Requests it was given and has not answered (0: it is about to linger or park)."""
        ...

    def run_activation(self) -> None:
        """Called on a runner thread; returns once the interpreter parked or ended (never raises)."""
        ...

    def evict(self) -> bool:
        """Called under `Runners.lock` when a thread is wanted: ask an idle interpreter to park
        early; True when it was asked (it returns its thread soon), False when it is busy."""
        ...


def default_floor() -> int:
    """Threads kept even when idle: one per core this process may run on."""
    return len(os.sched_getaffinity(0)) or 1


class Runners:
    """The shared host threads; see the module docstring."""

    def __init__(self, floor: int, limit: int, idle_exit: float = 30.0) -> None:
        # Guards the queue and the counts; isolates also take it around their park/activate
        # decisions (subinterpreter.py), so a batch never lands between a park and its check.
        self.lock = threading.Lock()
        self._work = threading.Condition(self.lock)
        self._floor = max(1, floor)
        self._limit = max(self._floor, limit)
        self._idle_exit = idle_exit
        self._queue: deque[Activation] = deque()
        # Background activations (blank interpreters for the warm pool): taken after the queue,
        # on at most `floor - 1` threads at once, so one thread is always left for requests.
        self._later: deque[Activation] = deque()
        self._later_running = 0
        self._later_most = max(1, self._floor - 1)
        self._running: set[Activation] = set()
        self._idle = 0  # threads waiting for an activation
        self._closed = False
        # One byte every guest reads before it lingers: 1 while activations wait for a thread.
        self.pressure = memoryview(bytearray(1))
        # Threads alive now, and started in all (for metrics and tests).
        self.threads = 0
        self.started = 0
        self._watching = False  # a thread looks again while activations wait (`_watch`)

    @property
    def waiting(self) -> bool:
        """Activations wait for a thread (read under `lock`)."""
        return bool(self._queue)

    def submit(self, activation: Activation, background: bool = False) -> None:
        """Queue an activation (`background`: when a thread is free); the caller holds `lock`."""
        if background:
            self._later.append(activation)
            if self._idle > len(self._queue):
                self._work.notify()
            elif self.threads < self._floor:
                self._spawn()
            return
        self._queue.append(activation)
        self.pressure[0] = 1
        if self._idle >= len(self._queue):
            self._work.notify()
        elif self.threads < self._floor:
            self._spawn()
        elif self._evict():
            self._watch()
        elif self.threads < self._limit and not self._soon_free():
            self._spawn()
        else:
            self._watch()

    def _soon_free(self) -> bool:
        """A thread will be free within milliseconds: one makes a blank interpreter, starts one,
        or runs an interpreter that answered everything (it lingers or parks next); the watcher
        looks again if not (the caller holds `lock`)."""
        return bool(self._later_running) or any(
            running.starting or not running.pending for running in self._running
        )

    def _watch(self) -> None:
        """While activations wait, look again every _RECHECK_S (the caller holds `lock`): a thread
        counted on (one starting an interpreter, a guest asked to park) may instead have gone into
        a handler that blocks."""
        if not self._watching and not self._closed:
            self._watching = True
            threading.Thread(target=self._recheck, name="isolate-runners-watch", daemon=True).start()

    def _recheck(self) -> None:
        # Grow only when no thread took the queue's first activation for a whole interval: while
        # threads make progress (a node creating its interpreters, say), the floor is enough.
        seen: Activation | None = None
        while True:
            time.sleep(_RECHECK_S)
            with self.lock:
                if not self._queue or self._closed:
                    self._watching = False
                    return
                first = self._queue[0]
                if self._idle:
                    self._work.notify()
                elif first is seen:
                    self._grow()
                seen = first

    def promote(self, activation: Activation) -> None:
        """A background activation is wanted now (its blank interpreter was taken): queue it as
        any other, unless a thread has it already; the caller holds `lock`."""
        if activation in self._later:
            self._later.remove(activation)
            self.submit(activation)

    def _grow(self) -> None:
        """One more thread while activations still wait and no thread is idle, none is starting
        an interpreter and no lingering guest can give its thread back (the caller holds `lock`).
        Submitting decides only once, when an activation is queued; the threads it counted on
        may since have gone into handlers that block."""
        if (
            self._queue
            and not self._idle
            and self.threads < self._limit
            and not any(running.starting for running in self._running)
            and not self._evict()
        ):
            self._spawn()

    def _evict(self) -> bool:
        return any(running.evict() for running in self._running)

    def _spawn(self) -> None:
        self.threads += 1
        self.started += 1
        threading.Thread(target=self._serve, name="isolate-runner", daemon=True).start()

    def _next(self) -> tuple[Activation, bool] | None:
        """The activation to run next and whether it is a background one; None: nothing now."""
        if self._queue:
            activation = self._queue.popleft()
            self.pressure[0] = 1 if self._queue else 0
            self._running.add(activation)
            return activation, False
        if self._later and self._later_running < self._later_most:
            self._later_running += 1
            return self._later.popleft(), True
        return None

    def _serve(self) -> None:
        lock, work = self.lock, self._work
        while True:
            with lock:
                taken = self._next()
                while taken is None:
                    if self._closed:
                        self.threads -= 1
                        return
                    self._idle += 1
                    timeout = self._idle_exit if self.threads > self._floor else None
                    notified = work.wait(timeout)
                    self._idle -= 1
                    taken = self._next()
                    if taken is None and not notified and self.threads > self._floor:
                        self.threads -= 1
                        return
                activation, background = taken
            try:
                activation.run_activation()
            except BaseException:  # run_activation reports its own failures; this is a bug
                log.exception("isolate runner: an activation raised")
            finally:
                with lock:
                    if background:
                        self._later_running -= 1
                        if self._later:
                            work.notify()
                    else:
                        self._running.discard(activation)

    def close(self) -> None:
        """Let the threads exit once the queue is empty (they are daemons: nobody waits for them)."""
        with self.lock:
            self._closed = True
            self._work.notify_all()
