"""The fleet's logs at the origin: lines nodes ship, read by `edge logs` (`ROUTES`).

Nodes post `LogBatch`es to `POST /v1/nodes/{node_id}/logs`; the origin keeps the most recent
lines in memory (`LogBuffer`: bounded in lines and in characters, oldest out), each with a
cursor from one increasing sequence. `GET /v1/logs` answers a `LogPage` of the lines after a
cursor that match its filters, long-polling up to `wait` seconds when there is none yet.

`LogPage.dropped` maps a node id to the lines that node could not ship (its buffer was full while
the origin was unreachable), counted since the origin started; the key "" (never a node id) counts
the lines after the reader's cursor that the origin's own bound pushed out before it asked.
Nothing here is persisted: logs are a live view, not an archive.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections import deque
from collections.abc import Iterator
from itertools import islice

from edge.control.messages import LogBatch, LogLine, LogPage
from edge.origin import tokens
from edge.origin.http import Request, Response, json_response
from edge.origin.routes import ADMIN, NODE, Route, _node_id
from edge.origin.service import ApiError, Origin

__all__ = ["MAX_LINE_CHARS", "ROUTES", "LogBuffer", "LogFilter", "buffer_of"]

# The origin's bound: 50,000 lines or 32 Mi characters of line text, whichever is reached first.
MAX_LINES = 50_000
MAX_CHARS = 32 * 1024 * 1024
# A longer line is cut here (nodes cut at the same length; this guards the origin's memory).
MAX_LINE_CHARS = 8 * 1024
# The lines one page carries at most, by default and when asked for more.
PAGE_LINES = 1000
MAX_PAGE_LINES = 5000

_ORIGIN_BOUND = ""


class LogFilter:
    """Which lines a reader wants: one function, one node (or its workers), lines since a time."""

    def __init__(self, function: str = "", node: str = "", since: float = 0.0) -> None:
        self.function = function
        self.node = node
        # A node with several workers ships as `ID-PID` per worker: `--node ID` covers them all.
        self._node_prefix = f"{node}-"
        self.since = since

    def __call__(self, line: LogLine) -> bool:
        """True when `line` is one the reader wants."""
        if self.function and line.function != self.function:
            return False
        if self.node and line.node_id != self.node and not line.node_id.startswith(self._node_prefix):
            return False
        return line.time >= self.since


class LogBuffer:
    """The most recent lines of the whole fleet, each with a cursor (1, 2, 3, ... in arrival order)."""

    def __init__(self, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS) -> None:
        self.max_lines = max_lines
        self.max_chars = max_chars
        self._lines: deque[LogLine] = deque()
        self._chars = 0
        # The cursor of self._lines[0] (when there is one), and the cursor the next line gets.
        self._first = 1
        self._next = 1
        self.dropped: dict[str, int] = {}
        self._arrived = asyncio.Event()

    @property
    def last(self) -> int:
        """The cursor of the newest line (0 before the first)."""
        return self._next - 1

    def add(self, node_id: str, batch: LogBatch) -> None:
        """Keep a node's batch (its lines tagged with `node_id`), dropping the oldest past the bound."""
        if batch.dropped:
            self.dropped[node_id] = self.dropped.get(node_id, 0) + batch.dropped
        for line in batch.lines:
            if len(line.line) > MAX_LINE_CHARS:
                line.line = line.line[:MAX_LINE_CHARS]
            line.node_id = node_id
            self._lines.append(line)
            self._chars += len(line.line)
            self._next += 1
        while self._lines and (len(self._lines) > self.max_lines or self._chars > self.max_chars):
            self._chars -= len(self._lines.popleft().line)
            self._first += 1
        if batch.lines:
            self._arrived.set()
            self._arrived = asyncio.Event()

    def _after(self, cursor: int) -> Iterator[LogLine]:
        return islice(self._lines, max(0, cursor + 1 - self._first), None)

    def page(self, after: int, wanted: LogFilter, limit: int = PAGE_LINES) -> LogPage:
        """The lines after cursor `after` that `wanted` accepts, at most `limit` of them."""
        if after > self.last:
            after = 0  # a cursor from before the origin restarted: every line kept is new
        lines: list[LogLine] = []
        cursor = max(after, self._first - 1)
        for line in self._after(after):
            cursor += 1
            if wanted(line):
                lines.append(line)
                if len(lines) == limit:
                    break
        dropped = dict(self.dropped)
        missed = self._first - 1 - after
        if after and missed > 0:
            dropped[_ORIGIN_BOUND] = missed
        return LogPage(lines=lines, next=cursor, dropped=dropped)

    async def wait_page(self, after: int, wanted: LogFilter, wait: float, limit: int = PAGE_LINES) -> LogPage:
        """Like `page`, but waits up to `wait` seconds for a line to arrive when there is none yet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        page = self.page(after, wanted, limit)
        missed = page.dropped.get(_ORIGIN_BOUND, 0)
        while not page.lines and (remaining := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
            # Only what arrived meanwhile is new; the lines up to page.next were not wanted.
            page = self.page(page.next, wanted, limit)
            missed += page.dropped.get(_ORIGIN_BOUND, 0)
        if missed:
            page.dropped[_ORIGIN_BOUND] = missed
        return page


_buffers: weakref.WeakKeyDictionary[Origin, LogBuffer] = weakref.WeakKeyDictionary()


def buffer_of(origin: Origin) -> LogBuffer:
    """The log buffer of `origin` (made on first use: an origin starts with no lines)."""
    buffer = _buffers.get(origin)
    if buffer is None:
        buffer = _buffers[origin] = LogBuffer()
    return buffer


def _query_number(request: Request, key: str, default: float, integer: bool = False) -> float:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    expected = "an integer >= 0" if integer else "a number >= 0"
    if not (math.isfinite(value) and value >= 0) or (integer and value != int(value)):
        raise ApiError(400, f"query `{key}`: Expected {expected}, got {raw!r}")
    return value


async def ship(origin: Origin, request: Request) -> Response:
    """A node's batch of log lines."""
    node_id = _node_id(request.params["node_id"], "node id")
    batch = await request.json(LogBatch)
    if batch.dropped < 0:
        raise ApiError(400, f"request body: Expected `$.dropped` >= 0, got {batch.dropped}")
    tokens.check_node(origin, request.token, node_id)
    buffer_of(origin).add(node_id, batch)
    return Response(204)


async def read(origin: Origin, request: Request) -> Response:
    """Lines after `after` for `function`, `node`, `since`; long-polls up to `wait` seconds."""
    wanted = LogFilter(
        function=request.query.get("function", ""),
        node=request.query.get("node", ""),
        since=_query_number(request, "since", 0.0),
    )
    after = int(_query_number(request, "after", 0, integer=True))
    limit = int(_query_number(request, "limit", PAGE_LINES, integer=True))
    if not 1 <= limit <= MAX_PAGE_LINES:
        raise ApiError(400, f"query `limit`: Expected 1 to {MAX_PAGE_LINES} lines, got {limit}")
    wait = min(_query_number(request, "wait", 0.0), origin.settings.max_poll_s)
    return json_response(await buffer_of(origin).wait_page(after, wanted, wait, limit))


ROUTES: list[Route] = [
    Route("POST", "/v1/nodes/{node_id}/logs", NODE, ship),
    Route("GET", "/v1/logs", ADMIN, read),
]
