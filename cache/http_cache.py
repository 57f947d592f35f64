"""The node's response cache: RFC 9111 for a shared cache in front of the functions.

Outcomes, reported in `x-cache` and `CacheResult.cache_status`:

- HIT: a fresh entry answered (200/304/HEAD), with `Age`; no function ran.
- STALE: a stale entry answered, within `stale-while-revalidate` (one background refresh per
  entry, however many requests arrive meanwhile) or `stale-if-error` (the function raised or
  answered >= 500).
- MISS: the function ran; its response was stored when RFC 9111 allows.
- BYPASS: not eligible for lookup: not GET/HEAD, request `no-cache`/`no-store`, `Authorization`
  (unless the entry is `public` or has `s-maxage`), ranges and If-Match/If-Unmodified-Since.

Request collapsing: concurrent plain misses (GET or HEAD without conditions) for one key run ONE
invocation, led by a GET. The waiters get the leader's response when it could be stored (or is an
error, >= 500), unless it is marked `private` or `no-store`, sets a cookie, or its `Vary` headers
differ for the waiter: then each waiter invokes on its own. Hit-for-pass: once a GET's response
could not be stored, requests for that resource skip collapsing for 30 s and go straight to the
function, so dynamic content is neither shared nor serialised behind one request. If the leader is
cancelled, the waiters collapse again behind a new leader; if its invocation raises, they see the
same exception (or their stale entry, within stale-if-error). `Vary: *` responses are shared but never stored.

A streamed response (`invoke` raises `Streamed`) is neither stored nor shared: collapsed waiters
invoke on their own, the resource goes under hit-for-pass, and `handle` raises it on.

Also: HEAD is answered from GET entries but never stored; conditional misses invoke on their own;
a successful unsafe request (POST, PUT, ...) invalidates its URL; any purge of a function keeps
responses already in flight for it from being stored.

Concurrency: one event loop, no threads. Every check-and-set on the store and the flight table
happens without an await in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from cache._directives import vary_values
from cache._entry import METHOD_CLASS, X_CACHE, Entry, EntryKey, primary_key
from cache._policy import INTERNAL_HEADERS, Verdict, cacheless, evaluate
from cache._request import SPECIAL_HEADERS, RequestFlags
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


@dataclass(slots=True)
class _Outcome:
    """One invocation's result: a judged response, or the exception the invoke raised."""

    status: int
    body: bytes
    verdict: Verdict | None
    error: Exception | None

    @property
    def failed(self) -> bool:
        """True when stale-if-error may stand in: the invoke raised or answered >= 500."""
        return (self.error is not None and type(self.error) is not Streamed) or self.status >= 500

    def shareable_with(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """True when a collapsed waiter with these request headers may receive this response.

        A response the cache could store may stand in for another request (RFC 9111 §4), and so
        may an error (the function is failing: do not send it the whole herd); dynamic content
        without freshness is produced per request.
        """
        verdict = self.verdict
        if verdict is None:
            return type(self.error) is not Streamed
        if verdict.entry is None and self.status < 500:
            return False
        if not verdict.vary:
            return True
        return vary_values(verdict.vary, headers) == verdict.vary_values

    def result(self, head: bool, status: CacheStatus) -> CacheResult:
        """The response to send; raises the invoke's exception when there is none."""
        if self.error is not None:
            raise self.error
        if self.verdict is None:
            raise RuntimeError("an outcome carries a verdict or an error, this one neither")
        return CacheResult(
            self.status, [*self.verdict.headers, X_CACHE[status]], b"" if head else self.body, status
        )


class HttpCache:
    """An in-memory HTTP cache for one node process, bounded in bytes, LRU within the bound."""

    def __init__(self, settings: CacheSettings, timer: Timer = time.time, spawn: Spawn | None = None) -> None:
        """Build an empty cache.

        Parameters
        ----------
        settings:
            Size bounds and whether the cache is enabled at all.
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
        self._flights: dict[FlightKey, asyncio.Future[_Outcome | None]] = {}
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
        return entry.respond(age, method == "HEAD", None, "HIT")

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
            headers = [pair for pair in headers if pair[0] not in INTERNAL_HEADERS]
        return CacheResult(status, [*headers, X_CACHE["MISS"]], b"" if head else body, "MISS")

    async def handle(self, request: CachedRequest, invoke: Invoke) -> CacheResult:
        """Answer a request from the cache, or by invoking the function (and storing its response).

        Parameters
        ----------
        request:
            The request reduced to plain values.
        invoke:
            Runs the function for this request; called at most once per `handle` call.

        Returns the response to send, `x-cache` included; raises what `invoke` raised unless a
        stale entry may stand in (stale-if-error).
        """
        method = request.method
        if not self._enabled or method not in _LOOKUP_METHODS:
            return await self._pass(request, invoke)
        headers = request.headers
        flags = None
        for name, _ in headers:
            if name in SPECIAL_HEADERS:
                flags = RequestFlags(headers)
                break
        if flags is not None and flags.skips_lookup:
            return await self._bypass(request, invoke, flags)
        primary = (request.function, request.version, METHOD_CLASS, request.path, request.query)
        entry = self._store.get(primary, headers)
        authorized = flags is not None and flags.authorized
        if entry is not None:
            if authorized and not entry.public:
                return await self._bypass(request, invoke, flags)
            age = self._timer() - entry.born
            if age < entry.ttl:
                self.stats.hits += 1
                return entry.respond(age, method == "HEAD", flags, "HIT")
            if authorized:
                return await self._bypass(request, invoke, flags)
            if age < entry.swr_until:
                self.stats.stale += 1
                if method == "GET" and (flags is None or not flags.conditional):
                    self._start_refresh(entry, request, invoke)
                return entry.respond(age, method == "HEAD", flags, "STALE")
        elif authorized:
            return await self._bypass(request, invoke, flags)
        if entry is None and self._passes.get(primary, 0.0) > self._timer():
            self.stats.misses += 1
            return (await self._invoke(request, invoke, None)).result(method == "HEAD", "MISS")
        key = entry.key if entry is not None else self._store.flight_key(primary, headers)
        return await self._fetch(key, request, invoke, entry, flags)

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
    ) -> CacheResult:
        """Invoke for a miss or a stale entry, collapsed with concurrent plain misses."""
        head = request.method == "HEAD"
        alone = flags is not None and flags.conditional
        outcome: _Outcome | None = None
        while not alone and (flight := self._flights.get(key)) is not None:
            shared = await asyncio.shield(flight)
            if shared is None:
                continue  # the leader was cancelled: lead a new flight or join one
            if shared.shareable_with(request.headers):
                self.stats.collapsed += 1
                outcome = shared
            else:
                alone = True
            break
        if outcome is None:
            if alone or head:
                outcome = await self._invoke(request, invoke, stale)
            else:
                outcome = await self._fly(key, request, invoke, stale)
        if outcome.failed and stale is not None:
            age = self._timer() - stale.born
            if age < stale.sie_until:
                self.stats.stale += 1
                return stale.respond(age, head, flags, "STALE")
        self.stats.misses += 1
        return outcome.result(head, "MISS")

    async def _fly(
        self, key: FlightKey, request: CachedRequest, invoke: Invoke, stale: Entry | None
    ) -> _Outcome:
        """Invoke as the leader of a flight that concurrent misses for `key` wait on."""
        future: asyncio.Future[_Outcome | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            outcome = await self._invoke(request, invoke, stale)
        except BaseException:
            self._land(key, future, None)  # cancelled: the waiters collapse behind a new leader
            raise
        self._land(key, future, outcome)
        return outcome

    def _land(
        self, key: FlightKey, future: asyncio.Future[_Outcome | None], outcome: _Outcome | None
    ) -> None:
        if self._flights.get(key) is future:
            del self._flights[key]
        if not future.done():
            future.set_result(outcome)

    async def _invoke(self, request: CachedRequest, invoke: Invoke, stale: Entry | None) -> _Outcome:
        """Run the function once and store its response when allowed."""
        purges = self._purges.get(request.function, 0)
        try:
            response = await invoke()
        except Streamed as streamed:
            if request.method == "GET":
                primary = (request.function, request.version, METHOD_CLASS, request.path, request.query)
                self._start_pass(primary, self._timer())
            return _Outcome(0, b"", None, streamed)
        except Exception as error:
            return _Outcome(0, b"", None, error)
        status = response[0]
        now = self._timer()
        may_store = (
            request.method == "GET"
            and self._purges.get(request.function, 0) == purges
            # Keep the stale entry rather than caching the error it stands in for.
            and not (status >= 500 and stale is not None and now - stale.born < stale.sie_until)
        )
        verdict = evaluate(request, response, now, may_store=may_store)
        stored = verdict.entry is not None and self._store.put(verdict.entry)
        if request.method == "GET" and status < 500:
            primary = (request.function, request.version, METHOD_CLASS, request.path, request.query)
            if verdict.entry is not None:
                self._passes.pop(primary, None)
            else:
                self._start_pass(primary, now)
        if not stored and stale is not None and request.method == "GET" and status < 500 and status != 304:
            self._store.discard(stale.key)  # superseded by a response that may not be stored
        return _Outcome(status, response[2], verdict, None)

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
            outcome = None if key in self._flights else await self._fly(key, request, invoke, stale)
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
        self, request: CachedRequest, invoke: Invoke, flags: RequestFlags | None
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
        verdict = evaluate(request, response, self._timer(), may_store=may_store)
        if verdict.entry is not None:
            self._store.put(verdict.entry)
        head = request.method == "HEAD"
        return CacheResult(
            response[0], [*verdict.headers, X_CACHE["BYPASS"]], b"" if head else response[2], "BYPASS"
        )

    async def _pass(self, request: CachedRequest, invoke: Invoke) -> CacheResult:
        """Invoke a request the cache does not serve; a successful unsafe one invalidates its URL."""
        self.stats.bypass += 1
        status, headers, body = await invoke()
        if self._enabled and request.method not in _SAFE_METHODS and status < 400:
            key = primary_key(request.function, request.version, request.path, request.query)
            self._store.remove_resource(key)
        forwarded = [pair for pair in headers if pair[0] not in INTERNAL_HEADERS]
        forwarded.append(X_CACHE["BYPASS"])
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
