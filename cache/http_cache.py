"""The node's response cache: RFC 9111 for a shared cache in front of the functions.

Outcomes, reported in `x-cache`, in `cache-status` (RFC 9211, this cache's member) and in
`CacheResult.cache_status`:

- HIT: a fresh entry answered (200/206/304/416/HEAD), with `Age`; no function ran.
- STALE: a stale entry answered, within `stale-while-revalidate` (one background refresh per
  entry, however many requests arrive meanwhile), `stale-if-error` (the function raised or
  answered >= 500) or the request's `max-stale`.
- REVALIDATED: a stale entry with validators was revalidated (If-None-Match / If-Modified-Since)
  and the function answered 304: the entry was updated from the 304 and answered.
- MISS: the function ran; its response was stored when RFC 9111 allows.
- BYPASS: not eligible for lookup: not GET/HEAD, `Authorization` (unless the entry is `public`
  or has `s-maxage`), several ranges, a single range without a fresh entry, If-Match and
  If-Unmodified-Since.

Request collapsing: concurrent plain misses (GET or HEAD without conditions) for one key run ONE
invocation, led by a GET. The waiters get the leader's response when it could be stored (or is an
error, >= 500), unless it is marked `private` or `no-store`, sets a cookie not explicitly meant
for shared caches, or its `Vary` headers differ for the waiter: then each waiter invokes on its
own. Waiters get the stored copy's headers (no cookie). Hit-for-pass: once a GET's response
could not be stored, requests for that resource skip collapsing for 30 s and go straight to the
function, so dynamic content is neither shared nor serialised behind one request. If the leader is
cancelled, the waiters collapse again behind a new leader; if its invocation raises, they see the
same exception (or their stale entry, within stale-if-error). `Vary: *` responses are shared but never stored.

A streamed response (`invoke` raises `Streamed`) is neither stored nor shared: collapsed waiters
invoke on their own, the resource goes under hit-for-pass, and `handle` raises it on.

Also: HEAD is answered from GET entries but never stored; conditional misses invoke on their own;
a successful unsafe request (POST, PUT, ...) invalidates its URL and the same-origin Location and
Content-Location URLs; any purge of a function keeps responses already in flight for it from
being stored.

Concurrency: one event loop, no threads. Every check-and-set on the store and the flight table
happens without an await in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Coroutine, Sequence
from typing import Any

from cache._entry import METHOD_CLASS, X_CACHE, Entry, EntryKey, primary_key
from cache._outcome import Outcome
from cache._policy import Heuristic, cacheless, evaluate, forwardable
from cache._request import SPECIAL_HEADERS, RequestFlags
from cache._revalidation import invalidated_urls, merged_headers, revalidation_headers, selects
from cache._status import CacheStatusField
from cache._store import EntryStore, FlightKey
from cache.messages import CachedRequest, CacheResult, CacheStatus, Invoke, Response, Spawn, Streamed, Timer
from cache.settings import CacheSettings
from cache.stats import CacheStats

__all__ = ["PASS", "HttpCache", "Pass"]


class Pass:
    """The type of PASS: `lookup`'s answer for a resource that goes straight to the function."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PASS"


PASS = Pass()

_log = logging.getLogger(__name__)

_LOOKUP_METHODS = frozenset({"GET", "HEAD"})
_PASS_SECONDS = 30.0
_PASS_ENTRIES = 65_536
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Responses that leave a stale entry in place: 304 and 206 answer the client's own conditions or range.
_PARTIAL = frozenset({206, 304})


class HttpCache:
    """An in-memory HTTP cache for one node process, bounded in bytes, LRU within the bound."""

    def __init__(self, settings: CacheSettings, timer: Timer = time.time, spawn: Spawn | None = None) -> None:
        """Build an empty cache.

        Parameters
        ----------
        settings:
            Size bounds, whether the cache is enabled at all, its Cache-Status name, heuristics.
        timer:
            Wall-clock seconds (compared with `Date`/`Expires`); tests inject a fake one.
        spawn:
            Schedules background refreshes; by default an asyncio task kept until it ends.
        """
        self.settings = settings
        self.stats = CacheStats()
        self._enabled = settings.enabled
        self._timer = timer
        self._spawn: Spawn = spawn if spawn is not None else self._create_task
        self._store = EntryStore(settings.max_bytes, settings.max_object_bytes, self.stats)
        self._status = CacheStatusField(settings.name)
        self._hit_prefix = self._status.hit_prefix
        self._heuristic = Heuristic(settings.heuristic_fraction, settings.heuristic_max_seconds)
        self._flights: dict[FlightKey, asyncio.Future[Outcome | None]] = {}
        self._refreshing: set[EntryKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._purges: dict[str, int] = {}
        # Hit-for-pass: resources whose response could not be stored skip collapsing until the
        # time noted here, so dynamic content is not serialised behind one request.
        self._passes: dict[tuple[str, str, str, str, bytes], float] = {}

    def lookup(
        self,
        function: str,
        version: str,
        method: str,
        path: str,
        query: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        names: Collection[bytes],
    ) -> CacheResult | Pass | None:
        """The hot path, without building a request or a coroutine. One of three answers:

        - a CacheResult: the fresh stored answer (HIT) to send;
        - PASS: a resource under hit-for-pass: run the function yourself and hand its response
          to `passed`;
        - None: call `handle` for everything else.

        Only plain GET/HEAD requests get the first two: none of the request headers in `names`
        (the header names, any collection) may change how the cache treats it.
        """
        if not self._enabled or method not in _LOOKUP_METHODS or not SPECIAL_HEADERS.isdisjoint(names):
            return None
        primary = (function, version, METHOD_CLASS, path, query)
        entry = self._store.get(primary, headers)
        now = self._timer()
        if entry is None:
            return PASS if self._passes.get(primary, 0.0) > now else None
        age = now - entry.born
        if age >= entry.ttl:
            return None
        self.stats.hits += 1
        return entry.hit(age, method == "HEAD", self._hit_prefix)

    def passed(
        self,
        function: str,
        version: str,
        path: str,
        query: bytes,
        default_ttl: int,
        response: Response,
        head: bool,
    ) -> CacheResult:
        """The response to send for a PASS from `lookup` (a MISS; nothing is stored here).

        A response that says something about caching ends the pass, so the next request goes
        through `handle`, which may store it.
        """
        status, headers, body = response
        self.stats.misses += 1
        if default_ttl > 0 or not cacheless(headers):
            self._passes.pop((function, version, METHOD_CLASS, path, query), None)
            headers = forwardable(headers)
        cache_status = self._status.forward(b"uri-miss", status=status, detail=b"pass")
        return CacheResult(status, [*headers, X_CACHE["MISS"], cache_status], b"" if head else body, "MISS")

    async def handle(self, request: CachedRequest, invoke: Invoke) -> CacheResult:
        """Answer a request from the cache, or by invoking the function (and storing its response).

        Parameters
        ----------
        request:
            The request reduced to plain values.
        invoke:
            Runs the function for this request; called once per `handle` call (twice when the
            function answers a revalidation with a 304 that does not match the stored entry).

        Returns the response to send, `x-cache` and `cache-status` included; raises what
        `invoke` raised unless a stale entry may stand in (stale-if-error).
        """
        method = request.method
        if not self._enabled:
            return await self._pass(request, invoke, b"bypass")
        if method not in _LOOKUP_METHODS:
            return await self._pass(request, invoke, b"method")
        headers = request.headers
        flags = None
        for name, _ in headers:
            if name in SPECIAL_HEADERS:
                flags = RequestFlags(headers)
                break
        primary = (request.function, request.version, METHOD_CLASS, request.path, request.query)
        entry = None if flags is not None and flags.passthrough else self._store.get(primary, headers)
        authorized = flags is not None and flags.authorized
        head = method == "HEAD"
        fwd = b"uri-miss"
        bypass: bytes | None = None  # why the function answers without the cache storing first
        if entry is not None:
            age = self._timer() - entry.born
            ttl = entry.ttl
            if flags is None and age < ttl:
                self.stats.hits += 1
                return entry.hit(age, head, self._hit_prefix)
            fresh = flags is not None and not flags.no_cache and flags.accepts(age, ttl)
            if authorized and not (fresh and entry.public):
                bypass = b"request"
            elif fresh:
                self.stats.hits += 1
                return entry.respond(age, head, flags, "HIT", self._status.hit(ttl - age))
            elif flags is not None and flags.range is not None and not head:
                bypass = b"stale"
            elif ttl <= age < entry.swr_until and not (
                flags is not None
                and (flags.no_cache or flags.max_age is not None or flags.min_fresh is not None)
            ):
                self.stats.stale += 1
                if method == "GET" and (flags is None or not flags.conditional):
                    self._start_refresh(entry, request, invoke)
                cache_status = self._status.stale(ttl - age, b"stale-while-revalidate")
                return entry.respond(age, head, flags, "STALE", cache_status)
            elif (
                flags is not None
                and not flags.no_cache
                and not entry.revalidate
                and flags.accepts_stale(age, ttl)
            ):
                self.stats.stale += 1
                return entry.respond(age, head, flags, "STALE", self._status.stale(ttl - age, b"max-stale"))
            fwd = b"request" if age < ttl else b"stale"
        elif flags is not None and (flags.passthrough or authorized):
            bypass = b"bypass"
        elif flags is not None and flags.range is not None and not head:
            bypass = b"uri-miss"
        elif self._store.knows(primary):
            fwd = b"vary-miss"
        if flags is not None and flags.only_if_cached:
            # RFC 9111 §5.2.1.7: nothing stored may answer, and the function must not run.
            self.stats.misses += 1
            cache_status = self._status.forward(None, detail=b"only-if-cached")
            return CacheResult(504, [X_CACHE["MISS"], cache_status], b"", "MISS")
        if bypass is not None:
            return await self._bypass(request, invoke, flags, bypass)
        if entry is None and self._passes.get(primary, 0.0) > self._timer():
            self.stats.misses += 1
            outcome = await self._invoke(request, invoke, None, flags)
            return outcome.result(head, "MISS", self._forwarded(fwd, outcome, b"pass"))
        key = entry.key if entry is not None else self._store.flight_key(primary, headers)
        return await self._fetch(key, request, invoke, entry, flags, fwd)

    def purge_path(self, function: str, path: str) -> int:
        """Remove a function's entries for one path (all versions, query strings and variants)."""
        _check_path("purge_path", path)
        self._mark_purge(function)
        return self._store.purge_path(function, path)

    def purge_prefix(self, function: str, prefix: str) -> int:
        """Remove a function's entries at or below a path prefix, segment-wise (`/a` spares `/ab`)."""
        _check_path("purge_prefix", prefix)
        self._mark_purge(function)
        return self._store.purge_prefix(function, prefix)

    def purge_tag(self, function: str, tag: str) -> int:
        """Remove a function's entries tagged `tag` by Cache-Tag or Surrogate-Key (case-sensitive)."""
        if not tag or any(char.isspace() or char == "," for char in tag):
            raise ValueError(f"purge_tag: expected one tag without spaces or commas, got {tag!r}")
        self._mark_purge(function)
        return self._store.purge_tag(function, tag)

    def purge_all(self, function: str) -> int:
        """Remove every entry of a function."""
        self._mark_purge(function)
        return self._store.purge_all(function)

    def __len__(self) -> int:
        return len(self._store)

    async def aclose(self) -> None:
        """Cancel background refreshes started by the default spawner and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fetch(
        self,
        key: FlightKey,
        request: CachedRequest,
        invoke: Invoke,
        stale: Entry | None,
        flags: RequestFlags | None,
        fwd: bytes,
    ) -> CacheResult:
        """Invoke for a miss or a stale entry, collapsed with concurrent plain misses."""
        head = request.method == "HEAD"
        alone = flags is not None and (flags.conditional or flags.no_store)
        outcome: Outcome | None = None
        collapsed = False
        while not alone and (flight := self._flights.get(key)) is not None:
            shared = await asyncio.shield(flight)
            if shared is None:
                continue  # the leader was cancelled: lead a new flight or join one
            if shared.shareable_with(request.headers):
                self.stats.collapsed += 1
                outcome, collapsed = shared, True
            else:
                alone = True
            break
        if outcome is None:
            if alone or head:
                outcome = await self._invoke(request, invoke, stale, flags)
            else:
                outcome = await self._fly(key, request, invoke, stale, flags)
        if outcome.failed and stale is not None:
            age = self._timer() - stale.born
            if age < stale.sie_until:
                self.stats.stale += 1
                cache_status = self._status.forward(
                    b"stale", status=outcome.status, ttl=stale.ttl - age, detail=b"stale-if-error"
                )
                return stale.respond(age, head, flags, "STALE", cache_status)
        status: CacheStatus = "REVALIDATED" if outcome.revalidated else "MISS"
        self.stats.misses += 1
        cache_status = self._forwarded(fwd, outcome, None, collapsed)
        entry = outcome.verdict.entry if outcome.verdict is not None else None
        if flags is not None and flags.conditional and outcome.stored and entry is not None:
            # The function answered the cache's own validators: judge the client's against the entry.
            return entry.respond(self._timer() - entry.born, head, flags, status, cache_status)
        return outcome.result(head, status, cache_status, collapsed)

    def _forwarded(
        self, fwd: bytes, outcome: Outcome, detail: bytes | None, collapsed: bool = False
    ) -> tuple[bytes, bytes]:
        """The Cache-Status member of a response the function produced."""
        if outcome.error is not None:
            return self._status.forward(fwd, detail=detail)
        entry = outcome.verdict.entry if outcome.verdict is not None else None
        ttl = entry.ttl - (self._timer() - entry.born) if outcome.stored and entry is not None else None
        status = 304 if outcome.revalidated else outcome.status
        return self._status.forward(
            fwd, status=status, stored=outcome.stored, collapsed=collapsed, ttl=ttl, detail=detail
        )

    async def _fly(
        self,
        key: FlightKey,
        request: CachedRequest,
        invoke: Invoke,
        stale: Entry | None,
        flags: RequestFlags | None,
    ) -> Outcome:
        """Invoke as the leader of a flight that concurrent misses for `key` wait on."""
        future: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            outcome = await self._invoke(request, invoke, stale, flags)
        except BaseException:
            self._land(key, future, None)  # cancelled: the waiters collapse behind a new leader
            raise
        self._land(key, future, outcome)
        return outcome

    def _land(self, key: FlightKey, future: asyncio.Future[Outcome | None], outcome: Outcome | None) -> None:
        if self._flights.get(key) is future:
            del self._flights[key]
        if not future.done():
            future.set_result(outcome)

    async def _invoke(
        self, request: CachedRequest, invoke: Invoke, stale: Entry | None, flags: RequestFlags | None
    ) -> Outcome:
        """Run the function once (revalidating `stale` when it has validators) and store its response."""
        purges = self._purges.get(request.function, 0)
        get = request.method == "GET"
        try:
            if get and stale is not None and stale.validators:
                response = await invoke(revalidation_headers(request.headers, stale))
                if response[0] == 304:
                    if selects(stale, response[1], self._timer()):
                        return self._revalidated(request, stale, response, purges, flags)
                    # RFC 9111 §4.3.4: the 304 names another representation; ask for the whole one.
                    response = await invoke()
            else:
                response = await invoke()
        except Streamed as streamed:
            if get:
                primary = (request.function, request.version, METHOD_CLASS, request.path, request.query)
                self._start_pass(primary, self._timer())
            return Outcome(0, b"", None, streamed)
        except Exception as error:
            return Outcome(0, b"", None, error)
        status = response[0]
        now = self._timer()
        may_store = (
            get
            and not (flags is not None and flags.no_store)
            and self._purges.get(request.function, 0) == purges
            # Keep the stale entry rather than caching the error it stands in for.
            and not (status >= 500 and stale is not None and now - stale.born < stale.sie_until)
        )
        verdict = evaluate(request, response, now, may_store=may_store, heuristic=self._heuristic)
        stored = verdict.entry is not None and self._store.put(verdict.entry)
        if get and status < 500:
            primary = (request.function, request.version, METHOD_CLASS, request.path, request.query)
            if verdict.entry is not None:
                self._passes.pop(primary, None)
            else:
                self._start_pass(primary, now)
        if not stored and stale is not None and may_store and status < 500 and status not in _PARTIAL:
            self._store.discard(stale.key)  # superseded by a response that may not be stored
        return Outcome(status, response[2], verdict, None, stored)

    def _revalidated(
        self,
        request: CachedRequest,
        stale: Entry,
        response: Response,
        purges: int,
        flags: RequestFlags | None,
    ) -> Outcome:
        """Update a stale entry from the function's 304 (RFC 9111 §4.3.4) and answer with it."""
        now = self._timer()
        may_store = (
            not (flags is not None and flags.no_store) and self._purges.get(request.function, 0) == purges
        )
        updated = (stale.status, merged_headers(stale, response[1], now), stale.body)
        verdict = evaluate(request, updated, now, may_store=may_store, heuristic=self._heuristic)
        if verdict.entry is not None and not verdict.entry.tags:
            verdict.entry.tags = stale.tags  # a 304 rarely repeats Cache-Tag: the purge tags stay
        stored = verdict.entry is not None and self._store.put(verdict.entry)
        if not stored and may_store:
            self._store.discard(stale.key)  # the 304 made the stored response unstorable
        self.stats.revalidated += 1
        return Outcome(stale.status, stale.body, verdict, None, stored, revalidated=True)

    def _start_pass(self, primary: tuple[str, str, str, str, bytes], now: float) -> None:
        """Put a resource under hit-for-pass (its response could not be stored)."""
        if self._passes.get(primary, 0.0) <= now:
            if len(self._passes) >= _PASS_ENTRIES:  # bounded: forget them all, they come back
                self._passes.clear()
            self._passes[primary] = now + _PASS_SECONDS

    def _start_refresh(self, entry: Entry, request: CachedRequest, invoke: Invoke) -> None:
        key = entry.key
        if key in self._refreshing or key in self._flights:
            return
        self._refreshing.add(key)
        self.stats.refreshes += 1
        self._spawn(self._refresh(key, request, invoke, entry))

    async def _refresh(self, key: EntryKey, request: CachedRequest, invoke: Invoke, stale: Entry) -> None:
        """Revalidate a stale entry in the background (stale-while-revalidate)."""
        try:
            outcome = None if key in self._flights else await self._fly(key, request, invoke, stale, None)
        finally:
            self._refreshing.discard(key)
        if outcome is not None and type(outcome.error) is Streamed:
            outcome.error.close()  # nobody sends a background refresh's stream
        elif outcome is not None and outcome.failed:
            self.stats.refresh_failures += 1
            _log.warning(
                "background refresh of %s %s failed: %s",
                request.function,
                request.path,
                outcome.error if outcome.error is not None else f"status {outcome.status}",
                exc_info=outcome.error,
            )

    async def _bypass(
        self, request: CachedRequest, invoke: Invoke, flags: RequestFlags | None, fwd: bytes
    ) -> CacheResult:
        """Invoke without looking up; store the response when request and response allow."""
        self.stats.bypass += 1
        purges = self._purges.get(request.function, 0)
        response = await invoke()
        may_store = (
            request.method == "GET"
            and not (flags is not None and (flags.no_store or flags.passthrough))
            and self._purges.get(request.function, 0) == purges
        )
        verdict = evaluate(request, response, self._timer(), may_store=may_store, heuristic=self._heuristic)
        stored = verdict.entry is not None and self._store.put(verdict.entry)
        head = request.method == "HEAD"
        cache_status = self._status.forward(fwd, status=response[0], stored=stored)
        return CacheResult(
            response[0],
            [*verdict.headers, X_CACHE["BYPASS"], cache_status],
            b"" if head else response[2],
            "BYPASS",
        )

    async def _pass(self, request: CachedRequest, invoke: Invoke, fwd: bytes) -> CacheResult:
        """Invoke a request the cache does not serve; a successful unsafe one invalidates URLs."""
        self.stats.bypass += 1
        status, headers, body = await invoke()
        if self._enabled and request.method not in _SAFE_METHODS and status < 400:
            for path, query in invalidated_urls(request.path, request.query, request.headers, headers):
                self._store.remove_resource(primary_key(request.function, request.version, path, query))
        forwarded = forwardable(headers)
        forwarded.append(X_CACHE["BYPASS"])
        forwarded.append(self._status.forward(fwd, status=status))
        return CacheResult(status, forwarded, b"" if request.method == "HEAD" else body, "BYPASS")

    def _mark_purge(self, function: str) -> None:
        """Count a purge of `function`, so that responses already in flight for it are not stored."""
        self._purges[function] = self._purges.get(function, 0) + 1

    def _create_task(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _check_path(operation: str, path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f"{operation}: expected a path starting with '/', got {path!r}")
