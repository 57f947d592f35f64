"""Host threads shared by every interpreter isolate of a node process: any thread runs any interpreter.

An interpreter with nothing to do holds no thread: its guest returned from `_interpreters.exec`
(it is parked). Work for a parked interpreter queues an activation here; a free runner thread
enters the interpreter, which serves what is queued and what comes within its linger time, then
returns the thread. Each interpreter has its own GIL, so two activations on two threads run on two
cores at once.

Threads start on demand: while fewer than `floor` exist, or when an activation waits and every
thread is busy with one that is not idle (a handler running or blocked); an idle lingering
interpreter is asked to park first. Threads beyond `floor` exit after `idle_exit` seconds
without work. `limit` bounds the threads; activations past it wait their turn.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Protocol

__all__ = ["Activation", "Runners", "default_floor"]

log = logging.getLogger("edge.isolates")


class Activation(Protocol):
    """An interpreter that runs on the shared threads."""

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
        self._running: set[Activation] = set()
        self._idle = 0  # threads waiting for an activation
        self._closed = False
        # Threads alive now, and started in all (for metrics and tests).
        self.threads = 0
        self.started = 0

    @property
    def waiting(self) -> bool:
        """Activations wait for a thread (read under `lock`)."""
        return bool(self._queue)

    def submit(self, activation: Activation) -> None:
        """Queue an activation; the caller holds `lock`."""
        self._queue.append(activation)
        if self._idle >= len(self._queue):
            self._work.notify()
        elif self.threads < self._floor or not self._evict():
            if self.threads < self._limit:
                self._spawn()
            else:
                self._work.notify()

    def _evict(self) -> bool:
        return any(running.evict() for running in self._running)

    def _spawn(self) -> None:
        self.threads += 1
        self.started += 1
        threading.Thread(target=self._serve, name="isolate-runner", daemon=True).start()

    def _serve(self) -> None:
        lock, work, queue = self.lock, self._work, self._queue
        while True:
            with lock:
                while not queue:
                    if self._closed:
                        self.threads -= 1
                        return
                    self._idle += 1
                    timeout = self._idle_exit if self.threads > self._floor else None
                    notified = work.wait(timeout)
                    self._idle -= 1
                    if not notified and not queue and self.threads > self._floor:
                        self.threads -= 1
                        return
                activation = queue.popleft()
                self._running.add(activation)
            try:
                activation.run_activation()
            except BaseException:  # run_activation reports its own failures; this is a bug
                log.exception("isolate runner: an activation raised")
            finally:
                with lock:
                    self._running.discard(activation)

    def close(self) -> None:
        """Let the threads exit once the queue is empty (they are daemons: nobody waits for them)."""
        with self.lock:
            self._closed = True
            self._work.notify_all()
