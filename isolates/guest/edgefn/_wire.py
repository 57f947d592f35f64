"""What a handler returns -> the reply message the host turns into HTTP.

Used inside isolates by the serve loop (`edgefn._wire`) and outside by `edgefn.testing`
(`isolates.guest.edgefn._wire`): standard library only, relative imports.
"""

from __future__ import annotations

from . import Response

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from typing import Any

__all__ = ["encode", "header_pairs"]

# Message kinds (isolates/backends/__init__.py has the same).
RESPONSE, ERROR, LOG, LOADED, STREAM, CHUNK = 0, 1, 2, 3, 4, 5

_TEXT = ((b"content-type", b"text/plain; charset=utf-8"),)
_BINARY = ((b"content-type", b"application/octet-stream"),)
_JSON = ((b"content-type", b"application/json"),)


def header_pairs(headers: Any) -> tuple[tuple[bytes, bytes], ...]:
    items = headers.items() if hasattr(headers, "items") else headers
    return tuple((str(k).lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in items)


def encode(seq: int, result: Any) -> tuple[Any, ...]:
    """Turn what a handler returned into a RESPONSE message; raises TypeError for anything else."""
    kind = type(result)
    if kind is str:  # the common cases first, without the checks below
        return (RESPONSE, seq, 200, _TEXT, result.encode())
    if kind is bytes:
        return (RESPONSE, seq, 200, _BINARY, result)
    status = 200
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if isinstance(result, Response):
        body, status, extra = result.body, result.status, result.headers
        headers = header_pairs(extra) if extra else ()
    elif isinstance(result, tuple) and 2 <= len(result) <= 3:
        body, status = result[0], result[1]
        headers = header_pairs(result[2]) if len(result) == 3 and result[2] else ()
    else:
        body = result
    if type(status) is not int or not 100 <= status <= 599:
        raise TypeError(f"handler returned status {status!r}; expected an int from 100 to 599")
    if isinstance(body, str):
        data, default = body.encode(), _TEXT
    elif isinstance(body, bytes | bytearray | memoryview):
        data, default = bytes(body), _BINARY
    elif isinstance(body, dict | list):
        import json

        data, default = json.dumps(body, separators=(",", ":")).encode(), _JSON
    elif body is None:
        data, default = b"", ()
    else:
        raise TypeError(
            f"handler returned {type(body).__name__}; expected str, bytes, dict, list, "
            "a (body, status[, headers]) tuple or a Response"
        )
    if default and not (headers and any(name == b"content-type" for name, _ in headers)):
        headers = default + headers
    return (RESPONSE, seq, status, headers, data)
