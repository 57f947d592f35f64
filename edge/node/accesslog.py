"""The node's access log: one JSON line per request on the `edge.access` logger, shipped too.

A logging record per request costs ~15 us (a LogRecord, a format, a write and a flush): more than
a third of a hello request. So a request only appends one `AccessLine` to a batch; the batch is
encoded with msgspec and written as ONE record (its lines joined by newlines) at most
`FLUSH_AFTER_S` later, or as soon as it holds `MAX_BATCH` lines, and at shutdown. Each line also
goes to the log shipper (`logship.emit("access", ...)`) when there is one (origin mode).

The logger writes the bare JSON lines (its own handler, format `%(message)s`, not propagated), so
`edge node 2>&1 | grep '^{'` or journald's `MESSAGE` is JSON. It logs at INFO: a `log_level`
above info, or `access_log = false`, turns it off (then a request appends nothing).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import msgspec

from edge.node import logship

__all__ = ["FLUSH_AFTER_S", "MAX_BATCH", "AccessLine", "AccessLog", "access_logger"]

# A line waits at most this long for the write of its batch, which holds at most MAX_BATCH lines.
FLUSH_AFTER_S = 0.1
MAX_BATCH = 256

_logger = logging.getLogger("edge.access")


def access_logger() -> logging.Logger:
    """`edge.access`, writing bare JSON lines to stderr (set up once per process)."""
    if not _logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _logger.addHandler(handler)
        _logger.propagate = False
    return _logger


class AccessLine(msgspec.Struct, gc=False):
    """One request, as its access-log line shows it (the field order is the JSON key order).

    `time`: seconds since the epoch when the answer was sent; `cache`: HIT, STALE, MISS, BYPASS
    (the cache's outcome), PASS (the request went straight to the function) or "-" (no cache:
    disabled, an error before it, the invoke API); `cold`: the first request its isolate served;
    `bytes`: the response body's size; `function`/`version` are "" for a path no function serves.
    """

    time: float
    function: str
    version: str
    method: str
    path: str
    status: int
    duration_ms: float
    cold: bool
    cache: str
    request_id: str
    bytes: int
    trace_id: str
    client: str


class AccessLog:
    """Batches this worker's access lines; `add` is called per request on the event loop."""

    def __init__(self, logger: logging.Logger | None = None, enabled: bool = True) -> None:
        self.logger = logger or access_logger()
        # Off: the app does not even build lines.
        self.enabled = enabled and self.logger.isEnabledFor(logging.INFO)
        self._batch: list[AccessLine] = []
        self._timer: asyncio.TimerHandle | None = None
        self._encoder = msgspec.json.Encoder()
        # monotonic() + offset = time.time(): the request path reads one clock, not two.
        self.wall_offset = time.time() - time.monotonic()

    def add(self, line: AccessLine) -> None:
        """Keep one line for the next write."""
        batch = self._batch
        batch.append(line)
        if len(batch) == 1:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_AFTER_S, self.flush)
        elif len(batch) >= MAX_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write (and ship) the lines kept so far."""
        batch, self._batch = self._batch, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not batch:
            return
        encoded = self._encoder.encode_lines(batch)
        self.logger.info("%s", encoded[:-1].decode())
        if logship.shipper is not None:
            for line, text in zip(batch, encoded.splitlines(), strict=True):
                logship.emit(
                    "access", line.function, line.version, line.request_id, text.decode(), line.trace_id
                )
