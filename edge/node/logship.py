"""Shipping a worker's function and access log lines to the origin (`edge logs`).

The app calls `emit(...)` for every line and, in origin mode, starts one `LogShipper` per worker
after the function source (`LogShipper.start`) and stops it last (`LogShipper.stop`).

`emit` only appends to a bounded deque on the event loop: it never waits for the network. A task
on the worker's loop posts what has gathered to `POST /v1/nodes/{node_id}/logs` every
`INTERVAL_S` (at once again while more is waiting), each request on a daemon thread so a slow
origin holds up neither the loop nor the worker's exit. While the origin cannot be reached the
buffer keeps the newest `MAX_LINES` lines: the oldest go and are counted, and the count travels
with the next batch that gets through (`LogBatch.dropped`), so `edge logs` can say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable

import msgspec

from edge.control.client import ControlError, OriginError
from edge.control.failover import origin_client
from edge.control.messages import LogBatch, LogLine
from edge.node.settings import NodeSettings

__all__ = ["INTERVAL_S", "MAX_BODY_BYTES", "MAX_LINES", "MAX_LINE_CHARS", "LogShipper", "emit"]

log = logging.getLogger("edge.node.logship")

# A worker keeps at most this many lines while they wait to be shipped.
MAX_LINES = 10_000
# A longer line is cut to this many characters (the origin keeps no more).
MAX_LINE_CHARS = 8 * 1024
# How often gathered lines are posted, and how long a post may take.
INTERVAL_S = 0.3
POST_TIMEOUT_S = 5.0
# One post carries about this much JSON, and never more than the origin takes (1 MiB a body).
BATCH_BYTES = 256 * 1024
MAX_BODY_BYTES = 1000 * 1024
# The JSON a line takes besides its text, version and request id (field names, time, function).
_LINE_OVERHEAD = 160
# Waits between attempts while the origin cannot be reached: doubling up to the last.
RETRY_S = (0.5, 1.0, 2.0, 4.0)
# At shutdown, the last lines get this long to reach the origin.
FINAL_FLUSH_S = 1.0


class LogShipper:
    """Collects this worker's lines and posts them to the origin in batches."""

    def __init__(
        self,
        settings: NodeSettings,
        node_id: str = "",
        *,
        max_lines: int = MAX_LINES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.node_id = node_id
        self.clock = clock
        self.max_lines = max_lines
        self._lines: deque[LogLine] = deque(maxlen=max_lines)
        # Lines pushed out of the full buffer and not yet reported to the origin.
        self.dropped = 0
        self._client = origin_client(
            settings.origin,
            settings.token or None,
            timeout=POST_TIMEOUT_S,
            ca_file=settings.origin_ca or None,
            keep_alive=True,  # a post a second or so: no TLS handshake each
        )
        self._path = f"/v1/nodes/{urllib.parse.quote(node_id, safe='')}/logs"
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._failing = False

    def add(
        self, stream: str, function: str, version: str, request_id: str, line: str, trace_id: str
    ) -> None:
        """Keep one line for the next batch (the oldest kept line goes when the buffer is full)."""
        if len(self._lines) == self.max_lines:
            self.dropped += 1
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS]
        self._lines.append(
            LogLine(
                time=self.clock(),
                function=function,
                version=version,
                stream=stream,
                request_id=request_id,
                line=line,
                trace_id=trace_id,
            )
        )

    async def start(self) -> None:
        """Called in lifespan startup (origin mode): start posting in the background."""
        if not self.node_id:
            raise ValueError("log shipper: Expected the node's id, got ''")
        self._task = asyncio.get_running_loop().create_task(self._ship_forever())

    async def stop(self) -> None:
        """Called in lifespan shutdown: ship what is left, for at most `FINAL_FLUSH_S`."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, FINAL_FLUSH_S)
        self._client.close()

    def _take(self) -> LogBatch:
        """The oldest waiting lines out of the buffer, as many as one post may carry."""
        lines: list[LogLine] = []
        size = 0
        while self._lines and (not lines or size < BATCH_BYTES):
            line = self._lines.popleft()
            lines.append(line)
            size += len(line.line) + len(line.version) + len(line.request_id) + _LINE_OVERHEAD
        return LogBatch(lines=lines, dropped=self.dropped)

    def _encode(self, batch: LogBatch) -> bytes:
        """The batch as JSON; lines that would take it past the origin's limit go back to the buffer."""
        body = msgspec.json.encode(batch)
        while len(body) > MAX_BODY_BYTES and len(batch.lines) > 1:
            # Escaping made it larger than estimated: the newer half waits for the next post.
            half = len(batch.lines) // 2
            self._lines.extendleft(reversed(batch.lines[half:]))
            del batch.lines[half:]
            body = msgspec.json.encode(batch)
        return body

    def _put_back(self, batch: LogBatch) -> None:
        """A batch that did not get through goes back in front, as much as fits: it is the oldest."""
        room = self.max_lines - len(self._lines)
        kept = batch.lines[len(batch.lines) - room :] if room > 0 else []
        self.dropped += len(batch.lines) - len(kept)
        self._lines.extendleft(reversed(kept))

    async def _ship_once(self) -> bool:
        """Post one batch; True when the origin took it (or refused it for good)."""
        batch = self._take()
        try:
            await _on_thread(self._post, self._encode(batch))
        except OriginError as exc:
            if exc.status in (400, 413):
                # This batch will never be taken: count it as dropped rather than retry forever.
                log.warning("the origin refused %d log lines: %s", len(batch.lines), exc)
                self.dropped += len(batch.lines)
                return True
            self._failed(batch, str(exc))
            return False
        except ControlError as exc:
            self._failed(batch, str(exc))
            return False
        except asyncio.CancelledError:
            self._put_back(batch)  # (the post may still arrive: a line twice beats a line lost)
            raise
        self.dropped -= batch.dropped
        if self._failing:
            self._failing = False
            log.info("shipping log lines to the origin again")
        return True

    def _failed(self, batch: LogBatch, reason: str) -> None:
        self._put_back(batch)
        if not self._failing:
            self._failing = True
            log.warning(
                "cannot ship log lines to the origin (%s); keeping the newest %d", reason, self.max_lines
            )

    def _post(self, body: bytes) -> None:
        self._client.request("POST", self._path, body)

    async def _ship_forever(self) -> None:
        failures = 0
        while not self._closing.is_set():
            if not (self._lines or self.dropped):
                await self._pause(INTERVAL_S)
            elif await self._ship_once():
                failures = 0
                if not self._lines:
                    await self._pause(INTERVAL_S)
            else:
                await self._pause(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1
        # Shutting down: what is left goes now, while the origin takes it.
        while (self._lines or self.dropped) and await self._ship_once():
            pass

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less when the shipper is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)


async def _on_thread(function: Callable[[bytes], None], body: bytes) -> None:
    """Run a blocking call on a daemon thread, so a hung origin never holds up the worker's exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            function(body)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody wants the answer
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="edge-logship", daemon=True).start()
    await future


# The worker's shipper, once started (None: lines are not shipped, e.g. local mode).
shipper: LogShipper | None = None


def emit(stream: str, function: str, version: str, request_id: str, line: str, trace_id: str = "") -> None:
    """Hand one line to the worker's shipper, if there is one (called per line: keep it cheap)."""
    if shipper is not None:
        shipper.add(stream, function, version, request_id, line, trace_id)
