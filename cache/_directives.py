"""Parsers for the header values the cache reads: Cache-Control, dates, entity tags, Vary, tags."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from email.utils import mktime_tz, parsedate_tz

__all__ = [
    "MAX_DELTA",
    "delta_seconds",
    "entity_tags",
    "http_date",
    "opaque_tag",
    "parse_cache_control",
    "parse_tags",
    "parse_vary",
    "vary_values",
]

MAX_DELTA = 2**31
"""RFC 9111 §1.2.2: larger delta-seconds are clamped to this."""

_DIRECTIVE = re.compile(r"""([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*))?""")
_QUOTED_PAIR = re.compile(r"\\(.)")
_ENTITY_TAG = re.compile(rb'(?:W/)?"([^"]*)"')
_TAG_SEPARATORS = re.compile(r"[,\s]+")


def parse_cache_control(value: bytes) -> dict[str, str | None]:
    """Cache-Control directives by lowercase name; the first occurrence of a directive wins."""
    directives: dict[str, str | None] = {}
    for match in _DIRECTIVE.finditer(value.decode("latin-1")):
        name = match.group(1).lower()
        if name in directives:
            continue
        argument = match.group(2)
        if argument is not None and argument.startswith('"'):
            argument = _QUOTED_PAIR.sub(r"\1", argument[1:-1])
        directives[name] = argument
    return directives


def delta_seconds(argument: str | None) -> int | None:
    """A directive's delta-seconds, clamped to `MAX_DELTA`; None when missing or not digits."""
    if argument is None or not argument.isdigit() or not argument.isascii():
        return None
    return min(int(argument), MAX_DELTA)


def http_date(value: bytes) -> float | None:
    """Seconds since the epoch for an HTTP date (IMF-fixdate, RFC 850, asctime); None if invalid."""
    parsed = parsedate_tz(value.decode("latin-1"))
    return None if parsed is None else float(mktime_tz(parsed))


def opaque_tag(value: bytes) -> bytes:
    """An entity tag without its weakness mark and quotes, for weak comparison (RFC 9110 §8.8.3.2)."""
    match = _ENTITY_TAG.search(value)
    if match is not None:
        return match.group(1)
    value = value.strip()
    return value[2:] if value.startswith(b"W/") else value


def entity_tags(value: bytes) -> frozenset[bytes]:
    """The opaque tags listed in an If-None-Match value (`*` is handled by the caller)."""
    tags = _ENTITY_TAG.findall(value)
    if tags:
        return frozenset(tags)
    return frozenset(opaque_tag(part) for part in value.split(b",") if part.strip())


def parse_vary(values: Iterable[bytes]) -> tuple[bytes, ...] | None:
    """The sorted, lowercase request header names a response varies on; None for `Vary: *`."""
    names: set[bytes] = set()
    for value in values:
        for part in value.split(b","):
            name = part.strip().lower()
            if name == b"*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def vary_values(names: tuple[bytes, ...], headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, ...]:
    """The request's values for the varied header names, repeated fields joined by commas."""
    if not names:
        return ()
    return tuple(b",".join([value.strip() for name, value in headers if name == wanted]) for wanted in names)


def parse_tags(values: Iterable[bytes]) -> tuple[str, ...]:
    """Purge tags from Cache-Tag / Surrogate-Key values, separated by commas and/or spaces."""
    tags: dict[str, None] = {}
    for value in values:
        for tag in _TAG_SEPARATORS.split(value.decode("latin-1")):
            if tag:
                tags[tag] = None
    return tuple(tags)
