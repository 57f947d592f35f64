"""W3C Trace Context: the trace id of a request's `traceparent` header (www.w3.org/TR/trace-context)."""

from __future__ import annotations

import re

__all__ = ["trace_id_of"]

# version-traceid-parentid-flags, lowercase hex; a later version may append "-..." fields.
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.S)
_ZERO_TRACE = b"0" * 32
_ZERO_PARENT = b"0" * 16


def trace_id_of(traceparent: bytes) -> str:
    """The trace id of a valid `traceparent` value, else "" (the header is then ignored, as the spec says)."""
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return ""
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return ""
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return ""
    return trace_id.decode()
