"""One invocation's result, shared by the leader of a flight and the requests collapsed behind it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cache._directives import vary_values
from cache._entry import X_CACHE
from cache._policy import Verdict
from cache.messages import CacheResult, CacheStatus, Streamed

__all__ = ["Outcome"]


@dataclass(slots=True)
class Outcome:
    """One invocation's result: a judged response, or the exception the invoke raised."""

    status: int
    body: bytes
    verdict: Verdict | None
    error: Exception | None
    stored: bool = False
    revalidated: bool = False
    """True when a 304 refreshed the stale entry: `status` and `body` are the entry's."""

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

    def result(
        self, head: bool, status: CacheStatus, cache_status: tuple[bytes, bytes], waiter: bool = False
    ) -> CacheResult:
        """The response to send; raises the invoke's exception when there is none."""
        if self.error is not None:
            raise self.error
        if self.verdict is None:
            raise RuntimeError("an outcome carries a verdict or an error, this one neither")
        headers = self.verdict.shared_headers if waiter else self.verdict.headers
        return CacheResult(
            self.status, [*headers, X_CACHE[status], cache_status], b"" if head else self.body, status
        )
