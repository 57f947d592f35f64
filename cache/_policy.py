"""RFC 9111 for a shared cache: whether a response may be stored, for how long, and to whom it goes."""

from __future__ import annotations

from dataclasses import dataclass

from cache._directives import (
    delta_seconds,
    http_date,
    opaque_tag,
    parse_cache_control,
    parse_tags,
    parse_vary,
    vary_values,
)
from cache._entry import Entry, primary_key
from cache.messages import CachedRequest, Headers, Response

__all__ = ["HEURISTIC_STATUSES", "INTERNAL_HEADERS", "Verdict", "cacheless", "evaluate"]

HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
"""RFC 9110 §15.1: statuses stored without explicit freshness (here: with the function's default_ttl)."""

_NEVER_STORED = frozenset({206, 304})
INTERNAL_HEADERS = frozenset({b"age", b"x-cache", b"cache-tag", b"surrogate-key"})
"""Response headers meant for this cache, not for clients: never forwarded (`age` is recomputed on hits)."""
_TAG_HEADERS = frozenset({b"cache-tag", b"surrogate-key"})
# Any of these in a response needs the full evaluation (freshness, sharing, variants, tags).
_RELEVANT = frozenset({b"cache-control", b"expires", b"vary", b"set-cookie", b"pragma", *INTERNAL_HEADERS})
_NOT_MODIFIED = frozenset({b"etag", b"last-modified", b"cache-control", b"vary", b"expires", b"date"})
# Rough per-object bookkeeping so that many tiny entries still count against max_bytes.
_ENTRY_OVERHEAD = 256
_HEADER_OVERHEAD = 64


@dataclass(slots=True)
class Verdict:
    """What the cache makes of one function response."""

    entry: Entry | None
    """The entry to store, or None when the response must not be stored."""
    shareable: bool
    """False for `private`, `no-store` or `Set-Cookie` responses: never handed to another request."""
    vary: tuple[bytes, ...] | None
    """The request header names the response varies on; None for `Vary: *`."""
    vary_values: tuple[bytes, ...]
    """This request's values for `vary`."""
    headers: Headers
    """The response headers to send, without the cache's own and the purge tags."""


def cacheless(headers: Headers) -> bool:
    """True when no response header bears on caching: no freshness, variants, cookie or tags."""
    return _RELEVANT.isdisjoint(dict(headers))


def evaluate(request: CachedRequest, response: Response, now: float, *, may_store: bool) -> Verdict:
    """Judge a response to `request`; `may_store` is False when the request forbids storing it."""
    status, headers, body = response
    if request.default_ttl <= 0 and cacheless(headers):
        # The common dynamic response: no freshness from it or the function, nothing to strip or
        # vary on, no cookie. It cannot be stored; skip the parsing below.
        return Verdict(None, True, (), (), headers)
    forwarded: Headers = []
    not_modified: Headers = []
    cache_control: list[bytes] = []
    vary: list[bytes] = []
    tag_values: list[bytes] = []
    expires = date = age = etag = last_modified = None
    set_cookie = False
    size = len(body) + _ENTRY_OVERHEAD
    for pair in headers:
        name, value = pair
        if name in INTERNAL_HEADERS:
            if name in _TAG_HEADERS:
                tag_values.append(value)
            elif name == b"age" and age is None:
                age = value
            continue
        forwarded.append(pair)
        size += len(name) + len(value) + _HEADER_OVERHEAD
        if name in _NOT_MODIFIED:
            not_modified.append(pair)
        if name == b"cache-control":
            cache_control.append(value)
        elif name == b"vary":
            vary.append(value)
        elif name == b"set-cookie":
            set_cookie = True
        elif name == b"expires" and expires is None:
            expires = value
        elif name == b"date" and date is None:
            date = value
        elif name == b"etag" and etag is None:
            etag = value
        elif name == b"last-modified" and last_modified is None:
            last_modified = value

    directives = parse_cache_control(b",".join(cache_control)) if cache_control else {}
    shareable = not ("no-store" in directives or "private" in directives or set_cookie)
    names = parse_vary(vary)
    values = vary_values(names, request.headers) if names else ()
    refused = Verdict(None, shareable, names, values, forwarded)
    if not may_store or not shareable or names is None or status < 200 or status in _NEVER_STORED:
        return refused
    public = "public" in directives or "s-maxage" in directives
    if not public and any(name == b"authorization" for name, _ in request.headers):
        return refused

    date_at = http_date(date) if date is not None else None
    lifetime: float | None = None
    if "s-maxage" in directives:
        lifetime = delta_seconds(directives["s-maxage"]) or 0
    elif "max-age" in directives:
        lifetime = delta_seconds(directives["max-age"]) or 0
    elif expires is not None:
        # An invalid Expires (e.g. "0") means already expired (RFC 9111 §5.3).
        expires_at = http_date(expires)
        lifetime = 0 if expires_at is None else max(0.0, expires_at - (now if date_at is None else date_at))
    no_cache = "no-cache" in directives
    if lifetime is None:
        if status not in HEURISTIC_STATUSES:
            return refused
        lifetime = max(request.default_ttl, 0)  # never reached for no-store/private; no-cache stays stale
    # Directives that demand revalidation outrank stale-while-revalidate and stale-if-error.
    revalidate = no_cache or "must-revalidate" in directives or "proxy-revalidate" in directives
    swr = 0 if revalidate else delta_seconds(directives.get("stale-while-revalidate")) or 0
    sie = 0 if revalidate else delta_seconds(directives.get("stale-if-error")) or 0
    ttl = -1.0 if no_cache else float(lifetime)
    if ttl <= 0 and not no_cache and not swr and not sie:
        return refused

    apparent_age = max(0.0, now - date_at) if date_at is not None else 0.0
    age_value = delta_seconds(age.decode("latin-1").strip()) if age is not None else None
    entry = Entry(
        key=(primary_key(request.function, request.version, request.path, request.query), values),
        vary=names,
        status=status,
        headers=forwarded,
        body=body,
        not_modified_headers=not_modified,
        born=now - max(apparent_age, float(age_value or 0)),
        ttl=ttl,
        swr_until=ttl + swr,
        sie_until=ttl + sie,
        public=public,
        etag=opaque_tag(etag) if etag is not None else None,
        last_modified=http_date(last_modified) if last_modified is not None else None,
        tags=parse_tags(tag_values),
        size=size,
    )
    return Verdict(entry, shareable, names, values, forwarded)
