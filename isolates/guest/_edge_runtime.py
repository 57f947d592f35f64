"""The serve loop that runs inside an isolate, in activations on whichever host thread has time.

A host runner thread calls `boot(...)` once through `_interpreters.exec`: the isolate is made
blank (standard library and this runtime imported) and parks, holding no thread. Whenever there
is work the host calls `resume()` (as `__edge_resume__()`) on any of its runner threads: the
first activation takes the assignment, loads the function and reports the outcome on the
out-pipe; each one serves what is in its in-pipe and what comes within _LINGER, then returns (parks)
with the watchdog thread stopped, until told to stop. So a warm pool of blank isolates makes cold
starts cheap, and an idle function costs memory only. On assignment, before the function's module
is imported, the audit hook of `_edge_guard` is installed with the function's permissions and the
runtime's own modules leave sys.modules.

Both pipes carry frames (a 4-byte little-endian length, then marshal.dumps of a batch: a tuple of
the items below, in order), as the process backend's pipes do (isolates/guest/_edge_child.py).
A pipe costs the same whatever the number of interpreters; an `_interpqueues` operation walks
every queue and interpreter of the process (CPython 3.13), which made a node with thousands of
functions spend most of its CPU there.
Host -> guest (in-pipe, non-blocking on both sides); a frame wakes a guest waiting on the pipe,
and the host activates a parked isolate when it writes while the guest's SLEEPING flag is raised:
    (-1, paths, name, version, env, module, attribute, policy, kind)          assignment, first
        policy: None (no audit hook) or (directory, net, read, write, subprocess, ctypes,
        protected, node_pids), see _edge_guard.install; net is a bool or a tuple of "host:port"
        kind: (kind, options) with options a tuple of (name, value) pairs (edgefn/_kinds.py)
    (seq, method, path, query_string, headers, body, request_id, deadline, client)   seq >= 1,
        headers marshal-encoded (one bytes object crosses instead of a tuple per header),
        client "host:port" or ""; method "<invoke>" for a direct invocation (Lambda invoke API)
    (0,)                                                                      stop
Guest -> host (out-pipe, blocking on the guest's side, read on readiness by the host's event
loop), one frame per drained batch (or loop iteration):
    (RESPONSE, seq, status, headers, body)
    (ERROR, seq, status, message)        the host renders the JSON error body
    (STREAM, seq, status, headers)       a streamed response starts; its body follows as
    (CHUNK, seq, data, more)             pieces of bytes, the last with more=False (an ERROR for
                                         the same seq instead ends the stream cut off)
    A handler streams by returning a generator, an async generator or a Response whose body is
    an iterator (edgefn/_wire.py). The function's timeout covers the whole response, not just
    its first piece: a stream still running at the deadline is interrupted and cut off.
    A sync handler's pieces go out one batch each as they come (its generator may block
    between them); an async handler's with the loop's once-per-iteration flush.
    (LOG, stream, request_id, line)
    (LOADED, ok, message, is_async)       once, after the entrypoint was imported (or failed)
Standard library only; keep module-level imports cheap: they are part of every cold start, and
every module imported here is held by every instance (`threading` alone ≈ 0.4 MiB: the runtime's
threads use `_thread` through `_Condition` and `start_thread`).
"""

from __future__ import annotations

import _thread
import contextvars
import itertools
import os
import sys
import time
from marshal import dumps as _dumps
from marshal import loads as _loads
from select import POLLIN as _POLLIN
from select import poll as _poll

import _edge_guard  # imported while the isolate is blank (in the warm pool), not at assignment
from _edge_compat import start_thread
from edgefn._kinds import Adapted, _check_edge, adapt
from edgefn._wire import chunk as _chunk
from edgefn._wire import encode as _encode

from edgefn import Context, Headers, Request

# The descriptor calls as they were when the runtime loaded: the guard replaces os.read and
# friends for the function's code (_edge_guard.py `_guard_descriptors`), not for the channel.
_read, _write, _writev = os.read, os.write, os.writev

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from typing import Any

RESPONSE, ERROR, LOG, LOADED, STREAM, CHUNK = 0, 1, 2, 3, 4, 5
# Frames on both pipes: a 4-byte little-endian length, then the marshal-encoded batch.
_HEADER = 4
# Read at most this much at once: a small frame comes in one read, a 10 MB body in many.
_READ_SIZE = 1 << 16
_CO_COROUTINE = 0x80
_PLAIN = frozenset({str, bytes, dict, list, tuple})  # results that are surely not awaitables
# Iterators that make their pieces without blocking: their pieces are not flushed one by one.
_IN_MEMORY = frozenset({type(iter([])), type(iter(())), type(iter(b""))})
_END = object()

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


class HandlerTimeout(BaseException):
    """Raised inside a handler that ran past its deadline (a BaseException: `except Exception` misses it)."""


class _Condition:
    """`threading.Condition` for one waiting thread, on `_thread` locks (see the module docstring).

    Use as `threading.Condition(threading.Lock())`: `with cond:`, then `wait` or `notify` inside.
    """

    __slots__ = ("_lock", "_waiter")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._waiter: Any = None

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait(self, timeout: float = -1) -> None:
        """Release the lock until notified or `timeout` seconds passed (-1: no limit), then retake it."""
        waiter = _thread.allocate_lock()
        waiter.acquire()
        self._waiter = waiter
        self._lock.release()
        try:
            waiter.acquire(True, timeout)
        finally:
            self._lock.acquire()
            self._waiter = None

    def notify(self) -> None:
        """Wake the waiting thread, if one waits (call with the lock held)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.release()


class _Channel:
    """The two pipes and the wake eventfd shared with the host.

    Both pipes carry frames: a 4-byte little-endian length, then marshal.dumps of a batch (a tuple
    of messages). Messages from the serving thread wait in `outbox` until `flush` writes them as
    one frame; other threads of the function (its own, printing) write theirs at once. A lock keeps
    frames whole (a pipe write is atomic only up to 4096 bytes).
    """

    def __init__(self, in_fd: int, out_fd: int, wake_fd: int, flag: memoryview) -> None:
        # in_fd is non-blocking (the host made it so): reads never wait; out_fd blocks when full.
        self.in_fd, self.out_fd, self.wake_fd = in_fd, out_fd, wake_fd
        # 1 = "I am about to sleep or park": the host then activates a parked isolate (see _serve_sync).
        self.flag = memoryview(flag)
        self.outbox: list[tuple[Any, ...]] = []
        # Items received from the host and not yet handled (see _next_item).
        self.leftover: list[tuple[Any, ...]] = []
        # The host's byte: 1 while interpreters wait for a thread (then nothing lingers).
        self.pressure = memoryview(bytearray(1))
        # Set by an event loop serving async handlers: arranges one flush per loop iteration.
        self.flush_soon: Any = None
        self._serving_thread = _thread.get_ident()
        self._lock = _thread.allocate_lock()
        self._received = bytearray()  # the start of a frame whose rest has not come yet
        self.closed = False  # the host closed its end (an abandoned isolate): stop
        # poll, not select: a node with thousands of isolates has descriptors past FD_SETSIZE.
        self.poller = _poll()
        self.poller.register(in_fd, _POLLIN)
        self.poller.register(wake_fd, _POLLIN)
        # `peek(0)`: whether a frame came, without a failed read (and its exception).
        peeker = _poll()
        peeker.register(in_fd, _POLLIN)
        self.peek = peeker.poll

    def send(self, message: tuple[Any, ...]) -> None:
        if _thread.get_ident() != self._serving_thread:
            self._write((message,))
            return
        if not self.outbox and self.flush_soon is not None:
            self.flush_soon()
        self.outbox.append(message)

    def flush(self) -> None:
        """Write the waiting messages to the host as one frame."""
        if self.outbox:
            batch, self.outbox = tuple(self.outbox), []
            self._write(batch)

    def _write(self, batch: tuple[tuple[Any, ...], ...]) -> None:
        data = _dumps(batch)
        size = len(data)
        with self._lock:
            written = _writev(self.out_fd, (size.to_bytes(_HEADER, "little"), data))
            if written < size + _HEADER:  # the pipe was full: the rest as the host reads
                rest = memoryview(size.to_bytes(_HEADER, "little") + data)[written:]
                while rest:
                    rest = rest[_write(self.out_fd, rest) :]

    def receive(self) -> bool:
        """Read what the host wrote, without waiting; the items of whole frames go to `leftover`.

        True when `leftover` has items. Once the host closed its end, a stop item comes instead.
        """
        if self.closed:
            return bool(self.leftover)
        received = self._received
        while True:
            try:
                chunk = _read(self.in_fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                self.closed = True
                self.leftover.append((0,))
                return True
            if not received and int.from_bytes(chunk[:_HEADER], "little") + _HEADER == len(chunk):
                # The usual case: one read brought exactly one frame.
                self.leftover.extend(_loads(memoryview(chunk)[_HEADER:]))
                return True
            received += chunk
            if len(chunk) < _READ_SIZE:
                break
        if len(received) < _HEADER:
            return bool(self.leftover)
        leftover, end, start = self.leftover, len(received), 0
        with memoryview(received) as view:
            while end - start >= _HEADER:
                stop = start + _HEADER + int.from_bytes(view[start : start + _HEADER], "little")
                if stop > end:
                    break
                leftover.extend(_loads(view[start + _HEADER : stop]))
                start = stop
        del received[:start]
        return bool(leftover)


class _LogWriter:
    """Replaces sys.stdout/sys.stderr: complete lines go to the host, tagged with the request id."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, channel: _Channel, stream: str) -> None:
        self._channel = channel
        self._stream = stream
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._channel.send((LOG, self._stream, _request_id.get(), line))
        return len(text)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._channel.send((LOG, self._stream, _request_id.get(), line))

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class _Watchdog:
    """A thread in this interpreter that interrupts the serving thread when a deadline passes.

    Arming and disarming take no lock and wake nobody: the watchdog sleeps until the earliest
    armed deadline or, with none armed, until the latest deadline it has seen. Deadlines arrive
    in order (the host adds one timeout to each request's arrival), so a newly armed deadline is
    never earlier than that wake-up; the watchdog is notified only when it sleeps for good, after
    a whole timeout without requests, or when a deadline does come out of order.
    """

    def __init__(self, target_thread: int, start: bool = True) -> None:
        self._target = target_thread
        self._cond = _Condition()
        self._deadlines: dict[int, float] = {}
        self._tokens = itertools.count(1)
        self._latest = 0.0
        self._sleeping_until: float | None = None  # None: idle, waiting to be notified
        self._stopped = True
        self.wakeups = 0
        self._thread: Any = None
        if start:
            self.start(target_thread)

    def start(self, target_thread: int) -> None:
        """Watch `target_thread` on a new thread (an interpreter backend isolate: once per activation)."""
        self._target = target_thread
        self._stopped = False
        self._sleeping_until = None
        self._thread = start_thread(self._run, "edge-watchdog")

    def arm(self, deadline: float) -> int:
        token = next(self._tokens)
        self._deadlines[token] = deadline
        self._latest = max(self._latest, deadline)
        # Written before this read; the watchdog publishes its wake-up time before re-reading the
        # deadlines: one of the two sides sees the other.
        sleeping_until = self._sleeping_until
        if sleeping_until is None or deadline < sleeping_until:
            with self._cond:
                self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        if self._deadlines.pop(token, None) is not None:
            return
        # The watchdog took the deadline: it fires, holding the lock. Wait for that, then withdraw
        # the interrupt in case it is still pending on the serving thread.
        with self._cond:
            pass
        _set_async_exc(self._target, None)

    @property
    def ident(self) -> int | None:
        """The watchdog thread's id (the audit hook lets it load ctypes)."""
        return self._thread.ident if self._thread is not None else None

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _earliest(self) -> tuple[int, float] | None:
        # A copy in one C call: the serving thread changes the dict while this thread looks.
        items = list(self._deadlines.items())
        return min(items, key=lambda item: item[1]) if items else None

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                earliest = self._earliest()
                if earliest is not None and earliest[1] <= now:
                    if self._deadlines.pop(earliest[0], None) is not None:  # else just disarmed
                        _set_async_exc(self._target, HandlerTimeout)
                    continue
                wake_at = earliest[1] if earliest is not None else self._latest
                if wake_at <= now:
                    self._sleeping_until = None
                    if not self._deadlines:
                        self._cond.wait()
                        self.wakeups += 1
                    continue
                self._sleeping_until = wake_at
                again = self._earliest()
                if again is not None and again[1] < wake_at:
                    continue
                self._cond.wait(wake_at - now)
                self.wakeups += 1


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    global _async_exc
    if _async_exc is None:
        _async_exc = _load_async_exc()
    _async_exc(thread_id, exc)


def _load_async_exc() -> Any:
    # Loaded on the first interrupt (ctypes costs ~2 ms and 0.6 MB), on the watchdog's thread,
    # which the audit hook lets import ctypes; then ctypes leaves sys.modules again.
    # The serving thread is spinning on this interpreter's GIL meanwhile: each system call of
    # the import gives the GIL away and waits a switch interval (5 ms) to get it back, which made
    # the first interrupt hundreds of ms late. A short interval while importing avoids that.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        import ctypes
    finally:
        sys.setswitchinterval(interval)

    function = ctypes.pythonapi.PyThreadState_SetAsyncExc
    c_ulong, py_object = ctypes.c_ulong, ctypes.py_object
    if _ctypes_loaded is not None:
        _ctypes_loaded(function)

    def set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
        function(c_ulong(thread_id), py_object(exc) if exc is not None else None)

    return set_async_exc


_async_exc: Any = None
# Set by the audit hook's installation (_edge_guard.runtime_loaded_ctypes), else None.
_ctypes_loaded: Any = None


class _Deadline:
    """Awaits a handler's coroutine with the watchdog armed only while one of its steps runs.

    Async requests of an isolate share its thread: a watchdog armed for the whole request would
    interrupt whichever request runs when the deadline passes. Armed per step, it interrupts only
    a step of the request that passed its deadline (one that blocks the loop); a request that
    awaits is cancelled by asyncio.timeout instead.
    """

    __slots__ = ("_coro", "_deadline", "_step", "_watchdog")

    def __init__(self, coro: Any, watchdog: _Watchdog, deadline: float, step: Any) -> None:
        """`step` is what the coroutine's first step yielded (call_async runs that step)."""
        self._coro = coro
        self._watchdog = watchdog
        self._deadline = deadline
        self._step = step

    def __await__(self) -> Any:
        coro, arm, disarm, deadline = self._coro, self._watchdog.arm, self._watchdog.disarm, self._deadline
        value: Any = None
        error: BaseException | None = None
        try:
            value = yield self._step
        except BaseException as exc:  # cancellation (asyncio.timeout), GeneratorExit: to the handler
            error = exc
        while True:
            token = arm(deadline)
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                return stop.value
            finally:
                disarm(token)
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # cancellation (asyncio.timeout), GeneratorExit: to the handler
                value, error = None, exc


# How long a sync stream's piece may wait for the next one, to go to the host in one batch.
_STREAM_DELAY = 0.001


class _Flusher:
    """A thread that sends a sync stream's waiting messages when its body is slow to make a piece.

    While the serving thread is inside the body (`hand_over` to `take_back`) the outbox is this
    thread's: the serving thread's own sends (a print in the generator) go straight to the host
    meanwhile, as other threads' do. So only one thread ever touches the outbox.
    """

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._serving = channel._serving_thread
        self._cond = _Condition()
        self._due = 0.0  # 0: not handed over
        self._idle = True
        self._stopped = False
        self._thread = start_thread(self._run, "edge-flusher")

    def hand_over(self, due: float) -> None:
        """The serving thread is about to call into the body: flush at `due` unless it is back."""
        self._channel._serving_thread = 0
        with self._cond:
            self._due = due
            if self._idle:
                self._cond.notify()

    def take_back(self) -> None:
        """The body returned (or raised): the outbox is the serving thread's again."""
        with self._cond:
            self._due = 0.0
        self._channel._serving_thread = self._serving

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                due = self._due
                if not due:
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                    continue
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                self._channel.flush()
                self._due = 0.0


class _Function:
    """The loaded handler and everything needed to call it."""

    def __init__(
        self,
        channel: _Channel,
        watchdog: _Watchdog,
        name: str,
        version: str,
        handler: Any,
        kind: str = "edge",
    ) -> None:
        self.channel = channel
        self.name = name
        self.version = version
        self.handler = handler
        self.watchdog = watchdog
        self._loop: Any = None
        # The body a sync handler's stream is sending (closed if the stream ends early).
        self._body: Any = None
        # Sends a sync stream's waiting pieces while its body blocks (started by the first stream).
        self._flusher: _Flusher | None = None
        # Called (once) when an `edge` handler returns a Lambda-shaped dict; None after that.
        self.lambda_shaped: Any = self._warn_lambda_shaped if kind == "edge" else None

    def _warn_lambda_shaped(self) -> None:
        self.lambda_shaped = None
        self.channel.send(
            (
                LOG,
                "stderr",
                _request_id.get(),
                f"warning: function {self.name} returned a dict with a 'statusCode' key; it is sent as"
                ' a JSON body with status 200. If this is an AWS Lambda handler, set `kind = "lambda"`'
                " in edge.toml",
            )
        )

    def request(self, item: tuple[Any, ...]) -> Request:
        _, method, path, query, headers, body, request_id, deadline, client = item
        headers = Headers(headers)
        context = Context(self.name, self.version, request_id, deadline, headers)
        return Request(method, path, query, headers, body, context, client)

    def call_sync(self, item: tuple[Any, ...]) -> None:
        seq, deadline = item[0], item[7]
        _request_id.set(item[6])
        token = self.watchdog.arm(deadline)
        try:
            try:
                result = self.handler(self.request(item))
                if type(result) not in _PLAIN and hasattr(result, "__await__"):
                    result = self._run_awaitable(result)
                message = _encode(seq, result, self.lambda_shaped)
                if message[0] == STREAM:  # the deadline covers the whole stream, not its first piece
                    message = self._stream_sync(message)
            finally:
                self.watchdog.disarm(token)
        except HandlerTimeout:
            message = (ERROR, seq, 504, f"function {self.name} timed out")
            if self._body is not None:
                self._close_body()
        except (Exception, SystemExit) as exc:  # sys.exit() ends the request, not the isolate
            message = self.failure(seq, exc)
            if self._body is not None:
                self._close_body()
        _request_id.set("")
        self.channel.send(message)

    async def call_async(self, item: tuple[Any, ...]) -> None:
        import asyncio

        seq, deadline = item[0], item[7]
        _request_id.set(item[6])
        try:
            # asyncio's timeout cancels a handler that awaits; the watchdog (a little later) stops
            # one whose step blocks the loop with a Python-level busy loop (see _Deadline).
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                coro = self.handler(self.request(item))
                # The first step here, as `await` would run it: most handlers finish in it, and
                # this skips _Deadline's generator (0.75 -> 0.15 us per request).
                watchdog, late = self.watchdog, deadline + 0.05
                token = watchdog.arm(late)
                try:
                    step = coro.send(None)
                except StopIteration as stop:
                    result, coro = stop.value, None
                finally:
                    watchdog.disarm(token)
                if coro is not None:
                    result = await _Deadline(coro, watchdog, late, step)
                message = _encode(seq, result, self.lambda_shaped)
                if message[0] == STREAM:
                    body = message[4]
                    try:
                        message = await self._stream_async(message, late)
                    except BaseException:
                        await _close_async(body)
                        raise
        except (HandlerTimeout, TimeoutError):
            message = (ERROR, seq, 504, f"function {self.name} timed out")
        except (Exception, SystemExit) as exc:
            message = self.failure(seq, exc)
        self.channel.send(message)

    def _stream_sync(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        """Send a streamed result's start and pieces; returns its last message (raises what it raises).

        Pieces wait in the outbox while the body makes the next one quickly; once the oldest has
        waited _STREAM_DELAY, they go (the flusher sends them while the body blocks, e.g. between
        server-sent events). So a short body reaches the host in one batch, which answers it as
        a plain response, and a slow one's pieces reach the client as they are made.
        No `try` here: the watchdog's interrupt may land in this frame (see the isolates README).
        """
        _, seq, status, headers, body = message
        channel = self.channel
        send, clock = channel.send, time.monotonic
        send((STREAM, seq, status, headers))
        self._body = body
        if not hasattr(body, "__next__"):
            body = self._pieces_of(body)
        if type(body) in _IN_MEMORY:  # pieces without waiting (a WSGI app's list)
            for piece in body:
                data = _chunk(piece)
                if data:
                    send((CHUNK, seq, data, True))
            self._body = None
            return (CHUNK, seq, b"", False)
        flusher = self._flusher or self._start_flusher()
        oldest = clock()  # when the oldest message in the outbox was put there
        while True:
            if channel.outbox:
                flusher.hand_over(oldest + _STREAM_DELAY)
                piece = next(body, _END)
                flusher.take_back()
            else:
                piece = next(body, _END)
            if piece is _END:
                break
            data = _chunk(piece)
            if data:
                now = clock()
                if not channel.outbox:  # (the flusher may have sent what waited)
                    oldest = now
                send((CHUNK, seq, data, True))
                if now - oldest >= _STREAM_DELAY:
                    channel.flush()
        self._body = None
        return (CHUNK, seq, b"", False)

    def _start_flusher(self) -> _Flusher:
        self._flusher = _Flusher(self.channel)
        return self._flusher

    def _close_body(self) -> None:
        """A stream ended early (failed, timed out): let its body clean up (generator, WSGI iterable)."""
        if self._flusher is not None:
            self._flusher.take_back()
        body, self._body = self._body, None
        try:
            if hasattr(body, "close"):
                body.close()
            elif hasattr(body, "aclose"):
                self._run_awaitable(body.aclose())
        except BaseException as exc:  # logged: the request already failed
            self.failure(0, exc)

    def _pieces_of(self, body: Any) -> Any:
        """An async iterator's pieces for a sync handler, each step run on the private loop."""
        step = type(body).__anext__
        while True:
            try:
                yield self._run_awaitable(step(body))
            except StopAsyncIteration:
                return

    async def _stream_async(self, message: tuple[Any, ...], late: float) -> tuple[Any, ...]:
        """Send a streamed result's start and pieces from the event loop; returns its last message.

        Pieces go out with the loop's once-per-iteration flush; each step of the body runs with
        the watchdog armed (as a handler's steps do), within the request's asyncio.timeout.
        """
        _, seq, status, headers, body = message
        send, watchdog = self.channel.send, self.watchdog
        send((STREAM, seq, status, headers))
        if not hasattr(body, "__anext__"):
            # A sync iterator blocks the loop while it makes a piece: an async handler should
            # return an async generator to stream slowly.
            while True:
                token = watchdog.arm(late)
                try:
                    piece = next(body, _END)
                finally:
                    watchdog.disarm(token)
                if piece is _END:
                    return (CHUNK, seq, b"", False)
                data = _chunk(piece)
                if data:
                    send((CHUNK, seq, data, True))
        step = type(body).__anext__
        while True:
            awaitable = step(body).__await__()
            token = watchdog.arm(late)
            try:
                first = awaitable.send(None)
            except StopIteration as stop:
                piece, awaitable = stop.value, None
            except StopAsyncIteration:
                return (CHUNK, seq, b"", False)
            finally:
                watchdog.disarm(token)
            if awaitable is not None:
                try:
                    piece = await _Deadline(awaitable, watchdog, late, first)
                except StopAsyncIteration:
                    return (CHUNK, seq, b"", False)
            data = _chunk(piece)
            if data:
                send((CHUNK, seq, data, True))

    def failure(self, seq: int, exc: BaseException) -> tuple[Any, ...]:
        import traceback

        text = "".join(traceback.format_exception(exc)).rstrip("\n")
        self.channel.send((LOG, "error", _request_id.get(), text))
        return (ERROR, seq, 500, f"{type(exc).__name__}: {exc}")

    def _run_awaitable(self, awaitable: Any) -> Any:
        import asyncio

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)

    def park(self) -> None:
        """The activation ends: stop the flusher thread (the next stream starts another)."""
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
        self.park()


async def _close_async(body: Any) -> None:
    """A stream ended early (failed, timed out): let its body clean up (async generator, ASGI)."""
    try:
        if hasattr(body, "aclose"):
            await body.aclose()
        elif hasattr(body, "close"):
            body.close()
    except Exception as exc:  # logged: the request already failed
        import traceback

        print("".join(traceback.format_exception(exc)).rstrip("\n"), file=sys.stderr)


def _isolate_environment(env: dict[str, str]) -> None:
    # os.environ writes call putenv, which is process-wide: make them local to this isolate.
    os.putenv = lambda key, value: None  # type: ignore[assignment]
    os.unsetenv = lambda key: None  # type: ignore[assignment]
    os.environ.clear()
    os.environ.update(env)


def _load(module_name: str, attribute: str) -> Any:
    """Import the entrypoint; raises LookupError with a message that says what went wrong."""
    import importlib

    entrypoint = f"{module_name}:{attribute}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        parts = module_name.split(".")
        if exc.name in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise LookupError(
                f"module not found: entrypoint {entrypoint!r} names module {module_name!r}, "
                "which is not in the function directory"
            ) from None
        raise LookupError(f"importing module {module_name!r} raised ModuleNotFoundError: {exc}") from exc
    except BaseException as exc:
        message = f"importing module {module_name!r} raised {type(exc).__name__}: {exc}"
        if isinstance(exc, ImportError) and "subinterpreter" in str(exc):
            # e.g. pydantic_core (FastAPI), numpy: single-phase init C extensions.
            message += (
                '; this C extension cannot load in an interpreter isolate: set `isolation = "process"`'
                " in edge.toml"
            )
        raise LookupError(message) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LookupError(
                f"entrypoint {entrypoint!r} not found: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise LookupError(f"entrypoint {entrypoint!r} is not callable (it is {type(target).__name__})")
    return target


def _load_reporting(
    channel: Any,
    module_name: str,
    attribute: str,
    kind: tuple[str, tuple[tuple[str, Any], ...]] = ("edge", ()),
) -> Any:
    """The entrypoint adapted to its kind (an `edgefn._kinds.Adapted`); None once a failure was
    reported (its traceback logged, LOADED false)."""
    try:
        target = _load(module_name, attribute)
        if kind[0] == "edge":  # the common case, without a dict and the adapter lookup
            _check_edge(target, f"{module_name}:{attribute}")
            return Adapted(target)
        return adapt(kind[0], target, dict(kind[1]), f"{module_name}:{attribute}")
    except LookupError as exc:
        if exc.__cause__ is not None:
            import traceback

            text = "".join(traceback.format_exception(exc.__cause__)).rstrip("\n")
            channel.send((LOG, "error", "", text))
        channel.send((LOADED, False, str(exc), False))
        channel.flush()
        return None


def _is_async(handler: Any) -> bool:
    # A function, or an object whose class defines `async def __call__`.
    target = handler if hasattr(handler, "__code__") else type(handler).__dict__.get("__call__")
    code = getattr(target, "__code__", None)
    return bool(code is not None and code.co_flags & _CO_COROUTINE)


def warm_up(preload: tuple[str, ...]) -> None:
    """What a blank isolate does ahead of need, so a cold start does not pay for it."""
    for module in preload:
        __import__(module)
    # The first compile() of an interpreter sets up the compiler's state (≈ 1.7 ms, measured)
    # and _load imports importlib (≈ 0.6 ms): both once here instead of at every cold start.
    # (An isolate whose runtime came from .pyc files has compiled nothing yet.)
    compile("pass", "<warm-up>", "exec")
    import importlib  # noqa: F401


# How long an activation waits for more work before it parks (returns its host thread), unless
# the host asks it to park sooner because another interpreter waits for a thread.
_LINGER = 0.25
_LINGER_MS = int(_LINGER * 1000)

# Bytes of the memoryview shared with the host (isolates/backends/subinterpreter.py):
# SLEEPING 1 while the guest waits on its in-pipe or is parked (the host then activates a parked
# interpreter); PARK 1: the host asks the guest to park as soon as it is idle (and writes the wake
# eventfd, which the guest waits on besides its pipe); ENDED 1: serving is over (told to stop),
# the host destroys the interpreter; IDLE 1 while the guest waits for work with nothing in hand
# (a candidate for PARK).
_SLEEPING, _PARK, _ENDED, _IDLE = 0, 1, 2, 3


class _Isolate:
    """What this interpreter keeps between activations: while it is parked, no thread runs in it."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.watchdog = _Watchdog(0, start=False)
        # One activation's serving once assigned: returns True once told to stop, False to park.
        self.serve: Any = None
        # Runs once serving is over (the adapter's shutdown, closing the loop and the function).
        self.close: Any = None
        self.function: _Function | None = None
        self.active = False


_isolate: _Isolate | None = None


def boot(
    in_fd: int,
    out_fd: int,
    wake_fd: int,
    flag: memoryview,
    pressure: memoryview,
    preload: tuple[str, ...],
) -> None:
    """Make the interpreter a blank isolate (standard library and this runtime warm) and park it.

    The host then calls `__edge_resume__()` (see `resume`) whenever there is work for it.
    """
    global _isolate
    channel = _Channel(in_fd, out_fd, wake_fd, flag)
    channel._serving_thread = 0  # parked: any thread's messages go straight to the host
    warm_up(preload)
    _isolate = _Isolate(channel)
    channel.pressure = memoryview(pressure)
    import __main__

    # A dunder: `_edge_guard.conceal` leaves it in __main__ for the host's resume code.
    __main__.__edge_resume__ = resume  # type: ignore[attr-defined]
    channel.flag[_SLEEPING] = 1


def resume() -> None:
    """One activation on whichever host thread runs it: serve what is queued and what comes within
    _LINGER, then return (the interpreter parks), or finish once told to stop."""
    isolate = _isolate
    # Only the host's resume code calls this, at the top level of an exec (no caller frame).
    if isolate is None or isolate.active or sys._getframe(1).f_back is not None:
        raise RuntimeError("only the node resumes an isolate")
    isolate.active = True
    channel, watchdog = isolate.channel, isolate.watchdog
    channel.flag[_SLEEPING] = 0
    thread = _thread.get_ident()
    channel._serving_thread = thread
    watchdog.start(thread)
    _edge_guard.watchdog_moved(watchdog.ident or 0)
    ended = True
    try:
        ended = (isolate.serve or _serve_blank)(isolate)
    finally:
        isolate.active = False
        if ended:
            _finish(isolate)
        else:
            _park(isolate)


def _park(isolate: _Isolate) -> None:
    channel = isolate.channel
    if isolate.function is not None:
        isolate.function.park()
    isolate.watchdog.stop()
    channel.flush()
    channel._serving_thread = 0
    channel.flag[_SLEEPING] = 1


def _finish(isolate: _Isolate) -> None:
    channel = isolate.channel
    try:
        if isolate.close is not None:
            isolate.close()
    finally:
        isolate.watchdog.stop()
        channel.flush_soon = None
        sys.stdout.flush()
        sys.stderr.flush()
        channel.flush()
        channel.flag[_ENDED] = 1


def _serve_blank(isolate: _Isolate) -> bool:
    """Take the assignment (the first item), load that function, report LOADED and serve."""
    assignment = _next_item(isolate.channel)
    if assignment is None:
        return False
    if assignment[0] == 0:
        return True
    _assign(isolate, *assignment[1:])
    return bool(isolate.serve(isolate))


def _assign(
    isolate: _Isolate,
    paths: tuple[str, ...],
    name: str,
    version: str,
    env: tuple[tuple[str, str], ...],
    module_name: str,
    attribute: str,
    policy: tuple[Any, ...] | None = None,
    kind: tuple[str, tuple[tuple[str, Any], ...]] = ("edge", ()),
) -> None:
    """Load the assigned function and set `isolate.serve` (and `close`) for it."""
    channel, watchdog = isolate.channel, isolate.watchdog
    sys.path[:] = paths
    sys.path_importer_cache.clear()
    _isolate_environment(dict(env))
    sys.stdout = _LogWriter(channel, "stdout")  # type: ignore[assignment]
    sys.stderr = _LogWriter(channel, "stderr")  # type: ignore[assignment]
    if policy is not None:
        _guard(name, paths, policy, watchdog)
    adapted = _load_reporting(channel, module_name, attribute, kind)
    if adapted is None:
        isolate.serve = _serve_until_stop
        return
    function = _Function(channel, watchdog, name, version, adapted.handler, kind[0])
    # Warm fully before reporting LOADED (the host switches traffic then): for an async handler
    # that includes importing asyncio and building the loop, tens of milliseconds.
    loop = _start(channel, adapted)
    if loop is False:
        isolate.serve = _serve_until_stop
        return
    channel.send((LOADED, True, "", loop is not None))
    channel.flush()
    isolate.function = function

    def close() -> None:
        try:
            _stop(adapted, loop)
        finally:
            if loop is not None:
                loop.remove_reader(channel.wake_fd)
                loop.remove_reader(channel.in_fd)
                loop.close()
            function.close()

    isolate.close = close
    if loop is not None:
        isolate.serve = _AsyncServer(channel, function, loop)
    else:
        isolate.serve = lambda isolate: _serve_sync(channel, function)


def _start(channel: Any, adapted: Adapted) -> Any:
    """The event loop an async handler runs on (None for a sync one), after the adapter's startup
    (ASGI lifespan) ran on it; False once a failed startup was reported (LOADED false)."""
    if not (_is_async(adapted.handler) or adapted.startup is not None):
        return None
    loop = _new_loop()
    if adapted.startup is not None:
        try:
            loop.run_until_complete(adapted.startup())
        except BaseException as exc:
            import traceback

            text = "".join(traceback.format_exception(exc)).rstrip("\n")
            channel.send((LOG, "error", "", text))
            channel.send((LOADED, False, f"startup failed: {type(exc).__name__}: {exc}", False))
            channel.flush()
            loop.close()
            return False
    return loop


def _stop(adapted: Adapted, loop: Any) -> None:
    """Run the adapter's shutdown (ASGI lifespan) on the loop, once the last request is answered."""
    if adapted.shutdown is None or loop is None:
        return
    try:
        loop.run_until_complete(adapted.shutdown())
    except BaseException as exc:  # logged; the isolate stops anyway
        import traceback

        print("".join(traceback.format_exception(exc)).rstrip("\n"), file=sys.stderr)


def _guard(name: str, paths: tuple[str, ...], policy: tuple[Any, ...], watchdog: _Watchdog) -> None:
    """Install the function's audit hook and take the runtime's modules out of its reach."""
    global _ctypes_loaded
    directory, net, read, write, subprocess, ctypes, protected, node_pids = policy
    bundle = os.path.realpath(directory) + os.sep
    runtime_paths = tuple(path for path in paths if not (os.path.realpath(path) + os.sep).startswith(bundle))
    _edge_guard.install(
        name,
        directory,
        (net, read, write, subprocess, ctypes),
        protected,
        node_pids,
        runtime_paths,
        watchdog.ident or 0,
    )
    _ctypes_loaded = _edge_guard.runtime_loaded_ctypes
    _edge_guard.conceal()


def _idle_wait(channel: _Channel) -> bool:
    """Wait up to _LINGER for a frame or the host's wake-up; False: park instead (nothing came, or
    the host asked for this thread and nothing is in hand)."""
    flag = channel.flag
    if flag[_PARK] or channel.pressure[0]:
        return False
    flag[_IDLE] = 1
    ready = channel.poller.poll(_LINGER_MS)
    flag[_IDLE] = 0
    if not ready:
        return False
    for fd, _ in ready:
        if fd == channel.wake_fd:  # the host asks this isolate to park (see `evict`)
            _read(fd, 8)
    # Read now: the caller then finds the items in `leftover` without polling again.
    received = channel.receive()
    return not (flag[_PARK] and not received)


def _next_item(channel: _Channel) -> tuple[Any, ...] | None:
    """The host's next item (the rest of its batch waits in `channel.leftover`); None: park."""
    while True:
        if channel.leftover:
            return channel.leftover.pop(0)
        if channel.receive():
            channel.flag[_SLEEPING] = 0
            continue
        channel.flag[_SLEEPING] = 1  # same protocol as _serve_sync
        if not _idle_wait(channel):
            return None


def _serve_until_stop(isolate: _Isolate) -> bool:
    """A function that failed to load: wait for the stop (True), parking meanwhile (False)."""
    while True:
        item = _next_item(isolate.channel)
        if item is None:
            return False
        if item[0] == 0:
            return True


# A long batch sends the replies it has every this many seconds, not only at its end.
_FLUSH_EVERY = 0.0005


def _serve_sync(channel: _Channel, function: _Function) -> bool:
    """Serve until told to stop (True) or idle for _LINGER (False: park)."""
    call, flag, receive, peek = function.call_sync, channel.flag, channel.receive, channel.peek
    flush, clock = channel.flush, time.monotonic
    while True:
        # Serve every frame there is, then answer them all with one batch of replies.
        flushed_at = clock()
        while channel.leftover or (peek(0) and receive()):
            batch, channel.leftover = channel.leftover, []
            for item in batch:
                if item[0] == 0:
                    flush()
                    return True
                call(item)
                now = clock()
                if now - flushed_at > _FLUSH_EVERY:
                    flush()
                    flushed_at = now
        flush()
        # Raise the flag, then wait on the pipe: a frame written after the last look wakes the
        # poll; the host activates a parked isolate when it writes while the flag is raised (it
        # also finds bytes left in the pipe when the guest returns), so none is missed.
        flag[_SLEEPING] = 1
        if not _idle_wait(channel):
            return False
        flag[_SLEEPING] = 0


def _new_loop() -> Any:
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


class _AsyncServer:
    """Serves an async handler on its event loop, one activation per call.

    An activation parks once no request is in hand, nothing of the function's own is scheduled
    on the loop (tasks, timers, ready callbacks) and nothing came for _LINGER, or sooner when the
    host asks; a loop with work of its own keeps its thread.
    """

    def __init__(self, channel: _Channel, function: _Function, loop: Any) -> None:
        self.channel = channel
        self.function = function
        self.loop = loop
        self.tasks: set[Any] = set()
        self.stopped = False
        self.until: Any = None
        self.timer: Any = None  # the pending `check`
        self.last_busy = time.monotonic()
        # Replies and log lines go back once per loop iteration, in one batch.
        channel.flush_soon = lambda: loop.call_soon(channel.flush)
        loop.add_reader(channel.in_fd, self.on_wake)
        loop.add_reader(channel.wake_fd, self.on_park)

    def __call__(self, isolate: _Isolate) -> bool:
        import asyncio

        loop = self.loop
        asyncio.set_event_loop(loop)  # per thread, and the thread changes between activations
        self.until = until = loop.create_future()
        self.take()  # what came while parked
        self.timer = loop.call_later(_LINGER, self.check)
        try:
            loop.run_until_complete(until)
        finally:
            self.timer.cancel()
        if self.stopped and self.tasks:
            # Requests in flight finish (each is bounded by its own deadline) before the isolate stops.
            loop.run_until_complete(asyncio.gather(*self.tasks, return_exceptions=True))
        self.channel.flush()
        return self.stopped

    def on_wake(self) -> None:
        self.take()
        if self.channel.flag[_PARK]:
            self.check()

    def on_park(self) -> None:
        _read(self.channel.wake_fd, 8)
        self.on_wake()

    def take(self) -> None:
        channel, loop = self.channel, self.loop
        # The loop reads the pipe only when it is readable: keep the flag raised, before reading.
        channel.flag[_SLEEPING] = 1
        channel.receive()
        items, channel.leftover = channel.leftover, []
        if channel.closed:
            loop.remove_reader(channel.in_fd)  # (it stays readable: end of file)
        for item in items:
            if item[0] == 0:
                self.stopped = True
                if not self.until.done():
                    self.until.set_result(None)
                return
            task = loop.create_task(self.function.call_async(item))
            self.tasks.add(task)
            task.add_done_callback(self.done)
        channel.flag[_IDLE] = 0 if self.tasks else 1

    def done(self, task: Any) -> None:
        self.tasks.discard(task)
        if not self.tasks:
            self.last_busy = time.monotonic()
            self.channel.flag[_IDLE] = 1
            if self.channel.flag[_PARK] or self.channel.pressure[0]:
                self.check()

    def check(self) -> None:
        """Park when idle for _LINGER (or asked to), else look again later."""
        until, loop, channel = self.until, self.loop, self.channel
        if until.done():
            return
        if channel.receive():
            self.take()
            if until.done():
                return
        idle = not self.tasks
        wanted = channel.flag[_PARK] or channel.pressure[0]
        if idle and (wanted or time.monotonic() - self.last_busy >= _LINGER) and self.quiet():
            until.set_result(None)
            return
        self.timer.cancel()
        self.timer = loop.call_later(_LINGER, self.check)

    def quiet(self) -> bool:
        """Nothing of the function's own waits on the loop (a task, a timer, a ready callback)."""
        import asyncio

        loop = self.loop
        return (
            not loop._ready
            and all(handle.cancelled() or handle is self.timer for handle in loop._scheduled)
            and not asyncio.all_tasks(loop)
        )
