"""The main of a process isolate: a spawned child that confines itself, then serves one function.

The host (isolates/backends/process.py) starts this module with `python -I -S -c ...` through
`subprocess.Popen` (no fork of the host's Python, no `preexec_fn`) as the node's user, with a
clean environment. The child imports the guest runtime, waits blank for an assignment (it
joins the memory cgroup the host made for it while blank; the host sets the limit on
assignment), then confines itself (_edge_confine: as root its own mount view, /tmp and procfs,
rlimits, its own uid, `PR_SET_NO_NEW_PRIVS`, the parent-death signal again since a credential
change clears it, Landlock), imports the function and serves it.

Frames on both pipes: a 4-byte little-endian length, then a marshal-encoded tuple of messages
(the same messages as the interpreter backend's queues, see _edge_runtime).
Host -> child: (-1, paths, name, version, env, module, attribute, confinement), then requests
(seq, method, path, query, headers, body, request_id, deadline) and (0,) to stop.
Child -> host: RESPONSE, ERROR, STREAM, CHUNK, LOG and LOADED messages (a streamed response's
pieces go out one frame each as a sync handler makes them, see _Function._stream_sync).
Standard library only.
"""

from __future__ import annotations

import marshal
import os
import sys
import threading
import time

from _edge_confine import confine, load_libc, parent_death_signal
from _edge_runtime import (
    ERROR,
    LOADED,
    LOG,
    _Function,
    _isolate_environment,
    _load_reporting,
    _LogWriter,
    _request_id,
    _start,
    _stop,
    _Watchdog,
    warm_up,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The exit status of a child that ran out of memory under RLIMIT_AS (the host then says 503).
EXIT_MEMORY = 75
_HEADER = 4


class _PipeChannel:
    """The reply side: what `_Function` and `_LogWriter` send, framed onto the reply pipe.

    Messages from the serving thread wait in `outbox` until `flush` writes them as one frame;
    other threads (the function's own) write theirs at once. A lock keeps frames whole.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.outbox: list[tuple[Any, ...]] = []
        self.flush_soon: Any = None
        self._lock = threading.Lock()
        self._serving_thread = threading.get_ident()

    def send(self, message: tuple[Any, ...]) -> None:
        if threading.get_ident() != self._serving_thread:
            self._write((message,))
            return
        if not self.outbox and self.flush_soon is not None:
            self.flush_soon()
        self.outbox.append(message)

    def flush(self) -> None:
        if self.outbox:
            batch, self.outbox = tuple(self.outbox), []
            self._write(batch)

    def _write(self, batch: tuple[tuple[Any, ...], ...]) -> None:
        data = marshal.dumps(batch)
        frame = memoryview(len(data).to_bytes(_HEADER, "little") + data)
        with self._lock:
            while frame:
                frame = frame[os.write(self.fd, frame) :]


class _Reader:
    """The request side: frames from the host, decoded into items."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        # Items that came with the assignment's frame, handed out before reading again.
        self.pending: list[tuple[Any, ...]] = []

    def read(self) -> list[tuple[Any, ...]] | None:
        """The items of every whole frame one read brings (maybe none); None once the host is gone."""
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return None
        buffer = self._buffer
        buffer += chunk
        items: list[tuple[Any, ...]] = []
        start = 0
        while len(buffer) - start >= _HEADER:
            size = int.from_bytes(buffer[start : start + _HEADER], "little")
            end = start + _HEADER + size
            if len(buffer) < end:
                break
            items.extend(marshal.loads(buffer[start + _HEADER : end]))
            start = end
        del buffer[:start]
        return items

    def next_items(self) -> list[tuple[Any, ...]] | None:
        """Block until at least one item arrives; None once the host is gone."""
        if self.pending:
            items, self.pending = self.pending, []
            return items
        while True:
            items = self.read()
            if items is None or items:
                return items


class _ChildFunction(_Function):
    """A MemoryError under RLIMIT_AS answers 503 naming the limit; the host then replaces the child."""

    memory_message = ""
    out_of_memory = False

    def failure(self, seq: int, exc: BaseException) -> tuple[Any, ...]:
        if isinstance(exc, MemoryError) and self.memory_message:
            self.out_of_memory = True
            return (ERROR, seq, 503, self.memory_message)
        return super().failure(seq, exc)


# A long batch sends the replies it has every this many seconds, not only at its end.
_FLUSH_EVERY = 0.0005


def _serve_sync(reader: _Reader, channel: _PipeChannel, function: _ChildFunction) -> None:
    call, flush, clock = function.call_sync, channel.flush, time.monotonic
    while True:
        items = reader.next_items()
        if items is None:
            return
        flushed_at = clock()
        for item in items:
            if item[0] == 0:
                return
            call(item)
            if function.out_of_memory:
                flush()
                os._exit(EXIT_MEMORY)
            now = clock()
            if now - flushed_at > _FLUSH_EVERY:
                flush()
                flushed_at = now
        flush()


def _serve_async(reader: _Reader, channel: _PipeChannel, function: _ChildFunction, loop: Any) -> None:
    import asyncio

    stopped = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()

    def on_readable() -> None:
        items = reader.read()
        dispatch(items if items is not None else [(0,)])

    def dispatch(items: list[tuple[Any, ...]]) -> None:
        for item in items:
            if item[0] == 0:
                if not stopped.done():
                    stopped.set_result(None)
                return
            task = loop.create_task(function.call_async(item))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def flush() -> None:
        channel.flush()
        if function.out_of_memory:
            os._exit(EXIT_MEMORY)

    channel.flush_soon = lambda: loop.call_soon(flush)
    loop.add_reader(reader.fd, on_readable)
    if reader.pending:
        loop.call_soon(dispatch, reader.pending)
        reader.pending = []
    try:
        loop.run_until_complete(stopped)
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    finally:
        channel.flush_soon = None
        channel.flush()
        loop.remove_reader(reader.fd)


def main() -> None:
    """argv: request fd, reply fd, the host's pid, modules to preload (comma-separated), cgroup."""
    in_fd, out_fd, parent = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    parent_death_signal(load_libc(), parent)
    # json always: most replies are dicts, and a child's ≈ 11 MiB hardly notice it (the node's
    # warm_imports leave it out for the sake of interpreter isolates, ≈ 3 MiB each).
    warm_up(("json", *filter(None, sys.argv[4].split(","))))
    if sys.argv[5]:
        # Joined while blank, off the cold-start path; the host sets the limit on assignment.
        with open(os.path.join(sys.argv[5], "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    reader = _Reader(in_fd)
    items = reader.next_items()
    if not items or items[0][0] != -1:
        return
    _, paths, name, version, env, module_name, attribute, config, kind = items[0]
    channel = _PipeChannel(out_fd)
    try:
        notes = confine(config, parent)
    except OSError as exc:
        channel.send((LOADED, False, f"cannot confine the process: {exc}", False))
        channel.flush()
        return
    for note in notes:
        channel.send((LOG, "stderr", "", f"process isolate: {note}"))
    sys.path[:] = paths
    sys.path_importer_cache.clear()
    _isolate_environment(dict(env))
    sys.stdout = _LogWriter(channel, "stdout")  # type: ignore[assignment]
    sys.stderr = _LogWriter(channel, "stderr")  # type: ignore[assignment]
    watchdog = _Watchdog(threading.get_ident())
    loop = None
    adapted = None
    function = None
    try:
        adapted = _load_reporting(channel, module_name, attribute, kind)
        if adapted is None:
            return
        function = _ChildFunction(channel, watchdog, name, version, adapted.handler, kind[0])
        if not config["cgroup"]:
            function.memory_message = (
                f"function {name} exceeded its memory limit of {config['memory_mb']} MiB"
            )
        loop = _start(channel, adapted)
        if loop is False:
            loop = None
            return
        channel.send((LOADED, True, "", loop is not None))
        channel.flush()
        reader.pending = items[1:]
        if loop is not None:
            _serve_async(reader, channel, function, loop)
        else:
            _serve_sync(reader, channel, function)
    finally:
        if adapted is not None:
            _stop(adapted, loop)
        if loop is not None:
            loop.close()
        if function is not None:
            function.close()
        _request_id.set("")
        watchdog.stop()
        sys.stdout.flush()
        sys.stderr.flush()
        channel.flush()
