"""The SDK a function imports: `from edgefn import Request, Response`. Standard library only."""

from __future__ import annotations

import marshal
import time

# Not collections.abc: that imports the whole collections package (≈ 0.3 MiB in every isolate).
from _collections_abc import Mapping

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

__all__ = ["Context", "Headers", "Request", "Response"]


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only request headers; repeated headers are joined with ', '."""

    __slots__ = ("_map", "_raw")

    def __init__(self, raw: tuple[tuple[bytes, bytes], ...] | bytes = ()) -> None:
        # (name, value) byte pairs, or the same marshal-encoded by the node (decoded on first use).
        self._raw = raw
        self._map: dict[str, str] | None = None

    def _pairs(self) -> tuple[tuple[bytes, bytes], ...]:
        raw = self._raw
        if isinstance(raw, bytes):
            raw = self._raw = tuple(marshal.loads(raw))
        return raw

    def _build(self) -> dict[str, str]:
        built: dict[str, str] = {}
        for name, value in self._pairs():
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            built[key] = f"{built[key]}, {text}" if key in built else text
        self._map = built
        return built

    def __getitem__(self, name: str) -> str:
        return (self._map if self._map is not None else self._build())[name.lower()]

    def __contains__(self, name: object) -> bool:
        mapping = self._map if self._map is not None else self._build()
        return isinstance(name, str) and name.lower() in mapping

    def __iter__(self) -> Iterator[str]:
        return iter(self._map if self._map is not None else self._build())

    def __len__(self) -> int:
        return len(self._map if self._map is not None else self._build())

    def getall(self, name: str) -> list[str]:
        """Every value of a repeated header, in order."""
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self._pairs() if k.lower() == key]

    def __repr__(self) -> str:
        return f"Headers({dict(self)!r})"


class Context:
    """Who is running: function name, version, request id, the deadline and the trace context."""

    __slots__ = ("_headers", "deadline", "function", "request_id", "version")

    def __init__(
        self, function: str, version: str, request_id: str, deadline: float, headers: Headers | None = None
    ) -> None:
        self.function = function
        self.version = version
        self.request_id = request_id
        self.deadline = deadline
        # The request's headers, read only when the trace context is asked for.
        self._headers = headers

    @property
    def remaining_ms(self) -> int:
        """Milliseconds left before the request times out (never negative)."""
        return max(0, int((self.deadline - time.monotonic()) * 1000))

    @property
    def traceparent(self) -> str:
        """The request's W3C `traceparent` header when it is valid, else "" (pass it on downstream)."""
        headers = self._headers
        value = headers.get("traceparent", "").strip() if headers is not None else ""
        return value if _trace_id(value) else ""

    @property
    def trace_id(self) -> str:
        """The 32-hex-digit trace id of a valid `traceparent`, else "" (the node logs it with the request)."""
        return _trace_id(self.traceparent)

    def __repr__(self) -> str:
        return f"Context(function={self.function!r}, request_id={self.request_id!r})"


_HEX = frozenset("0123456789abcdef")


def _trace_id(traceparent: str) -> str:
    """The trace id of a valid W3C traceparent (version-traceid-parentid-flags), else ""."""
    parts = traceparent.split("-")
    if len(parts) < 4 or [len(part) for part in parts[:4]] != [2, 32, 16, 2]:
        return ""
    version, trace_id, parent_id, _ = parts[:4]
    if not _HEX.issuperset("".join(parts[:4])) or version == "ff" or (version == "00" and len(parts) > 4):
        return ""
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return ""
    return trace_id


class Request:
    """One HTTP request as the handler sees it."""

    __slots__ = ("_args", "_query", "body", "client", "context", "headers", "method", "path", "query_string")

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: Headers,
        body: bytes,
        context: Context,
        client: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.context = context
        # The client's address as the node saw it: "host:port" ("" when unknown).
        self.client = client
        self._query: dict[str, list[str]] | None = None
        self._args: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string parsed into lists of values: `?a=1&a=2` gives `{"a": ["1", "2"]}`."""
        if self._query is None:
            from urllib.parse import parse_qs

            self._query = parse_qs(self.query_string, keep_blank_values=True)
        return self._query

    @property
    def args(self) -> dict[str, str]:
        """The query string with the first value per name: `?a=1&a=2` gives `{"a": "1"}`."""
        if self._args is None:
            self._args = {name: values[0] for name, values in self.query.items()}
        return self._args

    def text(self, encoding: str = "utf-8") -> str:
        """The body decoded as text."""
        return self.body.decode(encoding)

    def json(self) -> Any:
        """The body decoded as JSON; raises ValueError when it is not JSON."""
        import json

        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Request({self.method} {self.path})"


class Response:
    """An explicit response: body (str, bytes, dict or list), status and headers."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: str | bytes | dict[str, Any] | list[Any] = b"",
        status: int = 200,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = headers

    def __repr__(self) -> str:
        return f"Response(status={self.status})"
