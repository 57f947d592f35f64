"""Revalidating a stale entry (RFC 9111 §4.3) and invalidating after unsafe methods (§4.4)."""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import formatdate
from urllib.parse import urljoin, urlsplit

from cache._dates import http_date
from cache._directives import opaque_tag
from cache._entry import Entry
from cache._request import CONDITIONAL_FIELDS
from cache.messages import Headers

__all__ = ["invalidated_urls", "merged_headers", "revalidation_headers", "selects"]

# RFC 9111 §3.2: fields a 304 does not update: Content-Length, and those that describe the stored
# body itself (the RFC allows keeping what the stored response's integrity needs). Content-Type is
# among them because a 304 has no content: a type on it is a default, not the representation's.
_KEPT = frozenset(
    {b"content-length", b"content-encoding", b"content-range", b"content-type", b"transfer-encoding"}
)


def revalidation_headers(request_headers: Sequence[tuple[bytes, bytes]], entry: Entry) -> Headers:
    """The client's request headers without its own conditions and ranges, plus the entry's validators."""
    return [pair for pair in request_headers if pair[0] not in CONDITIONAL_FIELDS] + entry.validators


def selects(entry: Entry, headers: Headers, now: float) -> bool:
    """True when a 304 answers for `entry` (RFC 9111 §4.3.4): no validator of it contradicts the entry.

    The 304 answers a request made for this one entry, so a 304 without validators selects it too.
    """
    for name, value in headers:
        if name == b"etag":
            return entry.etag is not None and opaque_tag(value) == entry.etag
    for name, value in headers:
        if name == b"last-modified" and entry.etag is None:
            return entry.last_modified is not None and http_date(value, now) == entry.last_modified
    return True


def merged_headers(entry: Entry, headers: Headers, now: float) -> Headers:
    """The entry's headers updated by a 304's (RFC 9111 §3.2): its fields replace the stored ones.

    A 304 without Date gets one for `now` (RFC 9110 §6.6.1), or the stored Date would age it at once.
    """
    update = [pair for pair in headers if pair[0] not in _KEPT]
    if not any(name == b"date" for name, _ in update):
        update.append((b"date", formatdate(now, usegmt=True).encode("ascii")))
    replaced = {name for name, _ in update}
    return [pair for pair in entry.headers if pair[0] not in replaced] + update


def invalidated_urls(
    path: str, query: bytes, request_headers: Sequence[tuple[bytes, bytes]], response_headers: Headers
) -> list[tuple[str, bytes]]:
    """The (path, query) pairs an unsafe request's success invalidates (RFC 9111 §4.4).

    The target URI, and the Location and Content-Location URIs resolved against it when they
    have the target's origin: a relative reference, or an absolute http(s) URI whose authority
    is the request's Host (the node does not know whether TLS ended in front of it, so the
    scheme is not compared).
    """
    urls = [(path, query)]
    host = next((value.decode("latin-1").lower() for name, value in request_headers if name == b"host"), None)
    base = path + ("?" + query.decode("latin-1") if query else "")
    for name, value in response_headers:
        if name not in (b"location", b"content-location"):
            continue
        reference = value.decode("latin-1").strip()
        try:
            parts = urlsplit(urljoin(base, reference))
        except ValueError:
            continue  # not a URI reference: nothing to invalidate
        if parts.netloc and (parts.scheme not in ("http", "https") or parts.netloc.lower() != host):
            continue
        urls.append((parts.path or "/", parts.query.encode("latin-1")))
    return urls
