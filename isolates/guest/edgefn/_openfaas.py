"""kind = "openfaas": an OpenFaaS `python3-http` template's `handle(event, context)`.

As the template's index.py (openfaas/python-flask-template, template/python3-http) does:
`event.body` (bytes), `event.headers`, `event.method`, `event.query`, `event.path`;
`context.hostname` ($HOSTNAME, else "localhost"); the result goes through `format_response`:
None is an empty 200; a dict gives `statusCode` (default 200), `body` (missing: empty; a dict:
JSON; anything else: `str(body)`) and `headers` (a dict or a list of (name, value) pairs); any
other value is answered as Flask would (str: text/html; list: JSON).

Where a node differs from the template:
- `event.headers` is the case-insensitive `edgefn.Headers` (iterating gives names; `.getall(name)`
  for repeated headers) rather than werkzeug's; `event.query` has the first value per name and
  `.getlist(name)`, like werkzeug's MultiDict for reading;
- `event.path` is the whole request path (the function's route prefix, e.g. `/<name>`, included;
  OpenFaaS's gateway strips `/function/<name>`);
- a bytes `body` is sent as is (the template would send `str(body)`, i.e. "b'...'") with
  `application/octet-stream` unless headers say otherwise;
- repeated names in a list of headers are all sent (Flask keeps the last), so Set-Cookie works;
- every method reaches `handle` (the template's routes take GET, PUT, POST, PATCH and DELETE);
- an `async def handle` is awaited; a tuple or an `edgefn.Response` is answered as an edge handler's.
"""

from __future__ import annotations

import json
import os

from . import Response
from ._kinds import Adapted, guess, mismatch, positional

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from typing import Any

    from . import Headers, Request

__all__ = ["Context", "Event", "Query", "adapt"]

_HTML = ("content-type", "text/html; charset=utf-8")
_JSON = ("content-type", "application/json")
_BINARY = ("content-type", "application/octet-stream")
_CO_COROUTINE = 0x80


class Query(dict[str, str]):
    """The query string: the first value per name, and `getlist(name)` for all of them."""

    __slots__ = ("_lists",)

    def __init__(self, lists: dict[str, list[str]]) -> None:
        super().__init__({name: values[0] for name, values in lists.items()})
        self._lists = lists

    def getlist(self, name: str) -> list[str]:
        """Every value of `name`, in order ([] when absent)."""
        return list(self._lists.get(name, ()))


class Event:
    """What `handle` gets as `event`: body, headers, method, query and path of the request."""

    __slots__ = ("_query", "_request", "body", "headers", "method", "path")

    def __init__(self, request: Request) -> None:
        self._request = request
        self.body: bytes = request.body
        self.headers: Headers = request.headers
        self.method: str = request.method
        self.path: str = request.path
        self._query: Query | None = None

    @property
    def query(self) -> Query:
        """The query string's parameters (parsed on first use)."""
        if self._query is None:
            self._query = Query(self._request.query)
        return self._query

    def __repr__(self) -> str:
        return f"Event({self.method} {self.path})"


class Context:
    """What `handle` gets as `context`: the host name, as the template's Context has it."""

    __slots__ = ("hostname",)

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname


def adapt(target: Any, options: dict[str, Any], entrypoint: str) -> Adapted:
    """`target(event, context)` as an edge handler; raises KindError when it does not take two arguments."""
    shape = positional(target)
    if shape is not None and (not shape[0] <= 2 <= shape[1] or guess(target) in ("asgi", "wsgi")):
        raise mismatch("openfaas", "handle(event, context)", target, entrypoint)
    context = Context(os.environ.get("HOSTNAME", "localhost"))
    code = getattr(target, "__code__", None)
    if code is None:
        code = getattr(type(target).__dict__.get("__call__"), "__code__", None)
    if code is not None and code.co_flags & _CO_COROUTINE:

        async def serve_async(request: Request) -> Any:
            return format_response(await target(Event(request), context))

        return Adapted(serve_async)

    def serve(request: Request) -> Any:
        return format_response(target(Event(request), context))

    return Adapted(serve)


def format_response(result: Any) -> Any:
    """The template's format_response, then what Flask makes of its value (an edge result)."""
    if result is None:
        return Response(b"", 200, [_HTML])
    if type(result) is dict:
        status = result.get("statusCode", 200)
        if type(status) is str and status.isdigit():
            status = int(status)
        headers = _headers(result.get("headers"))
        if "body" not in result:
            body, default = b"", _HTML
        elif type(result["body"]) is dict:
            # Flask's jsonify: compact JSON and a newline.
            body, default = (json.dumps(result["body"], separators=(",", ":")) + "\n").encode(), _JSON
        elif isinstance(result["body"], bytes | bytearray):
            body, default = bytes(result["body"]), _BINARY
        else:
            body, default = str(result["body"]).encode(), _HTML
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(default)
        return Response(body, status, headers)
    if type(result) is str:
        return Response(result.encode(), 200, [_HTML])
    if type(result) is bytes:
        return Response(result, 200, [_HTML])
    if type(result) is list:
        return Response((json.dumps(result, separators=(",", ":")) + "\n").encode(), 200, [_JSON])
    return result


def _headers(headers: Any) -> list[tuple[str, str]]:
    if not headers:
        return []
    if isinstance(headers, dict):
        return [(str(name), str(value)) for name, value in headers.items()]
    try:
        return [(str(name), str(value)) for name, value in headers]
    except (TypeError, ValueError):
        raise TypeError(
            f"openfaas handle returned headers {headers!r}; expected a dict or a list of (name, value) pairs"
        ) from None
