"""RFC 9111 for a shared cache: whether a response may be stored, for how long, and to whom it goes."""

from __future__ import annotations

from dataclasses import dataclass

from cache._dates import http_date
from cache._directives import (
    age_value,
    delta_seconds,
    opaque_tag,
    parse_cache_control,
    parse_tags,
    parse_targeted,
    parse_vary,
    vary_values,
)
from cache._entry import Entry, primary_key
from cache._request import AUTHENTICATED
from cache.messages import CachedRequest, Headers, Response

__all__ = ["HEURISTIC_STATUSES", "Heuristic", "Verdict", "cacheless", "evaluate", "forwardable"]

HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
"""RFC 9110 §15.1: statuses stored without explicit freshness (default_ttl or a heuristic)."""

_NEVER_STORED = frozenset({206, 304})
_INTERNAL = frozenset({b"x-cache", b"cache-tag", b"surrogate-key"})
# Meant for this cache, not for clients: never forwarded. `age` is recomputed (normalised on a miss).
_TAG_HEADERS = frozenset({b"cache-tag", b"surrogate-key"})
# Hop-by-hop fields (RFC 9110 §7.6.1) and the proxy's own fields (RFC 9111 §3.1): never stored.
_UNSTORED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authentication-info",
        b"age",
    }
)
# Any of these in a response needs the full evaluation (freshness, sharing, variants, tags).
_RELEVANT = frozenset(
    {
        b"cache-control",
        b"cdn-cache-control",
        b"expires",
        b"last-modified",
        b"vary",
        b"set-cookie",
        b"pragma",
        b"age",
        b"connection",
        *_INTERNAL,
    }
)
# RFC 9110 §15.4.5: the fields a 304 carries.
_NOT_MODIFIED = frozenset(
    {
        b"etag",
        b"last-modified",
        b"cache-control",
        b"cdn-cache-control",
        b"content-location",
        b"vary",
        b"expires",
        b"date",
    }
)
# Rough per-object bookkeeping so that many tiny entries still count against max_bytes.
_ENTRY_OVERHEAD = 256
_HEADER_OVERHEAD = 64


@dataclass(slots=True, frozen=True)
class Heuristic:
    """RFC 9111 §4.2.2: a fraction of the time since Last-Modified, at most `max_seconds`."""

    fraction: float
    max_seconds: int


@dataclass(slots=True)
class Verdict:
    """What the cache makes of one function response."""

    entry: Entry | None
    """The entry to store, or None when the response must not be stored."""
    shareable: bool
    """False for `private`, `no-store` or a cookie not explicitly shared: never given to another request."""
    vary: tuple[bytes, ...] | None
    """The request header names the response varies on; None for `Vary: *`."""
    vary_values: tuple[bytes, ...]
    """This request's values for `vary`."""
    headers: Headers
    """The response headers for the request that caused the invocation (cookies included)."""
    shared_headers: Headers
    """The response headers for collapsed waiters: what was stored (no cookies, no private fields)."""


def cacheless(headers: Headers) -> bool:
    """True when no response header bears on caching: no freshness, variants, cookie or tags."""
    return _RELEVANT.isdisjoint(dict(headers))


def forwardable(headers: Headers) -> Headers:
    """The headers to send downstream: no tags or x-cache, and Age only as its first valid member."""
    forwarded: Headers = []
    age_seen = False
    for pair in headers:
        name = pair[0]
        if name == b"age":
            if not age_seen and (seconds := age_value([pair[1]])) is not None:
                forwarded.append((b"age", b"%d" % seconds))
            age_seen = True
        elif name not in _INTERNAL:
            forwarded.append(pair)
    return forwarded


def evaluate(
    request: CachedRequest, response: Response, now: float, *, may_store: bool, heuristic: Heuristic
) -> Verdict:
    """Judge a response to `request`; `may_store` is False when the request forbids storing it."""
    status, headers, body = response
    if request.default_ttl <= 0 and cacheless(headers):
        # The common dynamic response: no freshness from it or the function, nothing to strip or
        # vary on, no cookie. It cannot be stored; skip the parsing below.
        return Verdict(None, True, (), (), headers, headers)
    forwarded = forwardable(headers)
    fields: dict[bytes, list[bytes]] = {}
    for name, value in forwarded:
        fields.setdefault(name, []).append(value)
    tag_values = [value for name, value in headers if name in _TAG_HEADERS]

    targeted = (
        parse_targeted(b", ".join(fields[b"cdn-cache-control"])) if b"cdn-cache-control" in fields else None
    )
    if targeted is not None:
        # RFC 9213 §2.1: a valid CDN-Cache-Control replaces Cache-Control and Expires for this cache.
        directives = targeted
    else:
        directives = (
            parse_cache_control(b",".join(fields[b"cache-control"])) if b"cache-control" in fields else {}
        )
    set_cookie = b"set-cookie" in fields
    # A cookie is stored only when the response says outright that shared caches may keep it.
    explicit = targeted is not None or "public" in directives or "s-maxage" in directives
    private = directives.get("private", "")
    unstored = set(_UNSTORED)
    for value in fields.get(b"connection", ()):
        unstored.update(part.strip().lower() for part in value.split(b","))
    if private:  # RFC 9111 §5.2.2.7: private="x" keeps field x out of shared caches only
        unstored.update(part.strip().lower().encode("latin-1") for part in private.split(","))
    if set_cookie:
        unstored.add(b"set-cookie")
    stored_headers = [pair for pair in forwarded if pair[0] not in unstored]
    shareable = not ("no-store" in directives or private is None or (set_cookie and not explicit))
    names = parse_vary(fields.get(b"vary", ()))
    values = vary_values(names, request.headers) if names else ()
    refused = Verdict(None, shareable, names, values, forwarded, stored_headers)
    if not may_store or not shareable or names is None or status < 200 or status in _NEVER_STORED:
        return refused
    # RFC 9111 §3.5: only these let a shared cache answer requests with Authorization.
    public = "public" in directives or "s-maxage" in directives or "must-revalidate" in directives
    if not public and any(name in AUTHENTICATED for name, _ in request.headers):
        return refused

    date_at = _single_date(fields.get(b"date"), now)
    last_modified_at = _single_date(fields.get(b"last-modified"), now)
    lifetime: float | None = None
    if "s-maxage" in directives:
        lifetime = delta_seconds(directives["s-maxage"]) or 0
    elif "max-age" in directives:
        lifetime = delta_seconds(directives["max-age"]) or 0
    elif targeted is None and b"expires" in fields:
        # RFC 9111 §5.3: an invalid Expires means already expired; two of them are invalid (§4.2.1).
        expires_at = _single_date(fields[b"expires"], now)
        lifetime = 0 if expires_at is None else max(0.0, expires_at - (now if date_at is None else date_at))
    no_cache = "no-cache" in directives
    if lifetime is None:
        if status not in HEURISTIC_STATUSES or (set_cookie and "public" not in directives):
            return refused
        if request.default_ttl > 0:
            lifetime = request.default_ttl
        elif last_modified_at is not None and heuristic.fraction > 0:
            since = (now if date_at is None else date_at) - last_modified_at
            lifetime = min(float(heuristic.max_seconds), max(0.0, since * heuristic.fraction))
        else:
            lifetime = 0  # e.g. bare `public`: stored only with no-cache, a validator or stale windows
    # s-maxage implies proxy-revalidate for a shared cache (RFC 9111 §5.2.2.10).
    revalidate = no_cache or any(
        name in directives for name in ("must-revalidate", "proxy-revalidate", "s-maxage")
    )
    # Explicit stale permissions in the same response stand, except beside the three that forbid
    # serving stale outright (a choice beyond RFC 5861; see cache/README.md).
    forbidden = no_cache or "must-revalidate" in directives or "proxy-revalidate" in directives
    swr = 0 if forbidden else delta_seconds(directives.get("stale-while-revalidate")) or 0
    sie = 0 if forbidden else delta_seconds(directives.get("stale-if-error")) or 0
    etag = fields.get(b"etag", [None])[0]
    last_modified = fields.get(b"last-modified", [None])[0] if last_modified_at is not None else None
    validators: Headers = []
    if etag is not None:
        validators.append((b"if-none-match", etag))
    if last_modified is not None:
        validators.append((b"if-modified-since", last_modified))
    ttl = -1.0 if no_cache else float(lifetime)
    if ttl <= 0 and not no_cache and not swr and not sie and not validators:
        return refused

    apparent_age = max(0.0, now - date_at) if date_at is not None else 0.0
    age = age_value(fields.get(b"age", ()))
    size = len(body) + _ENTRY_OVERHEAD + sum(len(n) + len(v) + _HEADER_OVERHEAD for n, v in stored_headers)
    entry = Entry(
        key=(primary_key(request.function, request.version, request.path, request.query), values),
        vary=names,
        status=status,
        headers=stored_headers,
        body=body,
        not_modified_headers=[pair for pair in stored_headers if pair[0] in _NOT_MODIFIED],
        born=now - max(apparent_age, float(age or 0)),
        ttl=ttl,
        swr_until=ttl + swr,
        sie_until=ttl + sie,
        revalidate=revalidate,
        public=public,
        etag=opaque_tag(etag) if etag is not None else None,
        strong_etag=etag if etag is not None and not etag.startswith(b"W/") else None,
        last_modified=last_modified_at,
        validators=validators,
        tags=parse_tags(tag_values),
        size=size,
    )
    return Verdict(entry, shareable, names, values, forwarded, stored_headers)


def _single_date(values: list[bytes] | None, now: float) -> float | None:
    """A singleton date field's time; None when absent, repeated or not an HTTP-date (RFC 9110 §5.6.7)."""
    if values is None or len(values) != 1:
        return None
    return http_date(values[0], now)
