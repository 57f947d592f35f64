"""A function version in one persistent, isolated subinterpreter (own GIL), driven from the event loop.

No thread belongs to an interpreter: the node's shared runner threads (`_runners.py`, about one
per core) run whichever interpreters have work. A runner creates the interpreter and boots the
guest (isolates/guest/_edge_runtime.py), which parks at once: `_interpreters.exec` returns and
the interpreter holds memory only. Work for a parked interpreter queues an activation; a runner
enters it (`__edge_resume__()`), the guest serves what is queued and what comes within its linger
time, then returns the thread. Requests cross as marshal frames of plain tuples on a pair of pipes
(`_frames.py`): a pipe operation costs the same whatever the number of interpreters, unlike
`_interpqueues` (3.13 walks every queue and interpreter on each operation). Requests wait in a
host-side outbox; everything submitted in one event-loop iteration goes in as one batch (one
frame, one write) at the next iteration; the frame wakes a guest waiting on its pipe, and a parked
one gets an activation. The guest answers all it drained with one frame of replies on the pipe
the loop watches with `add_reader`. So there is no thread hand-off per request while a function
is busy, and the busier the node, the bigger the batches.

The flag bytes shared with the guest (SLEEPING, PARK, ENDED, IDLE: see the guest runtime) and the
runners' lock decide hand-offs: the loop raises work for a sleeping guest under the lock, and a
runner whose guest returned checks under the same lock whether work came meanwhile, so no batch
is left in the pipe of a parked interpreter (the runner looks at the pipe's byte count).

A streamed reply (STREAM, then CHUNK pieces) resolves its request's future with a `Stream` fed as
the pieces arrive (`StreamReplies`); one complete within the batches of one wake-up is answered
as a plain RESPONSE. Once streaming, a request is past the 504 sweep: it ends with its last
piece, an ERROR (cut off), the isolate's end, or `abandon_after` past its deadline (cut off, and
the isolate is replaced when it made no progress since the deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import sys
import threading
from itertools import count
from marshal import dumps
from time import monotonic
from typing import Any

from isolates.backends import (
    CHUNK,
    ERROR,
    LOADED,
    LOG,
    STREAM,
    BackendOptions,
    IsolateSpec,
    LoadError,
    LogSink,
    OnStuck,
    Reply,
    RequestHeaders,
    StandbyBudget,
    StreamReplies,
    kind_options,
)
from isolates.backends._frames import FrameReader, FrameWriter, ProtocolError, decode, unread
from isolates.backends._runners import Runners, default_floor
from isolates.guest import GUEST_DIR
from isolates.guest._edge_compat import call_exec, create_interpreter, destroy_interpreter

__all__ = ["SubinterpreterIsolate", "WarmPool", "raise_open_files_limit", "stdlib_paths"]

log = logging.getLogger("edge.isolates")

_ONE = (1).to_bytes(8, sys.byteorder)
_STOP = (0,)
# The flag bytes shared with the guest (isolates/guest/_edge_runtime.py).
_SLEEPING, _PARK, _ENDED, _IDLE = 0, 1, 2, 3
# Run by a runner thread to serve a parked interpreter (`boot` put the name in its __main__).
_RESUME = compile("__edge_resume__()", "<edge-resume>", "exec")
# Runner threads at most: interpreters busy at once (running or blocked in a handler) beyond it
# wait their turn.
_RUNNER_LIMIT = 256
# Creating an interpreter and loading a function take milliseconds of CPU: a runner doing that is
# waited for rather than joined by a new thread, unless it takes longer than this (seconds).
_STARTING_AT_MOST = 0.5

_BLANK = IsolateSpec(name="", version="", directory="", module="", attribute="", timeout_ms=1)

_BOOT = """\
import sys
sys.path[:] = paths
sys.path_importer_cache.clear()
del sys
import _edge_runtime
_edge_runtime.boot(in_fd, out_fd, wake_fd, flag, pressure, preload)
"""


@functools.cache
def stdlib_paths() -> tuple[str, ...]:
    """The host's standard-library entries of sys.path (no site-packages, no project paths).

    Computed once per process: every isolate boot and assignment needs it. Only directories and
    the standard library's own zip: the single-file artifact (make dist) is a zip on sys.path that
    may sit under the prefix too (/usr/local/lib/edge/edge.pyz with Debian's /usr).
    """
    base = os.path.realpath(sys.base_prefix)
    stdlib_zip = f"python{sys.version_info.major}{sys.version_info.minor}.zip"
    return tuple(
        entry
        for entry in sys.path
        if entry
        and os.path.realpath(entry).startswith(base + os.sep)
        and not {"site-packages", "dist-packages"} & set(entry.split(os.sep))
        and (os.path.isdir(entry) or os.path.basename(entry) == stdlib_zip)
    )


def raise_open_files_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit (at most 2**20).

    Each interpreter isolate holds five descriptors (two pipes and its wake eventfd): a service
    manager's usual soft limit of 1024 would stop a node at about 200 functions.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(1 << 20, hard) if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:  # e.g. above fs.nr_open: keep the soft limit
        log.warning("cannot raise the open files limit from %d to %d: %s", soft, wanted, exc)


class SubinterpreterIsolate:
    """One function version served by a persistent subinterpreter; see the module docstring."""

    recovers = False

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        log_sink: LogSink,
        on_stuck: OnStuck | None = None,
        abandon_after: float = 1.0,
        preload: tuple[str, ...] = (),
        protected: tuple[str, ...] = (),
        *,
        runners: Runners,
    ) -> None:
        self.spec = _BLANK
        self._runners = runners
        self._loop = loop
        self._log_sink = log_sink
        self._on_stuck = on_stuck
        self._abandon_after = abandon_after
        self._preload = preload
        self._protected = protected
        # Requests: the host writes, the guest reads (both ends non-blocking: the guest polls).
        self._guest_in, to_guest = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # Replies: the guest writes (blocking when full), the loop reads on readiness.
        from_guest, self._guest_out = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(from_guest, False)
        self._writer = FrameWriter(loop, to_guest, self._wake)
        self._reader = FrameReader(from_guest)
        # Asks a lingering guest to park (`evict`); the guest polls it besides its pipe.
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC)
        # Where each frame sent ends in the request stream (see take_queued), trimmed as read.
        self._frame_ends: list[int] = []
        self._frames_from = 0  # where the first of them starts
        self._seq = count(1)
        self._pending: dict[int, tuple[asyncio.Future[Reply], float]] = {}
        # Requests answered with a stream whose end has not come yet.
        self._streams = StreamReplies(loop, abandon_after, self._check_stuck)
        # Items for the guest not yet written to its pipe: flushed as one batch (see _flush).
        self._outbox: list[tuple[Any, ...]] = []
        # Batches written to the guest's pipe, and wake-ups of a sleeping or parked guest (in
        # /_edge/metrics).
        self.batches = 0
        self.wakes = 0
        # Bytes shared with the guest, indexed by _SLEEPING, _PARK, _ENDED, _IDLE.
        self._flag = memoryview(bytearray(4))
        self._iid: int | None = None
        # True while an activation is queued or running (under the runners' lock); stays True once ended.
        self._scheduled = True
        self._native_id: int | None = None
        self._activated_at = 0.0
        self._sweep: asyncio.TimerHandle | None = None
        self._ready: asyncio.Future[None] = loop.create_future()
        self._exited: asyncio.Future[None] = loop.create_future()
        self._alive = True
        self._last_progress = 0.0
        self._timeout_message = ""
        # Known once loaded: the handler is a coroutine function (its isolate runs an event loop).
        self.is_async = False

    @property
    def ready(self) -> asyncio.Future[None]:
        """Resolves once the entrypoint is imported; raises LoadError when it cannot be."""
        return self._ready

    @property
    def alive(self) -> bool:
        """False once the isolate was closed, crashed or abandoned."""
        return self._alive

    @property
    def made(self) -> bool:
        """True once a runner created the interpreter (a blank one in the pool may not be yet)."""
        return self._iid is not None

    @property
    def starting(self) -> bool:
        """True while a runner creates the interpreter or loads the function, for at most
        _STARTING_AT_MOST seconds (then it may be stuck in the function's import)."""
        return not self._ready.done() and monotonic() - self._activated_at < _STARTING_AT_MOST

    @property
    def thread_id(self) -> int | None:
        """The OS id of the runner thread in it now or last (for its CPU time in /proc), None before."""
        return self._native_id

    @property
    def exited(self) -> bool:
        """True once the interpreter was destroyed (an abandoned one, stuck in C, may never be)."""
        return self._exited.done()

    @property
    def pending(self) -> int:
        """Requests submitted and not yet answered."""
        return len(self._pending)

    def start(self, background: bool = False) -> None:
        """Queue the creation of a blank interpreter on a runner thread; it parks until `assign`.

        `background`: for the warm pool, after the activations that serve functions."""
        self._loop.add_reader(self._reader.fd, self._on_replies)
        with self._runners.lock:
            self._runners.submit(self, background)

    def assign(self, spec: IsolateSpec) -> None:
        """Give a started (blank) isolate its function; `ready` resolves once it is loaded."""
        self.spec = spec
        with self._runners.lock:  # a blank one not made yet: make it now, before background work
            self._runners.promote(self)
        self._timeout_message = f"function {spec.name} timed out after {spec.timeout_ms} ms"
        self._streams.timeout_message = self._timeout_message
        directory = spec.directory
        deps = os.path.join(directory, ".deps")
        paths = (directory, *([deps] if os.path.isdir(deps) else []), str(GUEST_DIR), *stdlib_paths())
        attribute = spec.attribute
        self._send_now(
            (
                -1,
                paths,
                spec.name,
                spec.version,
                spec.env,
                spec.module,
                attribute,
                self._policy(spec),
                kind_options(spec, 0),
            )
        )

    def _policy(self, spec: IsolateSpec) -> tuple[Any, ...]:
        """What the guest's audit hook enforces (isolates/guest/_edge_guard.py), as plain values."""
        permissions = spec.permissions
        net = permissions.net if isinstance(permissions.net, bool) else tuple(permissions.net)
        return (
            spec.directory,
            net,
            tuple(permissions.read),
            tuple(permissions.write),
            permissions.subprocess,
            permissions.ctypes,
            self._protected,
            # This worker and granian's main process: a function may not signal either.
            (os.getpid(), os.getppid()),
        )

    def run_activation(self) -> None:
        """On a runner thread: create the interpreter the first time, then serve it until it parks."""
        self._native_id = threading.get_native_id()
        self._activated_at = monotonic()
        flag, runners = self._flag, self._runners
        error = self._boot() if self._iid is None else None
        iid = self._iid or 0  # (set by a successful _boot)
        turn = False  # this activation ran the guest once already
        while error is None and not flag[_ENDED]:
            with runners.lock:
                flag[_PARK] = flag[_IDLE] = 0
                if flag[_SLEEPING] and not unread(self._guest_in):
                    self._scheduled = False  # parked: the next batch queues an activation
                    return
                if turn and runners.waiting:  # others wait for a thread: take a turn behind them
                    runners.submit(self)
                    return
            turn = True
            try:
                error = call_exec(iid, _RESUME)
            except Exception as exc:  # the call itself refused
                error = f"cannot resume the interpreter: {type(exc).__name__}: {exc}"
        self._end(error)

    def evict(self) -> bool:
        """Called under the runners' lock: ask a guest that idles in its linger time to park now;
        True when it idles there (it gives its thread back soon, asked now or before)."""
        flag = self._flag
        if not flag[_IDLE]:
            return False
        if not flag[_PARK]:
            flag[_PARK] = 1
            os.write(self._wake_fd, _ONE)
        return True

    def _boot(self) -> str | None:
        """Create the interpreter and boot the guest (it parks blank); returns an error or None."""
        try:
            self._iid = create_interpreter()
        except Exception as exc:
            return f"cannot create an interpreter: {exc}"
        try:
            # 3.13 shares a memoryview only into an interpreter that imported _interpreters.
            return call_exec(self._iid, "import _interpreters") or call_exec(self._iid, _BOOT, self._shared())
        except Exception as exc:  # the call itself refused (e.g. a value it cannot share)
            return f"cannot boot the interpreter: {type(exc).__name__}: {exc}"

    def _end(self, error: str | None) -> None:
        """Serving is over (stopped, or crashed with `error`): destroy the interpreter."""
        if self._iid is not None:
            # Replies in the pipe outlive the interpreter: _on_exit reads them.
            destroy_interpreter(self._iid)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody wants them
            self._loop.call_soon_threadsafe(self._on_exit, error)

    def _shared(self) -> dict[str, Any]:
        return {
            "paths": (str(GUEST_DIR), *stdlib_paths()),
            "in_fd": self._guest_in,
            "out_fd": self._guest_out,
            "wake_fd": self._wake_fd,
            "flag": self._flag,
            "pressure": self._runners.pressure,
            "preload": self._preload,
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
        self._pending[seq] = (future, deadline)
        outbox = self._outbox
        # One bytes object crosses instead of a tuple per header (the guest decodes on first use).
        outbox.append((seq, method, path, query, dumps(headers), body, request_id, deadline, client))
        if len(outbox) == 1:
            # Everything submitted in this loop iteration goes in as one batch at the next one
            # (a few microseconds later when the loop is idle; a bigger batch under load).
            self._loop.call_soon(self._flush)
        if self._sweep is None:
            self._schedule_sweep(deadline)
        return future

    def _flush(self) -> None:
        """Write everything submitted since the last flush to the pipe as one batch."""
        if self._outbox and self._alive:  # a dead isolate reads no more; _on_exit answers 503
            self._put_outbox()

    def _send_now(self, item: tuple[Any, ...]) -> None:
        """Put `item` behind anything still waiting for a flush, without waiting for one."""
        self._outbox.append(item)
        self._put_outbox()

    def _put_outbox(self) -> None:
        batch, self._outbox = tuple(self._outbox), []
        writer = self._writer
        if writer.fd < 0:  # abandoned: its pipe is closed
            return
        writer.send(batch)
        self._frame_ends.append(writer.total)
        if len(self._frame_ends) > 64:
            self._trim_frames()
        self.batches += 1
        self._wake()

    def _wake(self) -> None:
        # A frame in the pipe wakes a guest that polls it. The guest raises the flag before it
        # polls or parks, and the runner looks at the pipe under the lock before it lets the
        # interpreter park: a frame written after that sees the flag and queues an activation.
        # While the guest is busy the flag is down and it reads new frames itself: no lock.
        flag = self._flag
        if flag[_SLEEPING]:
            runners = self._runners
            with runners.lock:
                flag[_SLEEPING] = 0
                self.wakes += 1
                if not self._scheduled:
                    self._scheduled = True
                    runners.submit(self)

    def _trim_frames(self) -> None:
        """Forget the ends of the frames the guest has read (take_queued needs only the others)."""
        writer, ends = self._writer, self._frame_ends
        consumed = writer.total - writer.unsent - unread(self._guest_in)
        read = 0
        while read < len(ends) and ends[read] <= consumed:
            read += 1
        if read:
            self._frames_from = ends[read - 1]
            del ends[:read]

    def _schedule_sweep(self, deadline: float) -> None:
        self._sweep = self._loop.call_later(max(0.0, deadline - monotonic()), self._expire_overdue)

    def _expire_overdue(self) -> None:
        """Answer 504 for requests past their deadline (one timer per isolate, not per request)."""
        self._sweep = None
        now = monotonic()
        pending = self._pending
        expired = False
        # All requests of an isolate share one timeout, so insertion order is deadline order.
        while pending:
            seq, (future, deadline) = next(iter(pending.items()))
            if deadline > now:
                self._schedule_sweep(deadline)
                break
            del pending[seq]
            future.set_result((ERROR, seq, 504, self._timeout_message))
            expired = True
        if expired:
            self._loop.call_later(self._abandon_after, self._check_stuck, self._loop.time())

    def _on_replies(self) -> None:
        try:
            batches = self._reader.read()
        except ProtocolError as exc:
            self._refuse(str(exc))
            return
        pending, streams = self._pending, self._streams
        self._last_progress = self._loop.time()
        started = False
        for batch in batches:
            for message in batch:
                kind = message[0]
                if kind <= ERROR:
                    if kind == ERROR and streams.error(message[1], self._stream_error(message)):
                        continue
                    entry = pending.pop(message[1], None)
                    if entry is not None:
                        if kind == ERROR and message[2] == 504:  # one text, whichever side noticed first
                            entry[0].set_result((ERROR, message[1], 504, self._timeout_message))
                        else:
                            entry[0].set_result(message)
                elif kind == LOG:
                    self._log_sink(self.spec.name, self.spec.version, message[1], message[2], message[3])
                elif kind == CHUNK:
                    streams.chunk(message[1], message[2], message[3])
                elif kind == STREAM:
                    streams.start(message[1], message[2], message[3])
                    started = True
                elif kind == LOADED:
                    self.is_async = message[3]
                    self._on_loaded(message[1], message[2])
        if started:
            self._settle_streams()

    def _refuse(self, problem: str) -> None:
        """The guest's pipe carried something that is not a frame of replies: replace the isolate."""
        log.error("function %s: isolate sent %s on its reply pipe; replacing it", self.spec.name, problem)
        self._loop.remove_reader(self._reader.fd)
        if self._alive and self._on_stuck is not None:
            self._on_stuck(self)
        elif self._alive:
            self.abandon()

    def _stream_error(self, message: tuple[Any, ...]) -> str:
        return self._timeout_message if message[2] == 504 else message[3]

    def _settle_streams(self) -> None:
        """Answer the requests whose streams started in the batches just handled."""
        for reply in self._streams.settle():
            entry = self._pending.pop(reply[1], None)
            if entry is None:  # answered already (its deadline passed): nobody reads it
                if reply[0] == STREAM:
                    reply[4].close()
                continue
            entry[0].set_result(reply)
            if reply[0] == STREAM:
                self._streams.opened(reply[1], reply[4], entry[1])

    def _on_loaded(self, ok: bool, message: str) -> None:
        if ok:
            self._ready.set_result(None)
            return
        self._ready.set_exception(LoadError(message))
        self._ready.exception()  # mark retrieved: a failed load is reported by the pool, not asyncio
        self._fail_pending(503, f"function {self.spec.name} failed to load: {message}")

    def _check_stuck(self, expired_at: float) -> None:
        # The guest interrupts Python-level loops itself and answers; silence since the deadline
        # means it is stuck in C code, where nothing can interrupt it.
        if self._alive and self._last_progress < expired_at and self._on_stuck is not None:
            log.error(
                "function %s version %s: isolate stuck past its deadline; replacing it",
                self.spec.name,
                self.spec.version[:12],
            )
            self._on_stuck(self)

    def take_queued(self) -> list[tuple[tuple[Any, ...], asyncio.Future[Reply]]]:
        """Remove the requests the guest has not picked up yet, with their futures (for a successor)."""
        items = self._unread_items()
        items.extend(self._outbox)
        self._outbox = []
        taken = []
        for item in items:
            entry = self._pending.pop(item[0], None)
            if entry is not None:
                taken.append((item, entry[0]))
        return taken

    def _unread_items(self) -> list[tuple[Any, ...]]:
        """Take the frames the guest has not begun to read out of its pipe (and what waits to go
        in); their items. A frame it read in part is dropped whole: it never gets the rest."""
        writer = self._writer
        if writer.fd < 0:
            return []
        waiting = unread(self._guest_in)
        consumed = writer.total - writer.unsent - waiting
        stream = bytearray()
        while len(stream) < waiting:
            try:
                chunk = os.read(self._guest_in, waiting - len(stream))
            except BlockingIOError:  # the guest read it meanwhile: it was not stuck after all
                break
            stream += chunk
        stream += writer.take_unsent()
        items: list[tuple[Any, ...]] = []
        start = self._frames_from
        for end in self._frame_ends:
            if start >= consumed:
                frame = bytearray(stream[start - consumed : end - consumed])
                with contextlib.suppress(ProtocolError):
                    for batch in decode(frame):
                        items.extend(batch)
            start = end
        self._frame_ends.clear()
        self._frames_from = writer.total
        return items

    def adopt(self, queued: list[tuple[tuple[Any, ...], asyncio.Future[Reply]]]) -> None:
        """Take over requests queued on a predecessor, keeping their futures and deadlines."""
        for item, future in queued:
            seq = next(self._seq)
            self._pending[seq] = (future, item[7])
            self._outbox.append((seq, *item[1:]))
        if queued:
            self._flush()
            if self._sweep is None:
                self._schedule_sweep(queued[0][0][7])

    def abandon(self) -> None:
        """Stop routing to this isolate; it exits by itself if its stuck call ever returns."""
        self._alive = False
        self._streams.cut_all(f"function {self.spec.name}: its isolate was replaced (stuck)")
        self._send_now(_STOP)
        # Then end of file: the guest stops even if take_queued left it part of a frame.
        self._writer.close()

    async def close(self, timeout: float) -> bool:
        """Stop after the requests in hand are answered; returns False if it had to be abandoned."""
        if self._alive:
            self._alive = False
            self._send_now(_STOP)
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        except TimeoutError:
            log.error("function %s: isolate did not stop within %.1f s; abandoned", self.spec.name, timeout)
            return False
        return True

    def _on_exit(self, error: str | None) -> None:
        """Runs on the loop once the host thread has left the interpreter."""
        self._alive = False
        if error is not None:
            log.error("function %s: isolate crashed:\n%s", self.spec.name, error)
        self._on_replies()  # what it wrote before it ended (the pipe outlives the interpreter)
        if not self._ready.done():
            self._ready.set_exception(LoadError(f"isolate exited before loading: {error}"))
            self._ready.exception()
        self._fail_pending(503, f"function {self.spec.name} is not running")
        self._streams.cut_all(f"function {self.spec.name}: its isolate stopped")
        if self._sweep is not None:
            self._sweep.cancel()
        self._loop.remove_reader(self._reader.fd)
        self._writer.close()
        for fd in (self._reader.fd, self._guest_in, self._guest_out, self._wake_fd):
            os.close(fd)
        self._exited.set_result(None)

    def _fail_pending(self, status: int, message: str) -> None:
        pending, self._pending = self._pending, {}
        for seq, (future, _) in pending.items():
            if not future.done():
                future.set_result((ERROR, seq, status, message))


class WarmPool:
    """Blank isolates created ahead of need, so a cold start skips creating an interpreter.

    It keeps `warm_pool` blank ones, and more while functions deployed without an instance
    (`preload = false`, never run yet) could each ask for a cold start: one per such function, up
    to `warm_pool_max`, made in the background on the runner threads (after the activations that
    serve functions) and counted against the node's budget, which they fit or are not made; an
    instance that needs the room takes it from them first (`drop_standby`). Extra blanks are kept
    until taken once fewer are wanted (destroying an interpreter frees little memory in 3.13). A
    function scaled to zero after it ran gets none: freeing its interpreters is the point.
    `warm_pool = 0` keeps no blank at all.

    Besides those it keeps one with asyncio imported once the node has run an async handler: a
    new version of an async function takes that one and skips the import (tens of ms).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, log_sink: LogSink, options: BackendOptions) -> None:
        self._loop = loop
        self._log_sink = log_sink
        self._size = options.warm_pool
        self._most = max(options.warm_pool_max, options.warm_pool) if options.warm_pool else 0
        # How many blanks to keep now: `warm_pool`, or one per never-run function (see above).
        self.target = self._size
        self._budget: StandbyBudget | None = None
        self._abandon_after = options.abandon_after
        self._preload = options.preload
        self._options = options
        # The host threads every interpreter of this node process runs on.
        self.runners = Runners(default_floor(), _RUNNER_LIMIT)
        raise_open_files_limit()
        self._standby: list[SubinterpreterIsolate] = []
        self._standby_async: list[SubinterpreterIsolate] = []
        self._async_seen = False
        self._closed = False
        # Cold starts that found no blank interpreter made yet (in /_edge/metrics).
        self.outrun = 0
        self.refill()

    def take(
        self,
        spec: IsolateSpec,
        on_stuck: OnStuck | None,
        expect_async: bool = False,
    ) -> SubinterpreterIsolate:
        """A started isolate assigned to `spec`: a blank one from the pool, else a new one."""
        standby = (self._standby_async or self._standby) if expect_async else self._standby
        if standby:
            isolate = standby.pop(0)
            if not isolate.made:
                self.outrun += 1
        else:
            self.outrun += 1
            isolate = self._new(self._preload)
        isolate._on_stuck = on_stuck
        isolate.assign(spec)
        self._loop.call_soon(self.refill)
        return isolate

    @property
    def blanks(self) -> int:
        """Blank interpreters in the pool, made or being made."""
        return len(self._standby)

    @property
    def made(self) -> int:
        """Blank interpreters created and waiting (the rest of the pool is still being made)."""
        return sum(1 for isolate in self._standby if isolate.made)

    def bound_by(self, budget: StandbyBudget) -> None:
        self._budget = budget

    def congested(self) -> bool:
        return self.runners.waiting  # read without the lock: a hint, checked again every 5 ms

    def extra_standby(self) -> int:
        return max(0, len(self._standby) - self._size)

    def drop_standby(self) -> bool:
        if len(self._standby) <= self._size:
            return False
        isolate = self._standby.pop()  # the newest: the least likely to be made already
        self._loop.create_task(isolate.close(self._abandon_after + 5.0))
        return True

    def saw_async(self) -> None:
        """An async function was loaded here: keep a blank isolate with asyncio ready from now on."""
        if not self._async_seen:
            self._async_seen = True
            self.refill()

    def _new(self, preload: tuple[str, ...], background: bool = False) -> SubinterpreterIsolate:
        isolate = SubinterpreterIsolate(
            self._loop,
            self._log_sink,
            abandon_after=self._abandon_after,
            preload=preload,
            protected=self._options.protected,
            runners=self.runners,
        )
        isolate.start(background)
        return isolate

    def refill(self) -> None:
        """Top the pool up to its target (interpreters are created in the background on runner threads)."""
        budget = self._budget
        expected = budget.never_run("interpreter") if budget is not None else 0
        self.target = max(self._size, min(self._most, expected))
        while not self._closed and len(self._standby) < self.target:
            if len(self._standby) >= self._size and budget is not None and not budget.room_for_blank():
                break
            self._standby.append(self._new(self._preload, background=True))
        if not self._closed and self._async_seen and self._size and not self._standby_async:
            self._standby_async.append(self._new((*self._preload, "asyncio"), background=True))

    async def close(self, timeout: float) -> None:
        """Stop the blank isolates."""
        self._closed = True
        standby = self._standby + self._standby_async
        self._standby, self._standby_async = [], []
        await asyncio.gather(*(isolate.close(timeout) for isolate in standby))
        self.runners.close()
