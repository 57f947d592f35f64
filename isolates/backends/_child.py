"""One spawned child process of the process backend, seen from the host: pipes, framing, exit.

The child is started with `subprocess.Popen` (its C fork+exec path, no `preexec_fn`), so no
Python code runs between fork and exec in a process that has subinterpreters. Its end is
noticed through a pidfd the event loop watches; every child is reaped.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import marshal
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from isolates.guest import GUEST_DIR

__all__ = ["EXIT_MEMORY", "Child", "ProtocolError", "describe_exit"]

log = logging.getLogger("edge.isolates")

# Must match isolates/guest/_edge_child.py.
EXIT_MEMORY = 75
_HEADER = 4
# A reply frame larger than this is taken for a misbehaving child (the node keeps it in memory).
_MAX_FRAME = 256 << 20
_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20
_MAIN = "import sys; sys.path.insert(0, sys.argv.pop(1)); import _edge_child; _edge_child.main()"
# The child's whole initial environment (/proc/<pid>/environ): nothing of the node's.
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class ProtocolError(Exception):
    """The child sent something that is not a frame of well-formed messages."""


def describe_exit(returncode: int) -> str:
    """'exit status 3' or 'signal SIGSEGV'."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
        return f"signal {-returncode}"
    return f"exit status {returncode}"


def _python() -> str:
    # The real interpreter, not a venv's launcher: the child runs with -I -S (no site-packages).
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


class Child:
    """A started child: write frames to it, get its message batches and its exit through callbacks."""

    def __init__(
        self,
        loop: Any,
        preload: tuple[str, ...],
        cgroup: str,
        on_messages: Callable[[Child, tuple[tuple[Any, ...], ...]], None],
        on_exit: Callable[[Child], None],
    ) -> None:
        self._loop = loop
        self.on_messages = on_messages
        self.on_exit = on_exit
        request_read, self._to_child = os.pipe2(os.O_CLOEXEC)
        self._from_child, reply_write = os.pipe2(os.O_CLOEXEC)
        try:
            with contextlib.suppress(OSError):  # an unprivileged node may not raise the pipe size
                fcntl.fcntl(self._to_child, _F_SETPIPE_SZ, _PIPE_SIZE)
                fcntl.fcntl(self._from_child, _F_SETPIPE_SZ, _PIPE_SIZE)
            argv = [
                _python(),
                "-I",
                "-S",
                "-c",
                _MAIN,
                str(GUEST_DIR),
                str(request_read),
                str(reply_write),
                str(os.getpid()),
                ",".join(preload),
                cgroup,
            ]
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                pass_fds=(request_read, reply_write),
                env=_ENV,
                cwd="/",
            )
        except BaseException:
            for fd in (self._to_child, self._from_child):
                os.close(fd)
            raise
        finally:
            os.close(request_read)
            os.close(reply_write)
        self.pid = self.popen.pid
        os.set_blocking(self._to_child, False)
        os.set_blocking(self._from_child, False)
        self._pidfd = os.pidfd_open(self.pid)
        self._unsent = bytearray()
        self._received = bytearray()
        self._malformed = False  # it sent a frame that was refused: nothing more is read
        self.returncode: int | None = None
        # Set by the owner: why the host killed it (so its exit is not called a crash).
        self.killed_for = ""
        # Its memory cgroup (it joins while blank: moving a task costs ~10-20 ms), or "".
        self.cgroup = cgroup
        self.memory_limited = False
        loop.add_reader(self._from_child, self._on_readable)
        loop.add_reader(self._pidfd, self._on_pidfd)

    def send(self, batch: tuple[tuple[Any, ...], ...]) -> None:
        """Write one frame (the rest waits for the pipe to drain); ignored once the child is gone."""
        if self.returncode is not None or self._to_child < 0:
            return
        data = marshal.dumps(batch)
        frame = len(data).to_bytes(_HEADER, "little") + data
        if self._unsent:
            self._unsent += frame
            return
        try:
            written = os.write(self._to_child, frame)
        except BlockingIOError:
            written = 0
        except BrokenPipeError:
            return  # it is exiting; its pidfd says so next
        if written < len(frame):
            self._unsent += frame[written:]
            self._loop.add_writer(self._to_child, self._on_writable)

    def _on_writable(self) -> None:
        try:
            written = os.write(self._to_child, self._unsent)
        except BlockingIOError:
            return
        except BrokenPipeError:
            written = len(self._unsent)
        del self._unsent[:written]
        if not self._unsent:
            self._loop.remove_writer(self._to_child)

    def _on_readable(self) -> None:
        received = self._received
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                self._loop.remove_reader(self._from_child)
                break
            received += chunk
        if self._malformed:
            # Nothing after a malformed frame is trusted, even a well-formed reply that was still
            # in the pipe when the frame before it was refused.
            received.clear()
            return
        start = 0
        try:
            while len(received) - start >= _HEADER:
                size = int.from_bytes(received[start : start + _HEADER], "little")
                if size > _MAX_FRAME:
                    raise ProtocolError(f"a reply frame of {size} bytes")
                end = start + _HEADER + size
                if len(received) < end:
                    break
                # No code objects: what the child sends is data, and the child is not trusted.
                batch = marshal.loads(received[start + _HEADER : end], allow_code=False)
                start = end
                if type(batch) is not tuple:
                    raise ProtocolError(f"a frame of {type(batch).__name__}")
                self.on_messages(self, batch)
        except (ProtocolError, ValueError, EOFError, TypeError) as exc:
            log.error("process isolate %d: protocol error (%s); killing it", self.pid, exc)
            received.clear()
            self._malformed = True
            self.kill("protocol")
            return
        del received[:start]

    def _on_pidfd(self) -> None:
        self._loop.remove_reader(self._pidfd)
        self.returncode = self.popen.wait()
        self._on_readable()  # the replies it wrote before it ended
        self._close_fds()
        self.on_exit(self)

    def kill(self, reason: str) -> None:
        """SIGKILL it (its exit callback follows); `reason` is kept in `killed_for`."""
        if self.returncode is None:
            if not self.killed_for:
                self.killed_for = reason
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _close_fds(self) -> None:
        if self._to_child >= 0:
            if self._unsent:
                self._loop.remove_writer(self._to_child)
            self._loop.remove_reader(self._from_child)
            for fd in (self._to_child, self._from_child, self._pidfd):
                os.close(fd)
            self._to_child = self._from_child = self._pidfd = -1
