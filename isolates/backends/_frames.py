"""Marshal frames over a pipe, from the event loop's side: written without blocking, read on readiness.

A frame is a 4-byte little-endian length, then `marshal.dumps` of a batch (a tuple of messages):
the framing of the guest runtime's pipes (isolates/guest/_edge_runtime.py `_Channel`) and of the
process child's (isolates/guest/_edge_child.py). `FrameWriter` writes what the pipe takes and
keeps the rest for when it is writable (`loop.add_writer`), so a 10 MB body never blocks the
loop; `FrameReader` reads what is there and decodes the whole frames, keeping a partial one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import termios
from collections.abc import Callable
from marshal import dumps, loads
from typing import Any

__all__ = ["HEADER", "FrameReader", "FrameWriter", "ProtocolError", "grow", "unread"]

HEADER = 4
# A frame larger than this is taken for a misbehaving peer (the node keeps it in memory).
MAX_FRAME = 256 << 20
_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20
_READ_SIZE = 1 << 16


class ProtocolError(Exception):
    """The peer sent something that is not a frame of well-formed messages."""


def grow(fd: int) -> None:
    """Raise a pipe's capacity to 1 MiB, so a large body goes in one write (best effort).

    Not at creation: the kernel counts a pipe's capacity against the user's pipe quota
    (fs/pipe-user-pages-soft) whether or not it is used, and thousands of isolates would exhaust
    it; only a pipe that carried a large frame is grown.
    """
    with contextlib.suppress(OSError):  # refused to an unprivileged user over the quota
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)


def unread(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")


class FrameWriter:
    """Frames into a non-blocking pipe from the event loop; what does not fit waits for writability."""

    def __init__(self, loop: Any, fd: int, on_written: Callable[[], None]) -> None:
        self._loop = loop
        self.fd = fd
        self._on_written = on_written  # called when waiting bytes went into the pipe
        self._unsent = bytearray()
        self._grown = False
        # Bytes of every frame sent so far (in the pipe, read from it, or waiting in `unsent`).
        self.total = 0

    @property
    def unsent(self) -> int:
        """Bytes waiting for the pipe to be writable."""
        return len(self._unsent)

    def send(self, batch: tuple[Any, ...]) -> None:
        """Write one frame; the part the pipe does not take goes later, in order."""
        data = dumps(batch)
        header = len(data).to_bytes(HEADER, "little")
        self.total += HEADER + len(data)
        if self._unsent:
            self._unsent += header
            self._unsent += data
            return
        written = self._write((header, data))
        if written < HEADER + len(data):
            if not self._grown:
                self._grown = True
                grow(self.fd)
                rest = (header + data)[written:]
                written = self._write((rest,))
                if written == len(rest):
                    return
                data = rest
                header = b""
            self._unsent += (header + data)[written:]
            self._loop.add_writer(self.fd, self._on_writable)

    def _write(self, buffers: tuple[bytes, ...]) -> int:
        try:
            return os.writev(self.fd, buffers)
        except BlockingIOError:
            return 0
        except BrokenPipeError:  # the read end is closed only after the guest is gone
            return sum(map(len, buffers))

    def _on_writable(self) -> None:
        written = self._write((bytes(self._unsent[:_PIPE_SIZE]),))
        del self._unsent[:written]
        if not self._unsent:
            self._loop.remove_writer(self.fd)
        if written:
            self._on_written()

    def take_unsent(self) -> bytes:
        """Remove and return the bytes not written yet (they will not be)."""
        unsent, self._unsent = bytes(self._unsent), bytearray()
        self._loop.remove_writer(self.fd)
        return unsent

    def close(self) -> None:
        """Drop what was not written and close the pipe's write end."""
        if self.fd >= 0:
            if self._unsent:
                self.take_unsent()
            os.close(self.fd)
            self.fd = -1


class FrameReader:
    """Batches from a non-blocking pipe, read when it is readable; a partial frame waits for its rest."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._received = bytearray()
        self._grown = False

    def read(self) -> list[tuple[Any, ...]]:
        """The batches of every whole frame in the pipe now; raises ProtocolError for a bad frame."""
        received = self._received
        while True:
            try:
                chunk = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not received and int.from_bytes(chunk[:HEADER], "little") + HEADER == len(chunk):
                return [_batch(memoryview(chunk)[HEADER:])]  # the usual case: one read, one frame
            received += chunk
            if len(chunk) < _READ_SIZE:
                break
            if not self._grown:  # a large frame: let the writer put it in whole next time
                self._grown = True
                grow(self.fd)
        return decode(received)


def decode(received: bytearray) -> list[tuple[Any, ...]]:
    """Remove the whole frames from the start of `received` and return their batches."""
    batches: list[tuple[Any, ...]] = []
    end, start = len(received), 0
    try:
        with memoryview(received) as view:
            while end - start >= HEADER:
                size = int.from_bytes(view[start : start + HEADER], "little")
                if size > MAX_FRAME:
                    raise ProtocolError(f"a frame of {size} bytes")
                stop = start + HEADER + size
                if stop > end:
                    break
                batches.append(_batch(view[start + HEADER : stop]))
                start = stop
    finally:
        del received[:start]
    return batches


def _batch(data: memoryview) -> tuple[Any, ...]:
    # No code objects: what a guest sends is data, and its function is not trusted.
    try:
        batch = loads(data, allow_code=False)
    except (ValueError, EOFError, TypeError) as exc:
        raise ProtocolError(f"an undecodable frame ({exc})") from exc
    if type(batch) is not tuple:
        raise ProtocolError(f"a frame of {type(batch).__name__}")
    return batch
