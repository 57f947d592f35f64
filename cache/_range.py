"""One byte range of a stored body (RFC 9110 §14.1.2); several ranges go to the function."""

from __future__ import annotations

import re

__all__ = ["byte_range"]

_RANGE = re.compile(rb"bytes[ \t]*=[ \t]*(\d*)-(\d*)[ \t]*", re.IGNORECASE)


def byte_range(value: bytes, length: int) -> range | None:
    """The offsets one Range selects from `length` bytes, empty when unsatisfiable; None when the
    field is not one byte range (another unit, bad syntax: RFC 9110 §14.2 lets the server ignore it).
    """
    match = _RANGE.fullmatch(value)
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)  # the last N bytes
        return range(max(0, length - suffix), length if suffix else 0)
    first = int(first_text)
    last = int(last_text) if last_text else length - 1
    if last_text and last < first:
        return None  # invalid range-spec: the field is ignored
    if first >= length:
        return range(0)
    return range(first, min(last, length - 1) + 1)
