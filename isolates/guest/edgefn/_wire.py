"""What a handler returns -> the reply message the host turns into HTTP.

A streamed result (a generator, an async generator, or a Response whose body is an iterator or
async iterator) becomes `(STREAM, seq, status, headers, body)`: the serve loop sends the first
four fields as the STREAM message, then `body`'s pieces (each through `chunk`) as CHUNK messages.

Used inside isolates by the serve loop (`edgefn._wire`) and outside by `edgefn.testing`
(`isolates.guest.edgefn._wire`): standard library only, relative imports.
"""

from __future__ import annotations

from . import Response

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from typing import Any

__all__ = ["chunk", "encode", "header_pairs", "is_stream"]

# Message kinds (isolates/backends/__init__.py has the same).
RESPONSE, ERROR, LOG, LOADED, STREAM, CHUNK = 0, 1, 2, 3, 4, 5

_TEXT = ((b"content-type", b"text/plain; charset=utf-8"),)
_BINARY = ((b"content-type", b"application/octet-stream"),)
_JSON = ((b"content-type", b"application/json"),)


# A bare generator has no content type to go by; most yield text.
_STREAMED = _TEXT


def is_stream(body: Any) -> bool:
    """True for a body that is sent in pieces: an iterator or async iterator, not str/bytes/dict/list."""
    return hasattr(body, "__next__") or hasattr(body, "__anext__")


def chunk(piece: Any) -> bytes:
    """One streamed piece as bytes (str as UTF-8); raises TypeError naming any other type."""
    if type(piece) is bytes:
        return piece
    if isinstance(piece, str):
        return piece.encode()
    if isinstance(piece, bytes | bytearray | memoryview):
        return bytes(piece)
    raise TypeError(f"streamed response yielded {type(piece).__name__}; expected bytes or str")


def header_pairs(headers: Any) -> tuple[tuple[bytes, bytes], ...]:
    """A mapping or (name, value) pairs as lower-case latin-1 byte pairs (str taken as is, not
    str()-ed: a list comprehension without the calls is ~40% cheaper per response)."""
    items = headers.items() if hasattr(headers, "items") else headers
    return tuple(
        [
            (
                k.lower().encode("latin-1") if type(k) is str else str(k).lower().encode("latin-1"),
                v.encode("latin-1") if type(v) is str else str(v).encode("latin-1"),
            )
            for k, v in items
        ]
    )


def encode(seq: int, result: Any, lambda_shaped: Any = None) -> tuple[Any, ...]:
    """Turn what a handler returned into a RESPONSE message, or a STREAM one with its body
    iterator last; raises TypeError for anything else.

    `lambda_shaped()` (when given) is called for a bare dict with a `statusCode` key: an `edge`
    handler that looks like a Lambda handler, whose dict is sent as JSON all the same.
    """
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

        if lambda_shaped is not None and body is result and "statusCode" in body:
            lambda_shaped()
        data, default = json.dumps(body, separators=(",", ":")).encode(), _JSON
    elif body is None:
        data, default = b"", ()
    elif is_stream(body):
        if not (headers and any(name == b"content-type" for name, _ in headers)):
            headers = _STREAMED + headers
        return (STREAM, seq, status, headers, body)
    else:
        raise TypeError(
            f"handler returned {type(body).__name__}; expected str, bytes, dict, list, "
            "a (body, status[, headers]) tuple or a Response"
        )
    if default and not (headers and any(name == b"content-type" for name, _ in headers)):
        headers = default + headers
    return (RESPONSE, seq, status, headers, data)
