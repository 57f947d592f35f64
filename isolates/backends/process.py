"""A function version in a confined child process: for untrusted code and C extensions.

Each function version owns one child at a time (isolates/guest/_edge_child.py): spawned with
`subprocess.Popen` (no fork of this process's Python), confined by the kernel (its own uid and
mount view, Landlock, seccomp, rlimits, a memory cgroup where the node may make one; see
isolates/guest/_edge_confine.py) and fed marshal-framed batches
of the interpreter backend's plain-tuple messages over two pipes. Everything submitted in one
loop iteration goes in as one frame; the child answers what it drained with one frame.

A child that crashes, passes its memory limit or stays stuck past a deadline is killed and
replaced by the isolate itself (`recovers`): the request it was running gets 502 (crash), 503
(memory, CPU time) or already had its 504; requests queued behind it move to the replacement.
Replies are untrusted input: decoded without code objects, checked for shape, size-capped.
Streamed replies work as in the interpreter backend (`StreamReplies`): a STREAM or CHUNK of the
wrong shape is a protocol error like any other, and a child that ends mid-stream cuts it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import zlib
from itertools import count
from marshal import dumps
from time import monotonic
from typing import Any

from isolates.backends import (
    CHUNK,
    ERROR,
    LOADED,
    LOG,
    RESPONSE,
    STREAM,
    BackendOptions,
    FixedStandby,
    IsolateSpec,
    LoadError,
    LogSink,
    OnStuck,
    Reply,
    RequestHeaders,
    StreamReplies,
    kind_options,
)
from isolates.backends._cgroup import MemoryCgroups, own_memory_cgroup
from isolates.backends._child import EXIT_MEMORY, Child, ProtocolError, describe_exit
from isolates.backends.subinterpreter import stdlib_paths
from isolates.guest import GUEST_DIR

__all__ = ["ProcessBackend", "ProcessIsolate", "function_uid"]

log = logging.getLogger("edge.isolates")

_STOP = ((0,),)
# A child's file descriptors, and its tasks (threads count) when it has its own uid.
_NOFILE = 256
# (Numerical libraries start a thread per core: leave room for that on a big machine.)
_NPROC = max(64, 4 * (os.cpu_count() or 1))
_NPROC_SUBPROCESS = 4 * _NPROC


def function_uid(name: str, options: BackendOptions) -> int:
    """The uid (and gid) a function's children run under when the node is root: stable per name."""
    return options.uid_base + zlib.crc32(name.encode()) % max(1, options.uid_count)


class ProcessIsolate:
    """One function version served by one confined child at a time; see the module docstring."""

    recovers = True

    def __init__(
        self, backend: ProcessBackend, spec: IsolateSpec, on_stuck: OnStuck | None, expect_async: bool = False
    ) -> None:
        self.spec = spec
        self._backend = backend
        self._loop = backend.loop
        self._log_sink = backend.log_sink
        self._on_stuck = on_stuck
        self._abandon_after = backend.options.abandon_after
        self._memory_mb = spec.memory_mb or backend.options.memory_mb
        self._timeout_message = f"function {spec.name} timed out after {spec.timeout_ms} ms"
        self._memory_message = f"function {spec.name} exceeded its memory limit of {self._memory_mb} MiB"
        self._seq = count(1)
        # seq -> (future, deadline, request item); items also wait in the outbox until flushed.
        self._pending: dict[int, tuple[asyncio.Future[Reply], float, tuple[Any, ...]]] = {}
        self._outbox: list[tuple[Any, ...]] = []
        # Requests answered with a stream whose end has not come yet.
        self._streams = StreamReplies(self._loop, self._abandon_after, self._stream_overdue)
        self._streams.timeout_message = self._timeout_message
        self._sweep: asyncio.TimerHandle | None = None
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._exited: asyncio.Future[None] = self._loop.create_future()
        self._alive = True
        self._closing = False
        self._last_progress = 0.0
        self._child: Child | None = None
        self._loaded = False
        self.batches = 0
        self.wakes = 0
        # Children replaced after a crash, a wedge or running out of memory.
        self.replacements = 0
        # Known once loaded (until then: what the pool expects, to pick a blank child for it).
        self.is_async = expect_async

    @property
    def ready(self) -> asyncio.Future[None]:
        """Resolves once the entrypoint is imported; raises LoadError when it cannot be."""
        return self._ready

    @property
    def alive(self) -> bool:
        """False once the isolate was closed or its function cannot be (re)started."""
        return self._alive

    @property
    def pending(self) -> int:
        """Requests submitted and not answered yet."""
        return len(self._pending)

    @property
    def pid(self) -> int | None:
        """The current child's process id (None between a crash and its replacement)."""
        return self._child.pid if self._child is not None else None

    def start(self, child: Child) -> None:
        """Hand `child` (blank) this function; `ready` resolves once it loaded."""
        self._child = child
        self._loaded = False
        child.on_messages = self._on_messages
        child.on_exit = self._on_exit
        self._backend.limit_memory(child, self._memory_mb)
        spec = self.spec
        deps = os.path.join(spec.directory, ".deps")
        paths = (spec.directory, *([deps] if os.path.isdir(deps) else []), str(GUEST_DIR), *stdlib_paths())
        assignment = (
            -1,
            paths,
            spec.name,
            spec.version,
            spec.env,
            spec.module,
            spec.attribute,
            self._config(),
            kind_options(spec, self._memory_mb),
        )
        child.send((assignment, *self._outbox))
        self._outbox = []
        self.batches += 1
        self.wakes += 1

    def _config(self) -> dict[str, Any]:
        options, permissions = self._backend.options, self.spec.permissions
        return {
            "bundle": self.spec.directory,
            "read": list(permissions.read),
            "write": list(permissions.write),
            "net": permissions.net if isinstance(permissions.net, bool) else list(permissions.net),
            "subprocess": permissions.subprocess,
            "protected": list(options.protected),
            "memory_mb": self._memory_mb,
            # True: the cgroup limits its memory; False: the child sets RLIMIT_AS itself.
            "cgroup": self._child is not None and self._child.memory_limited,
            "cpu_s": options.cpu_s,
            "nofile": _NOFILE,
            "nproc": _NPROC_SUBPROCESS if permissions.subprocess else _NPROC,
            "uid": function_uid(self.spec.name, options),
        }

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
        """Queue one request; the future resolves to a Reply (a 504 Reply at the deadline)."""
        future: asyncio.Future[Reply] = self._loop.create_future()
        if not self._alive:
            future.set_result((ERROR, 0, 503, f"function {self.spec.name} is not running"))
            return future
        seq = next(self._seq)
        item = (seq, method, path, query, dumps(headers), body, request_id, deadline, client)
        self._pending[seq] = (future, deadline, item)
        self._outbox.append(item)
        if len(self._outbox) == 1:
            self._loop.call_soon(self._flush)
        if self._sweep is None:
            self._schedule_sweep(deadline)
        return future

    def _flush(self) -> None:
        if self._outbox and self._child is not None:
            batch, self._outbox = tuple(self._outbox), []
            self._child.send(batch)
            self.batches += 1
            self.wakes += 1

    def _schedule_sweep(self, deadline: float) -> None:
        self._sweep = self._loop.call_later(max(0.0, deadline - monotonic()), self._expire_overdue)

    def _expire_overdue(self) -> None:
        """Answer 504 for requests past their deadline (one timer per isolate, not per request)."""
        self._sweep = None
        now = monotonic()
        expired = False
        for seq, (future, deadline, _) in list(self._pending.items()):
            if deadline > now:
                self._schedule_sweep(deadline)
                break
            del self._pending[seq]
            future.set_result((ERROR, seq, 504, self._timeout_message))
            expired = True
        if expired:
            self._loop.call_later(self._abandon_after, self._check_stuck, self._child, self._loop.time())

    def _check_stuck(self, child: Child | None, expired_at: float) -> None:
        # The child interrupts Python-level loops itself and answers; silence since the deadline
        # means it is stuck in C code (or sleeping there): kill it, a replacement takes over.
        if child is self._child and child is not None and self._last_progress < expired_at:
            log.error(
                "function %s version %s: process %d stuck past its deadline; killing it",
                self.spec.name,
                self.spec.version[:12],
                child.pid,
            )
            child.kill("timeout")

    def _stream_overdue(self, expired_at: float) -> None:
        self._check_stuck(self._child, expired_at)

    def _on_messages(self, child: Child, batch: tuple[tuple[Any, ...], ...]) -> None:
        if child is not self._child:
            return
        self._last_progress = self._loop.time()
        pending, streams = self._pending, self._streams
        started = False
        for message in batch:
            kind = message[0] if type(message) is tuple and message else None
            if kind in (RESPONSE, ERROR):
                _check_reply(message)
                if kind == ERROR and streams.error(
                    message[1], self._timeout_message if message[2] == 504 else message[3]
                ):
                    continue
                entry = pending.pop(message[1], None)
                if entry is not None:
                    if kind == ERROR and message[2] == 504:
                        entry[0].set_result((ERROR, message[1], 504, self._timeout_message))
                    else:
                        entry[0].set_result(message)
            elif kind == LOG and len(message) == 4 and all(type(part) is str for part in message[1:]):
                self._log_sink(self.spec.name, self.spec.version, message[1], message[2], message[3])
            elif kind == CHUNK:
                _check_chunk(message)
                streams.chunk(message[1], message[2], message[3])
            elif kind == STREAM:
                _check_reply(message)
                streams.start(message[1], message[2], message[3])
                started = True
            elif kind == LOADED and len(message) == 4:
                self._on_loaded(bool(message[1]), str(message[2]), bool(message[3]))
            else:
                raise ProtocolError(f"an unknown message {str(message)[:80]}")
        if started:
            self._settle_streams()

    def _settle_streams(self) -> None:
        """Answer the requests whose streams started in the frame just handled."""
        for reply in self._streams.settle():
            entry = self._pending.pop(reply[1], None)
            if entry is None:  # answered already (its deadline passed): nobody reads it
                if reply[0] == STREAM:
                    reply[4].close()
                continue
            entry[0].set_result(reply)
            if reply[0] == STREAM:
                self._streams.opened(reply[1], reply[4], entry[1])

    def _on_loaded(self, ok: bool, message: str, is_async: bool) -> None:
        self._loaded = ok
        if ok:
            self.is_async = is_async
            if not self._ready.done():
                self._ready.set_result(None)
            return
        self._fail(f"function {self.spec.name} failed to load: {message}", LoadError(message))

    def _fail(self, error: str, exc: LoadError) -> None:
        """The function cannot run (it failed to load or its replacement did): answer 503 from now on."""
        self._alive = False
        if not self._ready.done():
            self._ready.set_exception(exc)
            self._ready.exception()  # reported by the pool, not by asyncio
        else:
            log.error("%s", error)
        self._fail_pending(503, error)
        if self._child is not None:
            self._child.kill("failed")

    def _on_exit(self, child: Child) -> None:
        if child is not self._child:
            return
        self._child = None
        returncode = child.returncode if child.returncode is not None else 0
        out_of_memory = returncode == EXIT_MEMORY or self._backend.remove_cgroup(child)
        # A sync child streaming a response was running that request (it left `_pending`).
        streaming = self._streams.cut_all(
            f"function {self.spec.name}: its process ended ({describe_exit(returncode)})"
        )
        if self._closing or not self._alive:
            self._finish()
            return
        if not self._loaded:
            # It never served (or its replacement could not load again): do not restart in a loop.
            why = "ran out of memory" if out_of_memory else describe_exit(returncode)
            self._fail(
                f"function {self.spec.name} failed to load: its process ended while loading ({why})",
                LoadError(f"its process ended while loading ({why})"),
            )
            self._finish()
            return
        if out_of_memory:
            status, error = 503, self._memory_message
        elif child.killed_for == "timeout":
            status, error = 504, self._timeout_message
        elif child.killed_for == "protocol":
            status, error = 502, f"function {self.spec.name} sent a malformed reply; its process was replaced"
        elif returncode == -signal.SIGXCPU:
            cpu_s = self._backend.options.cpu_s
            status, error = 503, f"function {self.spec.name} used its CPU time limit of {cpu_s} s"
        else:
            status, error = 502, f"function {self.spec.name} crashed ({describe_exit(returncode)})"
        log.error(
            "function %s version %s: process %d ended (%s): %s; starting a new one",
            self.spec.name,
            self.spec.version[:12],
            child.pid,
            describe_exit(returncode),
            error,
        )
        # Under RLIMIT_AS the child answered the request that ran out of memory itself, then left.
        self._requeue(status, error, answered=status == 504 or returncode == EXIT_MEMORY or streaming > 0)
        self.replacements += 1
        self._restart()
        if self._on_stuck is not None:
            self._on_stuck(self)

    def _restart(self) -> None:
        """Give the function a blank child (also the first time); 503 from now on if none starts."""
        try:
            child = self._backend.blank(self.is_async)
        except OSError as exc:
            error = f"cannot start a process: {exc}"
            self._fail(f"function {self.spec.name} failed to load: {error}", LoadError(error))
            self._finish()
            return
        self.start(child)

    def _requeue(self, status: int, error: str, answered: bool) -> None:
        """After a child ended: fail the request(s) it was running, move the rest to the next one."""
        waiting = {item[0] for item in self._outbox}
        sent = [seq for seq in self._pending if seq not in waiting]
        # A sync child runs one request at a time, in order: the first unanswered one was running,
        # unless the one it was running was `answered` already (its 504, or the child's own 503).
        # An async child may have started every one of them.
        if self.is_async:
            victims = sent
        elif answered:
            victims = []
        else:
            victims = sent[:1]
        for seq in victims:
            future = self._pending.pop(seq)[0]
            if not future.done():
                future.set_result((ERROR, seq, status, error))
        again = [self._pending[seq][2] for seq in sent if seq in self._pending]
        self._outbox[:0] = again

    async def close(self, timeout: float) -> bool:
        """Stop after the requests in hand are answered; returns False if the child had to be killed."""
        if not self._closing:
            self._closing = True
            self._alive = False
            self._flush()
            if self._child is not None:
                self._child.send(_STOP)
            else:
                self._finish()
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        except TimeoutError:
            log.error("function %s: process did not stop within %.1f s; killed", self.spec.name, timeout)
            if self._child is not None:
                self._child.kill("close")
            await asyncio.shield(self._exited)
            return False
        return True

    def _finish(self) -> None:
        self._alive = False
        self._fail_pending(503, f"function {self.spec.name} is not running")
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if not self._ready.done():
            self._ready.set_exception(LoadError("its process was stopped before it loaded"))
            self._ready.exception()
        if not self._exited.done():
            self._exited.set_result(None)

    def _fail_pending(self, status: int, message: str) -> None:
        pending, self._pending = self._pending, {}
        self._outbox = []
        for seq, (future, _, _) in pending.items():
            if not future.done():
                future.set_result((ERROR, seq, status, message))


def _check_reply(message: tuple[Any, ...]) -> None:
    """A RESPONSE, STREAM or ERROR from an untrusted child has exactly the shape the app relies on."""
    kind = message[0]
    if kind in (RESPONSE, STREAM):
        ok = (
            len(message) == (5 if kind == RESPONSE else 4)
            and type(message[1]) is int
            and type(message[2]) is int
            and 100 <= message[2] <= 599
            and type(message[3]) is tuple
            and all(
                type(pair) is tuple and len(pair) == 2 and type(pair[0]) is bytes and type(pair[1]) is bytes
                for pair in message[3]
            )
            and (kind == STREAM or type(message[4]) is bytes)
        )
    else:
        ok = (
            len(message) == 4
            and type(message[1]) is int
            and type(message[2]) is int
            and 100 <= message[2] <= 599
            and type(message[3]) is str
        )
    if not ok:
        raise ProtocolError(f"a malformed reply {str(message)[:80]}")


def _check_chunk(message: tuple[Any, ...]) -> None:
    """A CHUNK from an untrusted child: (CHUNK, seq, bytes, bool)."""
    seq, data, more = message[1:] if len(message) == 4 else (None, None, None)
    if not (type(seq) is int and type(data) is bytes and type(more) is bool):
        raise ProtocolError(f"a malformed stream piece {str(message)[:80]}")


class ProcessBackend(FixedStandby):
    """Spawns confined children; keeps blank ones ready once the first process function exists."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        log_sink: LogSink,
        options: BackendOptions,
        memory_cgroup: str | None = None,
    ) -> None:
        """`memory_cgroup`: the v1 memory cgroup to make children's groups in ('' for none);
        by default this process's own, when it may write there."""
        self.loop = loop
        self.log_sink = log_sink
        self.options = options
        self._cgroups = MemoryCgroups(own_memory_cgroup() if memory_cgroup is None else memory_cgroup)
        self._standby: list[Child] = []
        # One blank child with asyncio imported (~4.5 MiB more), kept once an async handler loaded.
        self._standby_async: list[Child] = []
        self._async_seen = False
        self._started = False
        self._closed = False
        self._stopping: set[Child] = set()
        self._stopped = asyncio.Event()
        if os.geteuid() != 0:
            log.warning(
                "process isolation: the node is not root, so children keep its uid "
                "(Landlock, rlimits and RLIMIT_AS still apply)"
            )

    @staticmethod
    def memory_cgroup_available() -> bool:
        """True when this process may make v1 memory cgroups for its children."""
        return bool(own_memory_cgroup())

    def take(self, spec: IsolateSpec, on_stuck: OnStuck | None, expect_async: bool = False) -> ProcessIsolate:
        """A started isolate assigned to `spec`: a blank child from the pool, else a new one."""
        isolate = ProcessIsolate(self, spec, on_stuck, expect_async)
        self._started = True
        isolate._restart()
        return isolate

    def saw_async(self) -> None:
        """An async function was loaded here: keep a blank child with asyncio ready from now on."""
        if not self._async_seen:
            self._async_seen = True
            self.refill()

    def blank(self, expect_async: bool = False) -> Child:
        """A blank child (from the pool, topped up soon after)."""
        standby = (self._standby_async or self._standby) if expect_async else self._standby
        child = standby.pop(0) if standby else self._spawn(self.options.preload)
        if not self._closed:
            self.loop.call_soon(self.refill)
        return child

    def refill(self) -> None:
        """Top the pool of blank children up to `warm_pool`."""
        if not self._started or self._closed:
            return
        while len(self._standby) < self.options.warm_pool:
            self._standby.append(self._spawn(self.options.preload))
        if self._async_seen and self.options.warm_pool and not self._standby_async:
            self._standby_async.append(self._spawn((*self.options.preload, "asyncio")))

    def _spawn(self, preload: tuple[str, ...]) -> Child:
        return Child(self.loop, preload, self._cgroups.new(), _ignore, self._on_blank_exit)

    def _on_blank_exit(self, child: Child) -> None:
        for standby in (self._standby, self._standby_async):
            with contextlib.suppress(ValueError):
                standby.remove(child)
        self.remove_cgroup(child)
        if child in self._stopping:
            self._stopping.discard(child)
            if not self._stopping:
                self._stopped.set()
        elif not self._closed:
            log.error("process isolate: a blank child ended (%s)", describe_exit(child.returncode or 0))

    def limit_memory(self, child: Child, memory_mb: int) -> None:
        """Limit `child`'s cgroup to `memory_mb` (without one the child sets RLIMIT_AS itself)."""
        if child.cgroup:
            child.memory_limited = self._cgroups.limit(child.cgroup, memory_mb)

    def remove_cgroup(self, child: Child) -> bool:
        """Remove the ended child's cgroup; returns True if the kernel killed it for memory."""
        if not child.cgroup:
            return False
        killed = self._cgroups.remove(child.cgroup)
        child.cgroup = ""
        return killed

    async def close(self, timeout: float) -> None:
        """Stop the blank children (each is killed if it does not stop in time)."""
        self._closed = True
        standby = self._standby + self._standby_async
        self._standby, self._standby_async = [], []
        for child in standby:
            if child.returncode is None:
                self._stopping.add(child)
                child.send(_STOP)
        if self._stopping:
            self._stopped.clear()
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout)
            except TimeoutError:
                for child in list(self._stopping):
                    child.kill("close")
                await self._stopped.wait()
        self._cgroups.close()


def _ignore(child: Child, batch: tuple[tuple[Any, ...], ...]) -> None:
    """A blank child has nothing to say."""
