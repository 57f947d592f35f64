"""The node's sync loop as a pure state machine: what to do after each long-poll outcome."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Poller", "backoff"]


def backoff(attempt: int, rng: random.Random, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): full jitter over min(cap, base*2^(n-1))."""
    if attempt < 1:
        raise ValueError(f"attempt: Expected `int` >= 1, got {attempt!r}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return rng.uniform(ceiling / 2, ceiling)


@dataclass
class Poller:
    """Tracks the applied revision and failures; each `on_*` returns the delay before the next poll.

    Two kinds of failure back off differently. An origin that answered badly (5xx, a state that
    does not verify) is busy or broken: asking it again soon only adds load, so the delay grows
    to `cap`. An origin that could not be reached (refused, timed out, a cut link) costs nothing
    to try again, and the node must notice quickly when it comes back or the link heals: those
    retries stay within `reconnect_cap`, jittered so that a fleet that lost the origin together
    does not come back in one burst.
    """

    rng: random.Random = field(default_factory=random.Random)
    revision: int = 0
    failures: int = 0  # in a row, of either kind
    cap: float = 30.0
    reconnect_cap: float = 1.0
    # Bad answers in a row: only these grow the long back-off (a minute of an unreachable origin
    # must not make its first bad answer, e.g. while it starts, cost 30 s).
    refusals: int = 0

    def on_state(self, revision: int) -> float:
        """A newer state arrived and was applied: poll again at once from `revision`."""
        self.revision = max(self.revision, revision)
        self.failures = self.refusals = 0
        return 0.0

    def on_unchanged(self) -> float:
        """The long poll timed out with nothing newer (204): poll again at once."""
        self.failures = self.refusals = 0
        return 0.0

    def on_failure(self) -> float:
        """The origin answered 5xx or sent a state that failed to verify: back off up to `cap`."""
        self.failures += 1
        self.refusals += 1
        return backoff(self.refusals, self.rng, cap=self.cap)

    def on_unreachable(self) -> float:
        """The origin could not be reached: retry within `reconnect_cap` (jittered)."""
        self.failures += 1
        return backoff(self.failures, self.rng, cap=min(self.cap, self.reconnect_cap))
