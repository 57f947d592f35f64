"""Parsers for the header values the cache reads: Cache-Control, Age, entity tags, Vary, tags."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import http_sf

__all__ = [
    "MAX_DELTA",
    "age_value",
    "delta_seconds",
    "entity_tags",
    "opaque_tag",
    "parse_cache_control",
    "parse_tags",
    "parse_targeted",
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


def parse_targeted(value: bytes) -> dict[str, str | None] | None:
    """A targeted cache-control field (RFC 9213 §2.2) in `parse_cache_control`'s shape.

    It is a Structured Field Dictionary: the last occurrence of a directive wins and parameters
    are ignored. None when the value is empty or does not parse: the field is then ignored.
    A value of another type than a directive expects (a decimal max-age) is kept as text, which
    `delta_seconds` refuses like any invalid delta-seconds.
    """
    try:
        parsed: Any = http_sf.parse(value, tltype="dictionary")
    except http_sf.StructuredFieldError:
        return None
    if not isinstance(parsed, dict) or not parsed:
        return None
    directives: dict[str, str | None] = {}
    for name, (member, _parameters) in parsed.items():
        if member is True:
            directives[name] = None
        elif isinstance(member, list):  # no-cache=("a" "b"): field names
            directives[name] = ", ".join(str(item) for item, _ in member)
        elif member is not False and not isinstance(member, bytes):
            directives[name] = str(member)
    return directives


def age_value(values: Sequence[bytes]) -> int | None:
    """The Age field's seconds: the first member of a list-valued Age; None when invalid (RFC 9111 §5.1)."""
    if not values:
        return None
    return delta_seconds(values[0].split(b",", 1)[0].strip(b" \t").decode("latin-1"))


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


# Request fields whose values are case-insensitive tokens (content codings, charsets, language
# tags, media types: RFC 9110 §8.4.1, §12.5): their variants are compared without case or spaces.
_CASELESS = frozenset({b"accept", b"accept-charset", b"accept-encoding", b"accept-language"})
_SPACES = re.compile(rb"[ \t]+")
_LIST_SPACES = re.compile(rb"[ \t]*,[ \t]*")


def vary_values(names: tuple[bytes, ...], headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, ...]:
    """The request's values for the varied header names, normalised (RFC 9111 §4.1).

    Repeated fields are joined by commas and spaces around list commas dropped; the `_CASELESS`
    fields are lowercased and lose every space (`gzip, BR` and `gzip,br` select one variant).
    """
    if not names:
        return ()
    return tuple(
        _normalised(wanted, [value for name, value in headers if name == wanted]) for wanted in names
    )


def _normalised(name: bytes, values: list[bytes]) -> bytes:
    joined = b",".join(values)
    if name in _CASELESS:
        return _SPACES.sub(b"", joined).lower()
    return _LIST_SPACES.sub(b",", joined.strip(b" \t"))


def parse_tags(values: Iterable[bytes]) -> tuple[str, ...]:
    """Purge tags from Cache-Tag / Surrogate-Key values, separated by commas and/or spaces."""
    tags: dict[str, None] = {}
    for value in values:
        for tag in _TAG_SEPARATORS.split(value.decode("latin-1")):
            if tag:
                tags[tag] = None
    return tuple(tags)
